"""Seconds per base-training step and synthesis images per second per core of the default tiny model.

Times are wall-clock and process CPU seconds: on a shared machine the CPU time of a
one-thread job is what it would take alone, and images per CPU second is the throughput per
core. References (same process, same model):

- one UNet forward pass at the synthesis batch size: base step / reference is the cost of a
  training step (text encoder + UNet forward and backward, AdamW, EMA) in reference passes;
- the plain classifier-free-guidance loop (:func:`lthash.generate.reference.reference_draw`),
  for text-to-image and image-to-image: lthash's sampler / reference is its throughput
  against the bare loop (1.0 = no overhead; the two draw bit-identical images). The same
  loop with the UNet in channels_last layout shows whether that layout would pay.

It also projects the default workflow's budget: base training minutes, and the minutes two
side-by-side one-thread jobs need for the default plan on the default Fashion-MNIST split.

    python benchmarks/bench_generate.py [--threads 1] [--train-steps 20] [--images 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
from bench_timer import Timer

from lthash.config import validate_config
from lthash.generate.base import BaseTrainingConfig, train_base
from lthash.generate.models import TinyModelConfig, build_tiny_components, encode_prompts
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.plan import make_plan
from lthash.generate.reference import reference_draw
from lthash.runtime import configure_allocator

WORDS = ["clothing", "footwear", "accessory"]
# Long-tail train counts of the default split (train_per_class 500, Zipf, imbalance factor 50).
DEFAULT_COUNTS = [500, 153, 72, 47, 32, 23, 18, 14, 11, 10]


def fastest(draws: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timer]:
    """The run with the least CPU time of each draw, the draws interleaved so load hits all alike."""
    best: dict[str, Timer] = {}
    for _ in range(repeats):
        for name, draw in draws.items():
            with Timer() as timer:
                draw()
            if name not in best or timer.cpu < best[name].cpu:
                best[name] = timer
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=128, help="images per draw (at most one sampler batch)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    configure_allocator()  # as every lthash command does: the figures are a job's
    torch.set_num_threads(args.threads)
    config = validate_config({"dataset": {}, "generate": {}})["generate"]
    arch = TinyModelConfig.from_dict(config["base"]["architecture"])
    components = build_tiny_components(WORDS, 28, 1, 0, arch)
    sampler = SamplerConfig.for_model(components)
    batch = min(args.images, sampler.batch_size)

    components.unet.eval()
    with torch.no_grad():
        hidden = encode_prompts(components, ["a photo of a clothing"] * batch)
        x = torch.randn(batch, *components.model_shape)
        components.unet(x, 500, hidden)
        with Timer() as reference:
            for _ in range(3):
                components.unet(x, 500, hidden)
    ref_cpu = reference.cpu / 3

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)
    prompts = [f"a photo of a {WORDS[i % 3]}" for i in range(512)]
    base = BaseTrainingConfig.from_params(config["base"], seed=0)
    train_base(components, images, prompts, BaseTrainingConfig.from_params(config["base"], seed=0, steps=2),
               progress=False)
    with Timer() as training:
        train_base(components, images, prompts,
                   BaseTrainingConfig.from_params(config["base"], seed=0, steps=args.train_steps), progress=False)
    step_wall, step_cpu = training.wall / args.train_steps, training.cpu / args.train_steps

    prompt, n, size = "a photo of a footwear", batch, (28, 28, 1)
    strength = float(config["synthesis"]["strength"])
    init = images[:n]

    def lthash_draw(init_images):
        return lambda: generate(components, [prompt] * n, torch.Generator().manual_seed(0), sampler, size=size,
                                init_images=init_images, strength=strength)

    def plain_draw(init_images, memory_format=torch.contiguous_format):
        def draw():
            components.unet.to(memory_format=memory_format)
            try:
                return reference_draw(components, prompt, n, 0, sampler.steps, sampler.guidance, size, init_images,
                                      strength, memory_format)
            finally:
                components.unet.to(memory_format=torch.contiguous_format)
        return draw

    modes = {"text-to-image": None, "image-to-image": init}
    draws = {}
    for mode, init_images in modes.items():
        draws[(mode, "lthash")] = lthash_draw(init_images)
        draws[(mode, "reference")] = plain_draw(init_images)
        draws[(mode, "reference channels_last")] = plain_draw(init_images, torch.channels_last)
    timings = fastest(draws, args.repeats)
    for mode, init_images in modes.items():
        assert np.array_equal(draws[(mode, "lthash")](), draws[(mode, "reference")]()), f"{mode}: images differ"

    plan = make_plan(DEFAULT_COUNTS, [str(i) for i in range(10)], config["synthesis"]["pretrain_per_class"])
    total = plan["totals"]["pretrain"] + plan["totals"]["mix"]
    per_core = n / timings[("text-to-image", "lthash")].cpu
    print(f"threads {args.threads}; UNet {sum(p.numel() for p in components.unet.parameters()):,} parameters, "
          f"28x28x1, sampler {sampler.scheduler} {sampler.steps} steps guidance {sampler.guidance}, "
          f"image-to-image strength {strength}; {n} images per draw, best CPU of {args.repeats}")
    print(f"reference UNet forward, batch {batch}: {ref_cpu:.3f} s CPU")
    print(f"base training, batch {base.batch_size}: {step_wall:.3f} s/step wall, {step_cpu:.3f} s/step CPU "
          f"(ratio to reference {step_cpu / ref_cpu:.2f}); {base.steps} default steps = "
          f"{base.steps * step_cpu / 60:.1f} min CPU")
    for mode in modes:
        ours, plain, layout = (timings[(mode, kind)] for kind in ("lthash", "reference", "reference channels_last"))
        print(f"{mode}: lthash {n / ours.cpu:.1f} images/s per core ({n / ours.wall:.1f} wall), plain loop "
              f"{n / plain.cpu:.1f} (ratio {plain.cpu / ours.cpu:.2f}; images identical), plain loop channels_last "
              f"{n / layout.cpu:.1f} (ratio to contiguous {plain.cpu / layout.cpu:.2f})")
    print(f"default plan: {plan['totals']['pretrain']} pretrain + {plan['totals']['mix']} mix = {total} images, "
          f"{total / per_core / 60:.1f} min CPU = {total / per_core / 120:.1f} min on two one-thread jobs; "
          f"pretrain alone {plan['totals']['pretrain'] / per_core / 120:.1f} min")


if __name__ == "__main__":
    main()

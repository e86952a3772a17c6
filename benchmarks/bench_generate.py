"""Seconds per base-training step and synthesis images/second of the default tiny model.

Times are wall-clock and process CPU seconds: on a shared machine the CPU time of a
one-thread job is what it would take alone. Reference (same process): one UNet forward pass
of the same model at the synthesis batch size. Printed ratios:

- base step / reference: the cost of a training step (text encoder + UNet forward and backward,
  AdamW, EMA) in reference passes;
- synthesis time per batch / (2 x steps x reference): the sampler's overhead over the bare
  guided UNet evaluations it needs (1.0 = none).

It also projects the default workflow's budget: base training minutes, and the minutes two
side-by-side one-thread jobs need for the default plan on the default Fashion-MNIST split.

    python benchmarks/bench_generate.py [--threads 1] [--train-steps 20] [--images 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lthash.config import validate_config
from lthash.generate.base import BaseTrainingConfig, train_base
from lthash.generate.models import TinyModelConfig, build_tiny_components, encode_prompts
from lthash.generate.pipeline import SamplerConfig, generate
from lthash.generate.plan import make_plan

WORDS = ["clothing", "footwear", "accessory"]
# Long-tail train counts of the default split (train_per_class 500, Zipf, imbalance factor 50).
DEFAULT_COUNTS = [500, 153, 72, 47, 32, 23, 18, 14, 11, 10]


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
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
    ref_wall, ref_cpu = reference.wall / 3, reference.cpu / 3

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)
    prompts = [f"a photo of a {WORDS[i % 3]}" for i in range(512)]
    train_base(components, images, prompts, BaseTrainingConfig.from_params(config["base"], seed=0, steps=2),
               progress=False)
    with Timer() as training:
        train_base(components, images, prompts,
                   BaseTrainingConfig.from_params(config["base"], seed=0, steps=args.train_steps), progress=False)
    step_wall, step_cpu = training.wall / args.train_steps, training.cpu / args.train_steps

    with Timer() as synthesis:
        generate(components, ["a photo of a footwear"] * args.images, torch.Generator().manual_seed(0),
                 sampler, size=(28, 28, 1))
    rate_wall, rate_cpu = args.images / synthesis.wall, args.images / synthesis.cpu
    evaluations = (2 if sampler.guidance != 1 else 1) * sampler.steps
    batches = -(-args.images // sampler.batch_size)
    plan = make_plan(DEFAULT_COUNTS, [str(i) for i in range(10)], config["synthesis"]["pretrain_per_class"])
    total = plan["totals"]["pretrain"] + plan["totals"]["mix"]

    print(f"threads {args.threads}; UNet {sum(p.numel() for p in components.unet.parameters()):,} parameters, "
          f"28x28x1, sampler {sampler.scheduler} {sampler.steps} steps guidance {sampler.guidance}")
    print(f"reference UNet forward, batch {batch}: {ref_wall:.3f} s wall, {ref_cpu:.3f} s CPU")
    print(f"base training, batch {base.batch_size}: {step_wall:.3f} s/step wall, {step_cpu:.3f} s/step CPU "
          f"(ratio to reference {step_cpu / ref_cpu:.2f}); {base.steps} default steps = "
          f"{base.steps * step_cpu / 60:.1f} min CPU")
    print(f"synthesis: {rate_wall:.1f} images/s wall, {rate_cpu:.1f} images/s CPU "
          f"(overhead ratio {synthesis.cpu / batches / (evaluations * ref_cpu):.2f})")
    print(f"default plan: {plan['totals']['pretrain']} pretrain + {plan['totals']['mix']} mix = {total} images, "
          f"{total / rate_cpu / 60:.1f} min CPU = {total / rate_cpu / 120:.1f} min on two one-thread jobs; "
          f"pretrain alone {plan['totals']['pretrain'] / rate_cpu / 120:.1f} min")


if __name__ == "__main__":
    main()

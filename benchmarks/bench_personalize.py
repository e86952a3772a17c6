"""Seconds per personalisation step of each AttnDreamBooth stage on the tiny model, and one class end to end.

Times are wall-clock and process CPU seconds: on a shared machine the CPU time of a
one-thread job is what it would take alone. Reference (same process, same batch): a bare eps-prediction training step of the same UNet
(forward, MSE, backward, AdamW) with none of the personalisation machinery. Printed ratios =
stage step / bare step, so they show the cost of attention capture + regulariser and of the
stage's trainable set (stage 1 backpropagates through the whole UNet into the text encoder).

    python benchmarks/bench_personalize.py [--threads 1] [--batch 16] [--steps 10] [--end-to-end]

``--end-to-end`` also times ``personalize()`` for one Fashion-MNIST class with the default
tiny schedule (what one workflow job does, minus process start-up).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lthash.checkpointing import CheckpointFolder
from lthash.config import validate_config
from lthash.generate.models import TinyModelConfig, build_tiny_components, images_to_pixels, save_components
from lthash.generate.personalize.data import Augmentation
from lthash.generate.personalize.runner import make_accelerator, personalize
from lthash.generate.personalize.schedule import method_stages
from lthash.generate.personalize.trainer import ConceptToken, StageTrainer, TrainingData, TrainingOptions
from lthash.runtime import configure_allocator

WORDS = ["clothing", "footwear", "accessory"]


def default_components(seed: int = 0):
    """The tiny model with the workflow's default architecture and image size (28 x 28 x 1)."""
    config = validate_config({"dataset": {}, "generate": {}})["generate"]
    architecture = TinyModelConfig.from_dict(config["base"]["architecture"])
    return build_tiny_components(WORDS, image_size=28, channels=1, seed=seed, config=architecture)


def bare_step_seconds(components, batch: int, steps: int) -> tuple[float, float]:
    """A plain diffusion training step of the whole UNet (the reference)."""
    unet, scheduler = components.unet, components.noise_scheduler
    unet.requires_grad_(True)
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    context = torch.zeros(batch, components.max_length(), components.text_encoder.config.hidden_size)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, *components.model_shape, generator=generator) * 2 - 1

    def step() -> None:
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, context).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    unet.requires_grad_(False)
    return (time.perf_counter() - began) / steps, (time.process_time() - cpu) / steps


def stage_step_seconds(components, images: np.ndarray, batch: int, steps: int) -> dict[str, tuple[float, float]]:
    """Seconds per optimiser step of each AttnDreamBooth stage (tiny preset, batch overridden)."""
    token = ConceptToken(components, "<v0>", "clothing").install()
    params = validate_config({"dataset": {}, "generate": {"personalize": {"schedule": "tiny", "attndreambooth": {"stages": {
        name: {"steps": steps + 1, "batch_size": batch} for name in ("embedding", "cross_attention", "unet")}}}}})
    params = params["generate"]["personalize"]
    stages = method_stages("attndreambooth", params, has_vae=False)
    data = TrainingData(images_to_pixels(images, 28, 1), "a photo of a <v0> clothing",
                        Augmentation.from_params(params["augment"]))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = StageTrainer(components, token, data, TrainingOptions.from_params(params, checkpoint_every=0),
                               make_accelerator("cpu", "no"), torch.Generator().manual_seed(0),
                               CheckpointFolder(Path(tmp) / "p", {"bench": 1}), stages)
        times = {}
        for index, stage in enumerate(stages):
            marks = []
            trainer.on_step = lambda _stage, _step, _parts: marks.append((time.perf_counter(), time.process_time()))
            trainer.run(index)
            times[stage.name] = tuple((marks[-1][i] - marks[0][i]) / (len(marks) - 1) for i in (0, 1))
    return times


def end_to_end_seconds() -> tuple[float, float, list[dict]]:
    """personalize() of one class (6 images, like a Fashion-MNIST tail class) with the default schedule."""
    from lthash.io import ImageSet, write_image_sets

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_components(default_components(), tmp / "base")
        images = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
        write_image_sets(tmp / "split.h5", {"train": ImageSet(images, np.zeros(6, np.int64), np.arange(6))},
                         attrs={"class_names": ["Shirt"]})
        generate = validate_config({"dataset": {}, "generate": {}})["generate"]
        began, cpu = time.perf_counter(), time.process_time()
        out = personalize(tmp / "base", tmp / "split.h5", 0, "attndreambooth", tmp / "concept", generate)
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
        import json

        stages = json.loads((out / "concept.json").read_text())["stages"]
    return seconds, cpu_seconds, [{k: s[k] for k in ("name", "steps", "batch_size", "seconds")} for s in stages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--end-to-end", action="store_true")
    args = parser.parse_args()
    configure_allocator()  # as every lthash command does: the figures are a job's
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    components = default_components()
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    bare = bare_step_seconds(components, args.batch, args.steps)
    stages = stage_step_seconds(components, images, args.batch, args.steps)
    print(f"threads={args.threads} batch={args.batch} load={os.getloadavg()[0]:.1f}")
    print(f"reference bare UNet step: {bare[0]:.3f} s/step wall, {bare[1]:.3f} s/step CPU")
    for name, (wall, cpu) in stages.items():
        print(f"stage {name:16s} {wall:.3f} s/step wall, {cpu:.3f} CPU;  ratio to bare {cpu / bare[1]:.2f} (CPU)")
    if args.end_to_end:
        seconds, cpu, log = end_to_end_seconds()
        print(f"one class, default tiny AttnDreamBooth chain: {seconds:.1f} s wall, {cpu:.1f} s CPU "
              "(in-process, incl. grids and saving)")
        for entry in log:
            print(f"  {entry['name']:16s} {entry['steps']:4d} steps x batch {entry['batch_size']}: {entry['seconds']:.1f} s")


if __name__ == "__main__":
    main()

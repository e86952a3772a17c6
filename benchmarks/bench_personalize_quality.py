"""Class fidelity of personalised tiny models, against the un-personalised ``base`` generator.

For each class, method and variant (a ``generate.personalize`` override, e.g. a schedule or prior
preservation): personalise, draw N images with the concept prompt through the synthesis
sampler, and count how many the quality judge (lthash.generate.quality: the CNN trained on the
real balanced training set, group train_balanced) assigns to the class (fidelity). Also the
held-out denoising loss: the eps-MSE on the class's balanced-set images that personalisation
never saw (fixed noise, timesteps 100..900), with the concept prompt. Reference: the ``base``
generator (the base with its own caption of the class, no personalisation), same sampler.

    python benchmarks/bench_personalize_quality.py --split results/data/split.h5 \\
        [--base results/generate/base | --base-steps 600] [--classes 1,8,0] \\
        [--methods attndreambooth,dreambooth,textual_inversion] [--samples 100] \\
        [--variant NAME=JSON ...]   (default: one variant "default" = {})
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lthash.config import validate_config
from lthash.generate.concepts import load_concept
from lthash.generate.personalize.runner import personalize
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.synthesize import load_generator
from lthash.io import read_attrs, read_image_set
from lthash.runtime import configure_allocator


def judge(split: Path):
    """The quality stage's judge (CNN on train_balanced) and its accuracy on the real query set."""
    from lthash.generate.quality import train_quality_judge

    balanced, query = read_image_set(split, "train_balanced"), read_image_set(split, "query")
    model = train_quality_judge(balanced.images, balanced.labels, len(read_attrs(split)["class_names"]))
    return model, float((model.predict(query.images) == query.labels).mean())


def fidelity(model, components, prompt: str, class_index: int, count: int) -> float:
    """Fraction of ``count`` images of ``prompt`` (synthesis sampler defaults, seed 0) judged ``class_index``."""
    images = generate(components, [prompt] * count, torch.Generator().manual_seed(0),
                      SamplerConfig.for_model(components, {"batch_size": count}))
    return float((model.predict(images) == class_index).mean())


@torch.no_grad()
def heldout_loss(components, prompt: str, images: np.ndarray, timesteps=(100, 300, 500, 700, 900)) -> float:
    """Mean eps-MSE over ``images`` x ``timesteps`` with fixed noise (seed 0); NaN with no image."""
    if not len(images):
        return float("nan")
    from lthash.generate.models import encode_images, encode_prompts

    x0 = encode_images(components, images, generator=torch.Generator().manual_seed(0), sample=False)
    context = encode_prompts(components, [prompt]).expand(len(images), -1, -1)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=generator)
        steps = torch.full((len(images),), t, dtype=torch.long)
        noisy = components.noise_scheduler.add_noise(x0, noise, steps)
        losses.append(torch.nn.functional.mse_loss(components.unet(noisy, steps, context).sample, noise).item())
    return float(np.mean(losses))


def measure(model, components, prompt: str, class_index: int, samples: int,
            held: np.ndarray) -> tuple[float, float]:
    """(fidelity of ``samples`` images, NaN for 0; held-out loss on ``held``)."""
    score = fidelity(model, components, prompt, class_index, samples) if samples else float("nan")
    return score, heldout_loss(components, prompt, held)


def heldout_images(split: Path, class_index: int, limit: int = 64) -> np.ndarray:
    """The class's balanced-set images that are not in the long-tail training set."""
    train, balanced = read_image_set(split, "train"), read_image_set(split, "train_balanced")
    seen = set(train.index[train.labels == class_index].tolist())
    keep = [i for i in np.flatnonzero(balanced.labels == class_index) if balanced.index[i] not in seen]
    return balanced.images[keep[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--base", type=Path, default=None, help="a trained base; else one is trained here")
    parser.add_argument("--base-steps", type=int, default=600)
    parser.add_argument("--classes", default=None, help="class indices (default: the 3 smallest in 'train')")
    parser.add_argument("--methods", default="attndreambooth,dreambooth,textual_inversion")
    parser.add_argument("--samples", type=int, default=100, help="images drawn per concept (0: loss only)")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME=JSON generate.personalize overrides; repeatable (default: default={})")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_allocator()  # as every lthash command does: the figures are a job's
    torch.set_num_threads(args.threads)
    names = read_attrs(args.split)["class_names"]
    counts = read_image_set(args.split, "train", load_images=False).attrs["counts"]
    classes = ([int(c) for c in args.classes.split(",")] if args.classes
               else [int(c) for c in np.argsort(counts, kind="stable")[:3]])
    variants = dict(item.split("=", 1) for item in (args.variant or ["default={}"]))
    settings = {name: validate_config({"dataset": {}, "generate": {"personalize": json.loads(text)}})["generate"]
                for name, text in variants.items()}
    model, accuracy = judge(args.split)
    print(f"judge accuracy on real query images: {accuracy:.3f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = args.base
        if base is None:
            from lthash.generate.base import run_base

            base = tmp / "base"
            params = validate_config({"dataset": {}, "generate": {"base": {"steps": args.base_steps}}})["generate"]
            began = time.perf_counter()
            run_base(args.split, base, params, device="cpu")
            print(f"base trained: {args.base_steps} steps in {time.perf_counter() - began:.0f} s")
        for class_index in classes:
            held = heldout_images(args.split, class_index)
            base_components, base_prompt, _ = load_generator(base, None, class_index, names, None)
            reference, reference_loss = measure(model, base_components, base_prompt, class_index, args.samples, held)
            print(f"class {class_index} {names[class_index]!r} ({counts[class_index]} images): base with "
                  f"'{base_prompt}' -> fidelity {reference:.2f}, held-out loss {reference_loss:.4f} "
                  f"({len(held)} images)", flush=True)
            for method in args.methods.split(","):
                for name, generate_params in settings.items():
                    began, cpu = time.perf_counter(), time.process_time()
                    out = personalize(base, args.split, class_index, method, tmp / f"{method}-{name}-{class_index}",
                                      generate_params, device="cpu")
                    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
                    components, prompt = load_concept(out, base)
                    score, loss = measure(model, components, prompt, class_index, args.samples, held)
                    print(f"  {method:18s} {name:22s} fidelity {score:.2f} (base {reference:.2f})  "
                          f"held-out loss {loss:.4f} (ratio {loss / reference_loss:.3f})  "
                          f"({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)


if __name__ == "__main__":
    main()

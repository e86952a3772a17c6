"""What joint personalisation teaches: train ``generator: joint`` with a settings override, then
the held-out knowledge measure (lthash.generate.knowledge) on the split's validation images.

Prints the seconds of training and of measuring, the held-out denoising accuracy over all
classes and within super-category groups beside its chance level, and the per-class
within-group accuracy. The run's joint folder and its knowledge JSON stay in ``--out``.

    python benchmarks/bench_joint_personalize.py --config workflow/configs/fashion_mnist_novel_concept.yaml \\
        --out /tmp/joint --joint '{"steps": 400, "lr": 1e-3, "token_lr": 1e-2}' [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lthash.config import load_config
from lthash.generate.knowledge import measure_generator
from lthash.generate.personalize.joint_trainer import personalize_joint
from lthash.generate.shipped import base_folder
from lthash.io import read_attrs, write_json
from lthash.runtime import configure_allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a workflow config whose split and base exist already")
    parser.add_argument("--out", required=True, help="joint concept folder to write")
    parser.add_argument("--joint", default="{}", help="JSON overrides of generate.personalize.joint")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_allocator()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, {"generate": {"personalize": {"joint": json.loads(args.joint)}}})
    generate, results = config["generate"], config["results"]
    base, _ = base_folder(generate["base"]["model"], results)
    split = f"{results}/data/split.h5"
    began = time.perf_counter()
    personalize_joint(base, split, args.out, generate)
    trained = time.perf_counter() - began
    classes = len(read_attrs(split)["class_names"])
    metrics = measure_generator([args.out] * classes, base, split, generate, "joint")
    write_json(Path(args.out).with_suffix(".knowledge.json"), metrics)
    print(f"training {trained:.0f} s, measuring {metrics['seconds']:.0f} s")
    print(f"held-out denoising accuracy {metrics['accuracy']:.3f} (chance {metrics['chance']:.3f}); within "
          f"super-category groups {metrics['within_group_accuracy']:.3f} (chance {metrics['within_group_chance']:.3f})")
    print({name: round(entry["within_group_accuracy"], 2) for name, entry in metrics["classes"].items()})


if __name__ == "__main__":
    main()

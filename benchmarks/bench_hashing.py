"""Images/second of ``lthash train`` and ``encode_array`` on the default backbone (small CNN,
28x28x1 Fashion-MNIST), against a bare PyTorch loop of the same model in the same process.

    python benchmarks/bench_hashing.py [--threads 1] [--images 2000] [--epochs 3]

Ratios near 1 mean the trainer's extras (augmentation, lr schedule, per-epoch checkpoints,
progress bars) cost little; a ratio well below 1 points at overhead to look at.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lthash.runtime import configure_allocator

FASHION = Path("/usr/share/datasets/fashion-mnist")


def fashion(n: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype(np.int64)
    return images[:n].copy(), labels[:n].copy()


def bare_train(images: np.ndarray, labels: np.ndarray, params: dict, epochs: int) -> float:
    """Reference: the same model and optimiser, a plain loop (no augmentation, schedule or checkpoints)."""
    from lthash.hashing.data import to_float
    from lthash.hashing.model import build_model

    model = build_model(params, "orthohash", "cnn", params["bits"], 10, (28, 28, 1), np.bincount(labels), 0)
    opt = torch.optim.Adam(model.parameters(), lr=params["train"]["lr"])
    batch = params["train"]["batch_size"]
    x_all, y_all = to_float(images), torch.from_numpy(labels)
    tic = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(images), batch):
            out = model(x_all[start: start + batch])
            loss = model.loss(out, y_all[start: start + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * len(images) / (time.perf_counter() - tic)


def bare_encode(model: torch.nn.Module, images: np.ndarray, batch: int) -> float:
    from lthash.hashing.data import to_float

    tic = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model.encode(to_float(images[start: start + batch]))
    return len(images) / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    configure_allocator()  # as every lthash command does: the figures are a job's
    torch.set_num_threads(args.threads)

    from lthash.workflow import stage_config
    from lthash.hashing.encode import encode_array, load_run_model
    from lthash.hashing.train import run_training
    from lthash.io import ImageSet, write_image_sets

    images, labels = fashion(args.images)
    params = stage_config("train", json.dumps({"train": {"epochs": args.epochs}}))["hashing"]
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.h5"
        sets = {g: ImageSet(images=images, labels=labels, index=np.arange(len(labels))) for g in ("train", "query")}
        write_image_sets(split, sets, attrs={"class_names": [str(i) for i in range(10)]})
        record = run_training(split, "train", [], "real", None, Path(tmp) / "run", params, "cpu", args.threads)
        train_ips = record["train_images_per_second"]
        ref_train = bare_train(images, labels, params, args.epochs)
        encode_array(Path(tmp) / "run", images[:256])
        tic = time.perf_counter()
        encode_array(Path(tmp) / "run", images, batch_size=params["encode"]["batch_size"])
        encode_ips = len(images) / (time.perf_counter() - tic)
        model, _ = load_run_model(Path(tmp) / "run")
        ref_encode = bare_encode(model, images, params["encode"]["batch_size"])
    print(f"default backbone cnn (width {params['cnn']['width']}), orthohash {params['bits']} bits, "
          f"batch {params['train']['batch_size']}, {args.threads} thread(s), {args.images} images")
    print(f"train : {train_ips:8.0f} img/s   bare loop {ref_train:8.0f} img/s   ratio {train_ips / ref_train:.2f}")
    print(f"encode: {encode_ips:8.0f} img/s   bare loop {ref_encode:8.0f} img/s   ratio {encode_ips / ref_encode:.2f}")


if __name__ == "__main__":
    main()

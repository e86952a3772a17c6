"""mAP of every hash method on a small long-tail Fashion-MNIST split, and balanced vs long-tail
training on tail-class mAP, at the test suite's CPU budget.

    python benchmarks/bench_hashing_methods.py [--threads 1] [--split SPLIT.h5] [--methods orthohash csq ...]

Without --split it builds the test fixture's split (t10k images; per class 20 query, 200
database, 60 balanced training images, a long-tail train group with Zipf sizes 60 i^-1).
With --split (e.g. the workflow's results/data/split.h5) the database is subsampled to 10000
(seeded) to keep mAP@all quick. mAP@all by Hamming ranking, ties in database order.
Reference run: orthohash, against which every other method's mAP is given as a ratio.
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
FAST = {"epochs": 12, "batch_size": 32, "lr": 0.003, "augment": False}
EXTRA = {"lthnet": {"lthnet": {"feature_dim": 256}}, "lthnet_sq": {"lthnet": {"feature_dim": 256}},
         "dpn": {"train": {**FAST, "epochs": 20}}}


def build_small_split(path: Path) -> None:
    from lthash.io import ImageSet, write_image_sets

    def idx(name: str) -> np.ndarray:
        with gzip.open(FASHION / name) as handle:
            data = handle.read()
        ndim = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)

    images, labels = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(10)
    groups: dict[str, list] = {"query": [], "database": [], "train_balanced": [], "train": []}
    for cls in range(10):
        members = rng.permutation(np.flatnonzero(labels == cls))
        groups["query"].append(members[:20])
        groups["database"].append(members[20:220])
        groups["train_balanced"].append(members[20:80])
        groups["train"].append(members[20: 20 + int(60 * (int(np.flatnonzero(order == cls)[0]) + 1) ** -1.0)])
    sets = {name: ImageSet(images=images[np.concatenate(p)][..., None], labels=labels[np.concatenate(p)],
                           index=np.concatenate(p)) for name, p in groups.items()}
    write_image_sets(path, sets, attrs={"class_names": [str(i) for i in range(10)]})


def evaluate(run: Path, split: Path, tail: np.ndarray) -> tuple[float, float]:
    from lthash.evaluate.codes import unpack_codes
    from lthash.hashing.encode import encode_array
    from lthash.hashing.metrics import hamming_map
    from lthash.io import read_image_set

    query, database = read_image_set(split, "query"), read_image_set(split, "database")
    keep = np.arange(len(database.labels))
    if len(keep) > 10000:
        keep = np.sort(np.random.default_rng(0).choice(len(keep), 10000, replace=False))
    bits = json.loads((run / "run.json").read_text())["bits"]
    q = unpack_codes(encode_array(run, query.images), bits)
    db = unpack_codes(encode_array(run, database.images[keep]), bits)
    mask = np.isin(query.labels, tail)
    return (hamming_map(q, db, query.labels, database.labels[keep]),
            hamming_map(q[mask], db, query.labels[mask], database.labels[keep]))


def main() -> None:
    from lthash.workflow import stage_config
    from lthash.hashing.methods import REGISTRY
    from lthash.hashing.train import run_training
    from lthash.io import read_image_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", type=Path, default=None)
    parser.add_argument("--methods", nargs="*", default=None)
    args = parser.parse_args()
    configure_allocator()  # as every lthash command does: the figures are a job's
    torch.set_num_threads(args.threads)
    methods = args.methods or ["orthohash"] + sorted(set(REGISTRY) - {"orthohash"})
    with tempfile.TemporaryDirectory() as tmp:
        split = args.split or Path(tmp) / "split.h5"
        if args.split is None:
            build_small_split(split)
        counts = np.bincount(read_image_set(split, "train", False).labels)
        tail = np.argsort(counts, kind="stable")[:4]
        print(f"split {split if args.split else 'small (test fixture)'}: long-tail counts {counts.tolist()}, "
              f"tail classes {tail.tolist()}, {args.threads} thread(s)")
        reference = None
        for method in methods:
            spec = {"method": method, "bits": 32, "seed": 0, "cnn": {"width": 8}, "train": dict(FAST), **EXTRA.get(method, {})}
            tic = time.perf_counter()
            params = stage_config("train", json.dumps(spec))["hashing"]
            run_training(split, "train", [], "real", None, Path(tmp) / method, params, "cpu")
            seconds = time.perf_counter() - tic
            mean_ap, tail_ap = evaluate(Path(tmp) / method, split, tail)
            reference = reference or mean_ap
            print(f"{method:10s} mAP {mean_ap:.3f} (x{mean_ap / reference:.2f} of orthohash)  tail mAP {tail_ap:.3f}  "
                  f"train {seconds:5.1f} s")
        spec = {"method": "orthohash", "bits": 32, "seed": 0, "cnn": {"width": 8}, "train": dict(FAST)}
        for group in ("train", "train_balanced"):
            params = stage_config("train", json.dumps(spec))["hashing"]
            run_training(split, group, [], "real", None, Path(tmp) / group, params, "cpu")
            mean_ap, tail_ap = evaluate(Path(tmp) / group, split, tail)
            print(f"orthohash on {group:14s}: mAP {mean_ap:.3f}  tail-class mAP {tail_ap:.3f}")


if __name__ == "__main__":
    main()

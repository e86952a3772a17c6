"""Every registered method trains on the long-tail Fashion-MNIST split on CPU with a small budget
and its codes beat chance mAP (0.1 for 10 balanced classes) on query vs database; balanced
training beats long-tail training on tail-class mAP."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lthash.evaluate.codes import read_codes
from lthash.workflow import stage_config
from lthash.hashing.encode import encode_array, encode_split
from lthash.hashing.methods import REGISTRY
from lthash.hashing.train import run_training
from lthash.io import read_image_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"epochs": 12, "batch_size": 32, "lr": 0.003, "augment": False}
BUDGET = {
    "orthohash": {},
    "csq": {},
    "dpn": {"train": {**FAST, "epochs": 20}},
    "lthnet": {"lthnet": {"feature_dim": 256}},
    "lthnet_sq": {"lthnet": {"feature_dim": 256}},
    "adh": {},
    "lsh": {},
    "pcah": {},
    "itq": {},
    "sdh": {},
}
CHANCE = 0.1


def score(codes_path, classes: np.ndarray | None = None) -> float:
    """mAP@all (lthash.evaluate, ties in database order) of the query items of ``classes`` (all by default)."""
    from lthash.evaluate import mean_average_precision

    query, database = read_codes(codes_path, "query"), read_codes(codes_path, "database")
    keep = np.ones(len(query), bool) if classes is None else np.isin(query.labels, classes)
    return mean_average_precision(query.codes[keep], database.codes, query.labels[keep], database.labels,
                                  bits=query.bits)


def train(split, out, method: str, group: str = "train", extra: dict | None = None) -> dict:
    spec = {"method": method, "bits": 32, "seed": 0, "cnn": {"width": 8}, "train": dict(FAST), **(extra or {})}
    return run_training(split, group, [], "real", None, out, stage_config("train", json.dumps(spec))["hashing"], "cpu")


def test_registry_names_every_method():
    assert set(BUDGET) == set(REGISTRY)


@pytest.mark.parametrize("method", sorted(BUDGET))
def test_method_beats_chance_on_longtail_split(small_split, tmp_path, method):
    run = tmp_path / method
    record = train(small_split, run, method, extra=BUDGET[method])
    assert record["train_counts"] == np.bincount(read_image_set(small_split, "train", False).labels).tolist()
    for name in ("model.safetensors", "history.csv", "curves.png", "run.json"):
        assert (run / name).is_file()
    codes = tmp_path / "codes.h5"
    encode_split(run, small_split, codes)
    mean_ap = score(codes)
    assert mean_ap > 2 * CHANCE, f"{method}: mAP {mean_ap:.3f}"
    query = read_image_set(small_split, "query")
    assert np.array_equal(encode_array(run, query.images[:7], batch_size=3), read_codes(codes, "query").codes[:7])


def test_balanced_training_beats_longtail_on_tail_classes(small_split, tmp_path):
    counts = np.bincount(read_image_set(small_split, "train", False).labels)
    tail = np.argsort(counts, kind="stable")[:4]
    tail_map = {}
    for group in ("train", "train_balanced"):
        run = tmp_path / group
        train(small_split, run, "orthohash", group)
        encode_split(run, small_split, tmp_path / f"{group}.h5")
        tail_map[group] = score(tmp_path / f"{group}.h5", tail)
    assert tail_map["train_balanced"] > tail_map["train"] + 0.05, tail_map


def test_cli_train_and_encode(small_split, tmp_path):
    params = json.dumps({"method": "itq", "bits": 16})
    run, codes = tmp_path / "run", tmp_path / "codes.h5"
    base = [sys.executable, "-m", "lthash.cli"]
    subprocess.run(base + ["train", "--split", str(small_split), "--out", str(run), "--params", params,
                           "--device", "cpu", "--threads", "1"], check=True, capture_output=True)
    subprocess.run(base + ["encode", "--model", str(run), "--split", str(small_split), "--out", str(codes),
                           "--device", "cpu", "--batch-size", "64", "--threads", "1"], check=True, capture_output=True)
    database = read_codes(codes, "database")
    assert database.bits == 16 and database.codes.shape == (2000, 2)
    assert score(codes) > 2 * CHANCE

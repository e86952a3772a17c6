"""Resampled shards (the resampled arm): copies of a class's long-tail training images in the
synthetic shard format, drawn with the shard's seed and used evenly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lthash.cli import main
from lthash.generate.plan import make_plan
from lthash.generate.resample import resample_shard
from lthash.generate.shards import shard_seed
from lthash.hashing.data import load_training_set
from lthash.io import read_attrs, read_image_set, write_json


@pytest.fixture(scope="module")
def plan(small_split, tmp_path_factory):
    attrs = read_attrs(small_split)
    counts = read_attrs(small_split, "train")["counts"]
    plan = make_plan(counts, attrs["class_names"], pretrain_per_class=25, shard_size=10)
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    write_json(path, plan)
    return plan, path


def tail_class(split) -> int:
    train = read_image_set(split, "train")
    counts = np.bincount(train.labels, minlength=10)
    return int(np.argmin(counts))


def test_a_resampled_shard_copies_the_class_training_images_evenly(small_split, plan, tmp_path):
    plan, _ = plan
    cls = tail_class(small_split)
    out = tmp_path / "shard.h5"
    resample_shard(small_split, plan, cls, "pretrain", 1, out, {"seed": 4})
    shard = read_image_set(out, "synthetic")
    train = read_image_set(small_split, "train")
    mine = np.flatnonzero(train.labels == cls)
    by_index = {int(i): k for k, i in enumerate(train.index)}
    source = shard.extra["source_index"]
    assert len(shard.labels) == 10 and (shard.labels == cls).all()
    assert set(source.tolist()) <= set(train.index[mine].tolist())
    for image, index in zip(shard.images, source):
        assert np.array_equal(image, train.images[by_index[int(index)]])
    uses = np.bincount([by_index[int(i)] for i in source], minlength=len(train.labels))[mine]
    assert uses.max() - uses.min() <= 1, "a seeded permutation, cycled: every image used evenly"
    assert np.array_equal(shard.index, np.arange(10, 20)), "index = sample number within the class, as synthesis"
    assert shard.attrs["generator"] == "resampled" and shard.attrs["purpose"] == "pretrain"
    assert shard.attrs["seed"] == shard_seed(4, "resampled", cls, "pretrain", 1)
    other = tmp_path / "other.h5"
    resample_shard(small_split, plan, cls, "pretrain", 0, other, {"seed": 4})
    assert not np.array_equal(read_image_set(other, "synthetic").extra["source_index"], source)


def test_resampled_shards_train_like_synthetic_ones_and_are_not_redrawn(small_split, plan, tmp_path):
    plan, _ = plan
    shards = []
    for cls in range(10):
        for k in range(len(plan["classes"][cls]["mix"]["shards"])):
            shards.append(tmp_path / f"mix{cls}-{k}.h5")
            resample_shard(small_split, plan, cls, "mix", k, shards[-1], {"seed": 0})
    mix = load_training_set(small_split, "train", "mix", shards, {"target_factor": 1.0, "max_synthetic_fraction": 1.0,
                                                                  "target_per_class": None}, seed=0)
    assert (mix.counts() == plan["target"]).all()
    first = shards[-1].stat().st_mtime_ns
    assert resample_shard(small_split, plan, 9, "mix", len(plan["classes"][9]["mix"]["shards"]) - 1,
                          shards[-1], {"seed": 0})["skipped"]
    assert shards[-1].stat().st_mtime_ns == first


def test_lthash_resample_takes_only_the_generation_seed(small_split, plan, tmp_path):
    _, path = plan
    out = tmp_path / "cli.h5"
    args = ["resample", "--split", str(small_split), "--plan", str(path), "--class", "0", "--purpose", "pretrain",
            "--shard", "0", "--out", str(out)]
    assert main([*args, "--params", json.dumps({"generate": {"seed": 2}})]) == 0
    assert read_image_set(out, "synthetic").attrs["seed"] == shard_seed(2, "resampled", 0, "pretrain", 0)
    refused = tmp_path / "refused.h5"
    assert main([*args[:-1], str(refused), "--params", json.dumps({"generate": {"synthesis": {"steps": 3}}})]) == 2
    assert not refused.exists()

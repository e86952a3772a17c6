"""Quality: real images judged faithful, noise not; JSON and grid through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lthash.cli import main
from lthash.io import ImageSet, read_image_set, write_image_sets


def shard(path, images, labels, generator):
    write_image_sets(path, {"synthetic": ImageSet(images=images, labels=labels, index=np.arange(len(labels)),
                                                  attrs={"generator": generator})})
    return str(path)


def test_real_is_faithful_and_noise_is_not(small_split, tmp_path):
    query = read_image_set(small_split, "query")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, query.images.shape, dtype=np.uint8)
    balanced = read_image_set(small_split, "train_balanced")
    shards = [shard(tmp_path / "real.h5", query.images, query.labels, "real"),
              shard(tmp_path / "noise.h5", noise, query.labels, "noise"),
              shard(tmp_path / "balanced.h5", balanced.images, balanced.labels, "balanced")]
    out, grid = tmp_path / "quality.json", tmp_path / "grid.png"
    params = json.dumps({"generate": {"quality": {"grid_images": 4, "transfer_steps": 40}}})
    assert main(["quality", "--split", str(small_split), "--shards", *shards, "--out", str(out),
                 "--grid", str(grid), "--params", params, "--threads", "1"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["judge"]["query_accuracy"] > 0.6
    real, fake = metrics["generators"]["real"], metrics["generators"]["noise"]
    assert real["mean_class_fidelity"] == pytest.approx(metrics["judge"]["query_accuracy"])
    assert real["mean_category_fidelity"] >= real["mean_class_fidelity"]
    assert fake["mean_class_fidelity"] < 0.3
    # diversity lives in the real images' principal subspace: noise has almost none there
    assert 0.7 < real["mean_diversity_ratio"] < 1.3 and fake["mean_diversity_ratio"] < 0.7
    assert len(real["classes"]) == 10 and real["tail_class_fidelity"] is not None
    assert grid.stat().st_size > 1000
    # what the samples teach about real images (the small split has no validation group: the
    # queries): "samples" that are the real balanced set teach exactly what the bound's CNN
    # learned from it, noise teaches nothing
    transfer = metrics["transfer"]
    assert transfer["evaluated_on"] == "query" and transfer["images"] == len(query.labels)
    assert 0.5 < transfer["balanced_real"] and 0.1 < transfer["longtail_real"] < transfer["balanced_real"] + 0.1
    taught = metrics["generators"]["balanced"]["synthetic_to_real"]
    assert taught["accuracy"] == transfer["balanced_real"] and taught["images"] == len(balanced.labels)
    assert fake["synthetic_to_real"]["accuracy"] < 0.3
    # then taught on the real long-tail set: the noise-taught CNN learns the real classes after all
    assert fake["synthetic_to_real"]["then_longtail"] > fake["synthetic_to_real"]["accuracy"] + 0.1
    assert 0 < transfer["longtail_real_twice"] <= 1
    assert set(real["synthetic_to_real"]["per_class"]) == set(metrics["class_names"])

    only = tmp_path / "only.json"
    assert main(["quality", "--split", str(small_split), "--shards", *shards, "--generator", "noise",
                 "--out", str(only), "--params", json.dumps({"generate": {"quality": {"grid_images": 4}}})]) == 0
    assert list(json.loads(only.read_text())["generators"]) == ["noise"]
    assert main(["quality", "--split", str(small_split), "--shards", *shards, "--out", str(only)]) == 0
    assert json.loads(only.read_text())["transfer"] is None  # not measured by default
    assert main(["quality", "--split", str(small_split), "--shards", *shards, "--generator", "nope",
                 "--out", str(only), "--params", params]) == 2


def test_teaching_from_a_judge_copies_it_and_leaves_it_alone(small_split):
    import torch

    from lthash.generate.quality import teach

    train = read_image_set(small_split, "train")
    first = teach(train.images, train.labels, 10, seed=0, steps=3)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    second = teach(train.images, train.labels, 10, seed=1, steps=3, init=first)
    assert all(torch.equal(before[k], v) for k, v in first.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in second.state_dict().items())
    fresh = teach(train.images, train.labels, 10, seed=1, steps=3)
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in second.state_dict().items())

"""The real-image arms on a split stored as paths (``dataset.store: paths``, an ImageFolder):
image-to-image synthesis, resampled copies and personalisation read a class's long-tail images
through one reader, and get the same pixels as from the same split stored as pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lthash.cli import main
from lthash.data.export import export_imagefolder
from lthash.workflow import stage_config
from lthash.generate.models import build_tiny_components, save_components
from lthash.generate.personalize.data import load_class_images
from lthash.generate.plan import make_plan
from lthash.generate.resample import resample_shard
from lthash.generate.shards import class_train_images
from lthash.generate.synthesize import synthesize_shard
from lthash.io import read_attrs, read_image_set

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """The digits as a 28 x 28 ImageFolder, split twice with the same settings: stored as paths, as pixels."""
    root = tmp_path_factory.mktemp("paths_split")
    export_imagefolder({"name": "digits"}, root / "digits", size=28)
    out = {}
    for store in ("paths", "pixels"):
        params = {"dataset": {"name": "imagefolder", "root": str(root / "digits"), "image_size": 28, "store": store},
                  "split": {"query_per_class": 10, "train_per_class": 30,
                            "longtail": {"profile": "zipf", "imbalance_factor": 5}}}
        out[store] = root / store / "split.h5"
        assert main(["split", "--out", str(out[store]), "--summary", str(root / store / "split.json"),
                     "--figure", str(root / store / "fig.png"), "--params", json.dumps(params), "--threads", "1"]) == 0
    assert read_image_set(out["paths"], "train").images is None, "the paths split holds no pixels"
    return out


@pytest.fixture(scope="module")
def plan(splits):
    attrs = read_attrs(splits["pixels"])
    return make_plan(read_attrs(splits["pixels"], "train")["counts"], attrs["class_names"], pretrain_per_class=40,
                     shard_size=12)


def test_one_reader_gives_the_same_class_images_from_paths_and_pixels(splits):
    train = read_image_set(splits["pixels"], "train")
    tail = int(np.argmin(np.bincount(train.labels, minlength=10)))
    from_paths = class_train_images(splits["paths"], tail, "nothing to do")
    from_pixels = class_train_images(splits["pixels"], tail, "nothing to do")
    np.testing.assert_array_equal(from_paths.images, from_pixels.images)
    np.testing.assert_array_equal(from_paths.index, from_pixels.index)
    np.testing.assert_array_equal(from_pixels.images, train.images[train.labels == tail])
    np.testing.assert_array_equal(load_class_images(splits["paths"], tail).images, from_pixels.images)


def test_resampled_shards_accept_a_paths_split(splits, plan, tmp_path):
    shards = {}
    for store, split in splits.items():
        resample_shard(split, plan, 3, "pretrain", 1, tmp_path / f"{store}.h5", {"seed": 4})
        shards[store] = read_image_set(tmp_path / f"{store}.h5", "synthetic")
    np.testing.assert_array_equal(shards["paths"].images, shards["pixels"].images)
    np.testing.assert_array_equal(shards["paths"].extra["source_index"], shards["pixels"].extra["source_index"])


def test_image_to_image_shards_accept_a_paths_split(splits, plan, tmp_path):
    base = save_components(build_tiny_components(["digit"], 28, 1, 0, TINY), tmp_path / "base")
    params = stage_config("synthesize", json.dumps({"seed": 3, "synthesis": {"steps": 2, "batch_size": 16, "init": "real",
                                                                            "strength": 0.5}}))["generate"]
    shards = {}
    for store, split in splits.items():
        synthesize_shard(base, None, 2, "pretrain", 0, plan, split, tmp_path / f"{store}.h5", params, progress=False)
        shards[store] = read_image_set(tmp_path / f"{store}.h5", "synthetic")
    np.testing.assert_array_equal(shards["paths"].images, shards["pixels"].images)
    np.testing.assert_array_equal(shards["paths"].extra["init_index"], shards["pixels"].extra["init_index"])

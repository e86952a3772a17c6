"""Training inputs and options: synthetic shards and the class-balanced mix, fine-tuning from
another run, validation-based selection, mixed precision and accelerate on CPU, and the errors
a user sees for bad input (unknown method, missing pretrained file, shard of the wrong shape)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lthash.errors import LthashError
from lthash.workflow import stage_config
from lthash.hashing.data import load_training_set, mix_counts
from lthash.hashing.encode import encode_array
from lthash.hashing.methods import REGISTRY
from lthash.hashing.train import run_training
from lthash.io import ImageSet, read_image_set, write_image_sets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"epochs": 2, "batch_size": 32, "lr": 0.002}


def params(**spec) -> dict:
    spec.setdefault("bits", 16)
    spec.setdefault("cnn", {"width": 8})
    spec.setdefault("train", TINY)
    return stage_config("train", json.dumps(spec))["hashing"]


def write_shard(path, images: np.ndarray, labels: np.ndarray, cls: int = 0) -> None:
    """A synthetic shard in the generate stage's format, made from real images."""
    write_image_sets(path, {"synthetic": ImageSet(images=images, labels=labels, index=np.arange(len(labels)),
                                                  attrs={"class_index": cls, "generator": "real-copy", "shard": 0,
                                                         "seed": 0})})


@pytest.fixture(scope="module")
def shards(small_split, tmp_path_factory):
    """Two shards of database images not in the training groups: 60 per class."""
    database = read_image_set(small_split, "database")
    folder = tmp_path_factory.mktemp("shards")
    paths = []
    for part in range(2):
        pick = np.concatenate([np.flatnonzero(database.labels == c)[60 + 30 * part: 90 + 30 * part] for c in range(10)])
        write_shard(folder / f"shard{part}.h5", database.images[pick], database.labels[pick])
        paths.append(folder / f"shard{part}.h5")
    return paths


def test_mix_balances_every_class_with_synthetic_images(small_split, shards):
    real = np.bincount(read_image_set(small_split, "train", False).labels, minlength=10)
    mix = load_training_set(small_split, "train", "mix", shards, params()["mix"], seed=0)
    assert np.array_equal(mix.counts(), np.full(10, real.max()))
    assert np.array_equal(np.bincount(mix.labels[~mix.synthetic], minlength=10), real)
    capped = mix_counts(real, np.full(10, 40), params(mix={"target_per_class": 50, "max_synthetic_fraction": 0.5})["mix"])
    assert capped[1] == 50 and np.array_equal(capped[0], np.minimum(np.maximum(50 - real, 0), 25))
    synthetic = load_training_set(small_split, "train", "synthetic", shards, params()["mix"], seed=0)
    assert len(synthetic) == 600 and synthetic.synthetic.all()


def test_pretrain_on_synthetic_then_finetune_on_mix(small_split, shards, tmp_path):
    pre = run_training(small_split, "train", shards, "synthetic", None, tmp_path / "pre",
                       params(pretrain={"epochs": 1}), "cpu")
    assert pre["epochs_run"] == 1 and pre["mode"] == "synthetic"
    fine = run_training(small_split, "train", shards, "mix", str(tmp_path / "pre"), tmp_path / "fine",
                        params(finetune={"lr": 0.0005, "epochs": 1}), "cpu")
    assert fine["init_info"]["skipped"] == [] and fine["train"]["lr"] == 0.0005
    assert fine["data"]["target_per_class"] == max(fine["data"]["real_counts"])


def test_validation_selection_never_uses_query(small_split, tmp_path):
    record = run_training(small_split, "train_balanced", [], "real", None, tmp_path / "run",
                          params(train={**TINY, "validation_fraction": 0.2, "select": "best"}), "cpu")
    assert sum(record["validation_counts"]) == 120 and sum(record["train_counts"]) == 480
    assert 1 <= record["selected_epoch"] <= 2 and record["best_val_map"] > 0.1
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,lr,val_map") and len(history) == 3
    with pytest.raises(LthashError, match="validation_fraction"):
        run_training(small_split, "train", [], "real", None, tmp_path / "bad", params(train={**TINY, "select": "best"}), "cpu")


@pytest.mark.parametrize("precision,distributed", [("bf16", "none"), ("no", "accelerate")])
def test_mixed_precision_and_accelerate_paths_on_cpu(small_split, tmp_path, precision, distributed):
    run = tmp_path / "run"
    record = run_training(small_split, "train", [], "real", None, run,
                          params(method="csq", mixed_precision=precision, distributed=distributed), "cpu")
    assert record["final_loss"] is not None and np.isfinite(record["final_loss"])
    codes = encode_array(run, read_image_set(small_split, "query").images[:5])
    assert codes.shape == (5, 2) and codes.dtype == np.uint8


def test_unknown_method_lists_the_registry(small_split, tmp_path):
    result = subprocess.run([sys.executable, "-m", "lthash.cli", "train", "--split", str(small_split),
                             "--out", str(tmp_path / "run"), "--params", '{"method": "hashnet"}', "--device", "cpu"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "config key 'hashing.method': 'hashnet'" in result.stderr
    assert all(name in result.stderr for name in REGISTRY)
    assert not (tmp_path / "run").exists()


def test_list_valued_choice_needs_one_value_per_job(small_split, tmp_path):
    with pytest.raises(LthashError, match="hashing.bits"):
        run_training(small_split, "train", [], "real", None, tmp_path / "run", params(bits=[16, 32]), "cpu")


def test_missing_pretrained_file_names_key_and_path(small_split, tmp_path):
    missing = tmp_path / "resnet18.safetensors"
    spec = params(backbone="resnet18", pretrained={"resnet18": str(missing)})
    with pytest.raises(LthashError, match=r"hashing\.pretrained\.resnet18.*resnet18\.safetensors"):
        run_training(small_split, "train", [], "real", None, tmp_path / "run", spec, "cpu")


def test_pretrained_file_is_loaded(small_split, tmp_path):
    from lthash.hashing.backbones import Backbone
    from lthash.hashing.model import build_model
    from lthash.io import save_safetensors

    source = Backbone("cnn", 1, 28)
    weights = tmp_path / "cnn.safetensors"
    save_safetensors(weights, source.net.state_dict())
    model = build_model(params(pretrained={"cnn": str(weights)}, cnn={"width": 16}), "orthohash", "cnn", 16, 10, (28, 28, 1),
                        np.ones(10), seed=5)
    for key, value in source.net.state_dict().items():
        assert torch.equal(model.backbone.net.state_dict()[key], value)
    pth = tmp_path / "cnn.pth"
    torch.save(source.net.state_dict(), pth)
    build_model(params(pretrained={"cnn": str(pth)}, cnn={"width": 16}), "dpn", "cnn", 16, 10, (28, 28, 1), np.ones(10), seed=5)


def test_shard_with_wrong_image_shape_is_refused(small_split, tmp_path):
    shard = tmp_path / "bad.h5"
    write_shard(shard, np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(LthashError, match=r"bad\.h5.*\(32, 32, 3\).*\(28, 28, 1\)"):
        run_training(small_split, "train", [shard], "mix", None, tmp_path / "run", params(), "cpu")
    assert not (tmp_path / "run").exists()


def test_encode_refuses_images_of_another_shape(small_split, tmp_path):
    run = tmp_path / "run"
    run_training(small_split, "train", [], "real", None, run, params(method="lsh"), "cpu")
    with pytest.raises(LthashError, match=r"\(28, 28, 1\)"):
        encode_array(run, np.zeros((2, 32, 32, 3), np.uint8))


def test_shallow_on_features_of_a_backbone_trained_on_the_split(small_split, tmp_path):
    deep = tmp_path / "deep"
    run_training(small_split, "train", [], "real", None, deep, params(), "cpu")
    shallow = params(method="itq", shallow={"features": "backbone"})
    with pytest.raises(LthashError, match="hashing.pretrained.cnn"):
        run_training(small_split, "train", [], "real", None, tmp_path / "bad", shallow, "cpu")
    record = run_training(small_split, "train", [], "real", str(deep), tmp_path / "itq", shallow, "cpu")
    assert record["init_info"]["loaded"] > 0
    codes = encode_array(tmp_path / "itq", read_image_set(small_split, "query").images)
    assert codes.shape == (200, 2) and len(np.unique(codes, axis=0)) > 10

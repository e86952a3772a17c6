"""hashing.mix.synthetic_weight, synthetic_label_smoothing and replacement_probability: the loss of a mixed batch on a real
OrthoHash model and real Fashion-MNIST images, the errors naming the keys, and real mixed runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lthash.config import validate_config
from lthash.workflow import stage_config
from lthash.errors import LthashError
from lthash.generate.plan import make_plan
from lthash.generate.resample import resample_shard
from lthash.hashing.losses.synthetic import SyntheticLoss, mixed_batch_loss
from lthash.hashing.model import build_model
from lthash.hashing.train import run_training
from lthash.io import load_safetensors, read_attrs, read_image_set
from lthash.workflow.arms import check_matrix

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def params(method: str = "orthohash", **mix):
    return stage_config("train", json.dumps({"method": method, "bits": 16, "cnn": {"width": 8},
                                             "train": {"epochs": 1, "batch_size": 32, "lr": 0.002},
                                             "mix": mix}))["hashing"]


@pytest.fixture(scope="module")
def batch(small_split):
    """A real OrthoHash model's output on 24 real images, the first 10 marked synthetic."""
    train = read_image_set(small_split, "train")
    model = build_model(params(), "orthohash", "cnn", 16, 10, (28, 28, 1), np.bincount(train.labels, minlength=10), 0)
    images = torch.from_numpy(train.images[:24]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = model(images)
    synthetic = torch.arange(24) < 10
    return model, out, torch.from_numpy(train.labels[:24]), synthetic


def test_weight_one_without_smoothing_is_the_methods_loss_of_the_whole_batch(batch):
    model, out, labels, synthetic = batch
    assert torch.equal(mixed_batch_loss(model, out, labels, synthetic, SyntheticLoss()), model.loss(out, labels))
    assert torch.equal(mixed_batch_loss(model, out, labels, torch.zeros(24, dtype=torch.bool), SyntheticLoss(0.3)),
                       model.loss(out, labels)), "a batch without synthetic images trains plainly"


def test_the_weight_moves_the_loss_from_the_whole_batch_to_the_real_images(batch):
    model, out, labels, synthetic = batch
    real_only = model.loss({k: v[~synthetic] for k, v in out.items()}, labels[~synthetic])
    synthetic_only = model.loss({k: v[synthetic] for k, v in out.items()}, labels[synthetic])
    whole = model.loss(out, labels)
    assert float(mixed_batch_loss(model, out, labels, synthetic, SyntheticLoss(1e-9))) == pytest.approx(float(real_only))
    half = float(mixed_batch_loss(model, out, labels, synthetic, SyntheticLoss(0.5)))
    assert half == pytest.approx((14 * float(real_only) + 0.5 * 10 * float(synthetic_only)) / (14 + 5), rel=1e-6)
    assert min(float(real_only), float(whole)) <= half <= max(float(real_only), float(whole))


def test_smoothing_changes_only_the_synthetic_targets(batch):
    model, out, labels, synthetic = batch
    rule = SyntheticLoss(1.0, 0.2)
    cosine = out["cosine"]
    margin = F.one_hot(labels, 10).float() * 0.2
    logits = 8.0 * (cosine - margin)
    per_image = torch.where(synthetic, F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.2),
                            F.cross_entropy(logits, labels, reduction="none"))
    assert float(mixed_batch_loss(model, out, labels, synthetic, rule)) == pytest.approx(float(per_image.mean()), rel=1e-5)


def test_smoothing_needs_class_logits_naming_the_key(small_split, tmp_path):
    with pytest.raises(LthashError, match=r"'hashing.mix.synthetic_label_smoothing' is 0.1, but csq has no class logits"):
        run_training(small_split, "train", [], "mix", None, tmp_path / "run", params("csq", synthetic_label_smoothing=0.1),
                     "cpu")
    assert not (tmp_path / "run").exists()
    config = validate_config({"hashing": {"mix": {"synthetic_label_smoothing": 0.1}},
                              "experiment": {"methods": ["orthohash", "dpn"]}})
    with pytest.raises(LthashError, match=r"'hashing.mix.synthetic_label_smoothing' .* but dpn has no class logits"):
        check_matrix(config)


@pytest.mark.parametrize("key, value", [("synthetic_weight", 0), ("synthetic_weight", 1.5),
                                        ("synthetic_label_smoothing", 1.0), ("synthetic_label_smoothing", -0.1),
                                        ("replacement_probability", 1.5), ("replacement_probability", -0.1)])
def test_out_of_range_values_are_schema_errors_naming_the_key(key, value):
    with pytest.raises(LthashError, match=rf"hashing\.mix\.{key}"):
        params(**{key: value})


@pytest.fixture(scope="module")
def copies(small_split, tmp_path_factory):
    """Mix shards of copies of the long-tail images (the resampled arm's), filling every class to 60."""
    counts = read_attrs(small_split, "train")["counts"]
    plan = make_plan(counts, read_attrs(small_split)["class_names"], pretrain_per_class=10, shard_size=100)
    folder = tmp_path_factory.mktemp("copies")
    shards = []
    for cls in range(10):
        for k in range(len(plan["classes"][cls]["mix"]["shards"])):
            shards.append(folder / f"mix{cls}-{k}.h5")
            resample_shard(small_split, plan, cls, "mix", k, shards[-1], {"seed": 0})
    return shards


def test_a_mixed_run_records_the_rule_and_trains_another_model_deterministically(small_split, copies, tmp_path):
    def train(name, **mix):
        run_training(small_split, "train", copies, "mix", None, tmp_path / name, params(**mix), "cpu")
        return load_safetensors(tmp_path / name / "model.safetensors")[0]

    plain, weighted, again, smoothed, replaced = (
        train("plain"), train("weighted", synthetic_weight=0.5), train("again", synthetic_weight=0.5),
        train("smoothed", synthetic_label_smoothing=0.1), train("replaced", replacement_probability=0.5))
    assert all(torch.equal(weighted[key], again[key]) for key in plain)
    for other in (weighted, smoothed, replaced):
        assert any(not torch.equal(other[key], plain[key]) for key in plain)
    record = json.loads((tmp_path / "weighted" / "run.json").read_text())
    assert record["params"]["mix"]["synthetic_weight"] == 0.5


def test_the_rule_applies_to_mixed_runs_only(small_split, tmp_path):
    """Real-data runs have no synthetic images; the same keys leave them bit-identical."""
    run_training(small_split, "train", [], "real", None, tmp_path / "plain", params(), "cpu")
    run_training(small_split, "train", [], "real", None, tmp_path / "keyed",
                 params(synthetic_weight=0.2, replacement_probability=0.5), "cpu")
    plain, keyed = (load_safetensors(tmp_path / name / "model.safetensors")[0] for name in ("plain", "keyed"))
    assert all(torch.equal(plain[key], keyed[key]) for key in plain)

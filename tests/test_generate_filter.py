"""Filtering over-generated shards with a judge trained on the long-tail set alone (class-balanced)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lthash.cli import main
from lthash.config import validate_config
from lthash.errors import LthashError
from lthash.workflow import stage_config
from lthash.generate.filtering import REFERENCE_FILE, keep_in_distribution, keep_most_confident, read_reference
from lthash.generate.judge import class_weights, load_judge, train_judge, judge_weights
from lthash.generate.models import build_tiny_components, load_components, save_components
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.plan import make_plan
from lthash.generate.synthesize import candidate_count, shard_seed, synthesize_shard, BASE_GENERATOR
from lthash.io import ImageSet, read_attrs, read_image_set, read_json, write_image_sets, write_json

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
EPOCHS = 10


def copy_split(src, out, change):
    """The split file with ``change(groups)`` applied (groups: name -> ImageSet)."""
    import h5py

    with h5py.File(src, "r") as h5:
        names = list(h5.keys())
    groups = {name: read_image_set(src, name) for name in names}
    change(groups)
    attrs = {k: v for k, v in read_attrs(src).items() if k not in ("complete", "format_version")}
    write_image_sets(out, groups, attrs=attrs)
    return out


def add_validation(groups):
    database = groups["database"]
    keep = np.concatenate([np.flatnonzero(database.labels == c)[-10:] for c in range(10)])
    groups["validation"] = ImageSet(images=database.images[keep], labels=database.labels[keep],
                                    index=database.index[keep])


@pytest.fixture(scope="module")
def judged(small_split, tmp_path_factory):
    """A split with a validation group, and its filter judge written by the CLI."""
    root = tmp_path_factory.mktemp("filter")
    split = copy_split(small_split, root / "split.h5", add_validation)
    params = json.dumps({"generate": {"seed": 0, "filter_judge": {"epochs": EPOCHS}}})
    assert main(["filter-judge", "--split", str(split), "--out", str(root / "judge"), "--params", params,
                 "--threads", "1"]) == 0
    return root, split, root / "judge"


def test_class_weights_are_inverse_counts_normalised():
    weights = class_weights(np.array([0] * 8 + [1] * 2 + [3] * 4), 4)
    np.testing.assert_allclose(weights, np.array([1 / 8, 1 / 2, 0, 1 / 4]) / np.mean([1 / 8, 1 / 2, 1 / 4]))


def test_filter_judge_is_class_balanced_and_reports_validation_accuracy(judged):
    root, split, folder = judged
    record = read_json(folder / "judge.json")
    assert record["trained_on"] == "train" and record["class_balanced"] is True
    judge, meta = load_judge(judge_weights(folder))
    assert meta["class_balanced"] == "true" and judge.num_classes == 10
    validation = read_image_set(split, "validation")
    assert record["validation_accuracy"] == pytest.approx(float((judge.predict(validation.images)
                                                                  == validation.labels).mean()))
    # same seed and schedule, plain cross-entropy: the tail classes get far less probability
    train, query = read_image_set(split, "train"), read_image_set(split, "query")
    plain = train_judge(train.images, train.labels, 10, 0, class_balanced=False, epochs=EPOCHS)
    tail = np.argsort(np.bincount(train.labels, minlength=10), kind="stable")[:3]
    balanced_mass = judge.predict_proba(query.images)[:, tail].sum(1).mean()
    plain_mass = plain.predict_proba(query.images)[:, tail].sum(1).mean()
    assert balanced_mass > 1.5 * plain_mass
    np.testing.assert_allclose(judge.predict_proba(query.images[:5]).sum(1), 1.0, rtol=1e-6)


@pytest.fixture(scope="module")
def synth(judged):
    root, split, folder = judged
    base = save_components(build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, 0, TINY),
                           root / "base")
    names = read_attrs(split)["class_names"]
    plan = make_plan([60, 30, 20, 15, 12, 10, 8, 7, 6, 6], names, pretrain_per_class=16, shard_size=16)
    write_json(root / "plan.json", plan)
    return root, split, folder, base, plan


SYNTHESIS = {"steps": 3, "batch_size": 16, "filter_factor": 2}


def test_filter_keeps_count_most_confident_in_drawing_order(synth):
    root, split, folder, base, plan = synth
    params = stage_config("synthesize", json.dumps({"seed": 3, "synthesis": SYNTHESIS}))["generate"]
    out = root / "filtered.h5"
    summary = synthesize_shard(base, None, 5, "pretrain", 0, plan, split, out, params, progress=False,
                               judge_dir=folder)
    assert summary["images"] == 16 and summary["candidates"] == 32
    got = read_image_set(out, "synthetic")
    assert got.images.shape == (16, 28, 28, 1)
    # redraw the 32 candidates the shard drew and rank them with the judge
    components = load_components(base)
    seed = shard_seed(3, BASE_GENERATOR, 5, "pretrain", 0)
    candidates = generate(components, [got.attrs["prompt"]] * 32, torch.Generator().manual_seed(seed),
                          SamplerConfig.for_model(components, params["synthesis"]), size=(28, 28, 1))
    judge, _ = load_judge(judge_weights(folder))
    confidence = judge.predict_proba(candidates)[:, 5]
    best = np.sort(np.argsort(-confidence, kind="stable")[:16])
    np.testing.assert_array_equal(got.extra["candidate"], best)
    np.testing.assert_array_equal(got.images, candidates[best])
    np.testing.assert_allclose(got.extra["judge_probability"], confidence[best], rtol=1e-5)
    assert confidence[best].min() >= np.delete(confidence, best).max()
    assert got.attrs["filter_factor"] == 2 and len(got.attrs["filter_judge"]) == 64


def test_filtering_with_real_init_records_the_kept_images_init(synth):
    root, split, folder, base, plan = synth
    real_init = {**SYNTHESIS, "init": "real", "strength": 0.7}
    params = stage_config("synthesize", json.dumps({"seed": 3, "synthesis": real_init}))["generate"]
    out = root / "filtered_real.h5"
    synthesize_shard(base, None, 5, "pretrain", 0, plan, split, out, params, progress=False, judge_dir=folder)
    got = read_image_set(out, "synthetic")
    train = read_image_set(split, "train")
    assert len(got.extra["init_index"]) == 16
    assert set(got.extra["init_index"].tolist()) <= set(train.index[train.labels == 5].tolist())
    assert synthesize_shard(base, None, 5, "pretrain", 0, plan, split, out, params, progress=False,
                            judge_dir=folder)["skipped"] is True
    unfiltered = stage_config("synthesize",
                              json.dumps({"seed": 3, "synthesis": {**real_init, "filter_factor": 1}}))["generate"]
    assert synthesize_shard(base, None, 5, "pretrain", 0, plan, split, out, unfiltered,
                            progress=False)["skipped"] is False


def test_bad_filter_settings_are_named(synth, tmp_path):
    root, split, folder, base, plan = synth
    with pytest.raises(LthashError, match=r"generate\.synthesis\.filter_factor'.*minimum 1"):
        validate_config({"dataset": {}, "generate": {"synthesis": {"filter_factor": 0.5}}})
    command = ["synthesize", "--model", str(base), "--class", "5", "--purpose", "pretrain", "--shard", "0",
               "--plan", str(root / "plan.json"), "--split", str(split), "--out", str(tmp_path / "x.h5"),
               "--threads", "1", "--device", "cpu"]
    with_factor = json.dumps({"generate": {"synthesis": {"filter_factor": 2}}})
    with pytest.raises(LthashError, match="filter_factor' is 2: filtering needs --judge"):
        synthesize_shard(base, None, 5, "pretrain", 0, plan, split, tmp_path / "x.h5",
                         stage_config("synthesize", with_factor)["generate"], progress=False)
    assert main(command + ["--params", with_factor]) == 2
    assert main(command + ["--params", "{}", "--judge", str(folder)]) == 2
    assert not (tmp_path / "x.h5").exists()
    # a judge trained on another split's long-tail set is refused
    other = copy_split(split, tmp_path / "other.h5", lambda g: g.__setitem__("train", ImageSet(
        images=g["train"].images[1:], labels=g["train"].labels[1:], index=g["train"].index[1:])))
    with pytest.raises(LthashError, match="trained on another split"):
        synthesize_shard(base, None, 5, "pretrain", 0, plan, other, tmp_path / "x.h5",
                         stage_config("synthesize", with_factor)["generate"], progress=False, judge_dir=folder)


def test_in_distribution_keeps_the_first_inside_in_drawing_order_then_the_nearest():
    distances = np.array([3.0, 0.5, 2.5, 0.9, 1.0, 0.1, 4.0])
    # inside radius 1: positions 1, 3, 4, 5; the first two in drawing order are kept, not the nearest two
    np.testing.assert_array_equal(keep_in_distribution(distances, 1.0, 2), [1, 3])
    # only four inside: the nearest outside one (2.5 at position 2) tops the shard up to five
    np.testing.assert_array_equal(keep_in_distribution(distances, 1.0, 5), [1, 2, 3, 4, 5])


def test_in_distribution_filter_keeps_candidates_within_the_class_radius(synth, tmp_path):
    _, split, _, base, plan = synth
    params = json.dumps({"generate": {"seed": 0, "filter_judge": {"epochs": EPOCHS, "keep": "in_distribution"}}})
    folder = tmp_path / "judge"
    assert main(["filter-judge", "--split", str(split), "--out", str(folder), "--params", params,
                 "--threads", "1"]) == 0
    judge, _ = load_judge(judge_weights(folder))
    train = read_image_set(split, "train")
    centres, radii = read_reference(folder)
    features = judge.features(train.images[train.labels == 5]).astype(np.float64)
    np.testing.assert_allclose(centres[5], features.mean(0), rtol=1e-5, atol=1e-6)
    assert radii[5] == pytest.approx(np.linalg.norm(features - features.mean(0), axis=1).max(), rel=1e-5)

    synthesis = stage_config("synthesize", json.dumps({"seed": 3, "synthesis": SYNTHESIS}))["generate"]
    out = tmp_path / "in_distribution.h5"
    synthesize_shard(base, None, 5, "pretrain", 0, plan, split, out, synthesis, progress=False, judge_dir=folder)
    got = read_image_set(out, "synthetic")
    assert got.attrs["filter_keep"] == "in_distribution" and len(got.images) == 16
    components = load_components(base)
    candidates = generate(components, [got.attrs["prompt"]] * 32,
                          torch.Generator().manual_seed(shard_seed(3, BASE_GENERATOR, 5, "pretrain", 0)),
                          SamplerConfig.for_model(components, synthesis["synthesis"]), size=(28, 28, 1))
    distance = np.linalg.norm(judge.features(candidates).astype(np.float64) - centres[5], axis=1)
    expected = keep_in_distribution(distance, float(radii[5]), 16)
    np.testing.assert_array_equal(got.extra["candidate"], expected)
    np.testing.assert_array_equal(got.images, candidates[expected])
    np.testing.assert_allclose(got.extra["judge_distance"], distance[expected] / radii[5], rtol=1e-4)
    # the two rules keep different images from the same candidates (not the most confident ones)
    confident = keep_most_confident(judge.predict_proba(candidates), 5, 16)
    assert not np.array_equal(confident, got.extra["candidate"])

    # a judge folder from before the rule existed is refused with the command that mends it
    (folder / REFERENCE_FILE).unlink()
    with pytest.raises(LthashError, match="no class_features.safetensors.*rerun lthash filter-judge"):
        synthesize_shard(base, None, 4, "pretrain", 0, plan, split, tmp_path / "y.h5", synthesis,
                         progress=False, judge_dir=folder)
    assert not (tmp_path / "y.h5").exists()
    with pytest.raises(LthashError, match=r"generate\.filter_judge\.keep'"):
        validate_config({"dataset": {}, "generate": {"filter_judge": {"keep": "typical"}}})


def test_candidate_count_rounds_before_the_ceiling():
    assert candidate_count(10, 1.1) == 11 and candidate_count(16, 1.5) == 24
    assert candidate_count(7, 1.2) == 9 and candidate_count(5, 1) == 5


def test_a_loaded_judge_still_moves_like_any_torch_module(judged):
    """The judge's batched scoring helper must not shadow nn.Module._apply, which .to(), .float()
    and .cuda() call: a trained judge moves and scores the same afterwards."""
    root, split, folder = judged
    judge, _ = load_judge(judge_weights(folder))
    images = read_image_set(split, "train").images[:20]
    before = judge.logits(images)
    judge.to("cpu").float()
    np.testing.assert_array_equal(judge.logits(images), before)
    assert judge.features(images).shape == (20, judge.head.in_features)

"""hashing.train.sampling class_balanced (the one-stage baseline) and the run identity in run.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lthash.errors import LthashError
from lthash.workflow import stage_config
from lthash.hashing.data import class_balanced_draw, epoch_batches, replace_real
from lthash.hashing.train import run_training
from lthash.io import load_safetensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = np.repeat(np.arange(3), [200, 20, 2])


def test_class_balanced_batches_draw_every_class_equally_often():
    batches = [epoch_batches(len(LABELS), 32, 0, epoch, balanced_labels=LABELS) for epoch in range(60)]
    drawn = np.concatenate([np.concatenate(b) for b in batches])
    share = np.bincount(LABELS[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.02), share
    within = np.bincount(drawn[LABELS[drawn] == 1], minlength=len(LABELS))[200:220]
    assert within.min() > 0.6 * within.mean(), "images of a class are drawn uniformly"
    instance = epoch_batches(len(LABELS), 32, 0, 0)
    assert [len(b) for b in batches[0]] == [len(b) for b in instance], "same steps per epoch as instance sampling"
    share_instance = np.bincount(LABELS[np.concatenate(instance)], minlength=3) / len(LABELS)
    assert share_instance[0] > 0.85


def test_class_balanced_batches_are_a_function_of_seed_and_epoch():
    """What makes a resumed run bit-identical: epoch e draws the same batches whenever it runs."""
    later = epoch_batches(len(LABELS), 16, 3, 5, balanced_labels=LABELS)
    for epoch in range(5):
        epoch_batches(len(LABELS), 16, 3, epoch, balanced_labels=LABELS)
    again = epoch_batches(len(LABELS), 16, 3, 5, balanced_labels=LABELS)
    assert all(np.array_equal(a, b) for a, b in zip(later, again))
    other = epoch_batches(len(LABELS), 16, 3, 6, balanced_labels=LABELS)
    assert not all(np.array_equal(a, b) for a, b in zip(later, other))
    draw = class_balanced_draw(LABELS, np.random.default_rng(0))
    assert len(draw) == len(LABELS) and draw.max() < len(LABELS)


def test_replacement_swaps_real_images_for_synthetic_ones_of_their_class_only():
    # class 0: 200 real, no synthetic; class 1: 20 real + 100 synthetic; class 2: 2 real + 50 synthetic
    labels = np.repeat([0, 1, 1, 2, 2], [200, 20, 100, 2, 50])
    synthetic = np.repeat([False, False, True, False, True], [200, 20, 100, 2, 50])
    order = np.concatenate([np.random.default_rng(e).permutation(len(labels)) for e in range(200)])
    swapped = replace_real(order, labels, synthetic, 0.1, np.random.default_rng(0))
    changed = swapped != order
    assert np.array_equal(labels[swapped], labels[order]), "a swap keeps the class"
    assert synthetic[swapped[changed]].all() and not synthetic[order[changed]].any()
    assert not changed[labels[order] == 0].any(), "a class without synthetic images keeps its real ones"
    share = changed[(labels[order] == 1) & ~synthetic[order]].mean()
    assert 0.08 < share < 0.12, share
    assert np.array_equal(replace_real(order, labels, synthetic, 0.0, np.random.default_rng(0)), order)
    batches = epoch_batches(len(labels), 32, 3, 4, replacement=(labels, synthetic, 0.1))
    again = epoch_batches(len(labels), 32, 3, 4, replacement=(labels, synthetic, 0.1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again)), "a function of (seed, epoch)"
    plain = epoch_batches(len(labels), 32, 3, 4)
    assert all(np.array_equal(a, b) for a, b in zip(plain, epoch_batches(len(labels), 32, 3, 4,
                                                                           replacement=(labels, synthetic, 0.0))))


def params(**train):
    return stage_config("train", json.dumps({"bits": 16, "cnn": {"width": 8},
                                             "train": {"epochs": 1, "batch_size": 32, "lr": 0.002,
                                                       **train}}))["hashing"]


def test_a_class_balanced_run_records_its_sampling_and_identity(small_split, tmp_path):
    tags = {"arm": "class_balanced", "generator": "", "synthesis": ""}
    record = run_training(small_split, "train", [], "real", None, tmp_path / "run",
                          params(sampling="class_balanced"), "cpu", tags=tags)
    written = json.loads((tmp_path / "run" / "run.json").read_text())
    assert written["train"]["sampling"] == "class_balanced" == record["train"]["sampling"]
    assert written["identity"] == {"arm": "class_balanced", "generator": None, "synthesis": None,
                                   "method": "orthohash", "backbone": "cnn", "bits": 16}
    run_training(small_split, "train", [], "real", None, tmp_path / "instance", params(), "cpu")
    balanced, instance = (load_safetensors(tmp_path / name / "model.safetensors")[0] for name in ("run", "instance"))
    assert any(not torch.equal(balanced[key], instance[key]) for key in balanced), "the sampling changes the batches"


def test_a_tag_may_not_contradict_the_params(small_split, tmp_path):
    with pytest.raises(LthashError, match="hashing.bits"):
        run_training(small_split, "train", [], "real", None, tmp_path / "run", params(), "cpu", tags={"bits": "64"})
    assert not (tmp_path / "run").exists()

"""The base model's corpus (the split's images, or the dataset's images outside every split
group) and captions (super-category or class name), the validation group, and the refusal of
a base whose corpus meets the split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lthash.config import validate_config
from lthash.data.split import run_split
from lthash.errors import LthashError
from lthash.generate.base import run_base
from lthash.workflow import stage_config
from lthash.generate.corpus import (caption_words, check_base_corpus, load_corpus, prompt_words, read_corpus,
                                    split_indices)
from lthash.generate.models import load_components
from lthash.io import read_image_set

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}


def digits_split(folder, seed=0, validation=5):
    cfg = validate_config({"dataset": {"name": "digits"},
                           "split": {"query_per_class": 10, "database_per_class": 60, "train_per_class": 30,
                                     "validation_per_class": validation, "seed": seed,
                                     "longtail": {"imbalance_factor": 10}}})
    out = folder / f"split{seed}.h5"
    run_split(cfg["dataset"], cfg["split"], out, folder / f"split{seed}.json")
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return digits_split(tmp_path_factory.mktemp("corpus"))


def test_validation_group_is_balanced_and_outside_query_and_database(split):
    validation = read_image_set(split, "validation")
    assert np.bincount(validation.labels, minlength=10).tolist() == [5] * 10
    for group in ("query", "database", "train", "train_balanced"):
        assert not np.intersect1d(validation.index, read_image_set(split, group).index).size, group


def test_validation_draw_leaves_the_other_groups_where_they_were(tmp_path):
    with_validation, without = digits_split(tmp_path, validation=5), None
    (tmp_path / "b").mkdir()
    without = digits_split(tmp_path / "b", validation=0)
    for group in ("query", "database", "train", "train_balanced"):
        assert np.array_equal(read_image_set(with_validation, group).index, read_image_set(without, group).index)
    with pytest.raises(LthashError, match="validation"):
        read_image_set(without, "validation")


def test_outside_split_corpus_is_every_image_in_no_group(split):
    corpus = load_corpus(split, "outside_split")
    used = split_indices(split)
    assert len(corpus.index) + len(used) == 1797
    assert not np.intersect1d(corpus.index, used).size
    assert corpus.record["images"] == len(corpus.index) and corpus.record["dataset"] == "digits"
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert np.array_equal(corpus.labels, digits.target[corpus.index])
    same = load_corpus(split, "split_train")
    assert np.array_equal(same.index, read_image_set(split, "train").index)


def test_class_name_captions_and_the_words_a_base_records(split):
    names = ["T-shirt/top", "Ankle boot", "3"]
    assert caption_words(names, "class_name", {}) == ["tshirttop", "ankleboot", "three"]
    assert caption_words(names[:2], "category", {}) == ["clothing", "footwear"]
    assert prompt_words({"categories": {"a": "x", "b": "y"}}, ["a", "b"], {}) == ["x", "y"]
    with pytest.raises(LthashError, match="other classes"):
        prompt_words({"categories": {"a": "x"}}, ["a", "b"], {})
    with pytest.raises(LthashError, match="generate.base.captions"):
        validate_config({"dataset": {}, "generate": {"base": {"captions": "names"}}})
    with pytest.raises(LthashError, match="generate.base.corpus"):
        validate_config({"dataset": {}, "generate": {"base": {"corpus": "everything"}}})


def test_a_base_trained_outside_one_split_is_refused_with_another(split, tmp_path):
    params = stage_config("base", json.dumps({"generate": {"base": {
        "architecture": TINY, "steps": 2, "batch_size": 4, "checkpoint_every": 0, "warmup_steps": 1,
        "samples_per_category": 1, "corpus": "outside_split", "captions": "class_name"}}}))["generate"]
    base = tmp_path / "base"
    report = run_base(split, base, params, progress=False)
    assert report["corpus"]["kind"] == "outside_split"
    assert set(report["prompts"]) == {f"a photo of a {w}" for w in
                                      ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")}
    assert load_components(base).info["categories"]["7"] == "seven"
    record, index = read_corpus(base)
    assert len(index) == record["images"]
    check_base_corpus(base, split)  # its own split: disjoint
    other = digits_split(tmp_path, seed=1)  # another seed draws other images into the groups
    with pytest.raises(LthashError, match="generate.base.model.*shares"):
        check_base_corpus(base, other)
    (base / "corpus.safetensors").write_bytes((base / "corpus.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(LthashError, match="corpus"):
        check_base_corpus(base, split)

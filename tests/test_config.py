"""Config validation: defaults filled, bad keys named."""

from __future__ import annotations

import pytest

from lthash.config import load_config, validate_config
from lthash.errors import LthashError


def test_default_config_validates_and_fills_defaults():
    config = load_config("config.yaml")
    assert config["split"]["longtail"]["profile"] == "zipf"
    assert config["results"] == "results"


def test_misspelt_key_is_named_with_suggestion():
    with pytest.raises(LthashError, match=r"unknown config key 'split.query_per_clas'; did you mean 'query_per_class'"):
        validate_config({"dataset": {}, "split": {"query_per_clas": 3}})


def test_wrong_type_and_range_are_named():
    with pytest.raises(LthashError) as info:
        validate_config({"dataset": {"name": "mnist"}, "split": {"seed": -1, "train_per_class": "many"}})
    text = str(info.value)
    assert "dataset.name" in text and "fashion-mnist" in text
    assert "split.seed" in text and "split.train_per_class" in text

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


@pytest.mark.parametrize("section,old,new", [
    ({"generate": {"base": {"learning_rate": 0.001}}}, "generate.base.learning_rate", "lr"),
    ({"hashing": {"train": {"learning_rate": 0.001}}}, "hashing.train.learning_rate", "lr"),
    ({"hashing": {"precision": "bf16"}}, "hashing.precision", "mixed_precision"),
])
def test_renamed_keys_are_refused_naming_the_new_key(section, old, new):
    with pytest.raises(LthashError, match=rf"unknown config key '{old}'; did you mean '{new}'\?"):
        validate_config({"dataset": {}, **section})


def test_one_spelling_of_lr_and_mixed_precision_validates():
    config = validate_config({"dataset": {}, "generate": {"base": {"lr": 0.001}},
                              "hashing": {"mixed_precision": "bf16", "train": {"lr": 0.001}}})
    assert config["generate"]["base"]["lr"] == 0.001 and config["hashing"]["mixed_precision"] == "bf16"
    defaults = validate_config({"dataset": {}})
    assert defaults["hashing"]["mixed_precision"] == "no" and defaults["generate"]["base"]["lr"] == 0.002
    assert defaults["generate"]["personalize"]["mixed_precision"] == "no"
    with pytest.raises(LthashError, match=r"'hashing.mixed_precision': 'fp32' is not one of"):
        validate_config({"dataset": {}, "hashing": {"mixed_precision": "fp32"}})


def test_wrong_type_and_range_are_named():
    with pytest.raises(LthashError) as info:
        validate_config({"dataset": {"name": "mnist"}, "split": {"seed": -1, "train_per_class": "many"}})
    text = str(info.value)
    assert "dataset.name" in text and "fashion-mnist" in text
    assert "split.seed" in text and "split.train_per_class" in text


def test_config_depends_on_no_workflow_module():
    """One direction only: lthash.workflow reads the schemas through lthash.config, and
    lthash.config imports nothing of lthash.workflow, not even inside a function."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import lthash.config

    tree = ast.parse(Path(lthash.config.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith("lthash.workflow")}, imported
    code = ("import sys, lthash.config as c; c.validate_config({'dataset': {}}); "
            "print(sorted(m for m in sys.modules if m.startswith('lthash.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "lthash.workflow" not in loaded, loaded

"""Shipped base models: the manifest's checksums and corpus split are checked before any job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lthash.config import validate_config
from lthash.errors import LthashError
from lthash.generate import shipped
from lthash.generate.base import run_base
from lthash.workflow import stage_config
from lthash.data.split import run_split
from lthash.testing.faults import snapshot

ROOT = Path(__file__).resolve().parents[1]
TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
SPLIT = {"query_per_class": 10, "database_per_class": 60, "train_per_class": 30, "seed": 0,
         "longtail": {"imbalance_factor": 10}}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped")
    cfg = validate_config({"dataset": {"name": "digits"}, "split": SPLIT})
    split = folder / "split.h5"
    run_split(cfg["dataset"], cfg["split"], split, folder / "split.json")
    params = stage_config("base", json.dumps({"generate": {"base": {
        "architecture": TINY, "steps": 2, "batch_size": 4, "checkpoint_every": 0, "warmup_steps": 1,
        "samples_per_category": 1, "corpus": "outside_split", "captions": "class_name"}}}))["generate"]
    run_base(split, folder / "models" / "digits-known", params, progress=False)
    shipped.write_manifest(folder / "models" / "digits-known", "lthash base ...")
    return folder / "models"


def config_for(**split):
    return validate_config({"dataset": {"name": "digits"}, "split": {**SPLIT, **split},
                            "generate": {"base": {"model": "package:digits-known"}}})


def test_a_matching_config_passes_and_another_split_is_refused(models_dir, monkeypatch):
    monkeypatch.setattr(shipped, "MODELS_DIR", models_dir)
    shipped.check_base_choice(config_for())
    assert shipped.base_folder("package:digits-known", "results") == ("results/generate/shipped-base/digits-known",
                                                                       False)
    with pytest.raises(LthashError, match=r"generate.base.model.*split.seed \(0 for the shipped base, 1 here\)"):
        shipped.check_base_choice(config_for(seed=1))
    with pytest.raises(LthashError, match="no shipped base package:nothing"):
        shipped.check_base_choice(validate_config({"dataset": {}, "generate": {"base": {"model": "package:nothing"}}}))


def test_missing_or_changed_weights_are_refused(models_dir, monkeypatch, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    monkeypatch.setattr(shipped, "MODELS_DIR", copy)
    weights = copy / "digits-known" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(LthashError, match="does not match its checksum"):
        shipped.check_base_choice(config_for())
    weights.unlink()
    with pytest.raises(LthashError, match="is missing"):
        shipped.check_base_choice(config_for())


def test_jobs_read_a_verified_copy_left_untouched_while_identical(models_dir, monkeypatch, tmp_path):
    """The copy in the results folder holds the shipped files; a second run leaves it as it is
    (modification times too, so nothing made from it reruns); a changed or added file there is
    replaced by a fresh verified copy."""
    monkeypatch.setattr(shipped, "MODELS_DIR", models_dir)
    monkeypatch.chdir(tmp_path)
    config = config_for()
    copy = tmp_path / shipped.base_folder(config["generate"]["base"]["model"], config["results"])[0]
    shipped.materialise_base(config)
    assert snapshot(copy) == snapshot(models_dir / "digits-known")
    times = {path: path.stat().st_mtime_ns for path in copy.rglob("*")}
    shipped.materialise_base(config)
    assert {path: path.stat().st_mtime_ns for path in copy.rglob("*")} == times
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    shipped.materialise_base(config)
    assert snapshot(copy) == snapshot(models_dir / "digits-known")
    (copy / "added.txt").write_text("not shipped\n")
    shipped.materialise_base(config)
    assert snapshot(copy) == snapshot(models_dir / "digits-known")
    assert [p.name for p in copy.parent.iterdir()] == ["digits-known"]


@pytest.mark.skipif(not shipped.shipped_names(), reason="no base shipped in this checkout")
def test_every_shipped_base_verifies_and_the_default_config_may_use_it():
    for name in shipped.shipped_names():
        manifest = shipped.read_manifest(name)
        shipped.verify_files(name, manifest)
        assert manifest["corpus"]["kind"] == "outside_split" and manifest["command"]
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    config = validate_config(default)
    shipped.check_base_choice(config)


def test_a_key_the_schema_gained_after_the_base_was_trained_reads_as_its_default():
    """The manifest's split sections are completed with today's defaults before they are compared,
    so a new schema key at its default does not refuse a shipped base."""
    from lthash.config import validate_config
    from lthash.generate.shipped import _differences, recorded_split_params

    config = validate_config({"dataset": {}})
    older = {"dataset": {k: v for k, v in config["dataset"].items() if k != "on_corrupt"}, "split": config["split"]}
    assert _differences(recorded_split_params(older), {"dataset": config["dataset"], "split": config["split"]}) == []
    older["dataset"]["name"] = "digits"
    assert _differences(recorded_split_params(older), {"dataset": config["dataset"], "split": config["split"]}) == [
        "dataset.name ('digits' for the shipped base, 'fashion-mnist' here)"]


@pytest.mark.skipif("fashion-mnist-categories" not in shipped.shipped_names(), reason="not shipped here")
def test_the_novel_concept_base_never_saw_a_class_name_and_its_config_may_use_it():
    """The novel-concept regime's base was prompted with super-categories only: no Fashion-MNIST
    class name is in any prompt it trained on, and its config's split is the one it left out."""
    base = json.loads((shipped.MODELS_DIR / "fashion-mnist-categories" / "base.json").read_text())
    assert base["params"]["base"]["captions"] == "category"
    words = {word for prompt in base["prompts"] for word in prompt.split()}
    assert words & {"accessory", "clothing", "footwear"} == {"accessory", "clothing", "footwear"}
    tokens = {name.lower().replace("-", "").replace("/", "").replace(" ", "") for name in base["categories"]}
    assert not words & tokens
    assert sorted(set(base["categories"].values())) == ["accessory", "clothing", "footwear"]
    config = validate_config(yaml.safe_load((ROOT / "workflow/configs/fashion_mnist_novel_concept.yaml").read_text()))
    assert config["generate"]["base"]["model"] == "package:fashion-mnist-categories"
    shipped.check_base_choice(config)

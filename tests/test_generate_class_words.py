"""Class words from a user's folder names: numbered folders, WordNet ids, a mapping in the config
or in a file, and the refusal of classes that would share a prompt, before any job.

The ImageFolder trees are real: scikit-learn's digits exported by ``lthash export-imagefolder``,
their folders renamed as a user's collection would name them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lthash.config import validate_config
from lthash.workflow.reads import stage_config
from lthash.data.export import export_imagefolder
from lthash.data.split import run_split
from lthash.errors import LthashError
from lthash.generate.base import run_base
from lthash.generate.corpus import caption_words, check_prompt_words
from lthash.generate.models import load_components
from lthash.generate.prompts import class_categories, class_words, number_words

REPO = Path(__file__).resolve().parents[1]
TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: ImageNette's folders and the words lthash ships for them (lthash/generate/class_words.yaml)
IMAGENETTE = {"n01440764": "tench", "n02102040": "english springer", "n02979186": "cassette player",
              "n03000684": "chain saw", "n03028079": "church", "n03394916": "french horn",
              "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
              "n03888605": "parachute"}


def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 20, 21, 99, 100, 105, 999)] == [
        ["zero"], ["seven"], ["thirteen"], ["twenty"], ["twenty", "one"], ["ninety", "nine"],
        ["one", "hundred"], ["one", "hundred", "five"], ["nine", "hundred", "ninety", "nine"]]
    assert number_words(1024) == ["one", "zero", "two", "four"]


def test_numbered_folders_take_their_number_and_the_prefix_gives_the_category():
    digits = [str(i) for i in range(10)]
    prefixed = [f"digit_{i}" for i in range(10)]
    assert class_words(digits) == class_words(prefixed) == NUMBERS
    assert class_categories(digits) == class_categories(prefixed) == ["digit"] * 10
    assert class_words(["class_01", "class_02", "class_10", "class_21"]) == ["one", "two", "ten", "twenty one"]
    assert class_categories(["class_01", "class_02"]) == ["object", "object"]  # "class" is no super-category
    # names of different prefixes are no numbered layout: letters and number words both stay
    assert class_words(["digit_0", "cat", "T-shirt/top", "Ankle boot"]) == ["digit zero", "cat", "tshirttop",
                                                                            "ankleboot"]


def test_wordnet_ids_take_the_shipped_names_and_their_categories():
    assert class_words(list(IMAGENETTE)) == list(IMAGENETTE.values())
    assert class_categories(list(IMAGENETTE)) == ["fish", "dog", "device", "tool", "building", "instrument",
                                                  "vehicle", "machine", "ball", "object"]
    with pytest.raises(LthashError, match=r"'n09999999' is a WordNet id .*generate\.class_words"):
        class_words(["n01440764", "n09999999"])
    assert class_words(["n01440764", "n09999999"], {"n09999999": "Coral reef"}) == ["tench", "coral reef"]


def test_a_mapping_in_the_config_or_a_file_wins(tmp_path):
    names = [f"digit_{i}" for i in range(3)]
    assert class_words(names, {"digit_2": "deuce"}) == ["zero", "one", "deuce"]
    words = tmp_path / "words.yaml"
    words.write_text("n01440764: goldfish\nunused_folder: anything\n")
    assert class_words(["n01440764", "n02102040"], str(words)) == ["goldfish", "english springer"]
    with pytest.raises(LthashError, match="generate.class_words.*does not exist"):
        class_words(names, str(tmp_path / "missing.yaml"))
    words.write_text("- a list\n")
    with pytest.raises(LthashError, match="generate.class_words.*mapping of folder name to words"):
        class_words(names, str(words))
    with pytest.raises(LthashError, match="generate.class_words.digit_1.*numbers as words"):
        class_words(names, {"digit_1": "no 1"})
    with pytest.raises(LthashError, match="generate.class_words.digit_0"):
        validate_config({"dataset": {}, "generate": {"class_words": {"digit_0": "zero 0"}}})


def test_classes_sharing_base_prompt_words_are_refused_naming_them_and_the_key():
    with pytest.raises(LthashError) as info:
        caption_words(["Cat", "cat_", "dog"], "class_name", {})
    assert "'Cat' and 'cat_' would be 'cat'" in str(info.value)
    assert "generate.class_words" in str(info.value)
    assert caption_words(["Cat", "cat_"], "class_name", {}, {"cat_": "kitten"}) == ["cat", "kitten"]
    # super-category captions share prompts by design: no refusal
    assert caption_words(["Cat", "cat_"], "category", {}) == ["animal", "animal"]


# --- real ImageFolder trees ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_folders(tmp_path_factory):
    """scikit-learn's digits as folders 0..9, and the same PNG files under other folder names."""
    root = tmp_path_factory.mktemp("folders")
    export_imagefolder({"name": "digits"}, root / "plain")
    layouts = {"prefixed": [f"digit_{i}" for i in range(10)], "wordnet": list(IMAGENETTE),
               "numbered": [f"class_{i + 1:02d}" for i in range(10)]}
    for layout, names in layouts.items():
        for digit, name in enumerate(names):
            shutil.copytree(root / "plain" / str(digit), root / layout / name)
    return root


def _split(root: Path, layout: str) -> Path:
    cfg = validate_config({"dataset": {"name": "imagefolder", "root": str(root / layout)},
                           "split": {"query_per_class": 10, "database_per_class": 60, "train_per_class": 30,
                                     "validation_per_class": 5, "longtail": {"imbalance_factor": 10}}})
    out = root / f"{layout}.h5"
    if not out.exists():
        run_split(cfg["dataset"], cfg["split"], out, root / f"{layout}.json")
    return out


def _base(root: Path, layout: str, class_words_value=None) -> tuple[dict, Path]:
    generate = {"base": {"architecture": TINY, "steps": 2, "batch_size": 4, "checkpoint_every": 0,
                         "warmup_steps": 1, "samples_per_category": 1, "corpus": "outside_split",
                         "captions": "class_name"}}
    if class_words_value is not None:
        generate["class_words"] = class_words_value
    params = stage_config("base", json.dumps({"generate": generate}))["generate"]
    out = root / f"base-{layout}"
    return run_base(_split(root, layout), out, params, progress=False), out


def test_digit_folders_give_the_same_captions_and_the_same_base_as_folders_0_to_9(digits_folders):
    """The digits example exported with folders digit_0..digit_9: the same prompt words, the same
    training captions and so the same base model, weight for weight, as with folders 0..9."""
    plain, plain_dir = _base(digits_folders, "plain")
    prefixed, prefixed_dir = _base(digits_folders, "prefixed")
    assert list(plain["categories"].values()) == list(prefixed["categories"].values()) == NUMBERS
    assert list(prefixed["categories"]) == [f"digit_{i}" for i in range(10)]
    assert plain["prompts"] == prefixed["prompts"] == sorted(f"a photo of a {word}" for word in NUMBERS)
    assert plain["final_loss"] == prefixed["final_loss"]
    for part in ("unet", "text_encoder"):
        for file in sorted((plain_dir / part).glob("*.safetensors")):
            assert file.read_bytes() == (prefixed_dir / part / file.name).read_bytes(), file
    a, b = load_components(plain_dir), load_components(prefixed_dir)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


def test_wordnet_and_numbered_folders_train_a_base_on_their_words(digits_folders):
    report, folder = _base(digits_folders, "wordnet")
    assert report["categories"] == IMAGENETTE
    assert "a photo of a english springer" in report["prompts"]
    tokenizer = load_components(folder).tokenizer
    assert len(tokenizer("english springer", add_special_tokens=False).input_ids) == 2
    mapped, _ = _base(digits_folders, "numbered", {f"class_{i + 1:02d}": NUMBERS[i] for i in range(10)})
    assert list(mapped["categories"].values()) == NUMBERS
    plain, _ = _base(digits_folders, "plain")
    assert mapped["prompts"] == plain["prompts"] and mapped["final_loss"] == plain["final_loss"]


def test_the_workflow_check_reads_a_words_file_and_refuses_shared_prompts(digits_folders, tmp_path):
    def config(root, **generate):
        return validate_config({"dataset": {"name": "imagefolder", "root": str(root)},
                                "generate": {"base": {"captions": "class_name"}, **generate}})

    words = tmp_path / "words.yaml"
    words.write_text(yaml.safe_dump({"class_01": "Zero", "class_02": "One"}))
    checked = check_prompt_words(config(digits_folders / "numbered", class_words=str(words)))
    assert checked["generate"]["class_words"] == {"class_01": "Zero", "class_02": "One"}
    clash = tmp_path / "clash"
    for name in ("Sneaker", "sneaker_", "Bag"):
        shutil.copytree(digits_folders / "plain" / "1", clash / name)
    with pytest.raises(LthashError, match=r"'Sneaker' and 'sneaker_' would be 'sneaker'.*generate\.class_words"):
        check_prompt_words(config(clash))
    check_prompt_words(config(clash, class_words={"sneaker_": "trainer"}))


def test_snakemake_refuses_shared_prompts_before_any_job(digits_folders, tmp_path):
    """Through Snakemake: the refusal stops ``snakemake -n`` naming the classes and the key."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, tmp_path / name)
    clash = tmp_path / "clash"
    for name in ("Sneaker", "sneaker_", "Bag"):
        shutil.copytree(digits_folders / "plain" / "1", clash / name)
    (tmp_path / "clash.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "imagefolder", "root": str(clash)},
        "generate": {"base": {"model": "tiny", "captions": "class_name"}}}))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "clash.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "'Sneaker' and 'sneaker_' would be 'sneaker'" in output and "generate.class_words" in output, output
    assert "Job stats" not in output, output
    assert not (tmp_path / "results" / "data").exists()

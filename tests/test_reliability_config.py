"""Config bad input, driven by the schema itself: every leaf key of lthash/schemas/*.schema.yaml
gets a wrong type, an out-of-range value (where the schema bounds it) and a misspelt name, and
each must give one LthashError naming the dotted key (with the allowed values or a suggestion).
A typo reaching Snakemake stops `snakemake -n` before any job, with that message."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lthash.config import SCHEMA_DIR, validate_config
from lthash.errors import LthashError

REPO = Path(__file__).resolve().parents[1]


# --- walking the schema ----------------------------------------------------------------------

def _schemas() -> dict[str, dict]:
    docs = {}
    for path in sorted(Path(SCHEMA_DIR).glob("*.schema.yaml")):
        doc = yaml.safe_load(path.read_text())
        docs[doc.get("$id", path.name)] = doc
    return docs


DOCS = _schemas()
ROOT_ID = "urn:lthash:config"
FREE_FORM: set[tuple[str, ...]] = set()  # keys the schema leaves free (stage names, class names)


def _resolve(node: dict, doc_id: str) -> tuple[dict, str]:
    """Follow $ref (within a document or to another urn:lthash:<part>) until a real node."""
    while "$ref" in node:
        ref = node["$ref"]
        target_id, _, pointer = ref.partition("#")
        target_id = target_id or doc_id
        target = DOCS[target_id]
        for part in [p for p in pointer.split("/") if p]:
            target = target[part]
        merged = {k: v for k, v in node.items() if k != "$ref"}
        node, doc_id = {**target, **merged}, target_id
    return node, doc_id


def _walk(node: dict, doc_id: str, path: tuple[str, ...]):
    """Yield (dotted path tuple, leaf schema) for every leaf and ("object", path, node) for objects."""
    node, doc_id = _resolve(node, doc_id)
    properties = node.get("properties")
    extra = node.get("additionalProperties")
    if properties is None and isinstance(extra, dict):
        # free-form keys (per-stage overrides by stage name): walk one allowed representative key
        names, _ = _resolve(node.get("propertyNames", {}), doc_id)
        key = names.get("enum", ["unet"])[-1]
        FREE_FORM.add(path + (key,))
        yield from _walk(extra, doc_id, path + (key,))
        return
    if properties is None:
        yield "leaf", path, {**node, "__doc_id__": doc_id}
        return
    yield "object", path, node
    for name, sub in properties.items():
        yield from _walk(sub, doc_id, path + (name,))


ENTRIES = list(_walk(DOCS[ROOT_ID], ROOT_ID, ()))
LEAVES = [(path, node) for kind, path, node in ENTRIES if kind == "leaf"]
OBJECTS = [(path, node) for kind, path, node in ENTRIES if kind == "object" and path]


def _ids(items):
    return [".".join(path) for path, _ in items]


def _config_with(path: tuple[str, ...], value) -> dict:
    config: dict = {"dataset": {}}
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return config


def _json_types(value) -> set[str]:
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list):
        return {"array"}
    if isinstance(value, dict):
        return {"object"}
    return {"null"}


def _allowed_types(node: dict) -> set[str] | None:
    """JSON types a leaf admits, or None for a pure enum/const (any other value is wrong)."""
    if "oneOf" in node or "anyOf" in node:
        allowed: set[str] = set()
        for alternative in node.get("oneOf", node.get("anyOf")):
            alternative, _ = _resolve(alternative, node.get("__doc_id__", ROOT_ID))
            kinds = _allowed_types(alternative)
            allowed |= kinds or {"string"}
        return allowed
    if "type" in node:
        kinds = node["type"]
        kinds = set([kinds] if isinstance(kinds, str) else kinds)
        if "number" in kinds:
            kinds.add("integer")
        return kinds
    return None


def _wrong_type_value(node: dict):
    allowed = _allowed_types(node)
    for candidate in ("not-a-valid-value", 12345, 0.5, True, [1, 2], {"nested": 1}):
        if allowed is None:
            if candidate not in node.get("enum", []) and not isinstance(candidate, str):
                return candidate
        elif not (_json_types(candidate) & allowed):
            return candidate
    raise AssertionError(f"no wrong-typed value for {node}")


def _out_of_range_cases(node: dict) -> list[tuple[str, object, str]]:
    """(what, value, text the message must show) for every bound of the leaf."""
    cases = []
    if "enum" in node:
        cases.append(("enum", "zz_not_an_option", str(node["enum"][0])))
    bounded = node
    if "oneOf" in node:  # e.g. bits: an integer in range, or a list of them
        bounded, _ = _resolve(node["oneOf"][0], node["__doc_id__"])
    integer = "integer" in (_allowed_types(bounded) or set())
    step = 1 if integer else 0.5
    if "minimum" in bounded:
        cases.append(("minimum", bounded["minimum"] - step, str(bounded["minimum"])))
    if "exclusiveMinimum" in bounded:
        cases.append(("exclusiveMinimum", bounded["exclusiveMinimum"], str(bounded["exclusiveMinimum"])))
    if "maximum" in bounded:
        cases.append(("maximum", bounded["maximum"] + step, str(bounded["maximum"])))
    if "exclusiveMaximum" in bounded:
        cases.append(("exclusiveMaximum", bounded["exclusiveMaximum"], str(bounded["exclusiveMaximum"])))
    if "pattern" in bounded:
        cases.append(("pattern", "zz_not_matching!", bounded["pattern"]))
    if bounded.get("type") == "array" and "minItems" in bounded:
        cases.append(("minItems", [], f"at least {bounded['minItems']}"))
    if bounded.get("type") == "array" and isinstance(bounded.get("items"), dict):
        items, _ = _resolve(bounded["items"], node["__doc_id__"])
        if "enum" in items:
            cases.append(("items.enum", ["zz_not_an_option"], str(items["enum"][0])))
    return cases


RANGE_CASES = [(path, what, value, shown) for path, node in LEAVES for what, value, shown in _out_of_range_cases(node)]


def _problems(error: LthashError) -> list[str]:
    lines = str(error).splitlines()
    assert lines[0] == "invalid configuration:", str(error)
    return [line.strip() for line in lines[1:]]


def _misspell(name: str) -> str:
    middle = len(name) // 2
    return name[:middle] + name[middle] + name[middle:]  # doubled letter: 'seed' -> 'seeed'


# --- the suite --------------------------------------------------------------------------------

def test_the_walk_covers_every_schema_part():
    """A guard that the suite really iterates the schema: all parts, many leaves, bounded ones."""
    roots = {path[0] for path, _ in LEAVES}
    assert {"results", "device", "dataset", "split", "generate", "hashing", "evaluate", "experiment", "report"} <= roots
    assert len(LEAVES) > 100 and len(RANGE_CASES) > 80
    assert ("split", "longtail", "imbalance_factor") in [path for path, _ in LEAVES]
    assert ("generate", "personalize", "attndreambooth", "stages", "unet", "lr") in [path for path, _ in LEAVES]


@pytest.mark.parametrize(("path", "node"), LEAVES, ids=_ids(LEAVES))
def test_wrong_type_names_the_key_and_the_expected_form(path, node):
    value = _wrong_type_value(node)
    with pytest.raises(LthashError) as info:
        validate_config(_config_with(path, value))
    problems = _problems(info.value)
    dotted = ".".join(path)
    assert len(problems) == 1, problems
    assert f"'{dotted}'" in problems[0], problems
    allowed = _allowed_types(node)
    if allowed is None:  # enum: the allowed values are listed
        assert all(str(option) in problems[0] for option in node["enum"]), problems
    else:
        assert any(kind in problems[0] for kind in allowed), problems


@pytest.mark.parametrize(("path", "what", "value", "shown"), RANGE_CASES,
                         ids=[f"{'.'.join(p)}-{w}" for p, w, _, _ in RANGE_CASES])
def test_out_of_range_names_the_key_and_the_bound(path, what, value, shown):
    with pytest.raises(LthashError) as info:
        validate_config(_config_with(path, value))
    problems = _problems(info.value)
    assert len(problems) == 1, problems
    dotted = ".".join(path)
    assert f"'{dotted}" in problems[0], problems  # items are named as key.N
    assert shown in problems[0], problems


MISSPELT = [(path, node) for path, node in LEAVES + OBJECTS if path not in FREE_FORM]


@pytest.mark.parametrize(("path", "node"), MISSPELT, ids=_ids(MISSPELT))
def test_misspelt_key_is_named_with_a_suggestion(path, node):
    wrong = path[:-1] + (_misspell(path[-1]),)
    config = _config_with(wrong, copy.deepcopy(node.get("default", 1)))
    with pytest.raises(LthashError) as info:
        validate_config(config)
    problems = _problems(info.value)
    assert len(problems) == 1, problems
    dotted = ".".join(wrong)
    assert problems[0].startswith(f"unknown config key '{dotted}'; did you mean '{path[-1]}'?"), problems
    assert "allowed here:" in problems[0]


def test_several_bad_keys_are_all_reported_at_once():
    config = {"dataset": {"name": "mnist"}, "split": {"seed": -1, "longtail": {"profil": "zipf"}},
              "hashing": {"train": {"lr": 0}}, "evaluate": {"topk": [0]}}
    with pytest.raises(LthashError) as info:
        validate_config(config)
    problems = _problems(info.value)
    named = " ".join(problems)
    for key in ("dataset.name", "split.seed", "split.longtail.profil", "hashing.train.lr", "evaluate.topk.0"):
        assert key in named, problems
    assert len(problems) == 5, problems


# --- a typo through Snakemake: stops before any job -------------------------------------------

@pytest.fixture
def workflow_copy(tmp_path):
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def test_snakemake_dry_run_stops_on_config_typos_before_any_job(workflow_copy):
    """A misspelt key and a bad enum value, in one --configfile: both named, no job planned."""
    bad = {"split": {"query_per_clas": 20}, "hashing": {"train": {"optimizer": "adamm"}}}
    expected = [r"unknown config key 'split.query_per_clas'; did you mean 'query_per_class'\?",
                r"config key 'hashing.train.optimizer': 'adamm' is not one of \['adam', 'adamw', 'rmsprop', 'sgd'\]"]
    config = {"dataset": {"name": "digits"}, **bad}
    (workflow_copy / "bad.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "results/data/split.h5", "--configfile", "bad.yaml"],
        cwd=workflow_copy, capture_output=True, text=True, env=env, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for pattern in expected:
        assert re.search(pattern, output), output
    assert "Job stats" not in output and "rule split" not in output, output
    assert not (workflow_copy / "results").exists()


# --- names the schema leaves to run time (reported; strict xfail flips when fixed) -------------

@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"experiment": {"methods": ["orthohsh"]}}, "experiment.methods"),
        ({"experiment": {"backbones": ["resnet9"]}}, "experiment.backbones"),
        ({"hashing": {"method": "orthohsh"}}, "hashing.method"),
        ({"generate": {"personalize": {"attndreambooth": {"stages": {"uneet": {"steps": 3}}}}}},
         "generate.personalize.attndreambooth.stages"),
    ],
    ids=["experiment.methods", "experiment.backbones", "hashing.method", "stage-name"],
)
def test_typo_in_a_registry_name_is_refused_before_any_job(section, key):
    with pytest.raises(LthashError, match=re.escape(key)):
        validate_config({"dataset": {}, **section})

"""Each rule's params are exactly what its stage reads (lthash.workflow.READS).

Generated from the schemas: every leaf key of lthash/schemas/*.schema.yaml is changed to
another valid value, and the params of every job the workflow would run are computed
through the same function the Snakefile calls (``lthash.workflow.params``). The jobs whose
params changed must be exactly those whose table entry reads the key; keys that only
change speed rerun nothing. Hand-written expectations pin the table itself for the edits a
user makes most.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

import lthash.workflow as lw
from lthash.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "lthash" / "schemas"

#: Every arm, two generators and synthesis modes, a deep, a shared-section and a shallow
#: method, two backbones: each kind of table entry has a job.
EXPERIMENT = {"arms": list(lw.ARMS), "generators": ["attndreambooth", "dreambooth"], "synthesis": ["noise", "real"],
              "methods": ["orthohash", "csq", "lthnet_sq", "itq"], "backbones": ["cnn", "resnet18"], "bits": [16]}
#: Keys to try in maps whose keys are free (the schema names no properties).
MAP_KEYS = {("hashing", "method_train"): ["csq", "lthnet"], ("generate", "categories"): ["Sandal"]}


def documents() -> dict[str, dict]:
    docs = {}
    for path in SCHEMAS.glob("*.schema.yaml"):
        doc = yaml.safe_load(path.read_text())
        docs[doc["$id"]] = doc
    return docs


DOCS = documents()


def resolve(schema: dict, doc: dict) -> tuple[dict, dict]:
    """Follow ``$ref`` (another part's ``urn:`` or this document's ``#/...``), keeping the
    referring schema's own keys (defaults, propertyNames) over the target's."""
    while "$ref" in schema:
        ref = schema["$ref"]
        base, _, pointer = ref.partition("#")
        target_doc = DOCS[base] if base else doc
        node = target_doc
        for part in filter(None, pointer.split("/")):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        doc = target_doc
    return schema, doc


def leaves(schema: dict, doc: dict, path: tuple = ()):
    """(dotted path, leaf schema) of every key a config can set."""
    schema, doc = resolve(schema, doc)
    if "properties" in schema:
        for key, sub in schema["properties"].items():
            yield from leaves(sub, doc, path + (key,))
    elif isinstance(schema.get("additionalProperties"), dict):
        names = schema.get("propertyNames", {})
        names, _ = resolve(names, doc) if names else ({}, doc)
        for key in MAP_KEYS.get(path) or names.get("enum", [])[:2]:
            yield from leaves(schema["additionalProperties"], doc, path + (key,))
    else:
        yield path, schema, doc


def lookup(config: dict, path: tuple):
    node = config
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def with_value(config: dict, path: tuple, value) -> dict:
    edited = copy.deepcopy(config)
    node = edited
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return edited


def candidates(schema: dict, current):
    """Values to try for a leaf, the first valid one different from ``current`` wins."""
    if "enum" in schema:
        yield from schema["enum"]
    if "const" in schema:
        yield schema["const"]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(current, bool) or "boolean" in types:
        yield not current
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        yield from (current + 1, current - 1, current * 2, current / 2, current + 0.05, current - 0.05)
    if isinstance(current, list):
        items = schema.get("items", {})
        extra = [*(items.get("enum", [])), 16, 48, 7, "all", "x"]
        yield from ([*current, e] for e in extra if e not in current)
        yield current[:-1]
    yield from (0.5, 3, 17, 1, 0, "cpu", "footwear", "/data/somewhere", "x", ["a", "b"], [7])


def registry():
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resources([(key, DRAFT202012.create_resource(d)) for key, d in DOCS.items()])


REGISTRY = registry()


def changed(path: tuple, schema: dict, doc: dict, config: dict):
    """A config with the leaf at ``path`` set to another value its schema allows."""
    validator = Draft202012Validator({**schema, "$defs": doc.get("$defs", {})}, registry=REGISTRY)
    current = lookup(config, path)
    for value in candidates(schema, current):
        if value == current or not validator.is_valid(value):
            continue
        try:
            return validate_config(with_value(config, path, value))
        except Exception:
            continue
    raise AssertionError(f"no other valid value found for {'.'.join(path)}")


def all_params(config: dict) -> dict:
    return {(rule, tuple(sorted(job.items()))): lw.params(config, rule, job) for rule, job in lw.param_jobs(config)}


@pytest.fixture(scope="module")
def base():
    config = validate_config({"dataset": {}, "experiment": EXPERIMENT, "generate": {"synthesis": {"filter_factor": 2}}})
    return config, all_params(config)


LEAVES = list(leaves(DOCS["urn:lthash:config"], DOCS["urn:lthash:config"]))


def test_the_schema_walk_sees_every_section():
    sections = {path[0] for path, _, _ in LEAVES}
    assert sections == {"results", "device", "cpu_isa", "warm_start", "dataset", "split", "generate", "hashing", "evaluate",
                        "experiment", "report"}
    assert len(LEAVES) > 150


def test_every_leaf_key_changes_exactly_the_params_of_the_rules_that_read_it(base):
    config, before = base
    wrong = []
    for path, schema, doc in LEAVES:
        edited = changed(path, schema, doc, config)
        after = all_params(edited)
        common = before.keys() & after.keys()
        moved = {job for job in common if before[job] != after[job]}
        readers = {(rule, job) for rule, job in common if lw.reads_key(rule, dict(job), path)}
        if moved != readers:
            wrong.append(f"{'.'.join(path)}: changed {sorted(moved - readers)}, expected {sorted(readers - moved)}")
    assert not wrong, "\n".join(wrong)


def readers_of(config: dict, path: str, value) -> set[str]:
    """Rules (with method/generator/synthesis where the job has one) of jobs an edit keeps
    whose params it changes."""
    before = all_params(config)
    after = all_params(validate_config(with_value(config, tuple(path.split(".")), value)))
    out = set()
    for (rule, job), text in before.items():
        if (rule, job) in after and after[(rule, job)] != text:
            fields = dict(job)
            out.add("/".join([rule, *(str(fields[k]) for k in ("method", "generator", "synthesis") if k in fields)]))
    return out


TRAIN_RULES = set(lw.TRAINING)


def rules_of(readers: set[str]) -> set[str]:
    return {reader.split("/")[0] for reader in readers}


def test_default_run_reruns_nothing_for_csq_settings_or_the_encoding_batch_size():
    default = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert readers_of(default, "hashing.csq.quant_weight", 0.1) == set()
    assert readers_of(default, "hashing.encode.batch_size", 64) == set()
    assert readers_of(default, "device", "cpu") == set()
    assert readers_of(default, "warm_start", False) == set()
    assert readers_of(default, "cpu_isa", "native") == set()
    assert readers_of(default, "evaluate.search.k", 3) == set()


def test_hand_written_expectations(base):
    config, _ = base
    csq = readers_of(config, "hashing.csq.quant_weight", 0.5)
    assert csq and all("/csq" in reader for reader in csq) and rules_of(csq) == TRAIN_RULES
    assert {r.split("/")[1] for r in readers_of(config, "hashing.lthnet.prototypes", 5)} == {"lthnet_sq"}
    assert {r.split("/")[1] for r in readers_of(config, "hashing.shallow.features", "backbone")} == {"itq"}
    assert rules_of(readers_of(config, "hashing.train.lr", 0.01)) == TRAIN_RULES
    assert rules_of(readers_of(config, "hashing.train.sampling", "class_balanced")) == TRAIN_RULES - {"class_balanced"}
    assert rules_of(readers_of(config, "hashing.pretrain.lr", 0.01)) == {"pretrain"}
    assert rules_of(readers_of(config, "hashing.finetune.lr", 0.01)) == {"augmented", "resampled", "pretrain_only"}
    assert rules_of(readers_of(config, "hashing.mix.target_factor", 2.0)) == {"augmented", "resampled", "mix_only"}
    assert readers_of(config, "generate.personalize.dreambooth.prior_preservation.enabled", True) == \
        {"personalize/dreambooth"}
    assert rules_of(readers_of(config, "generate.personalize.weight_decay", 0.1)) == {"personalize"}
    assert readers_of(config, "generate.synthesis.strength", 0.5) == \
        {"synthesize/attndreambooth/real", "synthesize/dreambooth/real"}
    assert rules_of(readers_of(config, "generate.synthesis.steps", 9)) == {"synthesize"}
    assert rules_of(readers_of(config, "generate.synthesis.shard_size", 9)) == {"plan"}
    assert rules_of(readers_of(config, "generate.seed", 5)) == {"base", "plan", "personalize", "synthesize",
                                                                "resample", "quality", "filter_judge"}
    # no validation group: nothing to measure the generators on, so no knowledge job
    assert readers_of(config, "generate.knowledge.timesteps", 3) == set()
    measured = validate_config(with_value(config, ("split", "validation_per_class"), 5))
    assert readers_of(measured, "generate.knowledge.timesteps", 3) == {"knowledge/attndreambooth",
                                                                       "knowledge/dreambooth"}
    assert rules_of(readers_of(config, "evaluate.topk", ["all", 5])) == {"score"}
    assert rules_of(readers_of(config, "experiment.quality", False)) == {"report"}
    assert rules_of(readers_of(config, "split.seed", 3)) == {"split"}


def test_joint_settings_rerun_the_joint_generator_alone():
    experiment = dict(EXPERIMENT, generators=["joint", "attndreambooth"])
    config = validate_config({"dataset": {}, "experiment": experiment})
    assert readers_of(config, "generate.personalize.joint.steps", 3) == {"personalize_joint/joint"}
    assert readers_of(config, "generate.personalize.attndreambooth.prior_preservation.enabled", True) == \
        {"personalize/attndreambooth"}
    assert rules_of(readers_of(config, "generate.personalize.weight_decay", 0.1)) == {"personalize",
                                                                                    "personalize_joint"}
    assert rules_of(readers_of(config, "generate.synthesis.guidance_reference", "category")) == {"synthesize"}


def test_reordered_keys_give_the_same_params(base):
    config, before = base

    def reverse(node):
        return {k: reverse(v) for k, v in reversed(list(node.items()))} if isinstance(node, dict) else node

    assert all_params(reverse(config)) == before


def test_job_values_replace_the_hand_run_defaults(base):
    config, _ = base
    params = lw.rule_params(config, "class_balanced",
                            {"method": "csq", "backbone": "cnn", "bits": "16", "seed": "2"})["hashing"]
    assert (params["method"], params["backbone"], params["bits"], params["seed"]) == ("csq", "cnn", 16, 2)
    assert params["train"]["sampling"] == "class_balanced"
    assert set(params) >= {"csq", "cnn", "train", "seed"} and not set(params) & {"orthohash", "encode", "mix", "pretrain"}
    synth = lw.rule_params(config, "synthesize", {"generator": "dreambooth", "synthesis": "real"})
    assert synth["generate"]["synthesis"]["init"] == "real"


def test_shallow_methods_and_shared_sections_match_the_registry():
    """The table's method knowledge equals the code's: shallow = not trainable, and the
    options a method gets from narrow params equal those it gets from the whole section."""
    from lthash.hashing.methods import REGISTRY
    from lthash.hashing.model import method_options

    assert set(lw.SHALLOW_METHODS) == {name for name, cls in REGISTRY.items() if not cls.trainable}
    full = validate_config({"dataset": {}, "hashing": {"lthnet": {"prototypes": 5}, "csq": {"quant_weight": 0.2},
                                                       "itq": {"iterations": 3}, "sdh": {"anchors": 10}}})
    for method in REGISTRY:
        narrow = lw.rule_params(full, "longtail", {"method": method, "backbone": "cnn", "bits": 16})
        filled = validate_config({"dataset": {}, **narrow})["hashing"]
        assert method_options(filled, method) == method_options(full["hashing"], method), method


def test_every_stage_that_takes_params_is_in_the_table():
    from lthash.cli import build_parser

    parser = build_parser()
    stages = next(a for a in parser._actions if a.dest == "command").choices
    taking = {name for name, sub in stages.items() if any(a.dest == "params" for a in sub._actions)}
    known = set(lw.STAGE_OF_RULE.values()) | set(lw.STAGE_ONLY_READS)
    assert taking <= known, f"stages without an entry in lthash.workflow.READS: {sorted(taking - known)}"


def run_lthash(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lthash.cli", *args], capture_output=True, text=True, timeout=120)


def test_a_stage_refuses_keys_it_does_not_read(tmp_path):
    out = tmp_path / "never"
    result = run_lthash("train", "--split", "missing.h5", "--out", str(out),
                        "--params", json.dumps({"hashing": {"encode": {"batch_size": 64}, "train": {"lr": 0.1}}}))
    assert result.returncode == 2
    assert "not hashing.encode.batch_size" in result.stderr, result.stderr
    assert "hashing.train.lr" not in result.stderr
    result = run_lthash("score", "--codes", "missing.h5", "--counts", "1,2", "--out", str(out),
                        "--params", json.dumps({"evaluate": {"search": {"k": 3}}}))
    assert result.returncode == 2 and "not evaluate.search.k" in result.stderr
    assert not out.exists()

"""Which config keys every rule reads, and the stage CLIs' view of that table.

A rule's ``params`` are exactly the paths of the validated config that :data:`READS` lists
for it (:func:`rule_params`), and each stage's CLI refuses keys that no rule of that stage
reads (:func:`check_stage_params`), so an edit reruns only the jobs that read the edited key.
Keys that change only how fast a job runs (:data:`RUNTIME`) are in no rule's params: the
Snakefile hands them to jobs through the environment.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shlex
from pathlib import Path
from typing import Any, Iterable, Mapping, MutableMapping, Sequence

from lthash.config import SCHEMA_DIR, load_yaml, validate_config
from lthash.errors import LthashError
from lthash.generate.personalize.method import joint_names, personalised_names
from lthash.workflow.paths import knowledge_files
from lthash.io import canonical_json
from lthash.workflow.arms import ARMS, RESAMPLED, TRAINING, Arm, generated_sources, runs, shard_sources, uses_generators

def shell_json(**parts: Any) -> str:
    """Canonical JSON of a stage's config, quoted for a shell command line."""
    return shlex.quote(canonical_json(parts))


# ---------------------------------------------------------------------------------------
# Which config keys each rule reads
# ---------------------------------------------------------------------------------------

#: Methods fitted in closed form (they read ``hashing.shallow``; a test keeps this equal to
#: the registry's ``trainable`` flags).
SHALLOW_METHODS = ("lsh", "pcah", "itq", "sdh")
#: Methods that read another method's section (``lthash.hashing.methods.base.method_section``).
METHOD_SECTION = {"lthnet_sq": "lthnet"}
#: Keys of ``generate.synthesis`` only one synthesis mode reads (so editing them reruns only its shards).
SYNTHESIS_MODE_KEYS: dict[str, tuple[str, ...]] = {"real": ("strength",)}

_TRAIN = ("hashing.image_size", "hashing.mixed_precision", "hashing.distributed", "hashing.train",
          "hashing.method_train.{method}", "hashing.{method_sections}", "hashing.{backbone}",
          "hashing.pretrained.{backbone}")


def _train_reads(arm: Arm) -> tuple[str, ...]:
    reads = _TRAIN
    if arm.mode == "synthetic":
        reads += ("hashing.pretrain",)
    if arm.init:
        reads += ("hashing.finetune",)
    if arm.mode == "mix":
        reads += ("hashing.mix",)
    return reads


#: Config paths each rule reads. ``a.b`` = that subtree; ``-a.b`` = not that subtree (the
#: longest matching entry decides, a later one wins a tie); ``{field}`` = the job's value
#: (method, backbone, generator, synthesis; ``method_sections`` = the sections its method
#: reads; ``other_modes_keys`` = synthesis keys read only by the other synthesis modes).
READS: dict[str, tuple[str, ...]] = {
    "split": ("dataset", "split"),
    "base": ("generate.seed", "generate.base", "generate.categories", "generate.class_words"),
    "plan": ("generate.seed", "generate.synthesis.pretrain_per_class", "generate.synthesis.mix_target",
             "generate.synthesis.shard_size"),
    "personalize": ("generate.seed", "generate.categories", "generate.class_words", "generate.personalize",
                    *(f"-generate.personalize.{name}" for name in personalised_names()),
                    "generate.personalize.{generator}"),
    "personalize_joint": ("generate.seed", "generate.categories", "generate.class_words", "generate.personalize",
                          *(f"-generate.personalize.{name}" for name in personalised_names()),
                          "generate.personalize.{generator}"),
    "knowledge": ("generate.seed", "generate.categories", "generate.class_words", "generate.knowledge"),
    "synthesize": ("generate.seed", "generate.categories", "generate.class_words", "generate.synthesis",
                   "-generate.synthesis.pretrain_per_class", "-generate.synthesis.mix_target",
                   "-generate.synthesis.shard_size", "-generate.synthesis.{other_modes_keys}"),
    "resample": ("generate.seed",),
    "quality": ("generate.seed", "generate.categories", "generate.class_words", "generate.quality"),
    "filter_judge": ("generate.seed", "generate.filter_judge"),
    **{name: _train_reads(arm) for name, arm in TRAINING.items()},
    "encode": ("hashing.encode",),
    "score": ("evaluate", "-evaluate.search"),
    "report": ("report", "experiment", "generate.categories", "generate.class_words", "generate.base.model",
               "generate.base.captions"),
}

#: Values a rule sets from its job instead of reading them from the config.
SETS: dict[str, dict[str, str]] = {
    **{name: {"hashing.method": "{method}", "hashing.backbone": "{backbone}", "hashing.bits": "{bits}",
              "hashing.seed": "{seed}", **dict(arm.sets)}
       for name, arm in TRAINING.items()},
    "synthesize": {"generate.synthesis.init": "{synthesis}"},
}

#: Keys that change only how fast a job runs: in no rule's params (rerun nothing), handed to
#: the stage through this environment variable (the Snakefile exports it; the stage's CLI
#: flag of the same meaning wins).
RUNTIME: dict[str, tuple[str, str]] = {
    "hashing.encode.batch_size": ("encode", "LTHASH_ENCODE_BATCH_SIZE"),
}

#: The ``lthash`` stage (subcommand) each rule runs; stages with no rule read what is listed.
STAGE_OF_RULE: dict[str, str] = {**{name: name for name in READS}, **{name: "train" for name in TRAINING},
                                 "filter_judge": "filter-judge", "personalize_joint": "personalize-joint"}
STAGE_ONLY_READS: dict[str, tuple[str, ...]] = {"search": ("evaluate",), "export-imagefolder": ("dataset",)}
TOP_LEVEL = ("results", "device", "cpu_isa", "warm_start", "dataset", "split", "generate", "hashing", "evaluate", "experiment", "report")


def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _fields(job: Mapping[str, Any]) -> dict[str, list[str]]:
    """Template values of a job: its own fields, plus the derived ``method_sections`` and ``other_modes_keys``."""
    fields = {key: [str(value)] for key, value in job.items() if value is not None and not isinstance(value, list)}
    fields.update({key: [str(v) for v in value] for key, value in job.items() if isinstance(value, list)})
    if job.get("method"):
        method = str(job["method"])
        fields["method_sections"] = [METHOD_SECTION.get(method, method)] + (["shallow"] if method in SHALLOW_METHODS else [])
    if job.get("synthesis"):
        fields["other_modes_keys"] = [key for mode, keys in SYNTHESIS_MODE_KEYS.items() if mode != job["synthesis"]
                                      for key in keys]
    return fields


def _expand(template: str, fields: Mapping[str, list[str]]) -> list[str]:
    """All paths a template names for a job (none when a field it uses is not the job's)."""
    names = [part[1:-1] for part in template.split(".") if part.startswith("{")]
    if any(name not in fields for name in names):
        return []
    paths = []
    for values in itertools.product(*(fields[name] for name in names)):
        lookup = dict(zip(names, values))
        paths.append(".".join(lookup[p[1:-1]] if p.startswith("{") else p for p in template.split(".")))
    return paths


class _Trie:
    """Config paths as a tree: ``decision`` at a node (True read, False not, None = inherit)
    applies to its whole subtree unless a deeper node decides otherwise."""

    __slots__ = ("decision", "children", "reads_below")

    def __init__(self) -> None:
        self.decision: bool | None = None
        self.children: dict[str, _Trie] = {}
        self.reads_below = False

    def add(self, parts: Sequence[str], include: bool) -> None:
        node = self
        for part in parts:
            node.reads_below |= include
            node = node.children.setdefault(part, _Trie())
        node.decision = include

    def reads(self, parts: Sequence[str]) -> bool:
        """Whether ``parts`` is read, or is a section some deeper read lies in."""
        node, decided = self, self.decision
        for part in parts:
            if part not in node.children:
                return bool(decided)
            node = node.children[part]
            decided = node.decision if node.decision is not None else decided
        return bool(decided) or node.reads_below

    def select(self, config: Any, inherited: bool = False) -> tuple[bool, Any]:
        """(whether anything is read, the read part of ``config``)."""
        decided = inherited if self.decision is None else self.decision
        if not self.children or not isinstance(config, Mapping):
            return decided, config
        picked = {}
        for key, value in config.items():
            child = self.children.get(str(key))
            keep, sub = (decided, value) if child is None else child.select(value, decided)
            if keep:
                picked[key] = sub
        return bool(picked) or decided, picked


@functools.lru_cache(maxsize=4096)
def _compiled(rule: str, job: tuple[tuple[str, Any], ...]) -> _Trie:
    """The table entry of one rule for one job as a :class:`_Trie` (set and runtime keys excluded last)."""
    if rule not in READS:
        raise LthashError(f"no rule '{rule}' in the table of config reads (lthash.workflow.READS)")
    fields = _fields(dict(job))
    trie = _Trie()
    for template in READS[rule]:
        include = not template.startswith("-")
        for path in _expand(template.lstrip("-"), fields):
            trie.add(_parts(path), include)
    for path in [*SETS.get(rule, {}), *RUNTIME]:
        trie.add(_parts(path), False)
    return trie


#: Job fields that can change what a rule reads (other wildcards, such as class and shard, cannot).
JOB_FIELDS = ("method", "backbone", "bits", "seed", "generator", "synthesis")


def _job_key(job: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    if job is None:
        return ()
    items = dict(job.items()) if hasattr(job, "items") else dict(job)
    return tuple(sorted((key, items[key]) for key in JOB_FIELDS if items.get(key) is not None))


def _set_value(template: str, job: Mapping[str, Any]) -> Any:
    if template.startswith("{") and template.endswith("}"):
        value = dict(job)[template[1:-1]]
        return int(value) if template in ("{bits}", "{seed}") else value
    return template


def _picked(config: Mapping[str, Any], rule: str, job: Mapping[str, Any] | None) -> dict[str, Any]:
    """The read part of ``config`` with the job's values set. New dicts along every set path
    (the trie has a node there), but leaves shared with ``config``: do not mutate."""
    key = _job_key(job)
    _, picked = _compiled(rule, key).select(config)
    for path, template in SETS.get(rule, {}).items():
        parts = _parts(path)
        if not _known_path(parts) or (template.startswith("{") and template[1:-1] not in dict(key)):
            continue
        node = picked
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _set_value(template, dict(key))
    return picked


def rule_params(config: Mapping[str, Any], rule: str, job: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Exactly the config a job of ``rule`` reads (nested by section), with the job's own values set.

    ``job`` holds the wildcards that pick what it reads (method, backbone, bits, generator,
    synthesis): a Snakemake ``wildcards`` object or a dict.
    """
    return json.loads(canonical_json(_picked(config, rule, job)))


def params(config: Mapping[str, Any], rule: str, job: Mapping[str, Any] | None = None) -> str:
    """:func:`rule_params` as canonical JSON quoted for a shell command line (a rule's ``params``)."""
    return shlex.quote(canonical_json(_picked(config, rule, job)))


def _lookup(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in _parts(path):
        node = node[part]
    return node


def runtime_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables carrying the :data:`RUNTIME` keys and ``cpu_isa``'s kernel pins
    (:func:`lthash.runtime.cpu_isa_env`) to the jobs (the Snakefile exports them)."""
    from lthash.runtime import cpu_isa_env

    keys = {variable: str(_lookup(config, path)) for path, (_, variable) in RUNTIME.items()}
    return {**keys, **cpu_isa_env(config["cpu_isa"])[0]}


def export_runtime_env(config: Mapping[str, Any], environ: MutableMapping[str, str] = os.environ) -> None:
    """Set :func:`runtime_env` in ``environ`` and remove the kernel pins ``cpu_isa`` does not set
    (``native`` then overrides pins inherited from the shell)."""
    from lthash.runtime import cpu_isa_env

    environ.update(runtime_env(config))
    for variable in cpu_isa_env(config["cpu_isa"])[1]:
        environ.pop(variable, None)


def runtime_setting(config: Mapping[str, Any], path: str) -> str:
    """A :data:`RUNTIME` key as a job sees it: its environment variable when set, else ``config`` (a hand run)."""
    value = os.environ.get(RUNTIME[path][1])
    return value if value not in (None, "") else _lookup(config, path)


def reads_key(rule: str, job: Mapping[str, Any] | None, path: str | Sequence[str]) -> bool:
    """Whether a job of ``rule`` reads the config key ``path`` (the table's answer, no config needed)."""
    return _compiled(rule, _job_key(job)).reads(_parts(path) if isinstance(path, str) else tuple(path))


def param_jobs(config: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every (rule, wildcards) whose params the workflow computes for ``config``, one per
    distinct value of the :data:`JOB_FIELDS` (class and shard change nothing a rule reads)."""
    experiment, generate = config["experiment"], config["generate"]
    jobs: list[tuple[str, dict[str, Any]]] = [("split", {}), ("report", {})]
    sources = shard_sources(config)
    if sources:
        jobs.append(("plan", {}))
    if RESAMPLED in sources:
        jobs.append(("resample", {}))
    if uses_generators(config):
        if generate["base"]["model"] == "tiny":
            jobs.append(("base", {}))
        if generate["synthesis"]["filter_factor"] > 1:
            jobs.append(("filter_judge", {}))
        jobs += [("personalize_joint" if g in joint_names() else "personalize", {"generator": g})
                 for g in experiment["generators"] if g in personalised_names()]
        jobs += [("knowledge", {"generator": path.split("/")[-2]}) for path in knowledge_files(config)]
        for generator, synthesis in generated_sources(config):
            jobs.append(("synthesize", {"generator": generator, "synthesis": synthesis}))
            if experiment["quality"]:
                jobs.append(("quality", {"generator": generator, "synthesis": synthesis}))
    for run in runs(config):
        model = {"method": run.method, "backbone": run.backbone, "bits": str(run.bits), "seed": str(run.seed)}
        arm = ARMS[run.arm]
        wildcards = {**model, **({"generator": run.generator, "synthesis": run.synthesis} if arm.crossed else {})}
        jobs.append((run.arm, wildcards))
        if arm.init:
            jobs.append((arm.init, {"source": run.source, **model}))
        jobs += [("encode", {"label": run.label, **model}), ("score", {"label": run.label, **model})]
    unique = {(rule, _job_key(job)): (rule, job) for rule, job in jobs}
    return list(unique.values())


def generate_params(config: Mapping[str, Any], stage: str, generator: str | None = None,
                    synthesis: str | None = None) -> dict:
    """``rule_params`` of a generation rule (the ``{"generate": ...}`` part it reads)."""
    return rule_params(config, stage, {"generator": generator, "synthesis": synthesis})


# ---------------------------------------------------------------------------------------
# The table seen from a stage's CLI
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def field_values() -> dict[str, list[str]]:
    """Every value a job field can take, from the schemas (methods, backbones, generators, synthesis modes)."""
    hashing = load_yaml((Path(SCHEMA_DIR) / "hashing.schema.yaml").read_text())
    experiment = load_yaml((Path(SCHEMA_DIR) / "experiment.schema.yaml").read_text())["properties"]
    return {"method": list(hashing["$defs"]["method_name"]["enum"]),
            "backbone": list(hashing["$defs"]["backbone_name"]["enum"]),
            "generator": list(experiment["generators"]["items"]["enum"]),
            "synthesis": list(experiment["synthesis"]["items"]["enum"]),
            "bits": [32], "seed": [0]}


@functools.lru_cache(maxsize=1)
def _schema_tree() -> dict:
    """The validated default config (every key that has a default), to know which paths exist."""
    return validate_config({"dataset": {}})


def _known_path(parts: tuple[str, ...]) -> bool:
    node: Any = _schema_tree()
    for part in parts[:-1]:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return isinstance(node, Mapping) and parts[-1] in node


def stage_jobs(stage: str) -> list[tuple[str, tuple]]:
    """Every (rule, job) of a stage, over all values of the fields its rules' tables use."""
    names = field_values()
    out = []
    for rule in [r for r, s in STAGE_OF_RULE.items() if s == stage]:
        used = sorted({part[1:-1] for template in READS[rule] + tuple(SETS.get(rule, {}).values())
                       for part in template.lstrip("-").split(".") if part.startswith("{")})
        used = sorted({"method" if u == "method_sections" else "synthesis" if u == "other_modes_keys" else u
                       for u in used})
        for values in itertools.product(*(names[u] for u in used)):
            out.append((rule, tuple(sorted(zip(used, values)))))
    return out


@functools.lru_cache(maxsize=None)
def _stage_tries(stage: str) -> tuple[_Trie, ...]:
    handed = _Trie()
    for path in STAGE_ONLY_READS.get(stage, ()):
        handed.add(_parts(path), True)
    for rule, owner in STAGE_OF_RULE.items():
        for path in SETS.get(rule, {}) if owner == stage else ():
            handed.add(_parts(path), True)
    for path, (owner, _) in RUNTIME.items():
        if owner == stage:
            handed.add(_parts(path), True)
    return (handed, *{id(t): t for t in (_compiled(rule, job) for rule, job in stage_jobs(stage))}.values())


def stage_reads(path: str | Sequence[str], stage: str) -> bool:
    """Whether some job of ``stage`` reads (or is handed) the config key ``path``."""
    parts = _parts(path) if isinstance(path, str) else tuple(path)
    return any(trie.reads(parts) for trie in _stage_tries(stage))


def _leaves(node: Any, path: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _leaves(value, path + (str(key),))
    else:
        yield path


def stage_roots(stage: str) -> list[str]:
    """Top-level config sections a stage's params live under (``hashing`` for train, ...)."""
    rules = [r for r, s in STAGE_OF_RULE.items() if s == stage]
    paths = [t.lstrip("-") for r in rules for t in READS[r]] + list(STAGE_ONLY_READS.get(stage, ()))
    return sorted({p.split(".")[0] for p in paths})


def nest_params(stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``--params`` as full config paths: a bare section (``{"train": ...}`` for ``lthash train``)
    goes under the stage's one section; params already keyed by sections stay as they are."""
    roots = stage_roots(stage)
    if not params or set(params) <= set(TOP_LEVEL):
        return dict(params)
    if len(roots) != 1:
        raise LthashError(f"--params of lthash {stage} must be keyed by config section ({', '.join(roots)})")
    return {roots[0]: dict(params)}


def check_stage_params(stage: str, params: Mapping[str, Any]) -> None:
    """Refuse ``--params`` keys that no job of ``stage`` reads, naming them and what the stage reads.

    Stages missing from the table are not checked (a test keeps every stage with --params in it).
    """
    if stage not in STAGE_OF_RULE.values() and stage not in STAGE_ONLY_READS:
        return
    nested = nest_params(stage, params)
    unread = sorted({".".join(leaf) for leaf in _leaves(nested, ()) if leaf and not stage_reads(leaf, stage)})
    if unread:
        reads = sorted({t for r, s in STAGE_OF_RULE.items() if s == stage for t in READS[r] if not t.startswith("-")}
                       | set(STAGE_ONLY_READS.get(stage, ())))
        raise LthashError(f"--params of lthash {stage}: this stage reads {', '.join(reads)}, not "
                          f"{', '.join(unread)} (the table lthash.workflow.READS)")


def parse_params(text: str | None) -> dict:
    """Parse a ``--params`` argument: inline JSON, or ``@file.json``/``@file.yaml``."""
    if not text:
        return {}
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise LthashError(f"params file not found: {path}")
        body = path.read_text()
        data = load_yaml(body) if path.suffix in (".yaml", ".yml") else json.loads(body)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LthashError(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LthashError("--params must be a JSON object")
    return data


def stage_config(stage: str, params_text: str | None) -> dict:
    """The validated config of one ``lthash`` stage from its ``--params``: the one place a
    stage's params are read (``lthash.cli.main`` hands the result to the handler as ``args.config``).

    Parses ``params_text`` (:func:`parse_params`), refuses keys no job of ``stage`` reads
    (:func:`check_stage_params`), puts a bare section under the stage's one
    section (:func:`nest_params`) and validates with every default filled, so
    each section is complete (``config["hashing"]`` for ``lthash train``). Without params,
    ``export-imagefolder`` exports scikit-learn's digits.
    """
    params = parse_params(params_text)
    if stage == "export-imagefolder" and not params:
        params = {"dataset": {"name": "digits"}}
    check_stage_params(stage, params)
    config = validate_config({"dataset": {}, **nest_params(stage, params)})
    evaluate = config["evaluate"]
    if evaluate["few_shot"] > evaluate["many_shot"]:
        raise LthashError(f"config key 'evaluate.few_shot' ({evaluate['few_shot']}) must not exceed "
                          f"'evaluate.many_shot' ({evaluate['many_shot']})")
    return config

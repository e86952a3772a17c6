"""What the Snakefile needs from the package: the arms, the run matrix, paths, and which
config keys every rule reads.

Rules only wire; every decision about which runs exist and which config a stage reads is
made here, so it is testable without Snakemake. Two tables hold it:

* :data:`ARMS` (and the shared pretraining stage :data:`PRETRAIN`): one entry per hashing
  arm, from which the training rules, the run folders and the report's run list come.
* :data:`READS`: the config paths each rule reads. A rule's ``params`` are exactly those
  paths of the validated config (:func:`rule_params`), and each stage's CLI refuses keys that
  no rule of that stage reads (:func:`check_stage_params`), so an edit reruns only the jobs
  that read the edited key. Keys that change only how fast a job runs (:data:`RUNTIME`) are in
  no rule's params: the Snakefile hands them to jobs through the environment.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lthash.errors import LthashError
from lthash.generate.personalize.method import personalised_names
from lthash.io import canonical_json

# ---------------------------------------------------------------------------------------
# Arms
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One way of training a hash model (a rule of the same name).

    kind: ``bound`` (the balanced upper bound: data a long-tail user does not have),
    ``control`` (non-generative arms a long-tail user can run: the method must beat the best
    of them), ``generated`` (the method: trains on generated shards) or ``ablation``; title:
    the report's words for it. group: real split group (``train`` long-tail,
    ``train_balanced``); mode: ``lthash train --mode`` (real, synthetic, mix); init: the
    training stage whose model this one starts from (``pretrain`` or None); source: where
    its shards come from (None = real images only, ``generated`` = a generator x synthesis
    mode, so the arm is crossed with ``experiment.generators`` x ``experiment.synthesis``,
    ``resampled`` = copies of the real long-tail images); shards: plan purpose of the shards
    it trains on (None = none); sets: config values the arm fixes (``hashing.train.sampling``
    for class-balanced batches, ``hashing.train.balance`` for the logit-adjusted loss).
    """

    name: str
    kind: str
    title: str
    group: str = "train"
    mode: str = "real"
    init: str | None = None
    source: str | None = None
    shards: str | None = None
    sets: tuple[tuple[str, str], ...] = ()

    @property
    def crossed(self) -> bool:
        """Whether the arm runs once per generator x synthesis mode."""
        return self.source == "generated"

    @property
    def folder(self) -> str:
        """Run folder pattern under the results folder (Snakemake wildcards in braces)."""
        if self.name == PRETRAIN_NAME:
            return "pretrain/{source}"
        return f"runs/{self.name}-{{generator}}-{{synthesis}}" if self.crossed else f"runs/{self.name}"


PRETRAIN_NAME = "pretrain"
#: The shared pretraining stage: balanced shards only (``pretrain`` purpose), per shard source.
PRETRAIN = Arm(PRETRAIN_NAME, kind="stage", title="Synthetic pretraining (shared stage)", mode="synthetic",
               source="any", shards="pretrain")

#: The arms of ``experiment.arms`` (the experiment schema's enum equals these names; a test keeps them equal).
ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("balanced", "bound", "Balanced data (upper bound)", group="train_balanced"),
    Arm("longtail", "control", "Long-tail data"),
    Arm("class_balanced", "control", "Long-tail data, class-balanced sampling",
        sets=(("hashing.train.sampling", "class_balanced"),)),
    Arm("logit_adjusted", "control", "Long-tail data, logit-adjusted loss",
        sets=(("hashing.train.balance", "logit_adjusted"),)),
    Arm("resampled", "control", "Resampled: the method's schedule with copies of real images",
        mode="mix", init=PRETRAIN_NAME, source="resampled", shards="mix"),
    Arm("augmented", "generated", "Ours (synthetic pretrain + balanced mix)",
        mode="mix", init=PRETRAIN_NAME, source="generated", shards="mix"),
    Arm("pretrain_only", "ablation", "Synthetic pretrain, long-tail fine-tune", init=PRETRAIN_NAME,
        source="generated"),
    Arm("mix_only", "ablation", "Balanced mix, no pretrain", mode="mix", source="generated", shards="mix"),
)}
#: Every training rule: the shared pretraining stage and the arms.
TRAINING: dict[str, Arm] = {PRETRAIN_NAME: PRETRAIN, **ARMS}
RESAMPLED = "resampled"
#: Arm kinds, in table order.
ARM_KINDS = ("bound", "control", "generated", "ablation")


@dataclass(frozen=True)
class Run:
    """One trained hash model: arm (with generator and synthesis mode for crossed arms) x
    method x backbone x bits x hash-training seed (``hashing.seed`` of its jobs)."""

    arm: str
    method: str
    backbone: str
    bits: int
    generator: str | None = None
    synthesis: str | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        """``arm`` or ``arm-generator-synthesis``: the run folder and the report's row name."""
        return "-".join(part for part in (self.arm, self.generator, self.synthesis) if part)

    @property
    def model_label(self) -> str:
        return f"{self.method}-{self.backbone}-{self.bits}"

    @property
    def source(self) -> str | None:
        """Shard source folder under ``<results>/generate/``: ``<generator>/<synthesis>``, ``resampled`` or None."""
        return shard_source(ARMS[self.arm], self.generator, self.synthesis)

    def directory(self, results: str) -> str:
        return f"{results}/runs/{self.label}/{self.model_label}/seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """What the run is (written into run.json and the metrics' tags): never read from its path."""
        return {"arm": self.arm, "generator": self.generator, "synthesis": self.synthesis,
                "method": self.method, "backbone": self.backbone, "bits": self.bits, "seed": self.seed}


def shard_source(arm: Arm, generator: str | None, synthesis: str | None) -> str | None:
    """The shard source folder of an arm's job (``<generator>/<synthesis>`` or ``resampled``)."""
    if arm.source == "generated":
        return f"{generator}/{synthesis}"
    if arm.source == RESAMPLED:
        return RESAMPLED
    return None


def runs(config: Mapping[str, Any]) -> list[Run]:
    """Every hash model the experiment section asks for (each once per ``experiment.seeds``), in a stable order."""
    experiment = config["experiment"]
    out = []
    for name in experiment["arms"]:
        arm = ARMS[name]
        crossings = (itertools.product(experiment["generators"], experiment["synthesis"]) if arm.crossed
                     else [(None, None)])
        for generator, synthesis in crossings:
            for method, backbone, bits, seed in itertools.product(
                    experiment["methods"], experiment["backbones"], experiment["bits"], experiment["seeds"]):
                out.append(Run(name, method, backbone, int(bits), generator, synthesis, int(seed)))
    return out


def find_run(config: Mapping[str, Any], label: str, method: str, backbone: str, bits: int | str,
             seed: int | str) -> Run:
    """The run of ``runs(config)`` with this folder label, model and seed, naming what is asked for otherwise."""
    for run in runs(config):
        if (run.label, run.method, run.backbone, run.bits, run.seed) == (label, method, backbone, int(bits), int(seed)):
            return run
    raise LthashError(f"runs/{label}/{method}-{backbone}-{bits}/seed{seed} is not a run of this config's "
                      "experiment section")


def check_experiment(raw_config: Mapping[str, Any]) -> None:
    """Refuse, before validation, what the workflow sets itself: ``hashing.seed`` comes from
    ``experiment.seeds`` (every arm trains once per seed), so a config that sets it is refused."""
    hashing = raw_config.get("hashing") if isinstance(raw_config, Mapping) else None
    if isinstance(hashing, Mapping) and "seed" in hashing:
        raise LthashError("config key 'hashing.seed': the workflow trains every arm once per seed of "
                          "'experiment.seeds' and sets hashing.seed from it; list the seeds there "
                          f"(experiment.seeds: [{hashing['seed']}]) and remove hashing.seed")


def uses_generators(config: Mapping[str, Any]) -> bool:
    """Whether an arm of the experiment trains on generated shards (so generators run)."""
    return any(ARMS[arm].crossed for arm in config["experiment"]["arms"])


def shard_sources(config: Mapping[str, Any]) -> list[str]:
    """Every shard source the experiment needs (``<generator>/<synthesis>`` and/or ``resampled``)."""
    experiment = config["experiment"]
    sources = []
    if uses_generators(config):
        sources += [f"{g}/{s}" for g in experiment["generators"] for s in experiment["synthesis"]]
    if any(ARMS[arm].source == RESAMPLED for arm in experiment["arms"]):
        sources.append(RESAMPLED)
    return sources


def generated_sources(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(generator, synthesis mode) pairs the experiment draws shards of."""
    experiment = config["experiment"]
    if not uses_generators(config):
        return []
    return [(g, s) for g in experiment["generators"] for s in experiment["synthesis"]]


def quality_files(config: Mapping[str, Any]) -> list[str]:
    """The quality stage's metrics of every generator x synthesis mode the experiment draws."""
    return [f"{config['results']}/generate/{g}/{s}/quality.json" for g, s in generated_sources(config)]


def shard_path(results: str, source: str, purpose: str, class_index: int | str, shard: int | str) -> str:
    """Path of one shard file of a source (``<generator>/<synthesis>`` or ``resampled``)."""
    return f"{results}/generate/{source}/shards/{purpose}/class{class_index}/shard{shard}.h5"


def plan_shards(plan: Mapping[str, Any], results: str, source: str, purpose: str,
                class_index: int | str | None = None) -> list[str]:
    """Every shard file the plan asks of one source and purpose (one class, or all)."""
    files = []
    for entry in plan["classes"]:
        if class_index is not None and int(entry["index"]) != int(class_index):
            continue
        files += [shard_path(results, source, purpose, entry["index"], k) for k in range(len(entry[purpose]["shards"]))]
    return files


def init_folder(results: str, arm: Arm, wildcards: Mapping[str, Any]) -> list[str]:
    """The model folder a job of ``arm`` starts from (``[]`` when it starts from scratch)."""
    if arm.init is None:
        return []
    source = shard_source(arm, wildcards.get("generator"), wildcards.get("synthesis"))
    model = f"{wildcards['method']}-{wildcards['backbone']}-{wildcards['bits']}/seed{wildcards['seed']}"
    return [f"{results}/{TRAINING[arm.init].folder.format(source=source)}/{model}/model"]


def job_identity(arm: Arm, wildcards: Mapping[str, Any]) -> dict[str, Any]:
    """Identity of one training job from its rule's wildcards (pretraining jobs carry their source)."""
    identity = {"arm": arm.name, "generator": wildcards.get("generator"), "synthesis": wildcards.get("synthesis"),
                "method": wildcards["method"], "backbone": wildcards["backbone"], "bits": int(wildcards["bits"]),
                "seed": int(wildcards["seed"])}
    if arm.name == PRETRAIN_NAME:
        source = str(wildcards["source"])
        generator, _, synthesis = source.partition("/")
        identity.update(source=source, generator=None if source == RESAMPLED else generator,
                        synthesis=synthesis or None)
    return identity


def identity_tags(identity: Mapping[str, Any]) -> str:
    """``--tag=key=value`` of every identity field but ``bits`` (the job's params and the
    metrics carry the code length), shell-quoted; an empty value = not applicable."""
    return " ".join(shlex.quote(f"--tag={key}={'' if value is None else value}")
                    for key, value in identity.items() if key != "bits")


def read_plan(path: str | Path) -> dict:
    """The balancing plan written by ``lthash plan``."""
    return json.loads(Path(path).read_text())


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
    "base": ("generate.seed", "generate.base", "generate.categories"),
    "plan": ("generate.seed", "generate.synthesis.pretrain_per_class", "generate.synthesis.mix_target",
             "generate.synthesis.shard_size"),
    "personalize": ("generate.seed", "generate.categories", "generate.personalize",
                    *(f"-generate.personalize.{name}" for name in personalised_names()),
                    "generate.personalize.{generator}"),
    "synthesize": ("generate.seed", "generate.categories", "generate.synthesis",
                   "-generate.synthesis.pretrain_per_class", "-generate.synthesis.mix_target",
                   "-generate.synthesis.shard_size", "-generate.synthesis.{other_modes_keys}"),
    "resample": ("generate.seed",),
    "quality": ("generate.seed", "generate.categories", "generate.quality"),
    "filter_judge": ("generate.seed", "generate.filter_judge"),
    **{name: _train_reads(arm) for name, arm in TRAINING.items()},
    "encode": ("hashing.encode",),
    "score": ("evaluate", "-evaluate.search"),
    "report": ("report", "experiment"),
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
                                 "filter_judge": "filter-judge"}
STAGE_ONLY_READS: dict[str, tuple[str, ...]] = {"search": ("evaluate",), "export-imagefolder": ("dataset",)}
TOP_LEVEL = ("results", "device", "dataset", "split", "generate", "hashing", "evaluate", "experiment", "report")


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
    """Environment variables carrying the :data:`RUNTIME` keys to the jobs (the Snakefile exports them)."""
    return {variable: str(_lookup(config, path)) for path, (_, variable) in RUNTIME.items()}


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
        jobs += [("personalize", {"generator": g}) for g in experiment["generators"] if g in personalised_names()]
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


def generator_model(results: str, generator: str, cls: str, base_dir: str) -> str:
    """What synthesis draws class ``cls`` from: the concept folder of a personalising generator,
    the base folder itself for ``base`` (no personalise job)."""
    if generator in personalised_names():
        return f"{results}/generate/{generator}/concepts/class{cls}"
    return base_dir


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
    import yaml

    from lthash.config import SCHEMA_DIR

    hashing = yaml.safe_load((Path(SCHEMA_DIR) / "hashing.schema.yaml").read_text())
    experiment = yaml.safe_load((Path(SCHEMA_DIR) / "experiment.schema.yaml").read_text())["properties"]
    return {"method": list(hashing["$defs"]["method_name"]["enum"]),
            "backbone": list(hashing["$defs"]["backbone_name"]["enum"]),
            "generator": list(experiment["generators"]["items"]["enum"]),
            "synthesis": list(experiment["synthesis"]["items"]["enum"]),
            "bits": [32], "seed": [0]}


@functools.lru_cache(maxsize=1)
def _schema_tree() -> dict:
    """The validated default config (every key that has a default), to know which paths exist."""
    from lthash.config import validate_config

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

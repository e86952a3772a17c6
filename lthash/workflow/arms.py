"""The arms of the experiment and its run matrix: which hash models exist, what each is.

:data:`ARMS` has one entry per hashing arm (its kind, title, data, schedule and the config
values it fixes), from which the training rules, the run folders and the report's run list
come; :data:`PRETRAIN` is the shared pretraining stage. :func:`runs` crosses the arms with
generators x synthesis modes, methods, backbones, code lengths and seeds.
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from lthash.errors import LthashError

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
        """The run's folder (:data:`lthash.workflow.paths.RUN` filled)."""
        from lthash.workflow.paths import RUN

        return f"{results}/" + RUN.format(label=self.label, method=self.method, backbone=self.backbone,
                                          bits=self.bits, seed=self.seed)

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


def check_matrix(config: Mapping[str, Any]) -> None:
    """Refuse, before any job, what the experiment's methods cannot train: a logit-adjusted arm,
    or label smoothing of synthetic images, needs every method of ``experiment.methods`` to have
    class logits. The method registry (and torch) is imported only where such a setting is asked for."""
    experiment = config["experiment"]
    adjusted = [name for name in experiment["arms"]
                if dict(ARMS[name].sets).get("hashing.train.balance", "none") != "none"]
    smoothing = config["hashing"]["mix"]["synthetic_label_smoothing"]
    if not adjusted and not smoothing:
        return
    from lthash.hashing.methods import check_balance

    if adjusted:
        check_balance(experiment["methods"], "experiment.arms")
    if smoothing:
        check_balance(experiment["methods"], "hashing.mix.synthetic_label_smoothing", f"is {smoothing}")


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

"""Scored runs as the report sees them: identity from the run's own records, never its path.

A run's identity (arm, generator, synthesis, method, backbone, bits, seed) comes from the tags
the score stage wrote into ``metrics.json`` (``metrics["tags"]``), then from the trained model's
``model/run.json`` beside it (its ``tags`` or ``identity`` mapping, then its top level), and
``bits`` finally from the metrics themselves. ``generator`` and ``synthesis`` may be missing
(real-data arms); ``seed`` too (a run from before seeds were an axis: one seed, ``None``);
``arm``, ``method`` and ``backbone`` may not. An arm's kind and title come from the workflow's
arm registry (:data:`lthash.workflow.ARMS`); an arm it does not know is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lthash.errors import LthashError
from lthash.io import read_json
from lthash.report.uncertainty import seed_order
from lthash.workflow import ARM_KINDS, ARMS, RUN_MODEL, Arm

GROUPS = ("head", "medium", "tail")
IDENTITY = ("arm", "generator", "synthesis", "method", "backbone", "bits", "seed")


@dataclass(frozen=True)
class Setting:
    """What one table section compares arms under: method x backbone x code length."""

    method: str
    backbone: str
    bits: int

    @property
    def title(self) -> str:
        return f"{self.method}, {self.backbone}, {self.bits} bits"

    @property
    def slug(self) -> str:
        return f"{self.method}-{self.backbone}-{self.bits}"


@dataclass
class RunRecord:
    """One scored run: identity, metrics, the model's run record and where its files are."""

    arm: str
    generator: str | None
    synthesis: str | None
    method: str
    backbone: str
    bits: int
    metrics: dict[str, Any]
    metrics_path: Path
    record: dict[str, Any] = field(default_factory=dict)
    codes_path: Path | None = None
    seed: int | None = None

    @property
    def label(self) -> str:
        """``arm[-generator][-synthesis]``: the row name of every table."""
        return "-".join(part for part in (self.arm, self.generator, self.synthesis) if part)

    @property
    def kind(self) -> str:
        """``bound`` / ``control`` / ``generated`` / ``ablation``, from :data:`lthash.workflow.ARMS`."""
        return known_arm(self.arm, self.metrics_path).kind

    @property
    def setting(self) -> Setting:
        return Setting(self.method, self.backbone, self.bits)

    @property
    def folder(self) -> Path:
        return self.metrics_path.parent

    @property
    def title(self) -> str:
        title = known_arm(self.arm, self.metrics_path).title
        extra = ", ".join(part for part in (self.generator, self.synthesis) if part)
        return f"{title} [{extra}]" if extra else title

    def result(self, R: Any, ties: str) -> dict[str, Any] | None:
        """The metrics row of cut-off ``R`` and tie policy ``ties``, or None."""
        for row in self.metrics.get("results", []):
            if str(row["R"]) == str(R) and row["ties"] == ties:
                return row
        return None

    def value(self, R: Any, ties: str, key: str = "map") -> float | None:
        row = self.result(R, ties)
        value = None if row is None else row.get(key)
        return None if value is None else float(value)

    def class_ap(self, R: Any, ties: str) -> list[float | None]:
        """AP@R of every class (None where the class has no query)."""
        key = f"{R}/{ties}"
        return [entry.get("ap", {}).get(key) for entry in self.metrics.get("per_class", [])]


def known_arm(arm: str, where: Any = None) -> Arm:
    """The registry entry of ``arm`` (:data:`lthash.workflow.ARMS`); an unknown arm is an error naming it."""
    if arm not in ARMS:
        raise LthashError(f"{str(where) + ': ' if where else ''}arm {arm!r} is not an arm of the workflow "
                          f"(known: {', '.join(ARMS)})")
    return ARMS[arm]


def arm_order(arm: str) -> tuple[int, int]:
    """Table order of an arm: by kind (:data:`lthash.workflow.ARM_KINDS`), then registry order."""
    return ARM_KINDS.index(known_arm(arm).kind), list(ARMS).index(arm)


def _identity(metrics: Mapping[str, Any], record: Mapping[str, Any], path: Path) -> dict[str, Any]:
    sources = [metrics.get("tags") or {}, record.get("tags") or {}, record.get("identity") or {}, record]
    found: dict[str, Any] = {}
    for key in IDENTITY:
        for source in sources:
            value = source.get(key) if isinstance(source, Mapping) else None
            if value not in (None, ""):
                found[key] = value
                break
    found.setdefault("bits", metrics.get("bits"))
    missing = [key for key in ("arm", "method", "backbone", "bits") if found.get(key) in (None, "")]
    if missing:
        raise LthashError(f"{path}: the run's identity lacks {missing}: neither metrics['tags'] nor "
                          "model/run.json names them (score with --tag arm=... --tag method=... "
                          "--tag backbone=...)")
    return found


def load_run(metrics_path: str | os.PathLike, codes_path: str | os.PathLike | None = None) -> RunRecord:
    """A scored run from its ``metrics.json`` (and ``model/run.json`` beside it, if present)."""
    path = Path(metrics_path)
    metrics = read_json(path)
    if not isinstance(metrics, dict) or "results" not in metrics:
        raise LthashError(f"{path}: not a metrics file of lthash score (no 'results')")
    record_path = path.parent / RUN_MODEL / "run.json"
    record = read_json(record_path) if record_path.exists() else {}
    ident = _identity(metrics, record, path)
    try:
        bits = int(ident["bits"])
    except (TypeError, ValueError) as exc:
        raise LthashError(f"{path}: bits {ident['bits']!r} is not an integer") from exc
    try:
        seed = None if ident.get("seed") is None else int(ident["seed"])
    except (TypeError, ValueError) as exc:
        raise LthashError(f"{path}: seed {ident['seed']!r} is not an integer") from exc
    known_arm(str(ident["arm"]), path)
    return RunRecord(arm=str(ident["arm"]), generator=ident.get("generator"), synthesis=ident.get("synthesis"),
                     method=str(ident["method"]), backbone=str(ident["backbone"]), bits=bits, metrics=metrics,
                     metrics_path=path, record=record if isinstance(record, dict) else {},
                     codes_path=Path(codes_path) if codes_path else None, seed=seed)


def load_runs(metrics: Sequence[str | os.PathLike], codes: Sequence[str | os.PathLike] = ()) -> list[RunRecord]:
    """Every run, each paired with the codes file in its own folder (when one is given).

    Two runs with the same identity (seed included) are refused: a table would hide one of them.
    """
    by_folder = {Path(c).parent.resolve(): Path(c) for c in codes}
    runs = [load_run(m, by_folder.get(Path(m).parent.resolve())) for m in metrics]
    if not runs:
        raise LthashError("no scored runs to report (--metrics is empty)")
    seen: dict[tuple, Path] = {}
    for run in runs:
        key = (run.label, run.method, run.backbone, run.bits, run.seed)
        if key in seen:
            raise LthashError(f"{run.metrics_path} and {seen[key]} are the same run "
                              f"({run.label}, {run.setting.title}, seed {run.seed}): give each run once")
        seen[key] = run.metrics_path
    runs.sort(key=lambda r: (r.method, r.backbone, r.bits, arm_order(r.arm), r.label, seed_order(r.seed)))
    return runs


def primary_cut(runs: Sequence[RunRecord]) -> tuple[Any, str]:
    """The main figure of every table: the first configured cut-off R, ties by database index
    (what the references compute) where scored, else the first scored tie policy."""
    first = runs[0].metrics
    R = first["results"][0]["R"]
    ties = first.get("ties") or [first["results"][0]["ties"]]
    return R, "index" if "index" in ties else ties[0]


@dataclass
class ArmRuns:
    """One arm of one setting: its runs by seed (``None`` = a run from before seeds), in seed order.

    ``value`` and ``class_ap`` are means over the seeds that have the number, so a table or
    figure built for one run reads an arm's mean the same way.
    """

    label: str
    runs: dict[int | None, RunRecord]

    @property
    def first(self) -> RunRecord:
        """The run of the first seed (the retrieval pictures show it)."""
        return self.runs[min(self.runs, key=seed_order)]

    @property
    def seeds(self) -> list[int | None]:
        return sorted(self.runs, key=seed_order)

    @property
    def arm(self) -> str:
        return self.first.arm

    @property
    def kind(self) -> str:
        return self.first.kind

    @property
    def title(self) -> str:
        return self.first.title

    @property
    def generator(self) -> str | None:
        return self.first.generator

    @property
    def synthesis(self) -> str | None:
        return self.first.synthesis

    @property
    def setting(self) -> Setting:
        return self.first.setting

    @property
    def metrics(self) -> dict[str, Any]:
        """The first seed's metrics (per-class names, groups and counts are the same for every seed)."""
        return self.first.metrics

    def values(self, R: Any, ties: str, key: str = "map") -> dict[int | None, float | None]:
        """Seed -> the number ``key`` at cut-off ``R`` and tie policy ``ties``."""
        return {seed: self.runs[seed].value(R, ties, key) for seed in self.seeds}

    def value(self, R: Any, ties: str, key: str = "map") -> float | None:
        kept = [v for v in self.values(R, ties, key).values() if v is not None]
        return sum(kept) / len(kept) if kept else None

    def class_ap(self, R: Any, ties: str) -> list[float | None]:
        """Mean over seeds of each class's AP@R (None where no seed has it)."""
        per_seed = [self.runs[seed].class_ap(R, ties) for seed in self.seeds]
        out = []
        for c in range(len(per_seed[0])):
            kept = [aps[c] for aps in per_seed if c < len(aps) and aps[c] is not None]
            out.append(sum(kept) / len(kept) if kept else None)
        return out


def by_setting(runs: Sequence[RunRecord]) -> dict[Setting, dict[str, ArmRuns]]:
    """Runs grouped by setting, each group keyed by arm label (table order), each arm by seed."""
    out: dict[Setting, dict[str, ArmRuns]] = {}
    for run in runs:
        arms = out.setdefault(run.setting, {})
        arms.setdefault(run.label, ArmRuns(run.label, {})).runs[run.seed] = run
    for arms in out.values():
        for arm in arms.values():
            arm.runs = {seed: arm.runs[seed] for seed in sorted(arm.runs, key=seed_order)}
    return out

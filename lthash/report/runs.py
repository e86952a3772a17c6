"""Scored runs as the report sees them: identity from the run's own records, never its path.

A run's identity (arm, generator, synthesis, method, backbone, bits) comes from the tags the
score stage wrote into ``metrics.json`` (``metrics["tags"]``), then from the trained model's
``model/run.json`` beside it (its ``tags`` or ``identity`` mapping, then its top level), and
``bits`` finally from the metrics themselves. ``generator`` and ``synthesis`` may be missing
(real-data arms); ``arm``, ``method`` and ``backbone`` may not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lthash.errors import LthashError
from lthash.io import read_json

#: arm -> kind: the references bound the gap, the controls re-use real images, the method
#: (and its ablations) use generated images.
ARM_KINDS = {
    "balanced": "reference",
    "longtail": "reference",
    "class_balanced": "control",
    "resampled": "control",
    "augmented": "generated",
    "pretrain_only": "ablation",
    "mix_only": "ablation",
}
ARM_TITLES = {
    "balanced": "Balanced data (upper bound)",
    "longtail": "Long-tail data",
    "class_balanced": "Long-tail data, class-balanced sampling",
    "resampled": "Resampled: the method's schedule with copies of real images",
    "augmented": "Ours (synthetic pretrain + balanced mix)",
    "pretrain_only": "Synthetic pretrain, long-tail fine-tune",
    "mix_only": "Balanced mix, no pretrain",
}
GROUPS = ("head", "medium", "tail")
IDENTITY = ("arm", "generator", "synthesis", "method", "backbone", "bits")


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

    @property
    def label(self) -> str:
        """``arm[-generator][-synthesis]``: the row name of every table."""
        return "-".join(part for part in (self.arm, self.generator, self.synthesis) if part)

    @property
    def kind(self) -> str:
        return ARM_KINDS.get(self.arm, "other")

    @property
    def setting(self) -> Setting:
        return Setting(self.method, self.backbone, self.bits)

    @property
    def folder(self) -> Path:
        return self.metrics_path.parent

    @property
    def title(self) -> str:
        title = ARM_TITLES.get(self.arm, self.arm)
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


def arm_order(label_arm: str) -> int:
    order = list(ARM_KINDS)
    return order.index(label_arm) if label_arm in order else len(order)


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
    record_path = path.parent / "model" / "run.json"
    record = read_json(record_path) if record_path.exists() else {}
    ident = _identity(metrics, record, path)
    try:
        bits = int(ident["bits"])
    except (TypeError, ValueError) as exc:
        raise LthashError(f"{path}: bits {ident['bits']!r} is not an integer") from exc
    return RunRecord(arm=str(ident["arm"]), generator=ident.get("generator"), synthesis=ident.get("synthesis"),
                     method=str(ident["method"]), backbone=str(ident["backbone"]), bits=bits, metrics=metrics,
                     metrics_path=path, record=record if isinstance(record, dict) else {},
                     codes_path=Path(codes_path) if codes_path else None)


def load_runs(metrics: Sequence[str | os.PathLike], codes: Sequence[str | os.PathLike] = ()) -> list[RunRecord]:
    """Every run, each paired with the codes file in its own folder (when one is given).

    Two runs with the same identity are refused: a table row would hide one of them.
    """
    by_folder = {Path(c).parent.resolve(): Path(c) for c in codes}
    runs = [load_run(m, by_folder.get(Path(m).parent.resolve())) for m in metrics]
    if not runs:
        raise LthashError("no scored runs to report (--metrics is empty)")
    seen: dict[tuple, Path] = {}
    for run in runs:
        key = (run.label, run.method, run.backbone, run.bits)
        if key in seen:
            raise LthashError(f"{run.metrics_path} and {seen[key]} are the same run "
                              f"({run.label}, {run.setting.title}): give each run once")
        seen[key] = run.metrics_path
    runs.sort(key=lambda r: (r.method, r.backbone, r.bits, arm_order(r.arm), r.label))
    return runs


def primary_cut(runs: Sequence[RunRecord]) -> tuple[Any, str]:
    """The main figure of every table: the first configured cut-off R, ties by database index
    (what the references compute) where scored, else the first scored tie policy."""
    first = runs[0].metrics
    R = first["results"][0]["R"]
    ties = first.get("ties") or [first["results"][0]["ties"]]
    return R, "index" if "index" in ties else ties[0]

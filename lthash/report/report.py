"""The report stage: the papers' tables and figures from every run, as Markdown + one CSV.

Inputs are the score stage's ``metrics.json`` files, laid out as
``<results>/runs/<arm>/<method>-<backbone>-<bits>/metrics.json`` with the trained model
folder (``model/``: run.json, curves.png) and plots (``plots/``) beside them, the
generators' quality JSON files and the split summary. The main number of every table is
mAP at the first configured cut-off with ties ranked by database index (what the
references compute); the tie-averaged mAP stands beside it in its own table.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lthash.errors import LthashError
from lthash.io import atomic_path, read_json
from lthash.provenance import code_version, config_digest

ARM_TITLES = {
    "balanced": "Balanced data",
    "longtail": "Long-tail data",
    "augmented": "Ours (synthetic pretrain + balanced mix)",
    "pretrain_only": "Synthetic pretrain, long-tail fine-tune",
    "mix_only": "Balanced mix, no pretrain",
}
TABLE_COLUMNS = ("arm", "generator", "method", "backbone", "bits", "R", "ties", "map", "map_head",
                 "map_medium", "map_tail", "precision_at_R", "n_query", "n_database")


@dataclass(frozen=True)
class RunMetrics:
    """One scored run: where it lives and what its metrics JSON says."""

    arm: str
    generator: str | None
    method: str
    backbone: str
    bits: int
    folder: Path
    metrics: dict[str, Any]

    @property
    def arm_label(self) -> str:
        return self.arm if self.generator is None else f"{self.arm}-{self.generator}"

    def result(self, R: Any, ties: str) -> dict[str, Any] | None:
        for row in self.metrics["results"]:
            if str(row["R"]) == str(R) and row["ties"] == ties:
                return row
        return None


def parse_run(metrics_path: str | os.PathLike) -> RunMetrics:
    """Read ``.../runs/<arm>[-<generator>]/<method>-<backbone>-<bits>/metrics.json``."""
    path = Path(metrics_path)
    folder = path.parent
    try:
        method, backbone, bits = folder.name.rsplit("-", 2)
        arm, _, generator = folder.parent.name.partition("-")
        bits_value = int(bits)
    except ValueError as exc:
        raise LthashError(f"{path}: not laid out as runs/<arm>/<method>-<backbone>-<bits>/metrics.json") from exc
    return RunMetrics(arm, generator or None, method, backbone, bits_value, folder, read_json(path))


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    return f"{100 * float(value):.2f}"


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _arm_order(label: str) -> tuple[int, str]:
    arm = label.split("-")[0]
    order = list(ARM_TITLES)
    return (order.index(arm) if arm in order else len(order), label)


def _arm_title(run: RunMetrics) -> str:
    title = ARM_TITLES.get(run.arm, run.arm)
    return f"{title} [{run.generator}]" if run.generator else title


class Report:
    """Builds the Markdown sections from the scored runs."""

    def __init__(self, runs: Sequence[RunMetrics], report_path: Path, primary_R: Any):
        if not runs:
            raise LthashError("no scored runs to report")
        self.runs = sorted(runs, key=lambda r: (_arm_order(r.arm_label), r.method, r.backbone, r.bits))
        self.base = report_path.parent
        self.R = primary_R
        self.bits = sorted({r.bits for r in runs})
        self.methods = sorted({r.method for r in runs})
        self.backbones = sorted({r.backbone for r in runs})

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.base)

    def value(self, run: RunMetrics | None, key: str = "map", ties: str = "index") -> str:
        if run is None:
            return "–"
        row = run.result(self.R, ties)
        return _fmt(row[key]) if row else "–"

    def find(self, arm_label: str, method: str, backbone: str, bits: int) -> RunMetrics | None:
        for run in self.runs:
            if (run.arm_label, run.method, run.backbone, run.bits) == (arm_label, method, backbone, bits):
                return run
        return None

    def arm_labels(self) -> list[str]:
        return sorted({r.arm_label for r in self.runs}, key=_arm_order)

    def table_arms(self) -> str:
        """Seed paper table 1: arm x backbone rows, code-length columns, one table per method."""
        parts = []
        for method in self.methods:
            rows = []
            for backbone in self.backbones:
                for label in self.arm_labels():
                    runs = [self.find(label, method, backbone, b) for b in self.bits]
                    if not any(runs):
                        continue
                    title = _arm_title(next(r for r in runs if r))
                    rows.append([title, backbone] + [self.value(r) for r in runs])
            header = ["training data", "backbone"] + [f"{b} bits" for b in self.bits]
            parts.append(f"**{method}**, mAP@{self.R} (%)\n\n" + _markdown_table(header, rows))
        return "\n\n".join(parts)

    def table_generators(self) -> str:
        """Seed paper table 2: the personalisation technique behind the augmented arm."""
        rows = []
        for method in self.methods:
            for backbone in self.backbones:
                for label in self.arm_labels():
                    if not label.startswith("augmented-") and label != "longtail":
                        continue
                    runs = [self.find(label, method, backbone, b) for b in self.bits]
                    if any(runs):
                        technique = label.split("-", 1)[1] if "-" in label else "none (long-tail only)"
                        rows.append([technique, method, backbone] + [self.value(r) for r in runs])
        header = ["generator", "method", "backbone"] + [f"{b} bits" for b in self.bits]
        return _markdown_table(header, rows) if rows else "_no augmented runs in this config_"

    def table_methods(self) -> str:
        """Seed paper table 3 / LTHNet tables 3-4: hash methods down, arms x code lengths across."""
        labels = self.arm_labels()
        header = ["method", "backbone"] + [f"{label} {b}" for label in labels for b in self.bits]
        rows = []
        for method in self.methods:
            for backbone in self.backbones:
                rows.append([method, backbone] + [self.value(self.find(label, method, backbone, b))
                                                  for label in labels for b in self.bits])
        return _markdown_table(header, rows)

    def table_groups(self) -> str:
        """Head / medium / tail mAP and the tie-averaged mAP of every run."""
        header = ["arm", "method", "backbone", "bits", "mAP", "head", "medium", "tail", "mAP tie-avg",
                  "tail tie-avg"]
        rows = [[r.arm_label, r.method, r.backbone, r.bits, self.value(r), self.value(r, "map_head"),
                 self.value(r, "map_medium"), self.value(r, "map_tail"), self.value(r, ties="average"),
                 self.value(r, "map_tail", ties="average")] for r in self.runs]
        return _markdown_table(header, rows)

    def table_per_class(self) -> str:
        """Per-class AP of every arm at the longest code, first method and backbone."""
        method, backbone, bits = self.methods[0], self.backbones[0], self.bits[-1]
        runs = [(label, self.find(label, method, backbone, bits)) for label in self.arm_labels()]
        runs = [(label, run) for label, run in runs if run is not None]
        if not runs:
            return ""
        key = f"{self.R}/index"
        first = runs[0][1].metrics["per_class"]
        order = sorted(range(len(first)), key=lambda c: -first[c]["train_count"])
        header = ["class", "train images", "group"] + [label for label, _ in runs]
        rows = []
        for c in order:
            entry = first[c]
            rows.append([entry["name"], entry["train_count"], entry["group"]]
                        + [_fmt(run.metrics["per_class"][c]["ap"].get(key)) for _, run in runs])
        return (f"{method}, {backbone}, {bits} bits, AP@{self.R} (%), classes from head to tail\n\n"
                + _markdown_table(header, rows))

    def figures(self) -> str:
        lines = []
        for run in self.runs:
            pr = run.folder / "plots" / "pr_radius.png"
            curves = run.folder / "model" / "curves.png"
            links = []
            if pr.exists():
                links.append(f"[PR curve]({self.rel(pr)})")
            pk = run.folder / "plots" / "precision_at_k.png"
            if pk.exists():
                links.append(f"[P@k]({self.rel(pk)})")
            if curves.exists():
                links.append(f"[training curves]({self.rel(curves)})")
            lines.append(f"- {run.arm_label} / {run.method} / {run.backbone} / {run.bits} bits: " + ", ".join(links))
        return "\n".join(lines)

    def provenance(self) -> str:
        header = ["run", "training seed", "hashing config digest", "code version of the run", "evaluation seed"]
        rows = []
        for run in self.runs:
            record_path = run.folder / "model" / "run.json"
            record = read_json(record_path) if record_path.exists() else {}
            params = record.get("params", {})
            rows.append([f"{run.arm_label}/{run.folder.name}", record.get("seed", "–"),
                         config_digest(params) if params else "–", record.get("code_version", "–"),
                         run.metrics.get("seed", "–")])
        return _markdown_table(header, rows)


def quality_section(paths: Sequence[str | os.PathLike], report_path: Path) -> str:
    """Class fidelity and diversity of each generator's synthetic images (``lthash quality``)."""
    if not paths:
        return "_quality scoring is off in this config_"
    parts = []
    for path in paths:
        data = read_json(path)
        judge = data.get("judge", {})
        intro = (f"Judge: a {judge.get('classifier', '?')} classifier trained on "
                 f"{judge.get('trained_on', 'the real training set')}, "
                 f"{_fmt(judge.get('query_accuracy'))}% accurate on the real query set. "
                 f"Class fidelity = share of synthetic images of a class the judge assigns to it; "
                 f"diversity = mean pairwise distance of synthetic images over that of the real ones.")
        for generator, result in data.get("generators", {}).items():
            summary = ", ".join(f"{key.replace('_', ' ')} {_fmt(value) if 'fidelity' in key else f'{value:.2f}'}"
                                for key, value in sorted(result.items()) if isinstance(value, (int, float)))
            header = ["class", "real train images", "judge accuracy on real", "class fidelity",
                      "category fidelity", "diversity ratio"]
            classes = sorted(result.get("classes", {}).items(), key=lambda item: -item[1].get("real_train_images", 0))
            rows = [[name, entry.get("real_train_images", "–"),
                     _fmt(judge.get("query_accuracy_per_class", {}).get(name)),
                     _fmt(entry.get("class_fidelity")), _fmt(entry.get("category_fidelity")),
                     f"{entry['diversity_ratio']:.2f}" if entry.get("diversity_ratio") is not None else "–"]
                    for name, entry in classes]
            text = [f"**{generator}**: {summary}", intro]
            grid = Path(path).parent / "real_vs_synthetic.png"
            if grid.exists():
                text.append(f"![real vs synthetic, {generator}]({os.path.relpath(grid, report_path.parent)})")
            parts.append("\n\n".join(text) + "\n\n" + _markdown_table(header, rows))
    return "\n\n".join(parts)


def split_section(summary_path: str | os.PathLike, report_path: Path) -> str:
    summary = read_json(summary_path)
    figure = Path(summary_path).parent / "class_distribution.png"
    lines = [f"Dataset **{summary.get('dataset', '?')}**, split seed {summary.get('seed', '?')}."]
    counts = summary.get("counts", {})
    if isinstance(counts, Mapping):
        sizes = {group: sum(values) if isinstance(values, list) else values for group, values in counts.items()}
        lines.append(", ".join(f"{group}: {size} images" for group, size in sorted(sizes.items())))
    if figure.exists():
        lines.append(f"![class distribution]({os.path.relpath(figure, report_path.parent)})")
    return "\n\n".join(lines)


def write_report(metrics: Sequence[str | os.PathLike], out: str | os.PathLike, table: str | os.PathLike,
                 split_summary: str | os.PathLike, quality: Sequence[str | os.PathLike] = (),
                 params: Mapping[str, Any] | None = None) -> None:
    """Write ``report.md`` and the all-runs CSV ``table`` atomically."""
    params = dict(params or {})
    runs = [parse_run(path) for path in metrics]
    out = Path(out)
    primary_R = runs[0].metrics["results"][0]["R"] if runs else "all"
    report = Report(runs, out, primary_R)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"# {params.get('report', {}).get('title', 'lthash report')}",
        f"Generated {now} by {code_version()}; report config digest {config_digest(params)}.",
        f"mAP@{primary_R} in percent; R = all is the whole database. Ties in Hamming distance are "
        "ranked by database index (as the references do); the tie-averaged mAP (expected AP over "
        "random orders inside ties) is in the head/medium/tail table.",
        "## Data\n\n" + split_section(split_summary, out),
        "## Table 1: balanced vs long-tail vs the method\n\n" + report.table_arms(),
        "## Table 2: personalisation technique\n\n" + report.table_generators(),
        "## Table 3: hash methods (LTHNet layout)\n\n" + report.table_methods(),
        "## Head / medium / tail classes\n\n" + report.table_groups(),
        "## Per-class AP\n\n" + report.table_per_class(),
        "## Synthetic data quality\n\n" + quality_section(quality, out),
        "## Figures\n\n" + report.figures(),
        "## Provenance\n\n" + report.provenance(),
    ]
    with atomic_path(out, suffix=".md") as tmp:
        tmp.write_text("\n\n".join(sections) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for run in report.runs:
        for row in run.metrics["results"]:
            writer.writerow({**row, "arm": run.arm, "generator": run.generator or "", "method": run.method,
                             "backbone": run.backbone, "bits": run.bits})
    with atomic_path(table, suffix=".csv") as tmp:
        tmp.write_text(buffer.getvalue())


def read_table(path: str | os.PathLike) -> list[dict[str, str]]:
    """The all-runs CSV written by :func:`write_report`."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


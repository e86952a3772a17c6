"""The report stage: the tables that answer the question, the seed papers' tables, figures.

Inputs are the score stage's ``metrics.json`` files (run identity from their tags, see
:mod:`lthash.report.runs`), the codes file of every run and the split (retrieval pictures),
the generators' quality JSON files, the split summary and Snakemake's benchmark folder. The
main number of every table is mAP at the first configured cut-off with ties ranked by
database index (what the references compute); the tie-averaged mAP stands beside it in the
head / medium / tail table.

Outputs: ``report.md`` (the verdict, :func:`lthash.report.analysis.summary`, first); the
all-runs CSV (``--table``, one row per run, seed and cut-off); in ``--tables`` the CSV + HTML
of every table in :data:`TABLE_NAMES`, :data:`VERDICT` (the verdict alone, the first item
of the HTML report) and :data:`lthash.report.home.HOME` (the HTML report's first page); in ``--figures`` the retrieval picture, the per-class AP chart and the
every-seed chart of every setting (:func:`lthash.report.figures.figure_path`).
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from lthash.io import atomic_path, read_json
from lthash.report.home import HOME, home_rst
from lthash.provenance import code_version, config_digest
from lthash.report.analysis import arms_table, generator_table, per_class_table, sentence, summary, validation_table
from lthash.report.runs import ArmRuns, RunRecord, Setting, by_setting, load_runs, primary_cut
from lthash.report.knowledge import knowledge_table
from lthash.report.tables import Section, Table, markdown_grid, pct, to_markdown, verdict_html, write_table
from lthash.report.uncertainty import spread, spread_text
from lthash.report.timing import timing_table
from lthash.workflow import RUN_MODEL

#: every table the report writes as ``<name>.csv`` and ``<name>.html`` (the rule's outputs)
TABLE_NAMES = ("arms", "generator_adds", "generator_knowledge", "per_class", "validation", "timing", "classes")
#: the verdict page the report writes into ``--tables`` (the HTML report's first item)
VERDICT = "verdict.html"
TABLE_COLUMNS = ("arm_label", "arm", "generator", "synthesis", "kind", "method", "backbone", "bits", "seed", "R",
                 "ties",
                 "map", "map_head", "map_medium", "map_tail", "precision_at_R", "n_query", "n_database")


class SeedTables:
    """The seed paper's tables 1-3 and the all-runs group table, from the scored runs (an arm's
    cell is its mean ± sd over seeds; the group table has one row per run and seed)."""

    def __init__(self, runs: Sequence[RunRecord], report_path: Path, R: Any, ties: str):
        self.runs = list(runs)
        self.arms = {(label, setting): arm for setting, arms in by_setting(runs).items() for label, arm in arms.items()}
        self.base = report_path.parent
        self.R, self.ties = R, ties
        self.bits = sorted({r.bits for r in runs})
        self.methods = sorted({r.method for r in runs})
        self.backbones = sorted({r.backbone for r in runs})
        self.labels = list(dict.fromkeys(r.label for r in self.runs))

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.base)

    def value(self, run: RunRecord | None, key: str = "map", ties: str | None = None) -> str:
        return "–" if run is None else pct(run.value(self.R, ties or self.ties, key))

    def mean(self, arm: ArmRuns | None) -> str:
        """An arm's mAP as mean ± sd over its seeds (the mean alone for one seed)."""
        return "–" if arm is None else spread_text(spread(arm.values(self.R, self.ties)))

    def find(self, label: str, method: str, backbone: str, bits: int) -> ArmRuns | None:
        """The arm of this label and setting, all its seeds."""
        return self.arms.get((label, Setting(method, backbone, bits)))

    def table_arms(self) -> str:
        """Seed paper table 1: arm x backbone rows, code-length columns, one table per method."""
        parts = []
        for method in self.methods:
            rows = []
            for backbone in self.backbones:
                for label in self.labels:
                    runs = [self.find(label, method, backbone, b) for b in self.bits]
                    if any(runs):
                        rows.append([next(r for r in runs if r).title, backbone] + [self.mean(r) for r in runs])
            header = ["training data", "backbone"] + [f"{b} bits" for b in self.bits]
            parts.append(f"**{method}**, mAP@{self.R} (%), mean ± sd over seeds\n\n" + markdown_grid(header, rows))
        return "\n\n".join(parts)

    def table_generators(self) -> str:
        """Seed paper table 2: the personalisation technique behind the augmented arm."""
        rows = []
        for method in self.methods:
            for backbone in self.backbones:
                for label in self.labels:
                    runs = [self.find(label, method, backbone, b) for b in self.bits]
                    first = next((r for r in runs if r), None)
                    if first is None or not (first.kind == "generated" or label == "longtail"):
                        continue
                    technique = ("none (long-tail only)" if label == "longtail" else
                                 " ".join(p for p in (first.generator, first.synthesis) if p) or label)
                    rows.append([technique, method, backbone] + [self.mean(r) for r in runs])
        header = ["generator", "method", "backbone"] + [f"{b} bits" for b in self.bits]
        return markdown_grid(header, rows) if rows else "_no augmented runs in this config_"

    def table_methods(self) -> str:
        """Seed paper table 3 / LTHNet tables 3-4: hash methods down, arms x code lengths across."""
        header = ["method", "backbone"] + [f"{label} {b}" for label in self.labels for b in self.bits]
        rows = [[method, backbone] + [self.mean(self.find(label, method, backbone, b))
                                      for label in self.labels for b in self.bits]
                for method in self.methods for backbone in self.backbones]
        return markdown_grid(header, rows)

    def table_groups(self) -> str:
        """Head / medium / tail mAP and the tie-averaged mAP of every run."""
        header = ["arm", "method", "backbone", "bits", "seed", "mAP", "head", "medium", "tail", "mAP tie-avg",
                  "tail tie-avg"]
        rows = [[r.label, r.method, r.backbone, r.bits, "–" if r.seed is None else r.seed, self.value(r), self.value(r, "map_head"),
                 self.value(r, "map_medium"), self.value(r, "map_tail"), self.value(r, ties="average"),
                 self.value(r, "map_tail", ties="average")] for r in self.runs]
        return markdown_grid(header, rows)

    def figures(self) -> str:
        """Links to every run's PR, P@k and training-curve figures."""
        lines = []
        for run in self.runs:
            links = []
            for name, path in (("PR curve", run.folder / "plots" / "pr_radius.png"),
                               ("P@k", run.folder / "plots" / "precision_at_k.png"),
                               ("training curves", run.folder / RUN_MODEL / "curves.png")):
                if path.exists():
                    links.append(f"[{name}]({self.rel(path)})")
            lines.append(f"- {run.label} / {run.setting.title} / seed {'–' if run.seed is None else run.seed}: "
                         + (", ".join(links) or "no figures"))
        return "\n".join(lines)

    def provenance(self) -> str:
        header = ["run", "training seed", "hashing config digest", "code version of the run", "evaluation seed"]
        rows = []
        for run in self.runs:
            params = run.record.get("params", {})
            rows.append([f"{run.label}/{run.setting.slug}", "–" if run.seed is None else run.seed,
                         config_digest(params) if params else "–", run.record.get("code_version", "–"),
                         run.metrics.get("evaluate_seed", "–")])
        return markdown_grid(header, rows)


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
                 f"{pct(judge.get('query_accuracy'))}% accurate on the real query set. "
                 f"Class fidelity = share of synthetic images of a class the judge assigns to it; "
                 f"diversity = mean pairwise distance of synthetic images over that of the real ones.")
        for generator, result in data.get("generators", {}).items():
            summary_text = ", ".join(
                f"{key.replace('_', ' ')} {pct(value) if 'fidelity' in key else f'{value:.2f}'}"
                for key, value in sorted(result.items()) if isinstance(value, (int, float)))
            header = ["class", "real train images", "judge accuracy on real", "class fidelity",
                      "category fidelity", "diversity ratio"]
            classes = sorted(result.get("classes", {}).items(), key=lambda item: -item[1].get("real_train_images", 0))
            rows = [[name, entry.get("real_train_images", "–"),
                     pct(judge.get("query_accuracy_per_class", {}).get(name)),
                     pct(entry.get("class_fidelity")), pct(entry.get("category_fidelity")),
                     f"{entry['diversity_ratio']:.2f}" if entry.get("diversity_ratio") is not None else "–"]
                    for name, entry in classes]
            text = [f"**{generator}**: {summary_text}", intro]
            grid = Path(path).parent / "real_vs_synthetic.png"
            if grid.exists():
                text.append(f"![real vs synthetic, {generator}]({os.path.relpath(grid, report_path.parent)})")
            parts.append("\n\n".join(text) + "\n\n" + markdown_grid(header, rows))
    return "\n\n".join(parts)


def split_section(summary_path: str | os.PathLike, report_path: Path) -> str:
    summary_data = read_json(summary_path)
    figure = Path(summary_path).parent / "class_distribution.png"
    lines = [f"Dataset **{summary_data.get('dataset', '?')}**, split seed {summary_data.get('seed', '?')}."]
    counts = summary_data.get("counts", {})
    if isinstance(counts, Mapping):
        sizes = {group: sum(values) if isinstance(values, list) else values for group, values in counts.items()}
        lines.append(", ".join(f"{group}: {size} images" for group, size in sorted(sizes.items())))
    if figure.exists():
        lines.append(f"![class distribution]({os.path.relpath(figure, report_path.parent)})")
    return "\n\n".join(lines)


def classes_table(summary_path: str | os.PathLike, generate: Mapping[str, Any]) -> Table:
    """The split's classes with their long-tail training images and the words their prompts use
    (:func:`lthash.generate.corpus.class_prompts` of the config's ``generate`` section)."""
    from lthash.errors import LthashError
    from lthash.generate.corpus import class_prompts

    summary_data = read_json(summary_path)
    names = list(summary_data.get("class_names", []))
    train = summary_data.get("counts", {}).get("train") or [None] * len(names)
    table = Table(
        name="classes", title="Classes and their prompt words",
        intro=("Each class of the split (its folder or dataset name), its long-tail training images, the words "
               "lthash made of its name (config key generate.class_words names them; numbered folders keep "
               "their number, ImageNette's WordNet ids their names), its super-category (generate.categories) "
               "and the base prompt the generators use for it (personalisation puts [V] before its last "
               "word(s): a photo of a [V] <word>)."),
        csv_columns=["class", "train_images", "words", "category", "prompt"])
    try:
        prompts = class_prompts(names, generate)
    except LthashError as error:
        table.empty = f"_no prompt words: {error}_"
        return table
    for entry, count in zip(prompts, train):
        table.records.append({**entry, "train_images": count})
    table.sections.append(Section(heading="", header=["class", "long-tail train images", "words", "super-category",
                                                      "base prompt"],
                                  rows=[[r["class"], "–" if r["train_images"] is None else r["train_images"],
                                         r["words"] or "–", r["category"], r["prompt"]] for r in table.records]))
    return table


def _all_runs_csv(runs: Sequence[RunRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for run in runs:
        for row in run.metrics["results"]:
            writer.writerow({**row, "arm_label": run.label, "arm": run.arm, "generator": run.generator or "",
                             "synthesis": run.synthesis or "", "kind": run.kind, "method": run.method,
                             "backbone": run.backbone, "bits": run.bits, "seed": "" if run.seed is None else run.seed})
    return buffer.getvalue()


def _figures(runs: Sequence[RunRecord], figures: Path, out: Path, split: str | os.PathLike | None,
             settings: Mapping[str, Any], R: Any, ties: str) -> tuple[str, str, str]:
    """Every-seed charts, per-class AP charts and retrieval pictures of every setting, as three Markdown
    sections; the retrieval pictures show each arm's first seed."""
    from lthash.report.figures import figure_path, per_class_figure, retrieval_figure, seeds_figure

    points, bars, pictures = [], [], []
    retrieval = settings["retrieval"]
    for setting, arms in by_setting(runs).items():
        chart = figure_path(figures, "seeds", setting)
        seeds_figure(chart, setting, list(arms.values()), R, ties)
        points.append(f"![every seed, {setting.title}]({os.path.relpath(chart, out.parent)})")
        chart = figure_path(figures, "per_class_ap", setting)
        per_class_figure(chart, setting, list(arms.values()), R, ties)
        bars.append(f"![per-class AP, {setting.title}]({os.path.relpath(chart, out.parent)})")
        arm_runs = [arm.first for arm in arms.values()]
        picture = figure_path(figures, "retrieval", setting)
        if split is None or not any(run.codes_path for run in arm_runs):
            pictures.append(f"_{setting.title}: no codes files or split given, no retrieval picture_")
            continue
        shown = retrieval_figure(picture, setting, arm_runs, split, retrieval["head_classes"],
                                 retrieval["tail_classes"], retrieval["top"])
        missing = [run.label for run in arm_runs if run.codes_path is None]
        counts = markdown_grid(["query class", "group", "arm", f"right of top {retrieval['top']}"],
                               [[s["class"], s["group"], s["arm"], f"{s['right']}/{s['of']}"] for s in shown])
        first = sorted({"–" if run.seed is None else str(run.seed) for run in arm_runs})
        text = [f"### {setting.title}", f"Each arm's run of its first seed (seed {', '.join(first)}).",
                f"![retrieval, {setting.title}]({os.path.relpath(picture, out.parent)})"]
        if missing:
            text.append(f"_no codes file for {', '.join(missing)}_")
        pictures.append("\n\n".join(text + [counts]))
    return "\n\n".join(points), "\n\n".join(bars), "\n\n".join(pictures)


def write_report(metrics: Sequence[str | os.PathLike], out: str | os.PathLike, table: str | os.PathLike,
                 split_summary: str | os.PathLike, quality: Sequence[str | os.PathLike] = (),
                 config: Mapping[str, Any] | None = None, codes: Sequence[str | os.PathLike] = (),
                 split: str | os.PathLike | None = None, tables: str | os.PathLike | None = None,
                 figures: str | os.PathLike | None = None, benchmarks: str | os.PathLike | None = None,
                 server_log: str | os.PathLike | None = None,
                 knowledge: Sequence[str | os.PathLike] = ()) -> None:
    """Write ``report.md``, the all-runs CSV and (when their folders are given) tables and figures.

    ``config`` is the report stage's validated config (``lthash.workflow.stage_config("report", ...)``,
    every default when not given); its digest in ``report.md`` is that of what the stage reads.
    """
    from lthash.workflow import rule_params, stage_config

    config = stage_config("report", None) if config is None else config
    settings = config["report"]
    params = rule_params(config, "report")
    runs = load_runs(metrics, codes)
    out = Path(out)
    R, ties = primary_cut(runs)
    seed = SeedTables(runs, out, R, ties)
    arms, readings = arms_table(runs, R, ties)
    by_name: dict[str, Table] = {t.name: t for t in (
        arms, generator_table(runs, R, ties), per_class_table(runs, R, ties), validation_table(runs, R, ties),
        timing_table(benchmarks, server_log), knowledge_table(knowledge, quality),
        classes_table(split_summary, config["generate"]))}
    points, bars, pictures = ("_no figures folder given_",) * 3
    if figures is not None:
        points, bars, pictures = _figures(runs, Path(figures), out, split, settings, R, ties)
    verdict = summary(readings)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"# {settings['title']}",
        f"**Verdict.** {verdict}",
        f"Generated {now} by {code_version()}; report config digest {config_digest(params)}.",
        f"mAP@{R} in percent; R = all is the whole database. Ties in Hamming distance are "
        f"ranked by {'database index (as the references do)' if ties == 'index' else 'expectation'}; "
        "the tie-averaged mAP (expected AP over random orders inside ties) is in the "
        "head/medium/tail table.",
        "## Data\n\n" + split_section(split_summary, out) + "\n\n" + to_markdown(by_name["classes"]),
        "## Does the synthetic data earn its cost?\n\n" + verdict + "\n\n" + to_markdown(arms)
        + "\n\n" + points,
        "## What the generator adds\n\n" + to_markdown(by_name["generator_adds"]),
        "## Per-class AP as a fraction of the balanced arm's\n\n" + to_markdown(by_name["per_class"])
        + "\n\n" + bars,
        "## Retrieval: head and tail queries\n\n"
        f"Each picture: the first query of the {settings['retrieval']['head_classes']} largest and the "
        f"{settings['retrieval']['tail_classes']} smallest long-tail classes (blue border) and its top "
        f"{settings['retrieval']['top']} for every arm, nearest first; green = same class, red = another.\n\n"
        + pictures,
        "## Validation mAP (model selection)\n\n" + to_markdown(by_name["validation"]),
        "## Table 1: balanced vs long-tail vs the method\n\n" + seed.table_arms(),
        "## Table 2: personalisation technique\n\n" + seed.table_generators(),
        "## Table 3: hash methods (LTHNet layout)\n\n" + seed.table_methods(),
        "## Head / medium / tail classes\n\n" + seed.table_groups(),
        "## What each generator knows of the classes\n\n" + to_markdown(by_name["generator_knowledge"]),
        "## Synthetic data quality\n\n" + quality_section(quality, out),
        "## Time per stage\n\n" + to_markdown(by_name["timing"]),
        "## Figures\n\n" + seed.figures(),
        "## Provenance\n\n" + seed.provenance(),
    ]
    if tables is not None:
        sources = {"made by": f"{code_version()}, {now}", "from": f"{len(runs)} scored runs"}
        for name in TABLE_NAMES:
            write_table(by_name[name], tables, sources)
        with atomic_path(Path(tables) / VERDICT, suffix=".html") as tmp:
            tmp.write_text(verdict_html(settings["title"], verdict, [sentence(r) for r in readings], sources))
        split_data = read_json(split_summary)
        sizes = {group: sum(values) if isinstance(values, list) else int(values)
                 for group, values in split_data.get("counts", {}).items()}
        with atomic_path(Path(tables) / HOME, suffix=".rst") as tmp:
            tmp.write_text(home_rst(settings["title"], runs, str(split_data.get("dataset", "?")), sizes, verdict,
                                    [sentence(r) for r in readings], str(R)))
    with atomic_path(out, suffix=".md") as tmp:
        tmp.write_text("\n\n".join(sections) + "\n")
    with atomic_path(table, suffix=".csv") as tmp:
        tmp.write_text(_all_runs_csv(runs))


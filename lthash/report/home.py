"""The HTML report's first page, written like a paper's abstract: the question, the experiment
in words, the verdict with its numbers, and where to look.

``snakemake --report`` renders one reStructuredText file as the report's home page (the
Snakefile's ``report:``) and gives it the config but not the results, so the report stage
writes this page (:data:`HOME`, in its tables folder) from the scored runs, and the Snakefile
points ``report:`` at it once it exists (:func:`home_page`; before that, at
``workflow/report/workflow.rst``, which links to the verdict page instead). The experiment is
described from the runs that were scored, not from the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from lthash.workflow import ARMS

HOME = "home.rst"
FALLBACK = "workflow/report/workflow.rst"
QUESTION = ("does synthetic data make the tail classes of a long-tail image set findable?")
QUESTION_LONG = ("Does synthetic data from a diffusion model personalised to each class make the tail classes "
                 "of a long-tail image set findable by deep hashing, beyond what a long-tail user can do "
                 "without a generator (class-balanced sampling, a logit-adjusted loss, resampling copies of "
                 "the real images)?")
GENERATORS = {"attndreambooth": "AttnDreamBooth", "dreambooth": "DreamBooth", "textual_inversion": "Textual Inversion",
              "base": "the base model without personalisation"}
SYNTHESIS = {"noise": "text-to-image (drawn from noise)",
             "real": "image-to-image (from each class's own long-tail images)"}
KIND_WORDS = {"bound": "upper bound", "control": "controls", "generated": "the method", "ablation": "ablations"}
"""How the page names each arm kind (lthash.workflow.ARM_KINDS)."""


def home_page(results: str | os.PathLike, project: str | os.PathLike = ".") -> str:
    """What the Snakefile's ``report:`` names: the page the report stage wrote under ``results``
    (absolute), or the static fallback (relative to the project) before it exists."""
    written = Path(results) / "tables" / HOME
    return str(written.resolve()) if written.is_file() else str(Path(project) / FALLBACK)


def rst_text(text: str) -> str:
    """Plain text safe in reStructuredText: its markup characters escaped."""
    for char in "\\*`_|":
        text = text.replace(char, "\\" + char)
    return text


def _words(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def experiment_lines(runs: Sequence[Any], dataset: str, sizes: Mapping[str, int]) -> list[tuple[str, str]]:
    """The experiment matrix in words, (what, which) per dimension, from the scored runs."""
    def distinct(attribute: str) -> list[Any]:
        return sorted({getattr(run, attribute) for run in runs if getattr(run, attribute) not in (None, "")},
                      key=str)

    by_kind: dict[str, list[str]] = {}
    for name in [name for name in ARMS if name in {run.arm for run in runs}]:
        by_kind.setdefault(ARMS[name].kind, []).append(f"{name} — {ARMS[name].title}")
    shown = {group: size for group, size in sizes.items() if size}
    lines = [("Data", dataset + "".join(f", {size:,} {group.replace('_', ' ')} images"
                                        for group, size in shown.items()))]
    lines += [(KIND_WORDS.get(kind, kind).capitalize(), "; ".join(names)) for kind, names in by_kind.items()]
    if distinct("generator"):
        lines.append(("Generators", _words([GENERATORS.get(g, g) for g in distinct("generator")])))
    if distinct("synthesis"):
        lines.append(("Synthesis", _words([SYNTHESIS.get(s, s) for s in distinct("synthesis")])))
    backbones = distinct("backbone")
    bits = [str(b) for b in sorted({int(run.bits) for run in runs})]
    lines.append(("Hash methods", f"{_words(distinct('method'))}, on the {_words(backbones)} "
                                  f"backbone{'s' if len(backbones) > 1 else ''}, at {_words(bits)} bits"))
    seeds = [str(s) for s in sorted({run.seed for run in runs if run.seed is not None})]
    lines.append(("Seeds", f"every arm trained once per seed ({_words(seeds)}), arms compared seed by seed"
                  if seeds else "one run per arm"))
    return lines


def home_rst(title: str, runs: Sequence[Any], dataset: str, sizes: Mapping[str, int], verdict: str,
             readings: Sequence[str], cut: str) -> str:
    """The page: title, question, experiment, verdict (with every setting's sentence), where to look.
    Snakemake renders it as a Jinja template and appends the link targets of its items (the page
    links to ``verdict.html``): the body is a raw block, so no text of it is read as Jinja."""
    heading = f"{rst_text(title)}: {QUESTION}"
    lines = ["{% raw %}", heading, "=" * len(heading), "",
             f"**Question.** {rst_text(QUESTION_LONG)}", "",
             "**Experiment.**", ""]
    lines += [f"- **{what}**: {rst_text(which)}" for what, which in experiment_lines(runs, dataset, sizes)]
    lines += ["", f"**Verdict** (``mAP@{cut}``, in points). {rst_text(verdict)}", ""]
    lines += [f"- {rst_text(text)}" for text in readings]
    lines += ["", "Where to look:", "",
              "- **Answer**: the verdict alone (`verdict.html`_) and every arm's mAP of each seed.",
              "- **Tables**: the arms table (mAP, head / medium / tail, the share of the balanced − long-tail gap "
              "each arm closes), what the generator adds over copies of real images, per-class AP, time per "
              "stage; each an HTML page beside a CSV of the raw numbers.",
              "- **Retrieval**: the first query of the largest and the smallest long-tail classes and what every "
              "arm returns for it (green: same class, red: another), and per-class AP bars per arm.",
              "- **Runs**: every run's precision-recall and precision@k curves and its training curves.",
              "- **Report**: ``report.md``, the same tables in the seed papers' layouts, synthetic-data quality and "
              "provenance.", "{% endraw %}", ""]
    return "\n".join(lines)

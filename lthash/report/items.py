"""What the Snakemake report rule needs: output names, sidebar labels, figure subcategories.

Snakemake labels must be strings or numbers, so a missing generator or synthesis mode (the
real-data arms) reads ``–``. The identity comes from the workflow's run objects (the same
objects the score stage's tags are made from), not from parsing paths.
"""

from __future__ import annotations

from typing import Any, Iterable

from lthash.report.figures import FIGURE_KINDS, figure_path
from lthash.report.home import HOME, home_page
from lthash.report.report import TABLE_NAMES, VERDICT
from lthash.report.runs import IDENTITY, Setting

__all__ = ["FIGURE_KINDS", "HOME", "TABLE_NAMES", "TABLE_TITLES", "VERDICT", "figure_path", "home_page", "figure_subcategory", "run_labels",
           "setting_labels", "settings_of"]

TABLE_TITLES = {
    "arms": "mAP (mean ± sd over seeds), head / medium / tail, the gap each arm closes, Δ best control",
    "generator_adds": "what the generator adds (arm − resampled)",
    "generator_knowledge": "what each generator knows of the classes (held-out denoising accuracy, fidelity by group)",
    "per_class": "per-class AP as a fraction of balanced",
    "validation": "validation mAP (model selection)",
    "timing": "time per stage",
    "classes": "classes, their prompt words and super-categories",
}
RUN_FIGURES = {"pr_radius": "PR over Hamming radius", "precision_at_k": "precision@k", "curves": "training curves"}


def settings_of(runs: Iterable[Any]) -> list[Setting]:
    """The distinct method x backbone x bits of some runs, in first-seen order."""
    return list(dict.fromkeys(Setting(run.method, run.backbone, int(run.bits)) for run in runs))


def run_labels(run: Any) -> dict[str, str]:
    """Sidebar labels of one run's figures: arm, generator, synthesis, method, backbone, bits, seed
    (from ``run.identity()`` where the run has one, else its attributes)."""
    identity = run.identity() if callable(getattr(run, "identity", None)) else {
        key: getattr(run, key, None) for key in IDENTITY}
    return {key: "–" if identity.get(key) in (None, "") else str(identity[key]) for key in IDENTITY}


def setting_labels(setting: Setting) -> dict[str, str]:
    return {"method": setting.method, "backbone": setting.backbone, "bits": str(setting.bits)}


def figure_subcategory(wildcards: Any) -> str:
    """The subcategory of a run figure found by the pattern ``{figure}.png``."""
    return RUN_FIGURES.get(wildcards.figure, wildcards.figure)

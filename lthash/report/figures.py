"""Retrieval pictures (the seed paper's figure 1(b)), per-class AP bars and every seed's mAP, one
per setting.

Retrieval: for a few head and tail query classes, chosen by a fixed rule (the ``head_classes``
largest and the ``tail_classes`` smallest classes of the long-tail training set, ties by
class index; the first query of each class by its row in the codes file), the query and its
``top`` nearest database items for every arm, nearest first, ties by database row (the exact
scan of ``lthash search``). A result is right (green border) when it shares a class with the
query, wrong (red) otherwise. An arm trained on several seeds is shown by its first seed's run.

Seeds: every arm's mAP of each seed (points, jittered sideways) and its mean (a bar across),
overall and per head / medium / tail group, arms ordered by kind then by mean mAP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.io import atomic_path
from lthash.report.runs import ArmRuns, RunRecord, Setting
from lthash.workflow import ARM_KINDS

FIGURE_KINDS = ("retrieval", "per_class_ap", "seeds")
TILE = 56
BORDER = 4
PAD = 4
RIGHT = (44, 160, 44)
WRONG = (214, 39, 40)
QUERY = (31, 119, 180)
GROUP_COLOURS = {"head": "#4c72b0", "medium": "#dd8452", "tail": "#55a868"}


def figure_path(folder: str | os.PathLike, kind: str, setting: Setting) -> Path:
    """``<folder>/<kind>-<method>-<backbone>-<bits>.png`` (the report rule's output names)."""
    if kind not in FIGURE_KINDS:
        raise ValueError(f"figure kind must be one of {FIGURE_KINDS}, got {kind!r}")
    return Path(folder) / f"{kind}-{setting.slug}.png"


@dataclass(frozen=True)
class QueryPick:
    """One query shown: its class, group, long-tail training count and row in the query set."""

    cls: int
    name: str
    group: str
    train_count: int
    row: int


def _has_class(labels: np.ndarray, cls: int) -> np.ndarray:
    return labels[:, cls] > 0 if labels.ndim == 2 else labels == cls


def pick_queries(per_class: Sequence[Mapping[str, Any]], query_labels: np.ndarray, head: int,
                 tail: int) -> list[QueryPick]:
    """The fixed rule of the module doc; classes without a query are passed over."""
    with_query = [c for c in range(len(per_class)) if _has_class(query_labels, c).any()]
    order = sorted(with_query, key=lambda c: (-int(per_class[c].get("train_count", 0)), c))
    chosen = order[:head] + [c for c in order[max(head, len(order) - tail):]]
    picks = []
    for c in chosen:
        entry = per_class[c]
        picks.append(QueryPick(cls=c, name=str(entry.get("name", c)), group=str(entry.get("group", "?")),
                               train_count=int(entry.get("train_count", 0)),
                               row=int(np.flatnonzero(_has_class(query_labels, c))[0])))
    return picks


def _relevant(query_label: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    if db_labels.ndim == 2:
        return (db_labels @ np.asarray(query_label)) > 0
    return db_labels == query_label


class SplitImages:
    """Images of one split group, addressed by the source-dataset index a codes file records."""

    def __init__(self, split: str | os.PathLike, group: str):
        from lthash.io import read_image_set

        self.split, self.group = split, group
        self.images = read_image_set(split, group)
        self.row_of = {int(i): r for r, i in enumerate(self.images.index)}

    def get(self, dataset_index: int) -> np.ndarray:
        row = self.row_of.get(int(dataset_index))
        if row is None:
            raise LthashError(f"{self.split}: group '{self.group}' has no item of dataset index "
                              f"{dataset_index} (the codes file was made from another split)")
        if self.images.images is not None:
            return self.images.images[row]
        if self.images.paths is None:
            raise LthashError(f"{self.split}: group '{self.group}' stores neither images nor paths")
        from lthash.data.images import UnreadableImage, decode_image

        try:
            return decode_image(self.images.paths[row], 3, None)
        except UnreadableImage as exc:
            raise LthashError(f"{self.images.paths[row]}: cannot read the image ({exc})") from exc


def _tile(image: np.ndarray, colour: tuple[int, int, int] | None) -> np.ndarray:
    from lthash.evaluate.grid import fit_tile

    tile = np.full((TILE + 2 * BORDER, TILE + 2 * BORDER, 3), 255, dtype=np.uint8)
    if colour is not None:
        tile[:] = colour
    tile[BORDER:BORDER + TILE, BORDER:BORDER + TILE] = np.asarray(fit_tile(image, TILE, stretch=True,
                                                                          downscale="bilinear"))
    return tile


def retrieval_figure(path: str | os.PathLike, setting: Setting, runs: Sequence[RunRecord],
                     split: str | os.PathLike, head: int, tail: int, top: int) -> list[dict[str, Any]]:
    """Draw the retrieval picture of one setting; returns what it shows (for the Markdown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lthash.evaluate.codes import read_codes
    from lthash.evaluate.search import search_codes

    runs = [run for run in runs if run.codes_path is not None]
    if not runs:
        raise LthashError(f"{setting.title}: no codes file given for any run (--codes)")
    sets = {run.label: (read_codes(run.codes_path, "query"), read_codes(run.codes_path, "database"))
            for run in runs}
    first_query = sets[runs[0].label][0]
    picks = pick_queries(runs[0].metrics.get("per_class", []), first_query.labels, head, tail)
    query_images, database_images = SplitImages(split, "query"), SplitImages(split, "database")
    cell = TILE + 2 * BORDER + PAD
    left, gap, right, header = 250, 18, 80, 30
    width = left + cell + gap + top * cell + right
    block = header + len(runs) * cell
    height = max(1, len(picks)) * block + PAD
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    texts: list[tuple[float, float, str, dict[str, Any]]] = []
    shown = []
    for b, pick in enumerate(picks):
        y0 = b * block
        texts.append((PAD, y0 + header - 8, f"{pick.group} class '{pick.name}' ({pick.train_count} long-tail "
                      f"training images), its first query", {"fontsize": 10, "weight": "bold"}))
        for a, run in enumerate(runs):
            query, database = sets[run.label]
            if not np.array_equal(query.labels, first_query.labels):
                raise LthashError(f"{run.codes_path}: its query set differs from {runs[0].codes_path}'s")
            y = y0 + header + a * cell
            if a == 0:
                canvas[y:y + cell - PAD, left:left + cell - PAD] = _tile(
                    query_images.get(query.index[pick.row]), QUERY)
            rows, _ = search_codes(query.codes[pick.row:pick.row + 1], database.codes, query.bits, k=top)
            rows = rows[0]
            right_mask = _relevant(query.labels[pick.row], database.labels[rows])
            for k, (db_row, ok) in enumerate(zip(rows, right_mask)):
                x = left + cell + gap + k * cell
                canvas[y:y + cell - PAD, x:x + cell - PAD] = _tile(database_images.get(database.index[db_row]),
                                                                   RIGHT if ok else WRONG)
            hits = int(right_mask.sum())
            texts.append((left - 10, y + cell / 2, run.label, {"fontsize": 9, "ha": "right", "va": "center"}))
            texts.append((width - right + 8, y + cell / 2, f"{hits}/{len(rows)} right",
                          {"fontsize": 9, "va": "center"}))
            shown.append({"class": pick.name, "group": pick.group, "arm": run.label, "right": hits,
                          "of": len(rows)})
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    for x, y, text, style in texts:
        ax.text(x, y, text, **style)
    ax.set_axis_off()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return shown


def per_class_figure(path: str | os.PathLike, setting: Setting, runs: Sequence[RunRecord | ArmRuns], R: Any,
                     ties: str) -> None:
    """One bar chart per arm: AP@R of each class (an arm's mean over its seeds), head to tail, with the
    balanced arm's AP of the class as a black tick (where a balanced arm ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lthash.report.analysis import class_order

    per_class = runs[0].metrics.get("per_class", [])
    order = class_order(runs[0])
    balanced = next((run for run in runs if run.label == "balanced"), None)
    reference = balanced.class_ap(R, ties) if balanced else None
    n = len(order)
    fig, axes = plt.subplots(len(runs), 1, figsize=(min(18.0, 3 + 0.45 * n), 1.5 + 1.35 * len(runs)),
                             sharex=True, squeeze=False)
    x = np.arange(n)
    for ax, run in zip(axes[:, 0], runs):
        aps = run.class_ap(R, ties)
        values = [np.nan if aps[c] is None else 100 * aps[c] for c in order]
        colours = [GROUP_COLOURS.get(per_class[c].get("group"), "#888888") for c in order]
        ax.bar(x, values, color=colours, width=0.8)
        if reference is not None and run is not balanced:
            ref = [np.nan if reference[c] is None else 100 * reference[c] for c in order]
            ax.scatter(x, ref, marker="_", s=220, color="black", linewidths=1.5, zorder=3)
        mean = run.value(R, ties)
        ax.set_title(f"{run.label}: mAP {'–' if mean is None else f'{100 * mean:.2f}'}", fontsize=9, loc="left")
        ax.set_ylim(0, 100)
        ax.set_ylabel("AP (%)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    bottom = axes[-1, 0]
    bottom.set_xticks(x)
    if n <= 40:
        bottom.set_xticklabels([f"{per_class[c].get('name', c)} ({per_class[c].get('train_count', '?')})"
                                for c in order], rotation=45, ha="right", fontsize=8)
    bottom.set_xlabel("class (long-tail training images), head to tail")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in GROUP_COLOURS.values()]
    labels = list(GROUP_COLOURS)
    if reference is not None:
        handles.append(plt.Line2D([], [], color="black", marker="_", linestyle="none", markersize=12))
        labels.append("balanced arm's AP")
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=len(labels))
    fig.suptitle(f"Per-class AP@{R}, {setting.title}", fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


KIND_COLOURS = {"bound": "#4d4d4d", "control": "#4c72b0", "generated": "#c44e52", "ablation": "#8172b2"}


def arms_by_kind_and_mean(arms: Sequence[ArmRuns], R: Any, ties: str) -> list[ArmRuns]:
    """Arms by kind (:data:`lthash.workflow.ARM_KINDS`), then by mean mAP, highest first."""
    def key(arm: ArmRuns) -> tuple[int, float]:
        mean = arm.value(R, ties)
        return ARM_KINDS.index(arm.kind), -(mean if mean is not None else -1.0)
    return sorted(arms, key=key)


def seeds_figure(path: str | os.PathLike, setting: Setting, arms: Sequence[ArmRuns], R: Any, ties: str) -> None:
    """Every arm's mAP@R of each seed (points, jittered by a fixed offset per seed) and its mean (a
    bar), one panel per query group (all, head, medium, tail), arms ordered by kind then mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lthash.report.analysis import GROUP_NAMES

    ordered = arms_by_kind_and_mean(arms, R, ties)
    seeds = sorted({seed for arm in ordered for seed in arm.runs}, key=lambda s: -1 if s is None else s)
    offsets = {seed: (i - (len(seeds) - 1) / 2) * min(0.5 / max(1, len(seeds) - 1), 0.12)
               for i, seed in enumerate(seeds)}
    fig, axes = plt.subplots(1, len(GROUP_NAMES), figsize=(3 + 0.55 * len(ordered) * len(GROUP_NAMES) / 2, 4.2),
                             sharey=True, squeeze=False)
    x = np.arange(len(ordered))
    for ax, (key, group) in zip(axes[0], GROUP_NAMES.items()):
        for i, arm in enumerate(ordered):
            colour = KIND_COLOURS.get(arm.kind, "#888888")
            values = arm.values(R, ties, key)
            points = [(i + offsets[seed], 100 * value) for seed, value in values.items() if value is not None]
            if points:
                ax.scatter(*zip(*points), s=18, color=colour, alpha=0.8, zorder=3)
                mean = arm.value(R, ties, key)
                ax.hlines(100 * mean, i - 0.32, i + 0.32, color=colour, linewidth=2.2, zorder=2)
        ax.set_title(f"mAP@{R}, {group} queries", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([arm.label for arm in ordered], rotation=60, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("mAP (%)")
    handles = [plt.Line2D([], [], color=colour, marker="o", linestyle="none") for colour in KIND_COLOURS.values()]
    handles.append(plt.Line2D([], [], color="black", linewidth=2.2))
    fig.legend(handles, [*KIND_COLOURS, "mean over seeds"], loc="upper right", fontsize=8, ncol=len(handles))
    fig.suptitle(f"Every seed ({', '.join('–' if s is None else str(s) for s in seeds)}), {setting.title}",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

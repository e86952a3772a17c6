"""A search's answers as the user meets them: the JSON entry of each query, its table, and the
contact sheet, each saying how far the answer is (:mod:`lthash.evaluate.neighbours`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lthash.evaluate.neighbours import NeighbourProfile

if TYPE_CHECKING:
    from lthash.evaluate.search import Database, Query


def label_value(label: np.ndarray | np.integer) -> Any:
    label = np.asarray(label)
    return np.flatnonzero(label).tolist() if label.ndim == 1 else int(label)


def _relevant(query_label: Any, label: Any) -> bool | None:
    """Same class (or a shared label); None when the query's label is unknown."""
    if query_label is None:
        return None
    if isinstance(query_label, list) or isinstance(label, list):
        return bool(set(np.atleast_1d(query_label).tolist()) & set(np.atleast_1d(label).tolist()))
    return int(query_label) == int(label)


def answer(query: Query, found: np.ndarray, dist: np.ndarray, db: Database, profile: NeighbourProfile,
           judged: dict[str, Any]) -> dict[str, Any]:
    """The JSON entry of one query: its source, label, class, ranked results (each with
    ``closer``: the share of database items whose own nearest neighbour is closer than it),
    and ``ood`` (:meth:`NeighbourProfile.judge`), ``out_of_distribution`` its verdict."""
    results = []
    closer = profile.hamming.closer(dist)
    for r, (j, d) in enumerate(zip(found, dist)):
        label = label_value(db.set.labels[j])
        entry = {"rank": r + 1, "row": int(j), "index": int(db.set.index[j]), "label": label,
                 "class": db.class_of(label), "source": db.source(int(j)), "distance": int(d),
                 "closer": round(float(closer[r]), 4)}
        if query.label is not None:
            entry["correct"] = _relevant(query.label, label)
        results.append(entry)
    return {"source": query.source, "row": query.row, "index": query.index, "label": query.label,
            "class": db.class_of(query.label), "out_of_distribution": judged["out_of_distribution"],
            "ood": judged, "results": results}


def ood_reason(judged: dict[str, Any], profile: NeighbourProfile) -> str:
    """Why a query is flagged out of distribution, in words (empty when it is not)."""
    if not judged["out_of_distribution"]:
        return ""
    reasons = []
    if judged["hamming_beyond"]:
        reasons.append(f"its nearest database item is at Hamming distance {judged['nearest_distance']}, farther "
                       f"than {_percent(judged['closer'])} of the database items are from their own nearest "
                       f"neighbour (threshold {profile.hamming.threshold:g})")
    if judged.get("activation_beyond"):
        reasons.append(f"its activations are farther from any database image's than "
                       f"{_percent(judged['activation_closer'])} of the reference images are from each other "
                       f"(cosine distance {judged['activation_distance']:.4f}, threshold "
                       f"{profile.activations.threshold:.4f})")
    return "OUT OF DISTRIBUTION: " + "; and ".join(reasons)


def _percent(share: float) -> str:
    """A share as a percentage that never rounds up to 100 % (or down to 0 %) unless it is."""
    value = 100.0 * share
    text = f"{value:.1f}"
    if text == "100.0" and share < 1:
        text = "99.9"
    if text == "0.0" and share > 0:
        text = "0.1"
    return f"{text} %"


def format_answer(number: int, total: int, entry: dict[str, Any], profile: NeighbourProfile) -> str:
    """A readable table of one query's results: rank, Hamming distance, ``closer`` (the share of
    database items whose nearest neighbour is closer), class, whether it is the query's class,
    source; the out-of-distribution flag with its reason above the table."""
    known = entry["label"] is not None
    title = f"query {number}/{total}: {entry['source']}"
    if known:
        title += f"  (class: {as_text(entry['class'])})"
    width = max([5] + [len(as_text(r["class"])) for r in entry["results"]])
    lines = [title]
    if entry["out_of_distribution"]:
        lines.append("  " + ood_reason(entry["ood"], profile))
    lines.append(f"  rank  dist  closer  {'class':<{width}}  {'ok ' if known else ''}source")
    for r in entry["results"]:
        mark = ("yes" if r["correct"] else "no ") + " " if known else ""
        lines.append(f"  {r['rank']:4d}  {r['distance']:4d}  {_percent(r['closer']):>7}  "
                     f"{as_text(r['class']):<{width}}  {mark}{r['source']}")
    if known:
        hits = sum(bool(r["correct"]) for r in entry["results"])
        lines.append(f"  {hits}/{len(entry['results'])} of the same class")
    return "\n".join(lines)


def closing_line(entries: Sequence[dict[str, Any]], test: dict[str, Any]) -> str:
    """How many queries were flagged, by which rule and thresholds, and what ``closer`` means."""
    flagged = sum(e["out_of_distribution"] for e in entries)
    activations = test["activations"]
    rule = (f"{test['rule']}: Hamming distance > {test['hamming']['threshold']}"
            + (f", activation distance > {activations['threshold']:.4f}" if "threshold" in activations
               else f"; no activation statistic: {activations['missing']}"))
    return (f"{flagged} of {len(entries)} queries flagged out of distribution ({rule})\n"
            "closer: the share of database items whose own nearest neighbour is closer than the result")


def as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return ", ".join(value) if isinstance(value, list) else str(value)


def write_grid_of(path: str | os.PathLike, queries: Sequence[Query], entries: Sequence[dict[str, Any]], db: Database,
                shape: Sequence[int] | None) -> tuple[int, int]:
    from lthash.evaluate.grid import Row, Tile, write_grid

    result_rows = [r["row"] for entry in entries for r in entry["results"]]
    pictures = iter(db.pictures(result_rows, shape))
    rows = []
    for q, entry in zip(queries, entries):
        caption = Path(q.source).name if os.sep in q.source else q.source
        if entry["class"] is not None:
            caption = f"{as_text(entry['class'])}\n{caption}"
        tiles = [Tile(next(pictures), f"{as_text(r['class'])}\nd={r['distance']}, {_percent(r['closer'])}",
                      r.get("correct")) for r in entry["results"]]
        rows.append(Row(Tile(q.image, caption, flagged=entry["out_of_distribution"]), tiles))
    return write_grid(path, rows)

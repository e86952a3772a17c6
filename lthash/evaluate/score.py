"""The score stage: metrics JSON, CSV rows and plots of one codes file.

For every cut-off R and tie policy: mAP@R over all queries and over the queries of head /
medium / tail classes (training count > many_shot / < few_shot / otherwise), P@R, and a
per-class AP table; beside them the precision within a Hamming radius, the precision-recall
curve over the radius and the (tie-averaged) precision@k curve. A codes file with a
``validation`` set also gets a separate ``validation`` section (see :func:`validation_metrics`),
for choosing models without looking at the query results.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.evaluate.codes import CodeSet, code_set_names, read_codes
from lthash.io import atomic_dir, atomic_path, read_attrs, write_json

METRIC_COLUMNS = ("R", "R_effective", "ties", "bits", "n_query", "n_database", "evaluate_seed", "map",
                  "map_head", "map_medium", "map_tail", "precision_at_R", "radius", "precision_within_radius")


def split_class_info(split: str | os.PathLike) -> tuple[list[int], list[str] | None]:
    """Training class counts (``train`` group attribute ``counts``) and class names of a split file."""
    train = read_attrs(split, "train")
    if "counts" not in train:
        raise LthashError(f"{split}: group 'train' has no 'counts' attribute")
    names = read_attrs(split).get("class_names")
    return [int(c) for c in train["counts"]], list(names) if isinstance(names, list) else None


def _n_label_classes(labels: np.ndarray) -> int:
    return int(labels.shape[1]) if labels.ndim == 2 else int(labels.max(initial=-1)) + 1


def pk_grid(n_database: int, points: int) -> np.ndarray:
    """About ``points`` distinct k values, log-spaced from 1 to ``n_database``."""
    return np.unique(np.round(np.geomspace(1, n_database, points)).astype(np.int64))


def compute_metrics(query: CodeSet, database: CodeSet, counts: Sequence[int], params: Mapping[str, Any],
                    class_names: Sequence[str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """All metrics of one codes file as a JSON-ready dict (see module doc)."""
    from lthash.evaluate.metrics import (
        class_groups,
        group_map,
        per_class_ap,
        precision_at_k_curve,
        radius_precision_recall,
        score_codes,
    )

    if query.bits != database.bits:
        raise LthashError(f"query codes have {query.bits} bits but database codes have {database.bits}")
    n_classes = len(counts)
    for name, code_set in (("query", query), ("database", database)):
        found = _n_label_classes(code_set.labels)
        if found > n_classes:
            raise LthashError(f"{name} labels reach class {found - 1} but the training counts list "
                              f"{n_classes} classes")
    if class_names is not None and len(class_names) != n_classes:
        raise LthashError(f"{len(class_names)} class names for {n_classes} class counts")
    topk = [None if k == "all" else int(k) for k in params["topk"]]
    scores = score_codes(query.codes, database.codes, query.labels, database.labels, topk, bits=query.bits,
                         threads=threads)
    ties = ["index", "average"] if params["ties"] == "both" else [params["ties"]]
    groups = class_groups(counts, params["many_shot"], params["few_shot"])
    precision_r, recall_r, empty_r = radius_precision_recall(scores)
    radius = int(params["radius"])
    within = float(precision_r[min(radius, scores.bits)])
    rows: list[dict[str, Any]] = []
    per_class: list[dict[str, Any]] = [
        {"class": c, "name": class_names[c] if class_names else str(c), "train_count": int(counts[c]),
         "group": groups[c], "ap": {}} for c in range(n_classes)]
    for k in topk:
        column = scores.column(k)
        cutoff = int(scores.cutoffs[column])
        expected_pr = float(precision_at_k_curve(scores, [cutoff])[0])
        for policy in ties:
            ap = scores.ap(k, policy)
            by_group = group_map(ap, query.labels, groups)
            p_at_r = float(np.mean(scores.hits[:, column] / cutoff)) if policy == "index" else expected_pr
            rows.append({"R": "all" if k is None else k, "R_effective": cutoff, "ties": policy,
                         "bits": scores.bits, "n_query": scores.n_query, "n_database": scores.n_database,
                         "evaluate_seed": params["seed"], "map": float(ap.mean()), "map_head": by_group["head"],
                         "map_medium": by_group["medium"], "map_tail": by_group["tail"],
                         "precision_at_R": p_at_r, "radius": radius, "precision_within_radius": within})
            class_ap, n_queries = per_class_ap(ap, query.labels, n_classes)
            key = f"{'all' if k is None else k}/{policy}"
            for c in range(n_classes):
                per_class[c]["n_query"] = int(n_queries[c])
                per_class[c]["ap"][key] = None if np.isnan(class_ap[c]) else float(class_ap[c])
    ks = pk_grid(scores.n_database, int(params["pk_points"]))
    return {
        "bits": scores.bits,
        "n_query": scores.n_query,
        "n_database": scores.n_database,
        "evaluate_seed": params["seed"],
        "topk": list(params["topk"]),
        "ties": ties,
        "tie_policies": {"index": "inside one Hamming distance, by database index (stable argsort)",
                         "average": "exact expectation over uniformly random orders inside each distance"},
        "ap_definition": "AP@R = mean of P@k over relevant items within the first R, 0 if none; "
                         "R=all is the whole database",
        "thresholds": {"many_shot": params["many_shot"], "few_shot": params["few_shot"]},
        "group_classes": {name: [c for c in range(n_classes) if groups[c] == name]
                          for name in ("head", "medium", "tail")},
        "results": rows,
        "precision_within_radius": {"radius": radius, "precision": within,
                                    "empty_fraction": float(empty_r[min(radius, scores.bits)])},
        "per_class": per_class,
        "curves": {
            "pr_radius": {"radius": list(range(scores.bits + 1)), "precision": precision_r.tolist(),
                          "recall": recall_r.tolist(), "empty_fraction": empty_r.tolist()},
            "precision_at_k": {"k": ks.tolist(), "precision": precision_at_k_curve(scores, ks).tolist(),
                               "ties": "average"},
        },
        "params": dict(params),
    }


def validation_metrics(validation: CodeSet, database: CodeSet, counts: Sequence[int], params: Mapping[str, Any],
                       threads: int | None = None) -> dict[str, Any]:
    """Model-selection figures, kept apart from the query results: mAP@R (ties by index) of the
    validation images as queries against the database, for every R of ``topk`` and R = all,
    over all of them and over head / medium / tail classes (None for a group without any).

    Shape: ``{"n_query", "n_database", "ties": "index", "R": [...], "R_effective": {R: n},
    "map": {R: x}, "map_head": {R: x | None}, "map_medium": ..., "map_tail": ...}`` with R
    keys as strings ("all", "1000").
    """
    from lthash.evaluate.metrics import class_groups, group_map, score_codes

    if validation.bits != database.bits:
        raise LthashError(f"validation codes have {validation.bits} bits but database codes have {database.bits}")
    found = _n_label_classes(validation.labels)
    if found > len(counts):
        raise LthashError(f"validation labels reach class {found - 1} but the training counts list "
                          f"{len(counts)} classes")
    requested = list(dict.fromkeys(["all", *params["topk"]]))
    topk = [None if k == "all" else int(k) for k in requested]
    scores = score_codes(validation.codes, database.codes, validation.labels, database.labels, topk,
                         bits=validation.bits, threads=threads)
    groups = class_groups(counts, params["many_shot"], params["few_shot"])
    out: dict[str, Any] = {"n_query": scores.n_query, "n_database": scores.n_database, "ties": "index",
                           "R": requested, "R_effective": {}, "map": {},
                           "map_head": {}, "map_medium": {}, "map_tail": {}}
    for key, k in zip(requested, topk):
        ap = scores.ap(k, "index")
        out["R_effective"][str(key)] = int(scores.cutoffs[scores.column(k)])
        out["map"][str(key)] = float(ap.mean())
        for name, value in group_map(ap, validation.labels, groups).items():
            out[f"map_{name}"][str(key)] = value
    return out


def parse_tags(items: Sequence[str] | None) -> dict[str, str]:
    """``["method=csq", "bits=64"]`` -> dict; a tag needs ``key=value`` and must not shadow a column."""
    tags: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LthashError(f"--tag must look like key=value, got {item!r}")
        if key in METRIC_COLUMNS:
            raise LthashError(f"--tag {key!r} would shadow the metrics column of that name")
        tags[key] = value
    return tags


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], tags: Mapping[str, str]) -> None:
    """One row per (R, tie policy), tag columns first, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*tags, *METRIC_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**tags, **{k: "" if row[k] is None else row[k] for k in METRIC_COLUMNS}})
    with atomic_path(path, suffix=".csv") as tmp:
        tmp.write_text(buffer.getvalue())


def write_plots(folder: str | os.PathLike, metrics: Mapping[str, Any], title: str = "") -> list[Path]:
    """``pr_radius.png`` (precision vs recall over Hamming radius) and ``precision_at_k.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    curves = metrics["curves"]
    written = []
    fig, ax = plt.subplots(figsize=(5, 4))
    pr = curves["pr_radius"]
    ax.plot(pr["recall"], pr["precision"], marker=".")
    for r in (0, 2, metrics["bits"] // 4):
        if r < len(pr["radius"]):
            ax.annotate(f"r={r}", (pr["recall"][r], pr["precision"][r]), fontsize=7)
    ax.set(xlabel="recall", ylabel="precision", title=f"PR over Hamming radius {title}".strip(),
           xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    written.append(_save(fig, folder / "pr_radius.png"))
    fig, ax = plt.subplots(figsize=(5, 4))
    pk = curves["precision_at_k"]
    ax.plot(pk["k"], pk["precision"])
    ax.set(xscale="log", xlabel="k", ylabel="precision@k (tie-averaged)",
           title=f"precision@k {title}".strip(), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    written.append(_save(fig, folder / "precision_at_k.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run_score(codes: str | os.PathLike, out: str | os.PathLike, params: Mapping[str, Any],
              split: str | os.PathLike | None = None, counts: Sequence[int] | None = None,
              csv_path: str | os.PathLike | None = None, plots: str | os.PathLike | None = None,
              tags: Mapping[str, str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Score a codes file and write the metrics JSON (and CSV / plots when asked).

    ``params`` is the validated ``evaluate`` section (``lthash.workflow.stage_config("score", ...)``).
    Class counts come from ``split`` (its ``train`` group's ``counts``) or ``counts``.
    """
    if (split is None) == (counts is None):
        raise LthashError("give exactly one of a split file (for training class counts) or a counts list")
    names = None
    if split is not None:
        counts, names = split_class_info(split)
    database = read_codes(codes, "database")
    query = read_codes(codes, "query")
    metrics = compute_metrics(query, database, list(counts), params, names, threads)
    metrics["validation"] = (validation_metrics(read_codes(codes, "validation"), database, list(counts), params,
                                                threads) if "validation" in code_set_names(codes) else None)
    metrics["codes"] = str(codes)
    metrics["split"] = None if split is None else str(split)
    metrics["tags"] = dict(tags or {})
    with contextlib.ExitStack() as outputs:
        if plots is not None:
            title = " ".join(f"{k}={v}" for k, v in (tags or {}).items())
            folder = outputs.enter_context(atomic_dir(plots))
            written = write_plots(folder, metrics, title)
            metrics["plots"] = [str(Path(plots) / p.name) for p in written]
        if csv_path is not None:
            write_csv(outputs.enter_context(atomic_path(csv_path, suffix=".csv")), metrics["results"], tags or {})
        write_json(outputs.enter_context(atomic_path(out, suffix=".json")), metrics)
    return metrics

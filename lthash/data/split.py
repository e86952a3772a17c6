"""The split stage: query, database, balanced and long-tail training sets, seeded and saved.

Protocols (``split.protocol``):

- ``per_class``: per class, ``query_per_class`` images drawn from the pooled data form the
  query set; the rest (at most ``database_per_class``) is the database.
- ``dataset``: the dataset's own test split gives the query set (``query_per_class`` per
  class, or all of it when null), its train split the database.
- ``lists``: test.txt is the query set, database.txt the database, train.txt the balanced
  training set (it must lie inside the database).

The balanced training set holds ``train_per_class`` images per class drawn from the
database; the long-tail set ``train`` is drawn per class from ``longtail.source`` with the
sizes of the profile over a seeded class order. Invariants, checked before anything is
written: train ⊂ train_balanced ⊂ database (train ⊂ database with source=database) and
query ∩ database = ∅. Every draw comes from one ``numpy.random.default_rng(seed)`` in a fixed
order (class order first), so the same inputs and seed give the same split.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lthash.data.longtail import class_order, profile_sizes
from lthash.data.readers import Dataset
from lthash.errors import LthashError
from lthash.io import ImageSet, atomic_path, canonical_json, write_image_sets, write_json

log = logging.getLogger("lthash.data")

GROUPS = ("train", "train_balanced", "database", "query")
ALL_GROUPS = (*GROUPS, "validation")  # validation exists only when split.validation_per_class > 0


@dataclass
class SplitPlan:
    """Source indices of every group (sorted) and how the long-tail set was sized."""

    indices: dict[str, np.ndarray]
    class_order: np.ndarray
    profile: str
    s1: int
    mu: float | None
    train_per_class: int | None
    sizes_by_rank: list[int] = field(default_factory=list)

    def counts(self, labels: np.ndarray, num_classes: int) -> dict[str, list[int]]:
        """Per-class image counts of every group."""
        return {name: np.bincount(labels[idx], minlength=num_classes).astype(int).tolist()
                for name, idx in self.indices.items()}


def _by_class(indices: np.ndarray, labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    return [np.sort(indices[labels[indices] == c]) for c in range(num_classes)]


def _query_and_database(protocol: str, labels: np.ndarray, class_names: list[str], query_n: int | None,
                         db_cap: int | None, official: Mapping[str, np.ndarray] | None,
                         lists: Mapping[str, np.ndarray] | None, dataset_name: str, describe: Callable[[int], str],
                         rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The query and database images of every class, by the split's protocol."""
    num_classes = len(class_names)
    if protocol == "per_class":
        if query_n is None:
            raise LthashError("config key 'split.query_per_class' must be a number with protocol per_class")
        query, database = [], []
        for c, idx in enumerate(_by_class(np.arange(len(labels)), labels, num_classes)):
            if len(idx) < query_n + 1:
                raise LthashError(f"class '{class_names[c]}' has {len(idx)} images: query_per_class={query_n} "
                                  f"leaves {max(len(idx) - query_n, 0)} for the database (needs at least 1)")
            perm = rng.permutation(idx)
            query.append(perm[:query_n])
            database.append(perm[query_n:] if db_cap is None else perm[query_n:query_n + db_cap])
    elif protocol == "dataset":
        if not official:
            raise LthashError(f"dataset {dataset_name} has no official train/test split; "
                              f"use config key 'split.protocol: per_class'")
        query, database = [], []
        tests = _by_class(official["test"], labels, num_classes)
        trains = _by_class(official["train"], labels, num_classes)
        for c in range(num_classes):
            want = len(tests[c]) if query_n is None else query_n
            if len(tests[c]) < want or want == 0:
                raise LthashError(f"class '{class_names[c]}' has {len(tests[c])} images in the test split, "
                                  f"query_per_class asks for {want}")
            query.append(rng.permutation(tests[c])[:want])
            if not len(trains[c]):
                raise LthashError(f"class '{class_names[c]}' has no images in the train split (the database)")
            database.append(trains[c] if db_cap is None else rng.permutation(trains[c])[:db_cap])
    elif protocol == "lists":
        if not lists:
            raise LthashError("config key 'split.protocol': lists needs config key 'dataset.name: list'")
        query = _by_class(lists["test"], labels, num_classes)
        database = _by_class(lists["database"], labels, num_classes)
        overlap = np.intersect1d(lists["test"], lists["database"])
        if len(overlap):
            raise LthashError(f"{len(overlap)} image(s) of the test list are also in the database list "
                              f"(first: {describe(int(overlap[0]))}); query and database must be disjoint")
        outside = np.setdiff1d(lists["train"], lists["database"])
        if len(outside):
            raise LthashError(f"{len(outside)} image(s) of the train list are not in the database list "
                              f"(first: {describe(int(outside[0]))}); train must lie inside the database")
    else:
        raise LthashError(f"config key 'split.protocol': unknown protocol {protocol!r}")
    return query, database


def _long_tail(lt: Mapping[str, Any], balanced: list[np.ndarray], database: list[np.ndarray], order: np.ndarray,
               class_names: list[str], rng: np.random.Generator):
    """The long-tail training images of every class, drawn from its balanced set or database by
    the profile over the class order; returns (train, order, sizes by rank, mu, s1, source name)."""
    num_classes = len(class_names)
    profile = lt["profile"]
    source_name = lt["source"]
    source = balanced if source_name == "train_balanced" else database
    s1 = lt["s1"]
    if s1 is None:
        s1 = min(len(s) for s in source)
    sizes, mu = profile_sizes(profile, int(s1), num_classes, float(lt["imbalance_factor"]), lt["mu"])
    train: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * num_classes
    if profile == "none":
        train = [np.asarray(s, dtype=np.int64) for s in source]
        counts = np.array([len(s) for s in train])
        order = order[np.argsort(-counts[order], kind="stable")]
        sizes = [int(counts[c]) for c in order]
    else:
        for rank, c in enumerate(order, start=1):
            size = sizes[rank - 1]
            if size < 1:
                raise LthashError(f"the {profile} profile gives class '{class_names[c]}' (rank {rank}) no images: "
                                  f"raise config key 'split.longtail.s1' (now {s1}) or lower the imbalance")
            if size > len(source[c]):
                raise LthashError(f"class '{class_names[c]}' (rank {rank}) needs {size} long-tail images but its "
                                  f"{source_name} set has {len(source[c])}; lower config key 'split.longtail.s1'")
            train[c] = rng.permutation(source[c])[:size]
    return train, order, sizes, mu, s1, source_name


def plan_split(labels: np.ndarray, class_names: list[str], split_cfg: Mapping[str, Any],
               official: Mapping[str, np.ndarray] | None = None,
               lists: Mapping[str, np.ndarray] | None = None,
               dataset_name: str = "dataset", describe: Callable[[int], str] | None = None) -> SplitPlan:
    """Draw the groups from ``labels`` (class index per pooled image); ``split_cfg`` is validated here.

    A request for more images than a class has raises :class:`LthashError` naming the class
    and both numbers; ``describe(i)`` names image i in errors (default: its pooled index).
    """
    from lthash.config import validate_section

    split_cfg = validate_section("split", split_cfg)
    describe = describe or (lambda i: f"pooled index {i}")
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(class_names)
    rng = np.random.default_rng(split_cfg["seed"])
    order = class_order(num_classes, rng)
    protocol = split_cfg["protocol"]
    query_n = split_cfg["query_per_class"]
    db_cap = split_cfg["database_per_class"]
    train_n = split_cfg["train_per_class"]

    query, database = _query_and_database(protocol, labels, class_names, query_n, db_cap, official, lists,
                                          dataset_name, describe, rng)

    if protocol == "lists":
        balanced = _by_class(lists["train"], labels, num_classes)
        for c in range(num_classes):
            if not len(balanced[c]):
                raise LthashError(f"class '{class_names[c]}' has no images in the train list")
        train_n = None
    else:
        if train_n is None:
            train_n = min(len(d) for d in database)
        balanced = []
        for c in range(num_classes):
            if len(database[c]) < train_n:
                raise LthashError(f"class '{class_names[c]}' has {len(database[c])} database images, "
                                  f"train_per_class asks for {train_n}")
            balanced.append(rng.permutation(database[c])[:train_n])

    train, order, sizes, mu, s1, source_name = _long_tail(split_cfg["longtail"], balanced, database, order,
                                                         class_names, rng)

    validation = _draw_validation(labels, class_names, int(split_cfg["validation_per_class"]),
                                  query, database, rng)

    def join(parts: list[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])) if parts else np.zeros(0, np.int64)

    plan = SplitPlan(indices={"train": join(train), "train_balanced": join(balanced),
                              "validation": join(validation), "database": join(database), "query": join(query)},
                     class_order=order, profile=split_cfg["longtail"]["profile"], s1=int(s1), mu=mu,
                     train_per_class=train_n, sizes_by_rank=[int(s) for s in sizes])
    check_disjoint(plan, source_name, describe)
    return plan


def _draw_validation(labels: np.ndarray, class_names: list[str], per_class: int, query: list[np.ndarray],
                     database: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """``per_class`` images of every class from those in neither the query set nor the database."""
    if per_class <= 0:
        return []
    taken = np.concatenate([np.asarray(p, dtype=np.int64) for p in (*query, *database)])
    free = np.setdiff1d(np.arange(len(labels)), taken)
    out = []
    for c, idx in enumerate(_by_class(free, labels, len(class_names))):
        if len(idx) < per_class:
            raise LthashError(f"class '{class_names[c]}' has {len(idx)} images outside the query set and the "
                              f"database; config key 'split.validation_per_class' asks for {per_class}")
        out.append(rng.permutation(idx)[:per_class])
    return out


def check_disjoint(plan: SplitPlan, source: str = "train_balanced",
                   describe: Callable[[int], str] | None = None) -> None:
    """Raise unless train ⊂ train_balanced (or database) ⊂ database and query ∩ database = ∅."""
    describe = describe or (lambda i: f"pooled index {i}")
    idx = plan.indices
    overlap = np.intersect1d(idx["query"], idx["database"])
    if len(overlap):
        raise LthashError(f"{len(overlap)} image(s) are in both the query set and the database "
                          f"(first: {describe(int(overlap[0]))})")
    for other in ("query", "database"):
        shared = np.intersect1d(idx.get("validation", np.zeros(0, np.int64)), idx[other])
        if len(shared):
            raise LthashError(f"{len(shared)} image(s) are in both the validation group and the {other} set "
                              f"(first: {describe(int(shared[0]))})")
    for inner, outer in (("train", source), ("train_balanced", "database")):
        outside = np.setdiff1d(idx[inner], idx[outer])
        if len(outside):
            raise LthashError(f"{len(outside)} image(s) of {inner} are not in {outer} "
                              f"(first: {describe(int(outside[0]))})")
    for name, values in idx.items():
        if len(np.unique(values)) != len(values):
            raise LthashError(f"group {name} holds an image twice")


def build_image_sets(dataset: Dataset, plan: SplitPlan) -> dict[str, ImageSet]:
    """Gather pixels (or paths) of every group in the order of the source index; with pixels of an
    image-file dataset, each image's file (relative to the root) as the extra dataset ``files``."""
    num_classes = len(dataset.class_names)
    sets = {}
    for name in ALL_GROUPS:
        idx = plan.indices.get(name, np.zeros(0, np.int64))
        if name == "validation" and not len(idx):
            continue
        labels = dataset.labels[idx]
        files = {}
        if dataset.files is not None and dataset.paths is None:
            import h5py

            files["files"] = np.array([dataset.files[i] for i in idx], dtype=h5py.string_dtype())
        sets[name] = ImageSet(
            images=dataset.images[idx] if dataset.images is not None else None,
            labels=labels,
            index=idx,
            paths=[dataset.paths[i] for i in idx] if dataset.paths is not None else None,
            attrs={"counts": np.bincount(labels, minlength=num_classes).astype(int).tolist()},
            extra=files,
        )
    return sets


def summarise(dataset: Dataset, plan: SplitPlan, params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON summary: class names, per-class counts of every group, seed, params, order."""
    counts = plan.counts(dataset.labels, len(dataset.class_names))
    train = counts["train"]
    head, tail = train[int(plan.class_order[0])], train[int(plan.class_order[-1])]
    split_cfg = params["split"]
    return {
        "dataset": dataset.name,
        "class_names": dataset.class_names,
        "seed": split_cfg["seed"],
        "params": params,
        "protocol": split_cfg["protocol"],
        "class_order": [dataset.class_names[c] for c in plan.class_order],
        "class_order_index": [int(c) for c in plan.class_order],
        "counts": counts,
        "totals": {name: int(len(idx)) for name, idx in plan.indices.items()},
        "longtail": {
            "profile": plan.profile,
            "source": split_cfg["longtail"]["source"],
            "s1": plan.s1,
            "mu": plan.mu,
            "sizes_by_rank": plan.sizes_by_rank,
            "imbalance_factor": (head / tail) if tail else None,
        },
        "train_per_class": plan.train_per_class,
        "image_shape": list(dataset.image_shape),
        "store": "paths" if dataset.paths is not None else "pixels",
        "skipped": dataset.skipped,
    }


def draw_distribution(path: str | Path, summary: Mapping[str, Any]) -> None:
    """Log-log PNG of per-class counts, classes sorted head to tail: long-tail vs balanced train."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = summary["counts"]
    order = sorted(range(len(summary["class_names"])), key=lambda c: -counts["train"][c])
    ranks = np.arange(1, len(order) + 1)
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.loglog(ranks, [counts["train_balanced"][c] for c in order], "s-", ms=3, label="balanced train")
    ax.loglog(ranks, [counts["train"][c] for c in order], "o-", ms=3, label="long-tail train")
    lt = summary["longtail"]
    detail = f"mu={lt['mu']:.3f}" if lt["mu"] is not None else ""
    ratio = f"IF={lt['imbalance_factor']:.1f}" if lt["imbalance_factor"] else ""
    ax.set_title(f"{summary['dataset']}: {lt['profile']} {detail} {ratio}".strip())
    ax.set_xlabel("class rank (head to tail)")
    ax.set_ylabel("training images")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def run_split(dataset_cfg: Mapping[str, Any], split_cfg: Mapping[str, Any], out: str | Path,
              summary_path: str | Path, figure_path: str | Path | None = None, threads: int = 1) -> dict[str, Any]:
    """Read the dataset, plan the split, and write the split file, summary and figure.

    The three outputs are written to temporary names and renamed only when all are complete:
    a failure leaves none of them behind.
    """
    from lthash.data.readers import load_dataset

    start = time.perf_counter()
    params = {"dataset": dict(dataset_cfg), "split": dict(split_cfg)}
    dataset = load_dataset(dataset_cfg, threads=threads)
    log.info("read %s: %d images, %d classes in %.1f s", dataset.name, len(dataset),
             len(dataset.class_names), time.perf_counter() - start)
    plan = plan_split(dataset.labels, dataset.class_names, split_cfg, dataset.official, dataset.lists,
                      dataset.name, dataset.describe)
    summary = summarise(dataset, plan, params)
    attrs: dict[str, Any] = {
        "class_names": dataset.class_names,
        "dataset": dataset.name,
        "seed": int(split_cfg["seed"]),
        "params": canonical_json(params),
        "protocol": split_cfg["protocol"],
        "class_order": [int(c) for c in plan.class_order],
        "image_shape": list(dataset.image_shape),
        "store": summary["store"],
    }
    if dataset.paths is not None or dataset.files is not None:
        attrs["root"] = dataset.root
    with contextlib.ExitStack() as stack:
        tmp_h5 = stack.enter_context(atomic_path(out, suffix=".h5"))
        tmp_json = stack.enter_context(atomic_path(summary_path, suffix=".json"))
        tmp_png = stack.enter_context(atomic_path(figure_path, suffix=".png")) if figure_path else None
        write_image_sets(tmp_h5, build_image_sets(dataset, plan), attrs=attrs)
        write_json(tmp_json, summary)
        if tmp_png is not None:
            draw_distribution(tmp_png, summary)
    log.info("split written to %s (%s) in %.1f s", out, summary["totals"], time.perf_counter() - start)
    return summary

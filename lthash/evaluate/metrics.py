"""Exact Hamming-ranking retrieval metrics: mAP@R (index order and tie-averaged), curves.

Ranking: the database sorted by Hamming distance to the query. Two tie policies:

* ``"index"``: inside one distance, by database index (what a stable argsort gives).
* ``"average"``: the expectation over uniformly random orders inside every distance,
  computed in closed form (``lthash.evaluate._ap_kernels`` derives it).

``AP@R = (1/Q_R) sum_{k <= R, item k relevant} P@k`` with ``Q_R`` the relevant items
retrieved within the first ``R``; a query with ``Q_R = 0`` has AP 0. With ``ties="average"``
and a cut-off inside a tie, the result is ``E[AP@R]`` (the expectation of the ratio, exact).
Relevance: same class (class indices) or at least one shared label (one-hot rows).

The numba kernels, imported on first use: :mod:`lthash.evaluate._ap_kernels` (exact AP of one
query from its distance histogram, in index order and tie-averaged; the notation and formulas
are there), :mod:`lthash.evaluate._scan_kernels` (the one-pass Hamming scan that scores every
query, class labels and label sets) and :mod:`lthash.evaluate._code_kernels` (popcount,
packing codes and labels into words, the popcount floor and top-k search).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.evaluate.codes import as_words

TIES = ("index", "average")
DEFAULT_CHUNK = 16384
_GROUPS_PER_TASK = 8
_BUFFER_ENTRIES = 8_000_000


@dataclass
class Labels:
    """Relevance labels in kernel form: class indices, or label bit masks (multi-label)."""

    classes: np.ndarray
    masks: np.ndarray
    multilabel: bool
    n_classes: int


@dataclass
class RetrievalScores:
    """Per-query results of one scan.

    ``ap_index`` / ``ap_average``: (queries, cut-offs) AP@K with ties by index / averaged;
    ``hits``: relevant items within K (index order); ``hist_all`` / ``hist_rel``: per query,
    items / relevant items at each Hamming distance 0..bits.
    """

    bits: int
    n_database: int
    cutoffs: np.ndarray
    topk: tuple
    ap_index: np.ndarray
    ap_average: np.ndarray
    hits: np.ndarray
    hist_all: np.ndarray
    hist_rel: np.ndarray

    @property
    def n_query(self) -> int:
        return int(self.ap_index.shape[0])

    def column(self, topk: int | None = None) -> int:
        """Position of cut-off ``topk`` (``None`` = all) in the arrays."""
        cutoff = _cutoff(topk, self.n_database)
        matches = np.flatnonzero(self.cutoffs == cutoff)
        if matches.size == 0:
            raise LthashError(f"cut-off {topk} was not scored (scored: {list(self.topk)})")
        return int(matches[0])

    def ap(self, topk: int | None = None, ties: str = "index") -> np.ndarray:
        """Per-query AP@topk under the tie policy."""
        col = self.column(topk)
        return (self.ap_index if _check_ties(ties) == "index" else self.ap_average)[:, col]

    def map(self, topk: int | None = None, ties: str = "index") -> float:
        """Mean of :meth:`ap` over queries."""
        return float(np.mean(self.ap(topk, ties)))


def _check_ties(ties: str) -> str:
    if ties not in TIES:
        raise LthashError(f"ties must be one of {list(TIES)}, got {ties!r}")
    return ties


def _cutoff(topk: int | str | None, n_database: int) -> int:
    if topk is None or topk == "all":
        return n_database
    if isinstance(topk, (bool, np.bool_)) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise LthashError(f"topk must be a positive integer, 'all' or None, got {topk!r}")
    return int(min(int(topk), n_database))


def code_words(codes: np.ndarray, bits: int | None = None, name: str = "codes") -> tuple[np.ndarray, int]:
    """Codes as (N, words) uint64 and their length in bits.

    ``bits=None``: a real (N, bits) array with values in {-1,+1} or in {0,1}.
    ``bits=B``: packed uint8 (N, ceil(B/8)) as written by :func:`~lthash.evaluate.codes.pack_codes`;
    padding bits past ``B`` are ignored.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise LthashError(f"{name} must be a 2-D array (items x bits or items x bytes), got shape {codes.shape}")
    if codes.shape[0] == 0:
        raise LthashError(f"{name} is empty")
    if codes.shape[1] == 0:
        raise LthashError(f"{name} have no bits")
    if bits is None:
        bits = int(codes.shape[1])
        if bits > 65535:
            raise LthashError(f"codes of {bits} bits are longer than supported (65535)")
        return pack_words(codes, name), bits
    bits = int(bits)
    if bits < 1:
        raise LthashError(f"bits must be positive, got {bits}")
    if bits > 65535:
        raise LthashError(f"codes of {bits} bits are longer than supported (65535)")
    if codes.dtype != np.uint8:
        raise LthashError(f"packed {name} must be uint8 when bits= is given, got dtype {codes.dtype}")
    width = -(-bits // 8)
    if codes.shape[1] != width:
        raise LthashError(f"packed {name} have {codes.shape[1]} bytes per item, but {bits} bits need {width}")
    packed = codes
    if bits % 8:
        packed = codes.copy()
        packed[:, -1] &= np.uint8((0xFF << (8 - bits % 8)) & 0xFF)
    return as_words(packed), bits


def _kernel_input(values: np.ndarray, name: str) -> np.ndarray:
    """A real numeric array in a dtype the numba kernels take (native byte order; bool as
    uint8, float16 as float32), without copying when it already is one."""
    if values.dtype == np.bool_:
        return values.view(np.uint8)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise LthashError(f"{name} must be numeric, got dtype {values.dtype}")
    if values.dtype == np.float16 or values.dtype.itemsize > 8:
        return values.astype(np.float64)
    return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))


def pack_words(codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """(N, bits) {-1,+1} or {0,1} values (any real dtype) as (N, ceil(bits/64)) uint64 words in
    the layout of ``as_words(pack_codes(codes))``, packed and checked in one parallel pass."""
    from lthash.evaluate import _code_kernels

    values = _kernel_input(codes, name)
    n, bits = values.shape
    words = np.empty((n, -(-bits // 64)), np.uint64)
    seen = np.empty(n, np.uint8)
    _code_kernels.pack_rows_kernel(values, words.view(np.uint8), seen)
    flags = int(np.bitwise_or.reduce(seen))
    if flags & 8 or (flags & 1 and flags & 2):
        shown = np.unique(values)[:6].tolist()
        raise LthashError(f"{name} must hold {{-1,+1}} or {{0,1}} values (or pass bits= for packed "
                          f"uint8 codes), found {shown}")
    return words


def _onehot_classes(labels: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """Class index of each one-hot row and whether every row has exactly one label."""
    from lthash.evaluate import _code_kernels

    values = _kernel_input(labels, name)
    classes = np.empty(values.shape[0], np.int32)
    kind = np.empty(values.shape[0], np.uint8)
    _code_kernels.onehot_rows_kernel(values, classes, kind)
    if (kind == 2).any():
        raise LthashError(f"{name}: one-hot rows must hold 0/1 values")
    return classes, not kind.any()


def prepare_labels(query_labels: np.ndarray, db_labels: np.ndarray, n_query: int, n_db: int) -> tuple[Labels, Labels]:
    """Check and convert labels: both class indices (1-D) or both one-hot rows (2-D, same K).

    One-hot rows with exactly one label each are turned into class indices (same relevance).
    """
    q = np.asarray(query_labels)
    db = np.asarray(db_labels)
    for name, arr, n in (("query_labels", q, n_query), ("db_labels", db, n_db)):
        if arr.ndim not in (1, 2):
            raise LthashError(f"{name} must be class indices (N,) or one-hot rows (N, K), got shape {arr.shape}")
        if arr.shape[0] != n:
            raise LthashError(f"{name} has {arr.shape[0]} rows but there are {n} codes")
        integral = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
        if not integral and not (np.issubdtype(arr.dtype, np.floating)
                                 and (arr.ndim == 2 or np.array_equal(arr, np.round(arr)))):
            raise LthashError(f"{name} must be integer class indices or 0/1 rows, got dtype {arr.dtype}")
    if q.ndim != db.ndim:
        raise LthashError(f"query_labels and db_labels must have the same form (class indices or one-hot "
                          f"rows), got shapes {q.shape} and {db.shape}")
    if q.ndim == 2:
        if q.shape[1] != db.shape[1]:
            raise LthashError(f"query_labels have {q.shape[1]} classes but db_labels have {db.shape[1]}")
        q_classes, q_single = _onehot_classes(q, "query_labels")
        db_classes, db_single = _onehot_classes(db, "db_labels")
        if not (q_single and db_single):
            n_classes = int(q.shape[1])
            return _mask_labels(q, n_classes), _mask_labels(db, n_classes)
        q, db = q_classes, db_classes
    q = q.astype(np.int64)
    db = db.astype(np.int64)
    if (q.size and q.min() < 0) or (db.size and db.min() < 0):
        raise LthashError("class indices must be non-negative")
    if max(int(q.max(initial=0)), int(db.max(initial=0))) >= 2**31:
        raise LthashError("class indices must be below 2**31")
    n_classes = int(max(q.max(initial=-1), db.max(initial=-1)) + 1)
    empty = np.zeros((1, 1), np.uint64)
    return (Labels(q.astype(np.int32), empty, False, n_classes),
            Labels(db.astype(np.int32), empty, False, n_classes))


def _mask_labels(onehot: np.ndarray, n_classes: int) -> Labels:
    bits = np.packbits(onehot.astype(bool), axis=1, bitorder="little")
    width = -(-bits.shape[1] // 8) * 8
    padded = np.zeros((bits.shape[0], width), np.uint8)
    padded[:, : bits.shape[1]] = bits
    return Labels(np.zeros(1, np.int32), padded.view(np.uint64), True, n_classes)


def _multilabel_relevant_counts(q: Labels, db: Labels) -> np.ndarray:
    """Database items sharing at least one label with each query."""
    from lthash.evaluate import _scan_kernels

    unique, counts = np.unique(db.masks, axis=0, return_counts=True)
    return _scan_kernels.count_relevant_multilabel(q.masks, unique, counts.astype(np.int64))


def class_item_lists(db_classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Database indices of each class in index order: ``items[offsets[c]:offsets[c + 1]]``."""
    counts = np.bincount(db_classes, minlength=n_classes)
    offsets = np.zeros(n_classes + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.argsort(db_classes, kind="stable").astype(np.int64)


def query_groups(q_classes: np.ndarray, size: int | None = None) -> np.ndarray:
    """Queries in rows of ``size`` (the kernel's GROUP) scanned together, -1 for an empty slot.

    Queries of one class fill rows together (they share their relevant items); the few
    left over from each class share rows with other classes' leftovers.
    """
    from lthash.evaluate import _scan_kernels

    size = size or _scan_kernels.GROUP
    order = np.argsort(q_classes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(q_classes[order]) != 0])
    ends = np.r_[starts[1:], order.size]
    whole, leftover = [], []
    for start, end in zip(starts, ends):
        cut = start + (end - start) // size * size
        whole.append(order[start:cut])
        leftover.append(order[cut:end])
    queue = np.concatenate(whole + leftover) if order.size else order
    rows = np.full((-(-queue.size // size), size), -1, np.int64)
    rows.ravel()[: queue.size] = queue
    return rows


def set_threads(threads: int | None) -> None:
    """Numba threads for the kernels: ``threads``, else ``LTHASH_THREADS``, else all cores."""
    import numba

    n = threads or int(os.environ.get("LTHASH_THREADS", 0)) or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def _dynamic(kernel):
    """Run a parallel kernel handing out its loop iterations one at a time, so a thread slowed
    by other processes on the machine does not hold the others up (static split otherwise)."""
    import numba

    def call(*args):
        previous = numba.set_parallel_chunksize(1)
        try:
            return kernel(*args)
        finally:
            numba.set_parallel_chunksize(previous)

    return call


def score_codes(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray,
                topk: Sequence[int | str | None] | int | str | None = (None,), bits: int | None = None,
                chunk: int = DEFAULT_CHUNK, threads: int | None = None) -> RetrievalScores:
    """Scan once and return per-query AP@K (both tie policies) for every K in ``topk``.

    Inputs as for :func:`mean_average_precision`; ``topk`` is one cut-off or a list
    (``None`` / ``"all"`` = the whole database).
    """
    from lthash.evaluate._scan_kernels import GROUP, score_classes_kernel, score_multilabel_kernel

    q_words, q_bits = code_words(query_codes, bits, "query codes")
    db_words, db_bits = code_words(db_codes, bits, "database codes")
    if q_bits != db_bits:
        raise LthashError(f"query codes have {q_bits} bits but database codes have {db_bits}")
    n_query, n_db = q_words.shape[0], db_words.shape[0]
    if n_db >= 2**31:
        raise LthashError(f"database of {n_db} items is larger than supported (2**31 - 1)")
    q_lab, db_lab = prepare_labels(query_labels, db_labels, n_query, n_db)
    requested = tuple(topk) if isinstance(topk, (list, tuple)) else (topk,)
    if not requested:
        raise LthashError("topk list is empty")
    cutoffs = np.array([_cutoff(k, n_db) for k in requested], dtype=np.int64)
    if threads is not None:
        set_threads(threads)
    nk = cutoffs.size
    ap_index, ap_average = np.zeros((n_query, nk)), np.zeros((n_query, nk))
    hits = np.zeros((n_query, nk), np.int64)
    hist_all, hist_rel = np.zeros((n_query, q_bits + 1), np.int64), np.zeros((n_query, q_bits + 1), np.int64)
    outputs = (ap_index, ap_average, hits, hist_all, hist_rel)
    if q_lab.multilabel:
        n_relevant = _multilabel_relevant_counts(q_lab, db_lab)
        groups = np.arange(-(-n_query // GROUP) * GROUP, dtype=np.int64).reshape(-1, GROUP)
        groups[groups >= n_query] = -1
        largest = int(n_relevant.max(initial=0)) + 1
        per_task = int(max(1, min(_GROUPS_PER_TASK, _BUFFER_ENTRIES // (GROUP * largest))))
        _dynamic(score_multilabel_kernel)(q_words, db_words, q_lab.masks, db_lab.masks, groups, n_relevant,
                                          cutoffs, per_task, int(chunk), *outputs)
    else:
        class_offsets, class_items = class_item_lists(db_lab.classes, q_lab.n_classes)
        groups = query_groups(q_lab.classes)
        largest = int(np.diff(class_offsets).max(initial=0))
        per_task = int(max(1, min(_GROUPS_PER_TASK, _BUFFER_ENTRIES // max(1, GROUP * largest))))
        _dynamic(score_classes_kernel)(q_words, db_words, q_lab.classes, db_lab.classes, groups,
                                       class_offsets, class_items, cutoffs, per_task, int(chunk), *outputs)
    return RetrievalScores(bits=q_bits, n_database=n_db, cutoffs=cutoffs,
                           topk=tuple(None if k == "all" else k for k in requested),
                           ap_index=ap_index, ap_average=ap_average, hits=hits,
                           hist_all=hist_all, hist_rel=hist_rel)


def mean_average_precision(query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray,
                           db_labels: np.ndarray, topk: int | None = None, ties: str = "index",
                           bits: int | None = None) -> float:
    """mAP@topk of Hamming ranking: mean over queries of ``(1/Q_R) sum_{k<=R, rel} P@k``.

    Codes: {-1,+1} or {0,1} arrays (items x bits), or packed uint8 with ``bits=``.
    Labels: class indices (N,) or one-hot rows (N, K) (relevant = at least one shared label).
    ``topk=None``: the whole database. ``ties``: ``"index"`` (stable order by database index)
    or ``"average"`` (exact expectation over random orders inside ties).
    """
    ties = _check_ties(ties)
    return score_codes(query_codes, db_codes, query_labels, db_labels, (topk,), bits=bits).map(topk, ties)


def precision_at_k_curve(scores: RetrievalScores, ks: Iterable[int]) -> np.ndarray:
    """Mean over queries of the tie-averaged P@k: ``(R_d + (k - N_d) r_d / n_d) / k`` with ``d``
    the distance holding rank ``k``."""
    ks = np.asarray(list(ks), dtype=np.int64)
    if ks.size and (ks.min() < 1 or ks.max() > scores.n_database):
        raise LthashError(f"precision@k needs 1 <= k <= {scores.n_database}")
    cum_all = np.cumsum(scores.hist_all, axis=1)
    cum_rel = np.cumsum(scores.hist_rel, axis=1)
    out = np.zeros(ks.size)
    for qi in range(scores.n_query):
        d = np.searchsorted(cum_all[qi], ks, side="left")
        n_d = scores.hist_all[qi, d]
        n_before = cum_all[qi, d] - n_d
        r_before = cum_rel[qi, d] - scores.hist_rel[qi, d]
        expected = r_before + (ks - n_before) * scores.hist_rel[qi, d] / n_d
        out += expected / ks
    return out / scores.n_query


def radius_precision_recall(scores: RetrievalScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of the items within Hamming radius t, for t = 0..bits.

    Precision: mean over queries, 0 for a query with nothing within t. Recall: mean over
    queries with at least one relevant database item. Also returns the fraction of
    queries with nothing within t.
    """
    cum_all = np.cumsum(scores.hist_all, axis=1).astype(np.float64)
    cum_rel = np.cumsum(scores.hist_rel, axis=1).astype(np.float64)
    precision = np.divide(cum_rel, cum_all, out=np.zeros_like(cum_rel), where=cum_all > 0).mean(axis=0)
    total_rel = cum_rel[:, -1:]
    has_rel = total_rel[:, 0] > 0
    if has_rel.any():
        recall = (cum_rel[has_rel] / total_rel[has_rel]).mean(axis=0)
    else:
        recall = np.zeros(cum_rel.shape[1])
    empty = (cum_all == 0).mean(axis=0)
    return precision, recall, empty


def precision_within_radius(scores: RetrievalScores, radius: int = 2) -> float:
    """Mean precision of the items within Hamming radius ``radius`` (0 when none are)."""
    if radius < 0:
        raise LthashError(f"radius must be >= 0, got {radius}")
    precision, _, _ = radius_precision_recall(scores)
    return float(precision[min(radius, scores.bits)])


def class_groups(counts: Sequence[int], many_shot: int = 100, few_shot: int = 20) -> list[str]:
    """``head`` (count > many_shot), ``tail`` (count < few_shot) or ``medium`` per class."""
    return ["head" if c > many_shot else "tail" if c < few_shot else "medium" for c in counts]


def per_class_ap(ap: np.ndarray, query_labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean AP of the queries of each class (a multi-label query counts for each of its
    classes) and the number of such queries; NaN for a class without queries."""
    labels = np.asarray(query_labels)
    if labels.ndim == 1:
        member = np.zeros((labels.shape[0], n_classes), bool)
        member[np.arange(labels.shape[0]), labels] = True
    else:
        member = labels.astype(bool)[:, :n_classes]
    n = member.sum(axis=0)
    sums = (member * ap[:, None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.maximum(n, 1), np.nan), n


def group_map(ap: np.ndarray, query_labels: np.ndarray, groups: Sequence[str]) -> dict[str, float | None]:
    """Mean AP over the queries whose class (any of whose classes) is in each group."""
    labels = np.asarray(query_labels)
    group_arr = np.asarray(groups)
    out: dict[str, float | None] = {}
    for name in ("head", "medium", "tail"):
        in_group = group_arr == name
        if labels.ndim == 1:
            member = in_group[labels]
        else:
            member = (labels.astype(bool)[:, : len(groups)] & in_group[None, :]).any(axis=1)
        out[name] = float(ap[member].mean()) if member.any() else None
    return out

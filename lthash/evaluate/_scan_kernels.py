"""Numba kernels of the scoring scan: one pass over the database per group of queries.

The class-label scan counts a histogram of distances for GROUP queries of one class at once
and visits the relevant items (known in advance: the class's database items) as events, so
the hot loop is XOR, POPCNT and an increment per (query, item) pair with no label test.
The label-set scan tests the items' label masks instead. AP from the histograms:
:mod:`lthash.evaluate._ap_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lthash.evaluate._ap_kernels import _finish_query
from lthash.evaluate._code_kernels import popcount64

GROUP = 4
"""Queries scanned together by the class-label kernel: one database load feeds four
independent histograms, which keeps the CPU's increment chains apart."""


@njit(cache=True, inline="always")
def _span(q: np.ndarray, db: np.ndarray, j0: int, j1: int, h: np.ndarray) -> None:
    """Count the distances of the group's queries ``q`` (GROUP, words) to database rows
    j0..j1 into their histograms ``h`` (GROUP, bits + 1). Unsigned indices skip numba's
    negative-index fix-up (three instructions per item; the loop ran 20% faster without)."""
    n_words = q.shape[1]
    lo = np.uint64(j0)
    hi = np.uint64(j1)
    if n_words == 1:
        q0 = q[0, 0]
        q1 = q[1, 0]
        q2 = q[2, 0]
        q3 = q[3, 0]
        for j in range(lo, hi):
            x = db[j]
            h[0, popcount64(q0 ^ x)] += 1
            h[1, popcount64(q1 ^ x)] += 1
            h[2, popcount64(q2 ^ x)] += 1
            h[3, popcount64(q3 ^ x)] += 1
    elif n_words == 2:
        q0a, q0b = q[0, 0], q[0, 1]
        q1a, q1b = q[1, 0], q[1, 1]
        q2a, q2b = q[2, 0], q[2, 1]
        q3a, q3b = q[3, 0], q[3, 1]
        two = np.uint64(2)
        one = np.uint64(1)
        for j in range(lo, hi):
            x = db[two * j]
            y = db[two * j + one]
            h[0, popcount64(q0a ^ x) + popcount64(q0b ^ y)] += 1
            h[1, popcount64(q1a ^ x) + popcount64(q1b ^ y)] += 1
            h[2, popcount64(q2a ^ x) + popcount64(q2b ^ y)] += 1
            h[3, popcount64(q3a ^ x) + popcount64(q3b ^ y)] += 1
    else:
        for j in range(j0, j1):
            for s in range(GROUP):
                h[s, _distance(q, s, db, j)] += 1


@njit(cache=True, inline="always")
def _distance(q: np.ndarray, s: int, db: np.ndarray, j: int) -> np.uint64:
    """Hamming distance of the group's query ``s`` to database row ``j``."""
    n_words = q.shape[1]
    d = popcount64(q[s, 0] ^ db[j * n_words])
    for w in range(1, n_words):
        d += popcount64(q[s, w] ^ db[j * n_words + w])
    return d


@njit(cache=True)
def _score_groups(q_words: np.ndarray, db: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                  groups: np.ndarray, class_offsets: np.ndarray, class_items: np.ndarray, cutoffs: np.ndarray,
                  chunk: int, ap_index: np.ndarray, ap_average: np.ndarray, hits: np.ndarray,
                  hist_all: np.ndarray, hist_rel: np.ndarray) -> None:
    """Score the queries of ``groups`` (rows of GROUP query indices, -1 = empty slot) in one
    pass over database chunks, writing their rows of the outputs.

    A group's events are the database items relevant to any of its queries (the union of
    their classes' item lists, in index order). Between events the histograms are counted
    without a label test; at an event each query of the item's class records (distance,
    items before it at that distance).
    """
    n_db = db_labels.shape[0]
    n_words = q_words.shape[1]
    stride = hist_all.shape[1]
    ng = groups.shape[0]
    queries = np.zeros((ng, GROUP, n_words), np.uint64)
    slot_label = np.full((ng, GROUP), -1, np.int64)
    leads = np.zeros((ng, GROUP), np.bool_)
    record_offsets = np.zeros(ng * GROUP + 1, np.int64)
    event_offsets = np.zeros(ng + 1, np.int64)
    for gi in range(ng):
        n_events = 0
        for s in range(GROUP):
            qi = groups[gi, s]
            n_rel = 0
            if qi >= 0:
                label = q_labels[qi]
                slot_label[gi, s] = label
                for w in range(n_words):
                    queries[gi, s, w] = q_words[qi, w]
                n_rel = class_offsets[label + 1] - class_offsets[label]
                leads[gi, s] = _first_of_label(slot_label, gi, s)
                if leads[gi, s]:
                    n_events += n_rel
            record_offsets[gi * GROUP + s + 1] = record_offsets[gi * GROUP + s] + n_rel
        event_offsets[gi + 1] = event_offsets[gi] + n_events
    events = np.empty(event_offsets[ng], np.int64)
    for gi in range(ng):
        e = event_offsets[gi]
        n_distinct = 0
        for s in range(GROUP):
            label = slot_label[gi, s]
            if leads[gi, s]:
                n_distinct += 1
                for r in range(class_offsets[label], class_offsets[label + 1]):
                    events[e] = class_items[r]
                    e += 1
        if n_distinct > 1:
            events[event_offsets[gi]:e].sort()
    buf_d = np.empty(record_offsets[ng * GROUP], np.int32)
    buf_p = np.empty(record_offsets[ng * GROUP], np.int32)
    fill = record_offsets[:ng * GROUP].copy()
    cursor = event_offsets[:ng].copy()
    position = np.zeros(ng, np.int64)
    hist = np.zeros((ng, GROUP, stride), np.int32)
    for c0 in range(0, n_db, chunk):
        c1 = min(n_db, c0 + chunk)
        for gi in range(ng):
            q = queries[gi]
            h = hist[gi]
            p = position[gi]
            e = cursor[gi]
            e_end = event_offsets[gi + 1]
            while e < e_end and events[e] < c1:
                j = events[e]
                _span(q, db, p, j, h)
                label = db_labels[j]
                for s in range(GROUP):
                    d = _distance(q, s, db, j)
                    c = h[s, d]
                    h[s, d] = c + 1
                    if slot_label[gi, s] == label:
                        k = fill[gi * GROUP + s]
                        buf_d[k] = d
                        buf_p[k] = c
                        fill[gi * GROUP + s] = k + 1
                p = j + 1
                e += 1
            _span(q, db, p, c1, h)
            position[gi] = c1
            cursor[gi] = e
    _finish_groups(groups, ng, stride, hist, hist_all, hist_rel, buf_d, buf_p, record_offsets[:-1],
                   record_offsets[1:], cutoffs, ap_index, hits, ap_average)


@njit(cache=True, inline="always")
def _finish_groups(groups, ng, stride, hist, hist_all, hist_rel, buf_d, buf_p, record_lo, record_hi,
                   cutoffs, ap_index, hits, ap_average):
    """Copy every grouped query's histogram out and finish its AP from records [record_lo[k], record_hi[k])."""
    for gi in range(ng):
        for s in range(GROUP):
            qi = groups[gi, s]
            if qi < 0:
                continue
            for d in range(stride):
                hist_all[qi, d] = hist[gi, s, d]
            k = gi * GROUP + s
            _finish_query(hist_all[qi], hist_rel[qi], buf_d, buf_p, record_lo[k], record_hi[k],
                          cutoffs, ap_index[qi], hits[qi], ap_average[qi])


@njit(cache=True, inline="always")
def _first_of_label(slot_label: np.ndarray, gi: int, s: int) -> bool:
    """Whether slot ``s`` is the group's first with its class."""
    for r in range(s):
        if slot_label[gi, r] == slot_label[gi, s]:
            return False
    return True


@njit(cache=True, inline="always")
def _n_tasks(groups: np.ndarray, groups_per_task: int) -> int:
    """Tasks of a scoring kernel: its query groups cut into runs of ``groups_per_task``."""
    return (groups.shape[0] + groups_per_task - 1) // groups_per_task


@njit(cache=True, inline="always")
def _task(groups: np.ndarray, groups_per_task: int, t: int) -> np.ndarray:
    """The query groups of task ``t``."""
    g0 = t * groups_per_task
    return groups[g0:min(groups.shape[0], g0 + groups_per_task)]


@njit(parallel=True, cache=True)
def score_classes_kernel(q_words: np.ndarray, db_words: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                         groups: np.ndarray, class_offsets: np.ndarray, class_items: np.ndarray,
                         cutoffs: np.ndarray, groups_per_task: int, chunk: int, ap_index: np.ndarray,
                         ap_average: np.ndarray, hits: np.ndarray, hist_all: np.ndarray, hist_rel: np.ndarray) -> None:
    """Class labels: the query groups (GROUP queries each, usually of one class) split into
    tasks of ``groups_per_task``; each task is one pass over database chunks
    (:func:`_score_groups`), then AP@K in index order and tie-averaged for every K (see the
    module doc), written into the zeroed outputs (allocated by the caller: an allocation
    inside a parallel kernel becomes a parallel fill, handed out one element at a time
    under a chunk size of 1).

    Memory: the relevant items of a task's queries and GROUP histograms per group; never a
    query x database matrix.
    """
    db = db_words.ravel()
    for t in prange(_n_tasks(groups, groups_per_task)):
        _score_groups(q_words, db, q_labels, db_labels, _task(groups, groups_per_task, t), class_offsets, class_items,
                      cutoffs, chunk, ap_index, ap_average, hits, hist_all, hist_rel)


@njit(cache=True, inline="always")
def _span_multilabel(q: np.ndarray, qm: np.ndarray, db: np.ndarray, dbm: np.ndarray, j0: int, j1: int,
                     h: np.ndarray, buf_d: np.ndarray, buf_p: np.ndarray, fill: np.ndarray) -> None:
    """Histograms of the group's queries ``q`` over database rows j0..j1 and, for each item
    sharing a label bit with query ``s`` (masks ``qm[s]``), its (distance, items before it at
    that distance) at ``buf[fill[s]]``. The record is written for every item and kept by
    advancing ``fill[s]`` only when relevant (no branch: relevance is often near 50%), so
    each slot's buffer holds one spare entry."""
    n_words = q.shape[1]
    n_mask = qm.shape[1]
    zero = np.uint64(0)
    if n_words <= 2 and n_mask <= 2:
        _span_multilabel_short(q, qm, db, dbm, j0, j1, h, buf_d, buf_p, fill)
        return
    for j in range(j0, j1):
        for s in range(GROUP):
            shared = zero
            for w in range(n_mask):
                shared |= qm[s, w] & dbm[j, w]
            fill[s] = _record(h, s, _distance(q, s, db, j), shared, buf_d, buf_p, fill[s])


@njit(cache=True, inline="always")
def _record(h: np.ndarray, s: int, d: np.uint64, shared: np.uint64, buf_d: np.ndarray, buf_p: np.ndarray,
            k: int) -> int:
    """Count distance ``d`` in slot ``s``'s histogram and write (d, items before it at d) at
    ``buf[k]``; the next free entry: ``k + 1`` when ``shared`` (label bits in common) is
    nonzero, else ``k`` (the entry is overwritten)."""
    c = h[s, d]
    h[s, d] = c + 1
    buf_d[k] = d
    buf_p[k] = c
    return k + (shared != np.uint64(0))


@njit(cache=True, inline="always")
def _span_multilabel_short(q: np.ndarray, qm: np.ndarray, db: np.ndarray, dbm: np.ndarray, j0: int, j1: int,
                           h: np.ndarray, buf_d: np.ndarray, buf_p: np.ndarray, fill: np.ndarray) -> None:
    """:func:`_span_multilabel` for codes of at most two words and label masks of at most two
    words, the query words and masks held in registers (a missing second word is zero, so it
    adds nothing; the loads of second words are hoisted out by loop unswitching)."""
    n_words = q.shape[1]
    two_words = n_words == 2
    two_masks = qm.shape[1] == 2
    zero = np.uint64(0)
    q0a, q1a, q2a, q3a = q[0, 0], q[1, 0], q[2, 0], q[3, 0]
    m0a, m1a, m2a, m3a = qm[0, 0], qm[1, 0], qm[2, 0], qm[3, 0]
    q0b = q1b = q2b = q3b = zero
    m0b = m1b = m2b = m3b = zero
    if two_words:
        q0b, q1b, q2b, q3b = q[0, 1], q[1, 1], q[2, 1], q[3, 1]
    if two_masks:
        m0b, m1b, m2b, m3b = qm[0, 1], qm[1, 1], qm[2, 1], qm[3, 1]
    f0, f1, f2, f3 = fill[0], fill[1], fill[2], fill[3]
    stride = np.uint64(n_words)
    one = np.uint64(1)
    for j in range(np.uint64(j0), np.uint64(j1)):
        x = db[stride * j]
        y = db[stride * j + one] if two_words else zero
        ma = dbm[j, 0]
        mb = dbm[j, 1] if two_masks else zero
        f0 = _record(h, 0, popcount64(q0a ^ x) + popcount64(q0b ^ y), (m0a & ma) | (m0b & mb), buf_d, buf_p, f0)
        f1 = _record(h, 1, popcount64(q1a ^ x) + popcount64(q1b ^ y), (m1a & ma) | (m1b & mb), buf_d, buf_p, f1)
        f2 = _record(h, 2, popcount64(q2a ^ x) + popcount64(q2b ^ y), (m2a & ma) | (m2b & mb), buf_d, buf_p, f2)
        f3 = _record(h, 3, popcount64(q3a ^ x) + popcount64(q3b ^ y), (m3a & ma) | (m3b & mb), buf_d, buf_p, f3)
    fill[0], fill[1], fill[2], fill[3] = f0, f1, f2, f3


@njit(cache=True)
def _score_multilabel_groups(q_words: np.ndarray, db: np.ndarray, q_masks: np.ndarray, db_masks: np.ndarray,
                             groups: np.ndarray, n_relevant: np.ndarray, cutoffs: np.ndarray, chunk: int,
                             ap_index: np.ndarray, ap_average: np.ndarray, hits: np.ndarray,
                             hist_all: np.ndarray, hist_rel: np.ndarray) -> None:
    """Score the queries of ``groups`` (rows of GROUP query indices, -1 = empty slot) in one
    pass over database chunks, as :func:`_score_groups` does for class labels, but with a
    label-mask test at every item: which items share a label with a query is not known
    before the scan."""
    n_db = db_masks.shape[0]
    n_words = q_words.shape[1]
    n_mask = q_masks.shape[1]
    stride = hist_all.shape[1]
    ng = groups.shape[0]
    queries = np.zeros((ng, GROUP, n_words), np.uint64)
    masks = np.zeros((ng, GROUP, n_mask), np.uint64)
    starts = np.zeros(ng * GROUP + 1, np.int64)
    for gi in range(ng):
        for s in range(GROUP):
            qi = groups[gi, s]
            n_rel = 0
            if qi >= 0:
                n_rel = n_relevant[qi]
                for w in range(n_words):
                    queries[gi, s, w] = q_words[qi, w]
                for w in range(n_mask):
                    masks[gi, s, w] = q_masks[qi, w]
            starts[gi * GROUP + s + 1] = starts[gi * GROUP + s] + n_rel + 1
    buf_d = np.empty(starts[ng * GROUP], np.int32)
    buf_p = np.empty(starts[ng * GROUP], np.int32)
    fill = starts[:ng * GROUP].copy()
    hist = np.zeros((ng, GROUP, stride), np.int32)
    for c0 in range(0, n_db, chunk):
        c1 = min(n_db, c0 + chunk)
        for gi in range(ng):
            _span_multilabel(queries[gi], masks[gi], db, db_masks, c0, c1, hist[gi], buf_d, buf_p,
                             fill[gi * GROUP:(gi + 1) * GROUP])
    _finish_groups(groups, ng, stride, hist, hist_all, hist_rel, buf_d, buf_p, starts, fill,
                   cutoffs, ap_index, hits, ap_average)


@njit(parallel=True, cache=True)
def score_multilabel_kernel(q_words: np.ndarray, db_words: np.ndarray, q_masks: np.ndarray, db_masks: np.ndarray,
                            groups: np.ndarray, n_relevant: np.ndarray, cutoffs: np.ndarray, groups_per_task: int,
                            chunk: int, ap_index: np.ndarray, ap_average: np.ndarray, hits: np.ndarray,
                            hist_all: np.ndarray, hist_rel: np.ndarray) -> None:
    """Label sets: the query groups (GROUP queries each) split into tasks of
    ``groups_per_task``, each one pass over database chunks (:func:`_score_multilabel_groups`),
    then AP@K in index order and tie-averaged for every K, written into the zeroed outputs
    (allocated by the caller, see :func:`score_classes_kernel`).

    Four queries per database load took 1.45-2.0x less CPU than one query at a time over a
    buffer of distances (128,503 x 5,000; 21, 64 or 80 labels, two per item; 64 and 128
    bits): the histogram increments of four queries overlap and the database and its label
    masks are loaded once for the four. Memory: the relevant
    items of a task's queries and GROUP histograms per group; never a query x database matrix.
    """
    db = db_words.ravel()
    for t in prange(_n_tasks(groups, groups_per_task)):
        _score_multilabel_groups(q_words, db, q_masks, db_masks, _task(groups, groups_per_task, t), n_relevant, cutoffs,
                                 chunk, ap_index, ap_average, hits, hist_all, hist_rel)


@njit(parallel=True, cache=True)
def count_relevant_multilabel(q_masks: np.ndarray, unique_masks: np.ndarray, unique_counts: np.ndarray) -> np.ndarray:
    """Relevant database items per query: sum of counts of database label sets meeting the query's."""
    n_query = q_masks.shape[0]
    out = np.zeros(n_query, np.int64)
    for qi in prange(n_query):
        total = 0
        for u in range(unique_masks.shape[0]):
            for w in range(unique_masks.shape[1]):
                if q_masks[qi, w] & unique_masks[u, w]:
                    total += unique_counts[u]
                    break
        out[qi] = total
    return out


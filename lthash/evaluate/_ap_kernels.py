"""Numba kernels of exact AP for one query from its distance histogram: in index order and
averaged over the orders of tied items (the tie-aware AP of the evaluation stage).

Notation for one query (database ranked by Hamming distance ``d``, ties by database index):
``n_d`` items at distance ``d`` of which ``r_d`` are relevant, ``N_d = sum_{e<d} n_e`` and
``R_d = sum_{e<d} r_e`` items / relevant items strictly closer. ``H(m) = sum_{p<=m} 1/p``.

* Index order: the relevant item that is the ``j``-th relevant one (0-based) at distance
  ``d`` and has ``p`` items of any kind at distance ``d`` before it in index order has rank
  ``N_d + p + 1`` and precision ``(R_d + j + 1) / (N_d + p + 1)``.
* Tie average (uniformly random order inside each distance): position ``p`` (1-based) of a
  bucket is relevant with probability ``r/n`` and, given that, has in expectation
  ``(p-1)(r-1)/(n-1)`` relevant items before it inside the bucket, so the bucket adds
  ``S = sum_p [(R+1) r/n + (p-1) r(r-1)/(n(n-1))] / (N+p)
  = (R+1)(r/n) D + r(r-1)/(n(n-1)) (n - (N+1) D)`` with ``D = H(N+n) - H(N)``.
* Cut-off ``K`` inside a bucket (``N < K < N+n``, ``m = K - N`` places): the number ``x``
  of relevant items among the first ``m`` places is hypergeometric(n, r, m) and, given
  ``x``, they sit on a uniform ``x``-subset of the ``m`` places, so
  ``E[AP@K] = sum_x P(x) (A + S(N, m, x, R)) / (R + x)`` where ``A`` is the sum over the
  buckets before (terms with ``R + x = 0`` are 0).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_ASYMPTOTIC_FROM = 64


@njit(cache=True)
def _h_tail(x: float) -> float:
    """``H(x) - ln(x) - gamma`` by its asymptotic series (error < 1e-20 for x >= 64)."""
    inv = 1.0 / x
    inv2 = inv * inv
    return inv * 0.5 - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 / 240.0)))


@njit(cache=True)
def harmonic_diff(start: int, count: int) -> float:
    """``H(start + count) - H(start) = sum_{p=start+1}^{start+count} 1/p``, to ~1e-16 relative."""
    if count <= 0:
        return 0.0
    lo = start
    hi = start + count
    total = 0.0
    if count <= _ASYMPTOTIC_FROM:
        for p in range(hi, lo, -1):
            total += 1.0 / p
        return total
    while lo < _ASYMPTOTIC_FROM:
        lo += 1
        total += 1.0 / lo
    return total + math.log1p((hi - lo) / lo) + (_h_tail(hi) - _h_tail(lo))


@njit(cache=True)
def bucket_expected_sum(before: int, size: int, rel: int, rel_before: int) -> float:
    """Expected sum of precisions of the relevant items of one bucket under random order.

    ``S = (R+1)(r/n) D + r(r-1)/(n(n-1)) (n - (N+1) D)``, ``D = H(N+n) - H(N)``.
    """
    if rel <= 0:
        return 0.0
    d = harmonic_diff(before, size)
    total = (rel_before + 1.0) * rel / size * d
    if rel > 1:
        total += rel * (rel - 1.0) / (size * (size - 1.0)) * (size - (before + 1.0) * d)
    return total


@njit(cache=True)
def straddle_expected_ap(acc: float, before: int, size: int, rel: int, rel_before: int, places: int) -> float:
    """``E[(A + S(N, m, x, R)) / (R + x)]`` over ``x ~ hypergeometric(n, r, m)`` (see module doc).

    The hypergeometric weights come from the ratio recurrence started at the mode (no
    factorials, no overflow); terms with ``R + x = 0`` are 0.
    """
    x_lo = max(0, places - (size - rel))
    x_hi = min(rel, places)
    d = harmonic_diff(before, places)
    alpha = (rel_before + 1.0) * d / places
    beta = 0.0
    if places > 1:
        beta = (places - (before + 1.0) * d) / (places * (places - 1.0))
    mode = ((places + 1) * (rel + 1)) // (size + 2)
    mode = min(max(mode, x_lo), x_hi)
    weight_sum = 0.0
    value_sum = 0.0
    w = 1.0
    x = mode
    while True:
        if rel_before + x > 0:
            value_sum += w * (acc + alpha * x + beta * x * (x - 1.0)) / (rel_before + x)
        weight_sum += w
        if x >= x_hi or w == 0.0:
            break
        w *= (rel - x) * (places - x) / ((x + 1.0) * (size - rel - places + x + 1.0))
        x += 1
    w = 1.0
    x = mode
    while x > x_lo:
        w *= x * (size - rel - places + x) / ((rel - x + 1.0) * (places - x + 1.0))
        x -= 1
        if w == 0.0:
            break
        if rel_before + x > 0:
            value_sum += w * (acc + alpha * x + beta * x * (x - 1.0)) / (rel_before + x)
        weight_sum += w
    return value_sum / weight_sum


@njit(cache=True)
def tie_average_ap(hist_all: np.ndarray, hist_rel: np.ndarray, cutoff: int) -> float:
    """Expected AP@cutoff over uniformly random orders inside each Hamming distance."""
    before = 0
    rel_before = 0
    acc = 0.0
    for d in range(hist_all.shape[0]):
        size = hist_all[d]
        if size == 0:
            continue
        if before >= cutoff:
            break
        rel = hist_rel[d]
        if before + size <= cutoff:
            acc += bucket_expected_sum(before, size, rel, rel_before)
            before += size
            rel_before += rel
        else:
            if rel == 0:
                break
            return straddle_expected_ap(acc, before, size, rel, rel_before, cutoff - before)
    if rel_before == 0:
        return 0.0
    return acc / rel_before


@njit(cache=True)
def _finish_query(hist: np.ndarray, hist_rel: np.ndarray, buf_d: np.ndarray, buf_p: np.ndarray,
                  start: int, stop: int, cutoffs: np.ndarray, ap_index: np.ndarray,
                  hits: np.ndarray, ap_average: np.ndarray) -> None:
    """Index-order AP@K from the recorded (distance, position-in-bucket) of each relevant item,
    and the tie-averaged AP@K from the two histograms, for every cut-off K."""
    nd = hist.shape[0]
    nk = cutoffs.shape[0]
    for i in range(start, stop):
        hist_rel[buf_d[i]] += 1
    n_before = np.zeros(nd, np.int64)
    r_before = np.zeros(nd, np.int64)
    for d in range(1, nd):
        n_before[d] = n_before[d - 1] + hist[d - 1]
        r_before[d] = r_before[d - 1] + hist_rel[d - 1]
    seen = np.zeros(nd, np.int64)
    sums = np.zeros(nk, np.float64)
    counts = np.zeros(nk, np.int64)
    for i in range(start, stop):
        d = buf_d[i]
        j = seen[d]
        seen[d] = j + 1
        rank = n_before[d] + buf_p[i] + 1
        precision = (r_before[d] + j + 1.0) / rank
        for t in range(nk):
            if rank <= cutoffs[t]:
                sums[t] += precision
                counts[t] += 1
    for t in range(nk):
        hits[t] = counts[t]
        ap_index[t] = sums[t] / counts[t] if counts[t] > 0 else 0.0
        ap_average[t] = tie_average_ap(hist, hist_rel, cutoffs[t])


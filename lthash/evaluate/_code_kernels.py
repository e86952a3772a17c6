"""Numba kernels on packed binary codes: popcount, packing codes and labels into words, the
popcount lower bound and top-k search by Hamming distance."""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount64(typingctx, x):
    """LLVM ``ctpop`` on a uint64 (a single POPCNT / VPOPCNTQ instruction)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, inline="always")
def popcount64(x: np.uint64) -> np.uint64:
    return _popcount64(x)


@njit(parallel=True, cache=True)
def pack_rows_kernel(codes: np.ndarray, out: np.ndarray, seen: np.ndarray) -> None:
    """Pack (N, bits) {-1,+1} / {0,1} values into bytes, bit = value > 0, most significant
    first (the layout of ``np.packbits(codes > 0, axis=1)``). Every byte of ``out`` (N, width
    >= ceil(bits/8)) is written, those past the code zero. ``seen[i]``: bit 0 row i holds a
    negative value, bit 1 a zero, bit 3 a value other than -1 / 0 / +1 (NaN included).

    Flags are OR-ed, not counted, and whole bytes have their own loop: the byte loop then
    compiles to straight-line code (3.5 ms for 128,503 x 64 float32 on one thread; 12-14 ms
    with counters or with one loop for whole and partial bytes)."""
    n, bits = codes.shape
    width = out.shape[1]
    full = bits // 8
    for i in prange(n):
        neg = 0
        zero = 0
        other = 0
        for k in range(full):
            byte = 0
            for b in range(8):
                v = codes[i, k * 8 + b]
                byte |= (1 if v > 0 else 0) << (7 - b)
                neg |= v < 0
                zero |= v == 0
                other |= (v != 1) & (v != -1) & (v != 0)
            out[i, k] = byte
        for k in range(full, width):
            byte = 0
            for j in range(k * 8, min(bits, k * 8 + 8)):
                v = codes[i, j]
                byte |= (1 if v > 0 else 0) << (7 - (j - k * 8))
                neg |= v < 0
                zero |= v == 0
                other |= (v != 1) & (v != -1) & (v != 0)
            out[i, k] = byte
        seen[i] = neg | (zero << 1) | (other << 3)


@njit(parallel=True, cache=True)
def onehot_rows_kernel(labels: np.ndarray, classes: np.ndarray, kind: np.ndarray) -> None:
    """Per row of (N, K) labels: ``kind`` 0 = exactly one 1 and zeros (its position in
    ``classes``), 1 = another row of 0/1 values, 2 = a value other than 0 and 1.

    Branch-free sums (the position is the sum of c [v_c == 1]) vectorise: 3 ms for
    128,503 x 100 float32 on one thread, against 10-17 ms with a branch per value."""
    n, k = labels.shape
    for i in prange(n):
        ones = 0
        bad = 0
        position = 0
        for c in range(k):
            v = labels[i, c]
            one = np.int64(v == 1)
            ones += one
            bad |= (v != 0) & (v != 1)
            position += c * one
        classes[i] = position
        kind[i] = 2 if bad else (0 if ones == 1 else 1)


@njit(parallel=True, cache=True)
def popcount_floor_kernel(q_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    """Bare XOR + popcount over every (query, item) pair, summed: the hardware floor."""
    n_query = q_words.shape[0]
    n_db = db_words.shape[0]
    n_words = q_words.shape[1]
    db_flat = db_words.ravel()
    out = np.zeros(n_query, np.int64)
    for qi in prange(n_query):
        s = 0
        if n_words == 1:
            qa = q_words[qi, 0]
            for j in range(n_db):
                s += popcount64(qa ^ db_flat[j])
        elif n_words == 2:
            qa = q_words[qi, 0]
            qb = q_words[qi, 1]
            for j in range(n_db):
                s += popcount64(qa ^ db_flat[2 * j]) + popcount64(qb ^ db_flat[2 * j + 1])
        else:
            for j in range(n_db):
                for w in range(n_words):
                    s += popcount64(q_words[qi, w] ^ db_flat[j * n_words + w])
        out[qi] = s
    return out


@njit(parallel=True, cache=True)
def topk_kernel(q_words: np.ndarray, db_words: np.ndarray, k: int, bits: int):
    """Exact top-k by (Hamming distance, database index): a histogram pass finds the
    threshold distance, a second pass places items into their sorted slots."""
    n_query = q_words.shape[0]
    n_db = db_words.shape[0]
    n_words = q_words.shape[1]
    out_index = np.empty((n_query, k), np.int64)
    out_dist = np.empty((n_query, k), np.int64)
    for qi in prange(n_query):
        hist = np.zeros(bits + 1, np.int64)
        for j in range(n_db):
            s = 0
            for w in range(n_words):
                s += popcount64(q_words[qi, w] ^ db_words[j, w])
            hist[s] += 1
        slot = np.zeros(bits + 1, np.int64)
        cum = 0
        for d in range(bits + 1):
            slot[d] = cum
            cum += hist[d]
        placed = 0
        for j in range(n_db):
            if placed == k:
                break
            s = 0
            for w in range(n_words):
                s += popcount64(q_words[qi, w] ^ db_words[j, w])
            pos = slot[s]
            if pos < k:
                out_index[qi, pos] = j
                out_dist[qi, pos] = s
                slot[s] = pos + 1
                placed += 1
    return out_index, out_dist

"""Class centres (target codes) for the centre-based hash methods.

Every generator takes a seeded ``numpy.random.Generator`` and returns a float32 array of
shape (classes, bits) with entries in {-1, +1}.
"""

from __future__ import annotations

import numpy as np

from lthash.errors import LthashError


def bernoulli_codes(classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Each entry +1 or -1 with probability 1/2 (OrthoHash's default codebook)."""
    return np.where(rng.random((classes, bits)) < 0.5, -1.0, 1.0).astype(np.float32)


def min_hamming(codes: np.ndarray) -> int:
    """Smallest Hamming distance between two distinct rows (``bits`` for a single row)."""
    if len(codes) < 2:
        return int(codes.shape[1])
    bits = codes.shape[1]
    dist = (bits - codes @ codes.T) / 2
    np.fill_diagonal(dist, bits)
    return int(dist.min())


def rejection_codes(classes: int, bits: int, rng: np.random.Generator, min_distance: int | None = None,
                    balanced: bool = False, tries: int = 10000) -> np.ndarray:
    """Codes drawn one class at a time, redrawing a code closer than ``min_distance`` to any earlier one.

    ``min_distance`` defaults to bits/4 (a floor random codes reach easily for moderate class
    counts); ``balanced`` draws codes with exactly bits/2 ones (CSQ beyond the Hadamard rows).
    """
    floor = bits // 4 if min_distance is None else int(min_distance)
    codes: list[np.ndarray] = []
    for cls in range(classes):
        for _ in range(tries):
            if balanced:
                code = np.full(bits, -1.0, dtype=np.float32)
                code[rng.permutation(bits)[: bits // 2]] = 1.0
            else:
                code = bernoulli_codes(1, bits, rng)[0]
            if not codes or ((bits - np.stack(codes) @ code) / 2).min() >= floor:
                codes.append(code)
                break
        else:
            raise LthashError(f"could not draw {classes} codes of {bits} bits at Hamming distance >= {floor} "
                              f"(class {cls}); lower the minimum distance or use more bits")
    return np.stack(codes).astype(np.float32)


def spread_codes(classes: int, bits: int, rng: np.random.Generator, candidates: int = 200) -> np.ndarray:
    """The Bernoulli codebook with the largest minimum Hamming distance among ``candidates`` draws
    (rejection sampling without a fixed floor: it adapts to any class count and code length)."""
    best, best_distance = None, -1
    for _ in range(candidates):
        codes = bernoulli_codes(classes, bits, rng)
        distance = min_hamming(codes)
        if distance > best_distance:
            best, best_distance = codes, distance
    return best  # type: ignore[return-value]


def hadamard(n: int) -> np.ndarray:
    """Sylvester's Hadamard matrix of order ``n`` (a power of two): H_{2n} = [[H, H], [H, -H]]."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard order must be a power of two, got {n}")
    matrix = np.ones((1, 1), dtype=np.float32)
    while matrix.shape[0] < n:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def hadamard_codes(classes: int, bits: int, rng: np.random.Generator, min_distance: int | None = None) -> np.ndarray:
    """CSQ centres: rows of H (classes <= bits), of [H; -H] (classes <= 2 bits), else random balanced
    codes at Hamming distance >= ``min_distance`` (bits/4 by default) from each other.

    Rows of H are mutually at distance bits/2; a row and its negation at distance bits.
    When ``bits`` is not a power of two every centre is a random balanced code.
    """
    if bits & (bits - 1) == 0 and classes <= 2 * bits:
        matrix = hadamard(bits)
        return np.concatenate([matrix, -matrix])[:classes].astype(np.float32)
    return rejection_codes(classes, bits, rng, min_distance=min_distance, balanced=True)


def class_codes(kind: str, classes: int, bits: int, rng: np.random.Generator,
                min_distance: int | None = None) -> np.ndarray:
    """One ±1 code per class (OrthoHash's codebook, DPN's targets): ``bernoulli`` draws them
    uniformly; ``distance`` keeps the best of many Bernoulli codebooks by minimum Hamming
    distance (:func:`spread_codes`), or rejection-samples to ``min_distance`` when it is set."""
    if kind == "bernoulli":
        return bernoulli_codes(classes, bits, rng)
    if kind != "distance":
        raise LthashError(f"unknown class-code kind {kind!r} (bernoulli or distance)")
    if min_distance is None:
        return spread_codes(classes, bits, rng)
    return rejection_codes(classes, bits, rng, min_distance)

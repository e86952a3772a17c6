"""Shared pieces of the evaluation benchmarks: synthetic codes near class centres, timing."""

from __future__ import annotations

import resource

import numpy as np


def flip_mask(rng: np.random.Generator, shape: tuple[int, ...], and_of: int) -> np.ndarray:
    """Random uint64 words whose bits are 1 with probability 2**-and_of (AND of random words)."""
    mask = rng.integers(0, 2**64, shape, dtype=np.uint64, endpoint=False)
    for _ in range(and_of - 1):
        mask &= rng.integers(0, 2**64, shape, dtype=np.uint64, endpoint=False)
    return mask


def make_codes(rng: np.random.Generator, centres: np.ndarray, labels: np.ndarray, bits: int,
               and_of: int = 2) -> np.ndarray:
    """Packed uint8 codes: the class centre's words XOR a flip mask (bit flip probability
    2**-and_of), padding bits past ``bits`` cleared."""
    words = centres[labels] ^ flip_mask(rng, (labels.size, centres.shape[1]), and_of)
    packed = words.view(np.uint8).reshape(labels.size, -1)[:, : -(-bits // 8)].copy()
    if bits % 8:
        packed[:, -1] &= np.uint8((0xFF << (8 - bits % 8)) & 0xFF)
    return packed


def random_centres(rng: np.random.Generator, classes: int, bits: int) -> np.ndarray:
    """(classes, words) uint64 random class centres."""
    return rng.integers(0, 2**64, (classes, -(-bits // 64)), dtype=np.uint64, endpoint=False)




def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux ru_maxrss is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return handle.read().split()[0]

"""Long-tail class-size profiles.

For C classes ranked i = 1..C (head first, in a seeded order):

- zipf (LTHNet, eq. 1): s_i = floor(s1 * i^-mu); mu is given, or derived from the imbalance
  factor IF = s1 / s_C as mu = ln(IF) / ln(C).
- exponential: s_i = floor(s1 * IF^(-(i-1)/(C-1))).
- none: the sizes are whatever the data has (see :func:`profile_sizes`).

Sizes are floored with a tolerance of 1e-9 so that values which are integers in exact
arithmetic (500 * 10^-mu with mu = ln 50 / ln 10 is 10) are not floored to one less by
floating-point error.
"""

from __future__ import annotations

import math

import numpy as np

from lthash.errors import LthashError

FLOOR_TOLERANCE = 1e-9


def robust_floor(value: float) -> int:
    """floor(value + 1e-9): an exact integer computed as 9.999999999999998 stays 10."""
    return int(math.floor(value + FLOOR_TOLERANCE))


def zipf_mu(imbalance_factor: float, num_classes: int) -> float:
    """mu = ln(IF) / ln(C), so that s1 / s_C = IF before flooring."""
    if num_classes < 2:
        raise LthashError("a long-tail profile needs at least 2 classes")
    return math.log(imbalance_factor) / math.log(num_classes)


def zipf_sizes(s1: int, num_classes: int, mu: float) -> list[int]:
    """LTHNet's Zipf sizes floor(s1 * i^-mu) for i = 1..C."""
    return [robust_floor(s1 * i ** -mu) for i in range(1, num_classes + 1)]


def exponential_sizes(s1: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """floor(s1 * IF^(-(i-1)/(C-1))) for i = 1..C (s_C = s1 / IF)."""
    if num_classes < 2:
        raise LthashError("a long-tail profile needs at least 2 classes")
    return [robust_floor(s1 * imbalance_factor ** (-(i - 1) / (num_classes - 1)))
            for i in range(1, num_classes + 1)]


def profile_sizes(profile: str, s1: int, num_classes: int, imbalance_factor: float,
                  mu: float | None) -> tuple[list[int], float | None]:
    """Sizes per rank (head first) and the Zipf exponent used (None for other profiles).

    ``none`` returns s1 for every rank; the caller keeps each class's data as it is instead.
    """
    if profile == "zipf":
        exponent = zipf_mu(imbalance_factor, num_classes) if mu is None else float(mu)
        return zipf_sizes(s1, num_classes, exponent), exponent
    if mu is not None:
        raise LthashError(f"config key 'split.longtail.mu' applies to the zipf profile only, not {profile}")
    if profile == "exponential":
        return exponential_sizes(s1, num_classes, imbalance_factor), None
    if profile == "none":
        return [s1] * num_classes, None
    raise LthashError(f"config key 'split.longtail.profile': unknown profile {profile!r}")


def class_order(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation of class indices: element r is the class of rank r + 1 (head first)."""
    return rng.permutation(num_classes).astype(np.int64)

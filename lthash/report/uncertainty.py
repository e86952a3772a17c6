"""Mean, spread and paired differences over hash-training seeds.

Every arm of a setting is trained once per seed of ``experiment.seeds``; seed ``s`` of every
arm shares the split, the synthetic shards, the codebook draw and the data order, so two arms
are compared seed by seed. For values ``x_s`` of one arm:

    mean = (1/n) sum_s x_s,    sd = sqrt(sum_s (x_s - mean)^2 / (n - 1))   (None when n < 2)

For two arms a, b on the seeds both have (seeds one of them lacks are left out and counted):

    d_s = a_s - b_s,   95 % CI = mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)

Verdict of a against b: ``beats`` when the interval lies above zero, ``trails`` when it lies
below, ``indistinguishable`` when it holds zero; ``one seed`` when n = 1 (no spread measured,
never a win) and ``no shared seed`` when n = 0. A run without a seed (``None``) is one seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

Seed = int | None
CONFIDENCE = 0.95
VERDICTS = ("beats", "indistinguishable", "trails", "one seed", "no shared seed")


def seed_order(seed: Seed) -> int:
    """Sort key of a seed (a run without one first)."""
    return -1 if seed is None else seed


def _kept(values: Mapping[Seed, float | None]) -> dict[Seed, float]:
    return {seed: float(value) for seed, value in values.items() if value is not None}


@dataclass(frozen=True)
class Spread:
    """One arm's values by seed (seeds without a value dropped): n, mean and sample sd."""

    values: dict[Seed, float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values.values()) / self.n if self.n else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (n - 1 in the denominator); None for fewer than two seeds."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values.values()) / (self.n - 1))


def spread(values: Mapping[Seed, float | None]) -> Spread:
    """The :class:`Spread` of some values by seed."""
    return Spread(_kept(values))


@dataclass(frozen=True)
class Paired:
    """Paired differences a_s - b_s over the seeds both arms have, with their t-interval."""

    diffs: dict[Seed, float]
    left_out: tuple[Seed, ...]
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float | None:
        return Spread(self.diffs).mean

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS` (see the module doc)."""
        if self.n == 0:
            return "no shared seed"
        if self.low is None or self.high is None:
            return "one seed"
        if self.low > 0:
            return "beats"
        if self.high < 0:
            return "trails"
        return "indistinguishable"


def t_interval(diffs: list[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """mean ± t_{(1+c)/2, n-1} · sd / sqrt(n); (None, None) for fewer than two values."""
    from scipy.stats import t

    values = Spread(dict(enumerate(diffs)))
    if values.sd is None:
        return None, None
    half = float(t.ppf((1 + confidence) / 2, values.n - 1)) * values.sd / math.sqrt(values.n)
    return values.mean - half, values.mean + half


def paired(a: Mapping[Seed, float | None], b: Mapping[Seed, float | None],
           confidence: float = CONFIDENCE) -> Paired:
    """a - b paired by seed; seeds where either has no value are left out (and listed)."""
    a, b = _kept(a), _kept(b)
    shared = [seed for seed in a if seed in b]
    left_out = tuple(sorted({*a, *b} - set(shared), key=seed_order))
    diffs = {seed: a[seed] - b[seed] for seed in shared}
    low, high = t_interval(list(diffs.values()), confidence)
    return Paired(diffs, left_out, low, high, confidence)


def seeds_text(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def _left_out_text(p: Paired) -> str:
    if not p.left_out:
        return ""
    named = ", ".join("none" if s is None else str(s) for s in p.left_out)
    return f"; seed{'s' if len(p.left_out) > 1 else ''} {named} left out, run by only one of the two arms"


def difference_text(p: Paired, scale: float = 100.0, unit: str = "points", digits: int = 2) -> str:
    """``+3.05 points (95 % CI +1.80 to +4.30, 3 seeds)``, or the one-seed / no-seed wording."""
    if p.n == 0:
        return f"no seed in common{_left_out_text(p)}"
    mean = f"{scale * p.mean:+.{digits}f} {unit}"
    if p.low is None:
        return f"{mean} (one seed, no spread measured{_left_out_text(p)})"
    return (f"{mean} ({100 * p.confidence:.0f} % CI {scale * p.low:+.{digits}f} to {scale * p.high:+.{digits}f}, "
            f"{seeds_text(p.n)}{_left_out_text(p)})")


def spread_text(s: Spread, scale: float = 100.0, digits: int = 2) -> str:
    """``61.20 ± 0.40`` (mean ± sd, in percent), the mean alone for one seed, ``–`` for none."""
    if s.mean is None:
        return "–"
    mean = f"{scale * s.mean:.{digits}f}"
    return mean if s.sd is None else f"{mean} ± {scale * s.sd:.{digits}f}"


def interval_cell(p: Paired, scale: float = 100.0, digits: int = 2) -> str:
    """A table cell: ``+3.05 (+1.80 to +4.30)``, ``+3.05 (one seed)``, ``–`` without a shared seed."""
    if p.mean is None:
        return "–"
    mean = f"{scale * p.mean:+.{digits}f}"
    if p.low is None:
        return f"{mean} (one seed)"
    return f"{mean} ({scale * p.low:+.{digits}f} to {scale * p.high:+.{digits}f})"

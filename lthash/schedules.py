"""Learning-rate schedules shared by base training and hash training (one home for warm-up + decay)."""

from __future__ import annotations

import math


def warmup_decay(step: int, total: int, warmup: int, decay: str = "cosine", peak: float = 1.0) -> float:
    """Learning rate at optimiser step ``step`` (0-based) of ``total``.

    ``peak * (step + 1) / warmup`` for the first ``warmup`` steps; then, with
    ``t = (step - warmup) / max(total - warmup, 1)``: ``peak * 0.5 * (1 + cos(pi min(t, 1)))``
    (cosine), ``peak * 0.1 ** ([t >= 0.5] + [t >= 0.75])`` (step) or ``peak`` (constant).
    With ``peak = 1`` it is the multiplier of a base learning rate.
    """
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    if decay == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if decay == "step":
        return peak * 0.1 ** ((t >= 0.5) + (t >= 0.75))
    if decay == "constant":
        return peak
    raise ValueError(f"unknown learning-rate decay {decay!r} (cosine, step, constant)")

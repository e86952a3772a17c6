"""The one warm-up + decay schedule of base training and hash training."""

from __future__ import annotations

import math

import pytest

from lthash.schedules import warmup_decay


def test_warmup_then_cosine_reaches_zero_at_the_end():
    assert [warmup_decay(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_decay(4, 10, 4) == 1.0
    assert warmup_decay(7, 10, 4) == pytest.approx(0.5)
    assert warmup_decay(10, 10, 4) == pytest.approx(0.0, abs=1e-15)
    assert warmup_decay(99, 10, 4) == warmup_decay(10, 10, 4)
    assert warmup_decay(3, 600, 50, peak=2e-3) == 2e-3 * 4 / 50
    assert warmup_decay(300, 600, 50, peak=2e-3) == 2e-3 * 0.5 * (1 + math.cos(math.pi * 250 / 550))


def test_step_and_constant_decays_and_no_warmup():
    assert [warmup_decay(s, 8, 0, "step") for s in (0, 3, 4, 5, 6, 7)] == [1.0, 1.0, 0.1, 0.1, 0.1 ** 2, 0.1 ** 2]
    assert {warmup_decay(s, 8, 2, "constant", peak=0.3) for s in range(2, 9)} == {0.3}
    with pytest.raises(ValueError, match="linear"):
        warmup_decay(0, 8, 0, "linear")

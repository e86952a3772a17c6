"""Long-tail profiles: LTHNet's table 2 sizes exactly, IF-derived exponents, exponential profile."""

from __future__ import annotations

import math

import pytest

from lthash.data.longtail import (
    exponential_sizes,
    profile_sizes,
    robust_floor,
    zipf_mu,
    zipf_sizes,
)
from lthash.errors import LthashError


@pytest.mark.parametrize(
    ("s1", "mu", "total", "smallest"),
    [
        (500, 0.83, 3732, 10),     # CIFAR-100, IF 50
        (500, 0.99, 2598, 5),      # CIFAR-100, IF 100
        (1300, 0.845, 9437, 26),   # ImageNet-100, IF 50
        (1300, 0.99, 6834, 13),    # ImageNet-100, IF 100
    ],
)
def test_zipf_sizes_match_lthnet_table_2(s1, mu, total, smallest):
    sizes = zipf_sizes(s1, 100, mu)
    assert sizes[0] == s1
    assert sum(sizes) == total
    assert min(sizes) == sizes[-1] == smallest
    assert sizes == sorted(sizes, reverse=True)


def test_mu_zero_is_balanced():
    assert zipf_sizes(500, 100, 0.0) == [500] * 100


def test_mu_from_imbalance_factor_hits_s1_over_if_exactly():
    # 500 * 10^-(ln 50 / ln 10) is 10 in exact arithmetic but 9.999... in floating point.
    for classes, factor, s1 in [(10, 50, 500), (100, 50, 500), (100, 100, 1300), (20, 48, 480)]:
        mu = zipf_mu(factor, classes)
        assert mu == pytest.approx(math.log(factor) / math.log(classes))
        sizes = zipf_sizes(s1, classes, mu)
        assert sizes[-1] == s1 // factor
        assert sizes[0] / sizes[-1] == pytest.approx(factor)


def test_robust_floor():
    assert robust_floor(9.999999999999998) == 10
    assert robust_floor(9.5) == 9
    assert robust_floor(0.2) == 0


def test_exponential_profile():
    sizes = exponential_sizes(500, 10, 50)
    assert sizes[0] == 500 and sizes[-1] == 10
    assert sizes == [robust_floor(500 * 50 ** (-(i - 1) / 9)) for i in range(1, 11)]


def test_profile_sizes_dispatch():
    sizes, mu = profile_sizes("zipf", 500, 100, 50, 0.83)
    assert mu == 0.83 and sum(sizes) == 3732
    sizes, mu = profile_sizes("zipf", 500, 10, 50, None)
    assert mu == pytest.approx(math.log(50) / math.log(10)) and sizes[-1] == 10
    assert profile_sizes("none", 7, 3, 50, None) == ([7, 7, 7], None)
    with pytest.raises(LthashError, match="split.longtail.mu"):
        profile_sizes("exponential", 500, 10, 50, 0.8)

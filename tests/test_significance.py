"""The paired randomisation test on synthetic per-query scores whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from vecdash.errors import InvalidInput
from vecdash.significance import paired_test


def test_identical_configurations_give_p_one_and_no_difference() -> None:
    scores = np.random.default_rng(1).random(64)
    t = paired_test(scores, scores.copy())
    assert t.p_value == pytest.approx(1.0)
    assert t.mean_difference == 0.0 and t.ci_low == 0.0 and t.ci_high == 0.0
    assert not t.distinguishable
    assert "same" in t.sentence("x", "y")


def test_better_on_every_query_gives_a_small_p() -> None:
    rng = np.random.default_rng(2)
    a = rng.random(64) * 0.8
    b = a + 0.05 + rng.random(64) * 0.1
    t = paired_test(a, b)
    assert t.p_value < 0.001 and t.distinguishable and not t.exact
    assert 0.05 < t.ci_low < t.mean_difference < t.ci_high < 0.15
    assert t.sentence("a", "b").startswith("b beats a by")


def test_small_sets_are_exact() -> None:
    # Five queries, b better on each: of the 32 sign patterns only all-plus and all-minus reach
    # the observed mean, so the two-sided p is exactly 2/32.
    t = paired_test(np.zeros(5), np.array([0.1, 0.2, 0.1, 0.3, 0.2]))
    assert t.exact and t.p_value == pytest.approx(2 / 32)
    assert not t.distinguishable
    assert "not distinguishable from noise" in t.sentence()


def test_noise_is_not_distinguishable_and_the_detectable_size_shrinks_with_queries() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(400)
    b = a + rng.normal(0, 0.2, 400)
    b -= (b - a).mean()  # no true difference at all
    t = paired_test(a, b)
    assert t.p_value > 0.5 and t.ci_low < 0 < t.ci_high
    small = paired_test(a[:40], b[:40])
    assert small.detectable > 2 * t.detectable  # sqrt(10) fewer... about 3x larger


def test_bad_input() -> None:
    with pytest.raises(InvalidInput, match="different queries"):
        paired_test(np.zeros(3), np.zeros(4))
    with pytest.raises(InvalidInput, match="at least 2"):
        paired_test(np.zeros(1), np.ones(1))
    with pytest.raises(InvalidInput, match="not numbers"):
        paired_test(np.array([0.1, np.nan]), np.zeros(2))

"""Resampling kernels on inputs whose answers can be checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlpeft import stats


def test_holm_matches_hand_computation() -> None:
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # NaN entries are not in the family (m = 2 here) and stay NaN; adjusted p never exceeds 1.
    adjusted = stats.holm([0.02, math.nan, 0.6])
    np.testing.assert_allclose(adjusted, [0.04, math.nan, 0.6])
    np.testing.assert_allclose(stats.holm([0.7, 0.8]), [1.0, 1.0])
    assert np.isnan(stats.holm([math.nan])).all()


def test_sign_flip_null_is_exact_for_few_pairs() -> None:
    gen = stats.rng(0, "t")
    # (1, 2, 3): 8 sign patterns, sums 6, 4, 2, 0, 0, -2, -4, -6; only the identity reaches the observed 6.
    null = stats.sign_flip_null(np.array([1.0, 2.0, 3.0]), 1000, gen)
    assert len(null) == 8 and null[0] == pytest.approx(2.0)
    assert stats.p_permutation(2.0, null, +1) == pytest.approx(1 / 8)
    assert stats.p_permutation(2.0, null, -1) == pytest.approx(1.0)
    # (1, -1, 2): sums over the patterns 4, 0, 2, -2, 2, -2, 0, -4; observed 2 is reached by 4, 2, 2 -> 3/8.
    null = stats.sign_flip_null(np.array([1.0, -1.0, 2.0]), 1000, gen)
    assert stats.p_permutation(2 / 3, null, +1) == pytest.approx(3 / 8)
    # Two pairs can never reach p < 1/4: the smallest p of an exact test is one pattern in 2^n.
    null = stats.sign_flip_null(np.array([5.0, 7.0]), 1000, gen)
    assert stats.p_permutation(6.0, null, +1) == pytest.approx(1 / 4)


def test_sign_flip_null_monte_carlo_keeps_the_identity() -> None:
    diffs = np.arange(1.0, 21.0)
    null = stats.sign_flip_null(diffs, 500, stats.rng(1, "t"))
    assert len(null) == 501 and null[0] == pytest.approx(diffs.mean())
    assert stats.p_permutation(diffs.mean(), null, +1) == pytest.approx(1 / 501)


def test_within_block_permutation_null_matches_hand_computation() -> None:
    # Two blocks of two runs, labels (0, 1) in each, y equal to the label. Statistic: mean(y | label 1) -
    # mean(y | label 0). The four relabellings give 1, 0, 0, -1, so P(null >= observed 1) = 1/4.
    blocks = np.array([0, 0, 1, 1])
    labels = np.array([0, 1, 0, 1])
    y = labels.astype(float)
    idx = stats.within_block_permutations(blocks, 4000, stats.rng(0, "t"))
    assert (idx[0] == np.arange(4)).all()
    perm_labels = labels[idx]
    for row in perm_labels:  # every block keeps its labels
        assert sorted(row[:2]) == [0, 1] and sorted(row[2:]) == [0, 1]
    null = np.array([y[r == 1].mean() - y[r == 0].mean() for r in perm_labels])
    assert set(np.round(null, 9)) == {-1.0, 0.0, 1.0}
    assert stats.p_permutation(1.0, null, +1) == pytest.approx(0.25, abs=0.02)


def test_bootstrap_p_and_interval() -> None:
    boot = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
    assert stats.p_bootstrap(boot, 0.0, +1) == pytest.approx(3 / 6)  # (1 + #{<= 0}) / (1 + 5)
    assert stats.p_bootstrap(boot, 2.0, -1) == pytest.approx(3 / 6)  # (1 + #{>= 2}) / (1 + 5)
    assert stats.p_bootstrap(boot, -5.0, +1) == pytest.approx(1 / 6)
    lo, hi = stats.percentile_interval(np.arange(101.0))
    assert (lo, hi) == pytest.approx((2.5, 97.5))
    # Fewer than half the replicates usable: no interval, no p.
    half = np.array([1.0, math.nan, math.nan])
    assert all(math.isnan(v) for v in stats.percentile_interval(half))
    assert math.isnan(stats.p_bootstrap(half, 0.0, +1))


def test_block_weights_and_residuals() -> None:
    blocks = np.array([0, 0, 1, 1, 2])
    w = stats.block_weights(blocks, 50, stats.rng(0, "t"))
    assert (w[0] == 1).all()
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 2] == w[:, 3]).all()  # whole blocks move together
    assert (w[1:, [0, 2, 4]].sum(axis=1) == 3).all()  # 3 blocks drawn per resample
    np.testing.assert_allclose(stats.residuals(np.array([1.0, 3.0, 10.0, 10.0, 7.0]), blocks), [-1, 1, 0, 0, 0])


def test_stratified_indices_keep_strata() -> None:
    strata = np.array([0, 1, 0, 1, 1])
    idx = stats.stratified_indices(strata, 100, stats.rng(0, "t"))
    assert (idx[0] == np.arange(5)).all()
    assert (strata[idx] == strata).all()


def test_weighted_spearman_on_a_perfect_trend() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    w = np.vstack([np.ones(4), [2.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(stats.weighted_spearman(x, x**2, w), [1.0, 1.0])
    np.testing.assert_allclose(stats.weighted_spearman(x, -x, w), [-1.0, -1.0])


def test_units_to_decide() -> None:
    # z(0.95) = 1.645: an effect of one spread at 10 units needs 10 x 1.645^2 = 27.06 -> 28 units.
    assert stats.units_to_decide(1.0, 1.0, 10, 0.05) == 28
    # Already enough by the approximation: one more unit than now, never fewer.
    assert stats.units_to_decide(10.0, 1.0, 10, 0.05) == 11
    assert stats.units_to_decide(0.0, 1.0, 10, 0.05) is None
    assert stats.units_to_decide(-1.0, 1.0, 10, 0.05) is None
    assert stats.units_to_decide(1.0, 0.0, 10, 0.05) is None

"""Resampling kernels of the claims report: bootstrap, permutation nulls, one-sided p-values, Holm's correction.

Plain numpy on arrays; the report (``vlpeft.report``) decides what is resampled. Conventions:

- A bootstrap array holds the replicates of a statistic only (the observed value is passed separately).
- A permutation null holds the statistic under every relabelling that was drawn, the identity first, so that
  ``p = share of the null at least as extreme as the observed value`` is exact under full enumeration and the usual
  ``(1 + hits) / (1 + draws)`` under Monte Carlo draws.
- ``direction`` +1 asks "is the statistic greater?", -1 "is it smaller?".
"""

from __future__ import annotations

import itertools
import math
import zlib
from statistics import NormalDist

import numpy as np

#: Relative tolerance under which a permuted statistic counts as a tie with the observed one.
_TIE = 1e-9


def rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, keys): results do not depend on the order in which statistics are computed."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------------
def block_weights(blocks: np.ndarray, n_boot: int, gen: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, n) run weights: row 0 all ones (the observed sample), then block-bootstrap multiplicities.

    Args:
        blocks: Block code (0..k-1) of every run; whole blocks are drawn with replacement.
        n_boot: Resamples.
        gen: Random generator.
    """
    k = int(blocks.max()) + 1
    wb = gen.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return np.vstack([np.ones(k), wb])[:, blocks].astype(float)


def bootstrap_means(values: np.ndarray, n_boot: int, gen: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean of ``values`` (NaN replicates when there are no values)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.full(n_boot, math.nan)
    return values[gen.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)


def stratified_indices(strata: np.ndarray, n_boot: int, gen: np.random.Generator) -> np.ndarray:
    """(1 + n_boot, n) row indices: row 0 the identity, then each run replaced by a random run of its own stratum.

    Position i always holds a run of stratum ``strata[i]``, so every resample keeps each stratum's size.
    """
    n = len(strata)
    idx = np.empty((n_boot + 1, n), dtype=int)
    idx[0] = np.arange(n)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        idx[1:, members] = members[gen.integers(0, len(members), size=(n_boot, len(members)))]
    return idx


def residuals(y: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``y`` minus its block's mean, rounded so that residuals equal in exact arithmetic tie in ranks."""
    means = np.bincount(blocks, weights=y) / np.bincount(blocks)
    return np.round(y - means[blocks], 9)


def onehot(codes: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(codes), k))
    out[np.arange(len(codes)), codes] = 1.0
    return out


def weighted_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``v`` when run i appears w[b, i] times, for every row b of ``w`` at once."""
    u, inv = np.unique(v, return_inverse=True)
    wu = w @ onehot(inv, len(u))
    return (np.cumsum(wu, axis=1) - (wu - 1.0) / 2.0)[:, inv]


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Spearman rho of (x, y) with runs replicated by the weights in each row of ``w`` (NaN where undefined)."""
    rx = weighted_ranks(x, w)
    ry = weighted_ranks(y, w)
    sw = w.sum(axis=1, keepdims=True)
    dx = rx - (w * rx).sum(axis=1, keepdims=True) / sw
    dy = ry - (w * ry).sum(axis=1, keepdims=True) / sw
    den = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (w * dx * dy).sum(axis=1) / den, np.nan)


def weighted_group_means(y: np.ndarray, codes: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    """(rows of ``w``, k) weighted mean of ``y`` per group code; NaN for a group with no weight."""
    sums = (w * y) @ onehot(codes, k)
    counts = w @ onehot(codes, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1e-300), np.nan)


def usable(boot: np.ndarray | None) -> np.ndarray:
    """The finite replicates, or an empty array when fewer than half of them are finite (no interval then)."""
    if boot is None or len(boot) == 0:
        return np.array([])
    finite = np.asarray(boot, dtype=float)[np.isfinite(boot)]
    return finite if len(finite) >= 0.5 * len(boot) else np.array([])


def percentile_interval(boot: np.ndarray | None, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the replicates; NaN when fewer than half of them are finite."""
    b = usable(boot)
    if not len(b):
        return math.nan, math.nan
    lo, hi = np.percentile(b, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def p_bootstrap(boot: np.ndarray | None, bound: float, direction: int) -> float:
    """One-sided p of "statistic > bound" (direction +1) or "< bound" (-1) from the bootstrap replicates.

    The share of replicates on the other side of the bound (ties count against), ``(1 + hits) / (1 + n)``: it is
    below alpha exactly when the one-sided ``1 - alpha`` percentile bound clears ``bound``.
    """
    b = usable(boot)
    if not len(b):
        return math.nan
    hits = np.sum(b <= bound) if direction > 0 else np.sum(b >= bound)
    return float((1 + hits) / (1 + len(b)))


# ----------------------------------------------------------------------------------------------------------------
# Permutation nulls
# ----------------------------------------------------------------------------------------------------------------
def p_permutation(observed: float, null: np.ndarray | None, direction: int) -> float:
    """One-sided p: the share of the null (identity included) at least as large (+1) or as small (-1) as observed."""
    if null is None or not np.isfinite(observed):
        return math.nan
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not len(null):
        return math.nan
    tol = _TIE * max(1.0, abs(observed))
    hits = np.sum(null >= observed - tol) if direction > 0 else np.sum(null <= observed + tol)
    return float(hits / len(null))


def sign_flip_null(diffs: np.ndarray, n_perm: int, gen: np.random.Generator) -> np.ndarray:
    """Means of ``diffs`` under random sign flips (paired null: each difference is as likely negated).

    Every one of the 2^n sign patterns when there are at most ``n_perm`` of them (exact), else the identity and
    ``n_perm`` random patterns.
    """
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    if n == 0:
        return np.array([])
    if 2**n <= n_perm:
        signs = 1.0 - 2.0 * np.array(list(itertools.product([0, 1], repeat=n)), dtype=float)
    else:
        signs = np.vstack([np.ones(n), gen.choice([-1.0, 1.0], size=(n_perm, n))])
    return signs @ diffs / n


def within_block_permutations(blocks: np.ndarray, n_perm: int, gen: np.random.Generator) -> np.ndarray:
    """(1 + n_perm, n) row indices: row 0 the identity, then each run takes the label of a random run of its block.

    Use as ``labels[idx]``: every block keeps its multiset of labels, shuffled among its runs.
    """
    n = len(blocks)
    order = np.argsort(blocks, kind="stable")
    keys = gen.random((n_perm, n)) + blocks[order]
    shuffled = order[np.argsort(keys, axis=1)]
    idx = np.empty((n_perm + 1, n), dtype=int)
    idx[0] = np.arange(n)
    idx[1:, order] = shuffled
    return idx


# ----------------------------------------------------------------------------------------------------------------
# Multiplicity and planning
# ----------------------------------------------------------------------------------------------------------------
def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries are not part of the family and stay NaN.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)); rejecting where the
    adjusted p < alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def units_to_decide(distance: float, spread: float, n_units: int, alpha: float) -> int | None:
    """Units (resampled blocks, pairs, ratios ...) at which an effect of ``distance`` would clear a one-sided test.

    Normal approximation: the spread (a standard error, measured at ``n_units``) shrinks as 1/sqrt(units), and the
    test decides once ``distance >= z_(1 - alpha) * spread``. Returns None when the distance or the spread is not
    positive and finite (the estimate sits on the bound, or nothing varies).
    """
    if not (np.isfinite(distance) and np.isfinite(spread)) or distance <= 0 or spread <= 0 or n_units <= 0:
        return None
    z = NormalDist().inv_cdf(1 - alpha)
    return max(n_units + 1, math.ceil(n_units * (z * spread / distance) ** 2))

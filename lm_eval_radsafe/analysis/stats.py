"""Statistics for many runs at once: a shared, vectorised question-level bootstrap, exact
McNemar, paired-bootstrap p-values, Holm and Benjamini-Hochberg, Wilson intervals.

The bootstrap draws one index matrix ``default_rng(seed).integers(0, n, (B, n))`` over the
items (sorted by id, as in the study) and turns it into a count matrix W (B x n): how often
each item is drawn in each replicate. Every statistic is then a matrix product, for all
runs at once, and every comparison is paired because all runs share W.

* mean metric:        (W @ (v * m)) / (W @ m)      (m = 1 where the run has the item)
* conditional mean:   (W @ (v * s * m)) / (W @ (s * m))
* ECE / MCE:          per confidence bin, counts, confidence sums and correct sums are W
  products; ECE = sum_b |conf_b - correct_b| / N, MCE = max_b |conf_b - correct_b| / n_b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lm_eval_radsafe.aggregation import N_BINS, calibration_bin
from lm_eval_radsafe.consistency import WILSON_Z, wilson_interval  # noqa: F401  (re-exported)

#: bootstrap defaults of every report, leaderboard and benchmark (the study's B and seed)
DEFAULT_B = 1000
DEFAULT_SEED = 42
#: level of every interval the report gives (bootstrap percentile intervals, slope intervals)
DEFAULT_CI_LEVEL = 0.95


@dataclass(frozen=True)
class Bootstrap:
    """A shared count matrix ``weights`` (B x n) for n items."""

    weights: np.ndarray
    seed: int

    @classmethod
    def draw(cls, n_items: int, n_boot: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> "Bootstrap":
        """The study's index matrix ``default_rng(seed).integers(0, n, (B, n))`` as counts."""
        if n_items < 1 or n_boot < 1:
            raise ValueError(f"need at least one item and one replicate, got n={n_items}, B={n_boot}")
        index = np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))
        return cls(weights=index_to_counts(index, n_items), seed=seed)

    @property
    def n_boot(self) -> int:
        return int(self.weights.shape[0])


def index_to_counts(index: np.ndarray, n_items: int) -> np.ndarray:
    """(B, n) bootstrap index matrix -> (B, n) float counts of each item per replicate."""
    n_boot = index.shape[0]
    offsets = (np.arange(n_boot)[:, None] * n_items + index).ravel()
    return np.bincount(offsets, minlength=n_boot * n_items).reshape(n_boot, n_items).astype(float)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_means(weights: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Means of the columns of ``values`` (n x R) over masked items, per weight row (W x R)."""
    if mask.all():  # every run has every item: the denominator is each row's total weight
        return (weights @ values) / weights.sum(axis=1, keepdims=True)
    return _divide(weights @ np.where(mask, values, 0.0), weights @ mask.astype(float))


def weighted_ratio(weights: np.ndarray, values: np.ndarray, selected: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over items that are both masked and selected (NaN when none)."""
    sel = (mask & (selected > 0)).astype(float)
    return _divide(weights @ (np.where(mask, values, 0.0) * sel), weights @ sel)


def calibration(
    weights: np.ndarray, confidence: np.ndarray, correct: np.ndarray, mask: np.ndarray, n_bins: int = N_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """ECE and MCE (each W x R) of (confidence, correct) columns, equal-width bins.

    The bins of :func:`~lm_eval_radsafe.aggregation.calibration_bin`: [lo, hi) except the
    last, which includes 1.0; confidence below 0 falls in the first. For one weight row of
    ones these are :func:`~lm_eval_radsafe.aggregation.expected_calibration_error` and
    :func:`~lm_eval_radsafe.aggregation.maximum_calibration_error` (up to summation order).
    NaN where a column has no items.
    """
    conf = np.where(mask, confidence, 0.0)
    corr = np.where(mask, correct, 0.0)
    bins = calibration_bin(conf, n_bins)
    total = weights @ mask.astype(float)
    gap_sum = np.zeros_like(total)
    worst = np.full_like(total, -np.inf)
    for b in range(n_bins):
        in_bin = (mask & (bins == b)).astype(float)
        count = weights @ in_bin
        gap = np.abs(weights @ (conf * in_bin) - weights @ (corr * in_bin))
        gap_sum += gap
        worst = np.where(count > 0, np.maximum(worst, _divide(gap, count)), worst)
    ece = _divide(gap_sum, total)
    mce = np.where(np.isfinite(worst), worst, np.nan)
    return ece, mce


def percentile_ci(replicates: np.ndarray, level: float = DEFAULT_CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column over axis 0; NaN replicates are ignored (an
    all-NaN column gives NaN)."""
    tail = (1 - level) / 2 * 100
    shape = replicates.shape[1:]
    low, high = np.full(shape, np.nan), np.full(shape, np.nan)
    has_nan = np.isnan(replicates).any(axis=0)
    clean = ~has_nan
    if clean.all():  # the usual case: no copy of the columns first
        low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    elif clean.any():
        low[clean], high[clean] = np.percentile(replicates[:, clean], [tail, 100 - tail], axis=0)
    for j in np.flatnonzero(has_nan):
        column = replicates[:, j]
        column = column[~np.isnan(column)]
        if column.size:
            low[j], high[j] = np.percentile(column, [tail, 100 - tail])
    return low, high


def paired_bootstrap_p_columns(differences: np.ndarray) -> np.ndarray:
    """:func:`paired_bootstrap_p` for every column of a (B x T) matrix of differences."""
    valid = ~np.isnan(differences)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.where(valid, differences <= 0, False).sum(axis=0) / count
        above = np.where(valid, differences >= 0, False).sum(axis=0) / count
    return np.where(count > 0, np.minimum(1.0, 2.0 * np.minimum(below, above)), np.nan)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for discordant counts b and c (1 when b + c = 0).

    p = min(1, 2 * sum_{i <= min(b, c)} C(b + c, i) / 2^(b + c)).
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


def paired_bootstrap_p(difference: np.ndarray) -> float:
    """Two-sided p of a paired bootstrap: 2 * min(P(d <= 0), P(d >= 0)), capped at 1
    (NaN replicates ignored; NaN when there are none)."""
    return float(paired_bootstrap_p_columns(np.asarray(difference, dtype=float)[:, None])[0])


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaN stays NaN)."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values; NaN stays NaN)."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    adjusted = [math.nan] * len(p_values)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, p_values[i] * m / (rank + 1))
        adjusted[i] = min(1.0, running)
    return adjusted

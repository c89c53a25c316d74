"""Named corpus-level aggregations for metrics that are not plain means.

lm-eval reports no standard error for these (it only knows its own functions); the
analysis step computes bootstrap intervals from the samples files instead.

Calibration is binned in one way everywhere: :data:`N_BINS` equal-width bins on [0, 1],
each ``[lo, hi)`` except the last, which includes 1.0; a confidence below 0 falls in the
first (:func:`calibration_bin`). The bootstrap's vectorised ECE/MCE
(:func:`lm_eval_radsafe.analysis.stats.calibration`) uses the same bins and constant; it
sums in another order (one matrix product for every replicate), so its values can differ
from these in the last bits, and a parity test holds the two together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

#: calibration bins (ECE/MCE) of every metric, report and study rule
N_BINS = 10


def calibration_bin(confidence: np.ndarray | float, n_bins: int = N_BINS) -> np.ndarray:
    """The calibration bin of each ``confidence``: ``floor(confidence * n_bins)`` clipped to
    ``[0, n_bins - 1]`` (bins ``[lo, hi)``, 1.0 in the last, below 0 in the first)."""
    return np.clip(np.floor(np.asarray(confidence, dtype=float) * n_bins).astype(int), 0, n_bins - 1)


def mean_where(items: Iterable[Sequence[float]]) -> float:
    """Mean of ``value`` over the items whose ``selected`` flag is set.

    Each item is ``(value, selected)``; e.g. confidence over the items answered
    correctly. Denominator: the selected items. NaN when none is selected.
    """
    chosen = [float(value) for value, selected in items if selected]
    return sum(chosen) / len(chosen) if chosen else math.nan


def _bins(items: Iterable[Sequence[float]], n_bins: int) -> tuple[int, list[tuple[int, float, float]]]:
    """(N, [(count, mean confidence, accuracy) for each non-empty bin]); ValueError for a
    NaN confidence."""
    pairs = [(float(confidence), float(correct)) for confidence, correct in items]
    if any(math.isnan(conf) for conf, _ in pairs):
        raise ValueError("calibration: a confidence is NaN")
    indices = calibration_bin([conf for conf, _ in pairs], n_bins).tolist() if pairs else []
    sums = [[0, 0.0, 0.0] for _ in range(n_bins)]
    for (conf, correct), index in zip(pairs, indices):
        sums[index][0] += 1
        sums[index][1] += conf
        sums[index][2] += correct
    return len(pairs), [(n, c / n, a / n) for n, c, a in sums if n]


def expected_calibration_error(items: Iterable[Sequence[float]], n_bins: int = N_BINS) -> float:
    """ECE over ``(confidence, correct)`` pairs: sum_b (n_b / N) |mean_conf_b - acc_b|.

    ``n_bins`` equal-width bins on [0, 1]; each bin is [lo, hi) except the last, which
    includes 1.0 (a confidence below 0 falls in the first). NaN for no items.
    """
    total, bins = _bins(items, n_bins)
    if not total:
        return math.nan
    return sum(n / total * abs(conf - acc) for n, conf, acc in bins)


def maximum_calibration_error(items: Iterable[Sequence[float]], n_bins: int = N_BINS) -> float:
    """MCE over ``(confidence, correct)`` pairs: the largest |mean_conf_b - acc_b| of a
    non-empty bin (bins as in :func:`expected_calibration_error`). NaN for no items."""
    _, bins = _bins(items, n_bins)
    return max((abs(conf - acc) for _, conf, acc in bins), default=math.nan)


def position_bias_of_counts(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Position bias from position counts summed over items (last axis: positions):
    ``0.5 * sum_p |observed_p / N - expected_p / N|`` with ``N`` the answered orders, the total
    variation distance between the positions chosen and the positions' shares (0: choices
    ignore position; 1 at most). NaN where no order was answered. Works on one count vector
    or on a stack of them (one per bootstrap replicate)."""
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(expected, dtype=float)
    total = observed.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = 0.5 * np.abs(observed - expected).sum(axis=-1) / total
    return np.where(total > 0, distance, np.nan)


def position_bias(items: Iterable[Sequence[Sequence[float]]]) -> float:
    """lm-eval aggregation of ``position_bias``: each item is ``[observed, expected]``, its
    counts per position (A-E) over its option orders
    (:func:`lm_eval_radsafe.option_order.position_counts`); the counts are summed over
    items and reduced by :func:`position_bias_of_counts`. NaN when no order was answered."""
    pairs = [(list(observed), list(expected)) for observed, expected in items]
    if not pairs:
        return math.nan
    observed = np.sum([p[0] for p in pairs], axis=0)
    expected = np.sum([p[1] for p in pairs], axis=0)
    return float(position_bias_of_counts(observed, expected))

"""ECE/MCE and the bootstrap defaults have one home each.

The lm-eval aggregations (:mod:`lm_eval_radsafe.aggregation`, one list of pairs) and the
report's vectorised bootstrap (:func:`lm_eval_radsafe.analysis.stats.calibration`, every
replicate at once) share the bin rule and the bin count; they sum in different orders,
so this test holds their ECE and MCE together on every bootstrap replicate, bin edges
included.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from lm_eval_radsafe.aggregation import (
    N_BINS,
    calibration_bin,
    expected_calibration_error,
    maximum_calibration_error,
)
from lm_eval_radsafe.analysis import stats
from lm_eval_radsafe.analysis.stats import DEFAULT_B, DEFAULT_SEED, Bootstrap, calibration
from lm_eval_radsafe.cli import build_parser


def test_calibration_bin_edges() -> None:
    edges = [-0.01, 0.0, 0.0999, 0.1, 0.5, 0.9, 0.9999, 1.0, 1.2]
    assert calibration_bin(edges).tolist() == [0, 0, 0, 1, 5, 9, 9, 9, 9]
    assert int(calibration_bin(0.35, n_bins=4)) == 1


@pytest.mark.parametrize("n_bins", [N_BINS, 3])
def test_vectorised_ece_and_mce_equal_the_aggregations(n_bins: int) -> None:
    rng = random.Random(7)
    n, n_boot = 41, 150
    # bin edges, 0, 1 and a confidence below 0 among random values
    conf = np.array([rng.random() for _ in range(n - 6)] + [0.0, 0.1, 0.5, 0.9, 1.0, -0.02])
    correct = np.array([float(rng.random() < 0.6) for _ in range(n)])
    boot = Bootstrap.draw(n, n_boot, seed=DEFAULT_SEED)
    index = np.random.default_rng(DEFAULT_SEED).integers(0, n, size=(n_boot, n))
    mask = np.ones((n, 1), dtype=bool)
    ece, mce = calibration(boot.weights, conf[:, None], correct[:, None], mask, n_bins=n_bins)
    for b in range(n_boot):
        pairs = list(zip(conf[index[b]], correct[index[b]]))
        assert ece[b, 0] == pytest.approx(expected_calibration_error(pairs, n_bins=n_bins), abs=1e-12)
        assert mce[b, 0] == pytest.approx(maximum_calibration_error(pairs, n_bins=n_bins), abs=1e-12)
    # one row of ones: the whole sample
    ece1, mce1 = calibration(np.ones((1, n)), conf[:, None], correct[:, None], mask, n_bins=n_bins)
    pairs = list(zip(conf, correct))
    assert ece1[0, 0] == pytest.approx(expected_calibration_error(pairs, n_bins=n_bins), abs=1e-12)
    assert mce1[0, 0] == pytest.approx(maximum_calibration_error(pairs, n_bins=n_bins), abs=1e-12)


def test_nan_confidence_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        expected_calibration_error([(float("nan"), 1.0)])


def test_one_bin_count_and_one_set_of_bootstrap_defaults() -> None:
    assert stats.N_BINS is N_BINS
    assert (DEFAULT_B, DEFAULT_SEED, stats.DEFAULT_CI_LEVEL) == (1000, 42, 0.95)  # the study's (digest 6.2.9)
    args = build_parser().parse_args(["report", "runs", "--out", "out"])
    assert (args.n_boot, args.seed) == (DEFAULT_B, DEFAULT_SEED)

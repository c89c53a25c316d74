"""Point estimates, bootstrap CIs and paired tests for every run and metric.

All runs are aligned on one item axis (the union of their item ids, sorted as strings)
and share one bootstrap count matrix, so every comparison is paired.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from lm_eval_radsafe.analysis.runs import REGIME_METRICS, TaskRun
from lm_eval_radsafe.analysis.stats import (
    DEFAULT_B,
    DEFAULT_SEED,
    Bootstrap,
    benjamini_hochberg,
    calibration,
    holm,
    mcnemar_exact,
    paired_bootstrap_p_columns,
    percentile_ci,
    weighted_means,
    weighted_ratio,
)
from lm_eval_radsafe.conditions import condition_rank, regime_order
from lm_eval_radsafe.consistency import wilson_interval
from lm_eval_radsafe.items import LETTERS
from lm_eval_radsafe.metric_specs import ABSTENTION_METRIC, metric_spec

SUMMARY_COLUMNS = (
    "model",
    "condition",
    "regime",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "n_items",
    "wilson_low",
    "wilson_high",
    "unit",
    "flag",
    "task_version",
)
ACCURACY_METRICS = {"accuracy", "sc_accuracy", "ll_accuracy", "original_order_accuracy"}
#: a run whose abstention (NULL majority for self-consistency) reaches this share is flagged
ABSTENTION_FLAG_THRESHOLD = 0.95
HIGH_ABSTENTION = "high_abstention"


def abstention_flags(runs: list[TaskRun], threshold: float = ABSTENTION_FLAG_THRESHOLD) -> dict[tuple[str, str, str], str]:
    """(model, condition, regime) -> a one-line warning for each run whose abstention rate
    (:data:`~lm_eval_radsafe.metric_specs.ABSTENTION_METRIC` of its regime) is >= ``threshold``,
    with the likely cause read from the results file (was a chat template applied?)."""
    flagged: dict[tuple[str, str, str], str] = {}
    for run in runs:
        metric = ABSTENTION_METRIC.get(run.regime)
        if metric is None or metric not in run.values or not len(run.values[metric]):
            continue
        rate = float(np.mean(run.values[metric]))
        if rate < threshold:
            continue
        template = run.meta.get("chat_template", "unknown")
        if template == "absent":
            cause = "the run used no chat template: a chat model run without --apply_chat_template rarely answers with a letter"
        elif template == "applied":
            cause = (
                f"a chat template was applied: read the raw outputs (resps) in {run.samples_file} "
                "(answer format, a think trace that never closes, too few generated tokens)"
            )
        else:
            cause = f"likely a chat model run without --apply_chat_template; read the raw outputs (resps) in {run.samples_file}"
        flagged[run.key] = (
            f"{run.label}: {metric_spec(metric).display_name.lower()} {metric_spec(metric).format(rate)} "
            f"(>= {threshold:.0%}) on {run.n_items} items in {run.results_file}; {cause}"
        )
    return flagged


@dataclass
class Analysis:
    """Aligned per-item data of all runs, the shared bootstrap, and the summary rows."""

    runs: list[TaskRun]
    item_ids: list[str]
    bootstrap: Bootstrap
    masks: np.ndarray  # (n, R) bool
    positions: list[np.ndarray] = field(default_factory=list)  # per run: its items on the shared axis
    rows: list[dict[str, Any]] = field(default_factory=list)
    _matrices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def column(self, run_index: int, metric: str) -> np.ndarray:
        """Per-item values of a mean metric of one run on the shared item axis (NaN where absent)."""
        return self.matrix(metric)[:, run_index]

    def matrix(self, metric: str) -> np.ndarray:
        """(n x R) per-item values of a mean metric for every run (NaN where a run lacks it)."""
        if metric not in self._matrices:
            out = np.full((len(self.item_ids), len(self.runs)), np.nan)
            for r, run in enumerate(self.runs):
                if metric in run.values:
                    out[self.positions[r], r] = run.values[metric]
            self._matrices[metric] = out
        return self._matrices[metric]

    def pair_columns(self, run_index: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(value, flag) columns of a pair metric on the shared item axis."""
        run = self.runs[run_index]
        value = np.full(len(self.item_ids), np.nan)
        flag = np.zeros(len(self.item_ids))
        pos = self._positions(run_index)
        value[pos] = run.pairs[metric][:, 0]
        flag[pos] = run.pairs[metric][:, 1]
        return value, flag

    def _positions(self, run_index: int) -> np.ndarray:
        return self.positions[run_index]


def analyse(runs: list[TaskRun], n_boot: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> Analysis:
    """Estimates and percentile bootstrap CIs for every run and metric of its regime."""
    analysis = align(runs, n_boot, seed)
    summarise(analysis)
    return analysis


def align(runs: list[TaskRun], n_boot: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> Analysis:
    """The runs on one item axis (items sorted by id) with the shared bootstrap, before any
    row (:func:`summarise`)."""
    item_ids = sorted({item for run in runs for item in run.item_ids})
    lookup = {item: i for i, item in enumerate(item_ids)}
    masks = np.zeros((len(item_ids), len(runs)), dtype=bool)
    positions = [np.array([lookup[i] for i in run.item_ids], dtype=int) for run in runs]
    for r, pos in enumerate(positions):
        masks[pos, r] = True
    analysis = Analysis(
        runs=runs,
        item_ids=item_ids,
        bootstrap=Bootstrap.draw(len(item_ids), n_boot, seed),
        masks=masks,
        positions=positions,
    )
    return analysis


def summarise(analysis: Analysis) -> None:
    """Fill ``analysis.rows``: the estimate and percentile bootstrap CI of every run and
    metric of its regime, ordered by model, condition, regime and metric."""
    runs, masks = analysis.runs, analysis.masks
    weights = analysis.bootstrap.weights
    ones = np.ones((1, len(analysis.item_ids)))
    flagged_runs = abstention_flags(runs)
    metric_kinds: dict[str, str] = {}
    for run in runs:
        metric_kinds.update(REGIME_METRICS[run.regime])
    binned: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    for metric, kind in metric_kinds.items():
        members = [r for r, run in enumerate(runs) if metric in REGIME_METRICS[run.regime]]
        mask = masks[:, members]
        if kind == "mean":
            values = analysis.matrix(metric)[:, members]
            estimate = weighted_means(ones, values, mask)[0]
            reps = weighted_means(weights, values, mask)
        elif kind == "position_bias":
            estimate, reps = _position_bias(analysis, members)
        else:
            cols = [analysis.pair_columns(r, metric) for r in members]
            values = np.column_stack([c[0] for c in cols])
            flags = np.column_stack([c[1] for c in cols])
            if kind == "mean_where":
                estimate = weighted_ratio(ones, values, flags, mask)[0]
                reps = weighted_ratio(weights, values, flags, mask)
            else:  # ECE and MCE of the same (confidence, correct) columns: binned once for both
                which = 0 if metric.endswith("ece") else 1
                if binned is None or not all(
                    np.array_equal(x, y, equal_nan=True) for x, y in zip((values, flags, mask), binned[0])
                ):
                    binned = ((values, flags, mask), calibration(ones, values, flags, mask), calibration(weights, values, flags, mask))
                estimate, reps = binned[1][which][0], binned[2][which]
        low, high = percentile_ci(reps)
        for j, r in enumerate(members):
            run = runs[r]
            row = {
                "model": run.model,
                "condition": run.condition,
                "regime": run.regime,
                "metric": metric,
                "estimate": float(estimate[j]),
                "ci_low": float(low[j]),
                "ci_high": float(high[j]),
                "n_items": int(mask[:, j].sum()),
                "wilson_low": math.nan,
                "wilson_high": math.nan,
                "unit": metric_spec(metric).unit,
                "flag": HIGH_ABSTENTION if run.key in flagged_runs else "",
                "task_version": "" if run.meta.get("task_version") is None else str(run.meta["task_version"]),
            }
            if kind == "mean":
                column = run.values[metric]
                if ((column == 0.0) | (column == 1.0)).all():
                    row["wilson_low"], row["wilson_high"] = wilson_interval(int(column.sum()), len(column))
            analysis.rows.append(row)
    analysis.rows.sort(key=lambda row: (row["model"], condition_rank(row["condition"]), row["regime"], row["metric"]))


def _position_bias(analysis: Analysis, members: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Position bias of each run in ``members``: the estimate (one per run) and the bootstrap
    replicates (B x runs), from each item's (observed, expected) counts per position summed
    with the items' bootstrap counts (:func:`~lm_eval_radsafe.aggregation.position_bias_of_counts`)."""
    from lm_eval_radsafe.aggregation import position_bias_of_counts

    weights = analysis.bootstrap.weights
    estimates, replicates = [], []
    for r in members:
        counts = np.zeros((len(analysis.item_ids), 2, len(LETTERS)))
        counts[analysis.positions[r]] = analysis.runs[r].pairs["position_bias"]
        estimates.append(position_bias_of_counts(counts[:, 0].sum(axis=0), counts[:, 1].sum(axis=0)))
        replicates.append(position_bias_of_counts(weights @ counts[:, 0], weights @ counts[:, 1]))
    return np.asarray(estimates, dtype=float), np.column_stack(replicates)


def order_tests(analysis: Analysis) -> list[dict[str, Any]]:
    """Option-order runs against their own original order: for each run of the ``perm``
    regime, accuracy and high-risk error averaged over the orders against the same items in
    the original order (paired bootstrap on the shared count matrix; Holm and
    Benjamini-Hochberg across every test of one metric)."""
    pairs = (("order_accuracy", "original_order_accuracy"), ("order_high_risk_error", "original_order_high_risk_error"))
    members = [r for r, run in enumerate(analysis.runs) if run.regime == "perm"]
    tests: list[dict[str, Any]] = []
    if not members:
        return tests
    weights = analysis.bootstrap.weights
    mask = analysis.masks[:, members]
    ones = np.ones((1, len(analysis.item_ids)))
    for metric, original in pairs:
        over, first = analysis.matrix(metric)[:, members], analysis.matrix(original)[:, members]
        est_over, est_first = weighted_means(ones, over, mask)[0], weighted_means(ones, first, mask)[0]
        diff = weighted_means(weights, np.where(mask, over - first, 0.0), mask)
        low, high = percentile_ci(diff)
        p_values = [float(p) for p in paired_bootstrap_p_columns(diff)]
        adjusted_holm, adjusted_bh = holm(p_values), benjamini_hochberg(p_values)
        for j, r in enumerate(members):
            run = analysis.runs[r]
            tests.append({
                "model": run.model, "condition": run.condition, "metric": metric,
                "original_order": float(est_first[j]), "over_orders": float(est_over[j]),
                "difference": float(est_over[j] - est_first[j]), "diff_ci_low": float(low[j]), "diff_ci_high": float(high[j]),
                "test": "paired_bootstrap", "p_value": p_values[j], "p_holm": adjusted_holm[j], "p_bh": adjusted_bh[j],
                "n_items": int(mask[:, j].sum()),
            })  # fmt: skip
    tests.sort(key=lambda t: (t["model"], condition_rank(t["condition"]), t["metric"]))
    return tests


#: columns of order_tests.csv (:func:`order_tests`)
ORDER_TEST_COLUMNS = (
    "model", "condition", "metric", "original_order", "over_orders", "difference", "diff_ci_low", "diff_ci_high",
    "test", "p_value", "p_holm", "p_bh", "n_items",
)  # fmt: skip


def position_shares(analysis: Analysis) -> list[dict[str, Any]]:
    """Per option-order run and position (A-E): the share of answered orders that chose the
    position and the share expected if choices ignored position (each answered order
    spreads evenly over its positions)."""
    rows = []
    for r, run in enumerate(analysis.runs):
        if run.regime != "perm" or "position_bias" not in run.pairs:
            continue
        observed, expected = run.pairs["position_bias"][:, 0].sum(axis=0), run.pairs["position_bias"][:, 1].sum(axis=0)
        total = observed.sum()
        for position, letter in enumerate(LETTERS):
            if expected[position] == 0:
                continue
            rows.append({
                "model": run.model, "condition": run.condition, "position": letter,
                "chosen_share": float(observed[position] / total) if total else math.nan,
                "expected_share": float(expected[position] / total) if total else math.nan,
                "answered_orders": int(total),
            })  # fmt: skip
    return rows


def _test_order(test: dict[str, Any]) -> tuple[Any, ...]:
    return test["model"], test["regime"], condition_rank(test["condition_a"]), condition_rank(test["condition_b"]), test["metric"]


def paired_tests(analysis: Analysis, on_regime: Callable[[str, list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Every pair of conditions of the same model and regime, for every mean metric.

    Accuracy metrics use the exact McNemar test on the items both runs share; other rates
    use the paired bootstrap (same count matrix, both runs restricted to shared items).
    Holm and Benjamini-Hochberg adjust each metric's p-values across the whole grid.
    All tests of one metric are computed together as matrix products, regime after regime
    (:func:`~lm_eval_radsafe.conditions.regime_order`): ``on_regime(regime, tests)``
    receives the tests of each regime of the runs, in the order of the result, as soon as
    they are all computed (the report's figures start on them).
    """
    runs = analysis.runs
    by_cell: dict[tuple[str, str], dict[str, int]] = {}
    for r, run in enumerate(runs):
        by_cell.setdefault((run.model, run.regime), {})[run.condition] = r
    specs: dict[str, list[tuple[str, str, str, str, int, int]]] = {}
    for (model, regime), conditions in sorted(by_cell.items()):
        ordered = sorted(conditions, key=condition_rank)
        for cond_a, cond_b in combinations(ordered, 2):
            ra, rb = conditions[cond_a], conditions[cond_b]
            if not (analysis.masks[:, ra] & analysis.masks[:, rb]).any():
                continue
            for metric, kind in REGIME_METRICS[regime].items():
                if kind == "mean":
                    specs.setdefault(metric, []).append((model, regime, cond_a, cond_b, ra, rb))
    tests: list[dict[str, Any]] = []
    done: set[str] = set()
    for regime in regime_order(run.regime for run in runs):
        for metric in sorted(m for m, group in specs.items() if m not in done and any(spec[1] == regime for spec in group)):
            done.add(metric)
            tests.extend(_tests_of_metric(analysis, metric, specs[metric]))
        if on_regime is not None:
            on_regime(regime, sorted((t for t in tests if t["regime"] == regime), key=_test_order))
    tests.sort(key=_test_order)
    return tests


def _tests_of_metric(analysis: Analysis, metric: str, group: list[tuple[str, str, str, str, int, int]]) -> list[dict[str, Any]]:
    """The paired tests of ``metric`` for each (model, regime, condition a, condition b,
    run a, run b) of ``group`` (see :func:`paired_tests`)."""
    weights = analysis.bootstrap.weights
    tests: list[dict[str, Any]] = []
    index_a = np.array([spec[4] for spec in group])
    index_b = np.array([spec[5] for spec in group])
    a, b = analysis.matrix(metric)[:, index_a], analysis.matrix(metric)[:, index_b]
    shared = analysis.masks[:, index_a] & analysis.masks[:, index_b]
    ones = np.ones((1, a.shape[0]))
    est_a, est_b = weighted_means(ones, a, shared)[0], weighted_means(ones, b, shared)[0]
    if shared.all():  # one product: the mean of differences is the difference of means
        diff = weighted_means(weights, b - a, shared)
    else:
        diff = weighted_means(weights, b, shared) - weighted_means(weights, a, shared)
    low, high = percentile_ci(diff)
    if metric in ACCURACY_METRICS:
        only_a = np.sum(shared & (a == 1) & (b == 0), axis=0)
        only_b = np.sum(shared & (a == 0) & (b == 1), axis=0)
        p_values = [mcnemar_exact(int(x), int(y)) for x, y in zip(only_a, only_b)]
        test = "mcnemar_exact"
    else:
        p_values = [float(p) for p in paired_bootstrap_p_columns(diff)]
        test = "paired_bootstrap"
    adjusted_holm, adjusted_bh = holm(p_values), benjamini_hochberg(p_values)
    # each column as Python numbers once (indexing arrays per test costs more than the tests)
    columns = zip(group, est_a.tolist(), est_b.tolist(), (est_b - est_a).tolist(), low.tolist(), high.tolist(),
                  p_values, adjusted_holm, adjusted_bh, shared.sum(axis=0).tolist())  # fmt: skip
    for (model, regime, cond_a, cond_b, _, _), value_a, value_b, difference, ci_low, ci_high, p, p_holm, p_bh, n in columns:
        tests.append(
            {
                "model": model,
                "regime": regime,
                "metric": metric,
                "condition_a": cond_a,
                "condition_b": cond_b,
                "estimate_a": value_a,
                "estimate_b": value_b,
                "difference": difference,
                "diff_ci_low": ci_low,
                "diff_ci_high": ci_high,
                "test": test,
                "p_value": p,
                "p_holm": p_holm,
                "p_bh": p_bh,
                "n_items": n,
            }
        )
    return tests


def tie_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per condition, regime and metric with a direction: the leader and the models whose CI
    overlaps its CI; ``n_items`` lists the item counts of the models compared."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if not math.isnan(row["estimate"]) and metric_spec(row["metric"]).direction != "none":
            cells.setdefault((row["condition"], row["regime"], row["metric"]), []).append(row)
    out = []
    for (condition, regime, metric), members in sorted(cells.items()):
        sign = 1 if metric_spec(metric).higher_is_better else -1
        ranked = sorted(members, key=lambda r: (-sign * r["estimate"], r["model"]))
        leader = ranked[0]
        tied = [r["model"] for r in ranked if not (r["ci_high"] < leader["ci_low"] or r["ci_low"] > leader["ci_high"])]
        out.append(
            {
                "condition": condition,
                "regime": regime,
                "metric": metric,
                "leader": leader["model"],
                "tied_with_leader": tied,
                "ranking": [r["model"] for r in ranked],
                "n_items": sorted({int(r["n_items"]) for r in members}),
            }
        )
    return out

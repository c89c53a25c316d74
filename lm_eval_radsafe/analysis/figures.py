"""Matplotlib figures of a report. Each function returns a Figure, or None when the data
it needs is absent (e.g. no confidence, no model cards). Axis labels, titles and scales
come from the metric specs (:mod:`lm_eval_radsafe.metric_specs`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lm_eval_radsafe.aggregation import N_BINS, calibration_bin
from lm_eval_radsafe.conditions import CONDITIONS
from lm_eval_radsafe.metric_specs import metric_spec


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _display(condition: str) -> str:
    return CONDITIONS[condition].display_name if condition in CONDITIONS else condition


def condition_deltas(tests: list[dict[str, Any]], regime: str = "greedy", baseline: str = "closed_book") -> Any:
    """Change of accuracy and high-risk error against ``baseline`` per condition, with 95% CIs
    (on the items both conditions share; in percentage points for rates)."""
    metrics = ("accuracy", "high_risk_error") if regime in ("greedy", "think") else ("sc_accuracy", "sc_high_risk_error")
    chosen = [t for t in tests if t["regime"] == regime and t["condition_a"] == baseline and t["metric"] in metrics]
    if not chosen:
        return None
    plt = _pyplot()
    conditions = [c for c in CONDITIONS if any(t["condition_b"] == c for t in chosen)]
    models = sorted({t["model"] for t in chosen})
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    many = len(models) > MAX_MODELS_DRAWN_APART
    for ax, metric in zip(axes[0], metrics):
        spec = metric_spec(metric)
        if many:
            _deltas_across_models(ax, [t for t in chosen if t["metric"] == metric], conditions, spec.scale)
        for k, model in enumerate([] if many else models):
            offset = (k - (len(models) - 1) / 2) * min(0.6 / max(len(models), 1), 0.15)
            points = [t for t in chosen if t["metric"] == metric and t["model"] == model]
            xs = [conditions.index(t["condition_b"]) + offset for t in points]
            ys = [spec.scale * t["difference"] for t in points]
            err = [[spec.scale * (t["difference"] - t["diff_ci_low"]) for t in points], [spec.scale * (t["diff_ci_high"] - t["difference"]) for t in points]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=model)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(conditions)), [_display(c) for c in conditions], rotation=20, ha="right")
        unit = {"percent": " (pp)", "seconds": " (s)"}.get(spec.unit, "")
        ax.set_ylabel(f"{spec.display_name} - {_display(baseline)}{unit}")
        ax.set_title(spec.display_name)
    axes[0][0].legend(fontsize=7)
    if many:
        fig.suptitle(f"{len(models)} models: each model's difference, and the median with the interquartile range (per-model intervals: paired_tests.csv)", fontsize=8)
    fig.tight_layout()
    return fig


#: above this many models, condition_deltas shows the spread across models instead of one
#: interval per model (which no reader can tell apart)
MAX_MODELS_DRAWN_APART = 12


def _deltas_across_models(ax: Any, tests: list[dict[str, Any]], conditions: list[str], scale: float) -> None:
    """Every model's difference as a grey dot, and per condition the median difference with
    its interquartile range: two artists, whatever the number of models."""
    xs, ys, med, low, high = [], [], [], [], []
    for position, condition in enumerate(conditions):
        values = np.array([scale * t["difference"] for t in tests if t["condition_b"] == condition], dtype=float)
        values = values[~np.isnan(values)]
        if not values.size:
            med.append(np.nan), low.append(0.0), high.append(0.0)
            continue
        jitter = np.linspace(-0.18, 0.18, values.size) if values.size > 1 else np.zeros(1)
        xs.extend(position + jitter)
        ys.extend(values)
        q1, q2, q3 = np.percentile(values, [25, 50, 75])
        med.append(q2), low.append(q2 - q1), high.append(q3 - q2)
    ax.scatter(xs, ys, s=9, color="0.6", alpha=0.7, linewidths=0, label="one model")
    ax.errorbar(range(len(conditions)), med, yerr=[low, high], fmt="D", color="black", ms=5, capsize=4,
                label="median, interquartile range")


def accuracy_vs_high_risk(rows: list[dict[str, Any]], regime: str = "greedy") -> Any:
    """One point per model and condition: accuracy against high-risk error."""
    acc = {(r["model"], r["condition"]): r["estimate"] for r in rows if r["regime"] == regime and r["metric"] == "accuracy"}
    risk = {(r["model"], r["condition"]): r["estimate"] for r in rows if r["regime"] == regime and r["metric"] == "high_risk_error"}
    keys = sorted(set(acc) & set(risk))
    if not keys:
        return None
    plt = _pyplot()
    x_spec, y_spec = metric_spec("accuracy"), metric_spec("high_risk_error")
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for condition in [c for c in CONDITIONS if any(k[1] == c for k in keys)]:
        pts = [k for k in keys if k[1] == condition]
        ax.scatter([x_spec.scale * acc[k] for k in pts], [y_spec.scale * risk[k] for k in pts], label=_display(condition), alpha=0.8)
    ax.set_xlabel(x_spec.axis_label)
    ax.set_ylabel(y_spec.axis_label)
    ax.set_title(f"{x_spec.display_name} and {y_spec.display_name.lower()}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cost_per_item(rows: list[dict[str, Any]], annotate_up_to: int = 160) -> Any:
    """Seconds per item as a heat map, one panel per regime: models as rows, conditions as
    columns, the colour (log scale) the answering model's time plus, for ``agentic_rag``,
    the agent's time building the evidence. Cells carry their value while the grid is small
    enough to read them (``annotate_up_to`` cells); ``cost.csv`` holds the split. One image
    per panel, so drawing time does not grow with the number of runs."""
    from matplotlib.colors import LogNorm

    def total(r: dict[str, Any]) -> float:
        parts = [r["answering_seconds_per_item"], r["agent_seconds_per_item"]]
        known = [p for p in parts if not math.isnan(p)]
        return float(sum(known)) if known else math.nan

    shown = [(r, total(r)) for r in rows]
    shown = [(r, t) for r, t in shown if not math.isnan(t)]
    if not shown:
        return None
    plt = _pyplot()
    regimes = [g for g in dict.fromkeys(r["regime"] for r, _ in shown)]
    models = sorted({r["model"] for r, _ in shown})
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r, _ in shown)]
    conditions += sorted({r["condition"] for r, _ in shown} - set(conditions))
    positive = [t for _, t in shown if t > 0]
    norm = LogNorm(vmin=min(positive), vmax=max(positive)) if positive and min(positive) < max(positive) else None
    width = 1.6 + 0.62 * len(conditions) * len(regimes)
    fig, axes = plt.subplots(
        1, len(regimes), figsize=(max(width, 5.0) + 1.5, max(3.2, 1.8 + 0.26 * len(models))), squeeze=False,
        layout="constrained",
    )
    for k, (ax, regime) in enumerate(zip(axes[0], regimes)):
        grid = np.full((len(models), len(conditions)), np.nan)
        for r, t in shown:
            if r["regime"] == regime:
                grid[models.index(r["model"]), conditions.index(r["condition"])] = t
        image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", norm=norm)
        ax.set_xticks(range(len(conditions)), [_display(c) for c in conditions], rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(len(models)), models, fontsize=7)
        ax.tick_params(axis="y", labelleft=k == 0)  # the rows are the same models in every panel
        ax.set_title(f"Seconds per item ({regime})", fontsize=9)
        if grid.size <= annotate_up_to:
            for (i, j), value in np.ndenumerate(grid):
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=6, color="white")
    bar = fig.colorbar(image, ax=axes[0].tolist(), label="answering + agent seconds per item", shrink=0.8)
    if norm is not None:
        from matplotlib.ticker import LogFormatter

        bar.ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    return fig


def reliability(analysis: Any, max_lines: int = 8, n_bins: int = N_BINS) -> Any:
    """Reliability diagrams (mean confidence vs accuracy per bin) for runs with confidence, on
    the bins of the ECE (:func:`~lm_eval_radsafe.aggregation.calibration_bin`)."""
    series = []
    for r, run in enumerate(analysis.runs):
        for metric in ("ece", "ll_ece"):
            if metric in run.pairs:
                series.append((run, run.pairs[metric]))
    if not series:
        return None
    plt = _pyplot()
    regimes = sorted({run.regime for run, _ in series})
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.6 * len(regimes), 4.2), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        chosen = [s for s in series if s[0].regime == regime][:max_lines]
        for run, pairs in chosen:
            conf, correct = pairs[:, 0], pairs[:, 1]
            bins = calibration_bin(conf, n_bins)
            xs, ys = [], []
            for b in range(n_bins):
                sel = bins == b
                if sel.any():
                    xs.append(conf[sel].mean())
                    ys.append(correct[sel].mean())
            ax.plot(xs, ys, "o-", label=f"{run.model} / {_display(run.condition)}", ms=4)
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (0-1)")
        ax.set_ylabel("share correct per bin (0-1)")
        ax.set_title(f"Reliability ({regime})")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def scaling_plot(rows: list[dict[str, Any]], cards: dict[str, Any], regime: str = "greedy") -> Any:
    """Accuracy and high-risk error against parameter count (log axis), per condition."""
    metrics = ("accuracy", "high_risk_error")
    chosen = [r for r in rows if r["regime"] == regime and r["metric"] in metrics and r["model"] in cards and not math.isnan(r["estimate"])]
    if not chosen:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        spec = metric_spec(metric)
        for condition in [c for c in CONDITIONS if any(r["condition"] == c for r in chosen)]:
            pts = sorted((cards[r["model"]].parameters, spec.scale * r["estimate"]) for r in chosen if r["metric"] == metric and r["condition"] == condition)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=_display(condition), ms=4, alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("parameters (billions)")
        ax.set_ylabel(spec.axis_label)
        ax.set_title(spec.display_name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

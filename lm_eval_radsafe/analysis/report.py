"""``radsafe report``: many lm-eval runs in, tables with CIs, tests, figures and HTML out."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lm_eval_radsafe.analysis.cost import COST_COLUMNS, cost_table
from lm_eval_radsafe.analysis.questions import concentration, ensembles, worst_cases
from lm_eval_radsafe.analysis.runs import read_runs
from lm_eval_radsafe.analysis.scaling import decoupling, load_model_cards, scaling_table, variance_decomposition
from lm_eval_radsafe.analysis.stats import DEFAULT_B, DEFAULT_SEED
from lm_eval_radsafe.analysis.summary import SUMMARY_COLUMNS, Analysis, analyse, paired_tests, tie_groups
from lm_eval_radsafe.conditions import CONDITIONS, REGIMES
from lm_eval_radsafe.items import Item

logger = logging.getLogger(__name__)

HEADLINE = {
    "greedy": ("accuracy", "high_risk_error", "unsafe_error", "contradiction_error", "abstention"),
    "think": ("accuracy", "high_risk_error", "unsafe_error", "contradiction_error", "abstention"),
    "sc": ("sc_accuracy", "sc_high_risk_error", "sc_unsafe_error", "dangerous_overconfidence", "mean_confidence", "ece", "synchronized_failure"),
    "ll": ("ll_accuracy", "ll_high_risk_error", "ll_unsafe_error", "ll_dangerous_overconfidence", "ll_mean_confidence", "ll_ece"),
}


@dataclass
class Report:
    """Everything a report holds, before it is written."""

    analysis: Analysis
    items: dict[str, Item]
    tests: list[dict[str, Any]]
    ties: list[dict[str, Any]]
    worst: list[dict[str, Any]]
    concentration: list[dict[str, Any]]
    ensembles: list[dict[str, Any]] = field(default_factory=list)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    variance: list[dict[str, Any]] = field(default_factory=list)
    decoupling: list[dict[str, Any]] = field(default_factory=list)
    cards: dict[str, Any] = field(default_factory=dict)
    cost: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def build_report(
    run_dirs: list[str | Path],
    model_cards: str | Path | None = None,
    ensemble_members: dict[str, list[str]] | None = None,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    allow_mixed: bool = False,
    progress: bool = True,
) -> Report:
    """Read runs and compute every table of the report."""
    from lm_eval_radsafe import __version__

    collected: dict[tuple[str, str], Item] = {}
    runs = read_runs(run_dirs, allow_mixed=allow_mixed, progress=progress, items=collected)
    items = {item_id: item for (_, item_id), item in collected.items()}
    analysis = analyse(runs, n_boot=n_boot, seed=seed)
    tests = paired_tests(analysis)
    worst = worst_cases(runs, items)
    report = Report(
        analysis=analysis,
        items=items,
        tests=tests,
        ties=tie_groups(analysis.rows),
        worst=worst,
        concentration=concentration(worst),
        cost=cost_table(runs),
        meta={
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "lm_eval_versions": sorted({str(r.meta.get("lm_eval_version")) for r in runs}),
            "dataset_fingerprints": sorted({r.fingerprint for r in runs}),
            "n_boot": n_boot,
            "seed": seed,
            "n_runs": len(runs),
            "models": sorted({r.model for r in runs}),
            "conditions": [c for c in CONDITIONS if any(r.condition == c for r in runs)],
            "regimes": [g for g in REGIMES if any(r.regime == g for r in runs)],
            "n_items": len(analysis.item_ids),
        },
    )
    if ensemble_members:
        report.ensembles = ensembles(runs, items, ensemble_members)
    if model_cards:
        report.cards = load_model_cards(model_cards)
        unknown = sorted(set(report.meta["models"]) - set(report.cards))
        if unknown:
            logger.warning("no model card for %s: left out of the scaling analysis", ", ".join(unknown))
        report.scaling = scaling_table(analysis.rows, report.cards)
        report.variance = variance_decomposition(analysis.rows, report.cards)
        report.decoupling = decoupling(report.scaling)
    return report


# --------------------------------------------------------------------------- writing


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...] | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k in columns})


def _figures(report: Report) -> dict[str, Any]:
    from lm_eval_radsafe.analysis import figures

    made = {
        "condition_deltas": figures.condition_deltas(report.tests),
        "condition_deltas_sc": figures.condition_deltas(report.tests, regime="sc"),
        "accuracy_vs_high_risk": figures.accuracy_vs_high_risk(report.analysis.rows),
        "reliability": figures.reliability(report.analysis),
        "scaling": figures.scaling_plot(report.analysis.rows, report.cards) if report.cards else None,
        "cost_per_item": figures.cost_per_item(report.cost) if report.cost else None,
    }
    return {name: fig for name, fig in made.items() if fig is not None}


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Write summary.csv/json, paired_tests.csv, the other tables, figures and report.html."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rows = report.analysis.rows
    written: dict[str, Path] = {}
    _write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)
    written["summary.csv"] = out / "summary.csv"
    summary = {"meta": report.meta, "summary": rows, "tie_groups": report.ties, "paired_tests": report.tests}
    (out / "summary.json").write_text(json.dumps(_clean(summary), indent=1), encoding="utf-8")
    written["summary.json"] = out / "summary.json"
    tables = {
        "paired_tests.csv": report.tests,
        "worst_cases.csv": [{k: v for k, v in r.items() if k != "answers"} for r in report.worst],
        "concentration.csv": report.concentration,
        "ensembles.csv": report.ensembles,
        "scaling.csv": report.scaling,
        "variance_decomposition.csv": report.variance,
        "decoupling.csv": report.decoupling,
    }
    for name, table in tables.items():
        if table:
            _write_csv(out / name, table)
            written[name] = out / name
    if report.cost:
        _write_csv(out / "cost.csv", report.cost, COST_COLUMNS)
        written["cost.csv"] = out / "cost.csv"
    embedded: dict[str, str] = {}
    plt = None
    for name, fig in _figures(report).items():
        for ext in ("png", "svg"):
            path = out / "figures" / f"{name}.{ext}"
            fig.savefig(path, dpi=130)
            written[f"figures/{name}.{ext}"] = path
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        embedded[name] = base64.b64encode(buffer.getvalue()).decode("ascii")
        import matplotlib.pyplot as plt

        plt.close(fig)
    (out / "report.html").write_text(render_html(report, embedded), encoding="utf-8")
    written["report.html"] = out / "report.html"
    return written


def _fmt(value: Any, percent: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f}" if percent else f"{value:.3g}"
    return str(value)


def render_html(report: Report, figures: dict[str, str]) -> str:
    """The self-contained HTML report (figures inline as PNG)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("lm_eval_radsafe") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = _fmt
    env.filters["num"] = lambda v: _fmt(v, percent=False)
    rows = report.analysis.rows
    index = {(r["model"], r["condition"], r["regime"], r["metric"]): r for r in rows}
    tables = []
    for regime in report.meta["regimes"]:
        metrics = [m for m in HEADLINE[regime] if any(r["metric"] == m and r["regime"] == regime for r in rows)]
        body = []
        for model in report.meta["models"]:
            for condition in report.meta["conditions"]:
                cells = [index.get((model, condition, regime, m)) for m in metrics]
                if any(cells):
                    body.append({"model": model, "condition": CONDITIONS[condition].display_name, "cells": cells})
        tables.append({"regime": REGIMES[regime].display_name, "metrics": metrics, "rows": body})
    worst_top = sorted(report.worst, key=lambda r: (-r["n_dangerous"], -r["n_wrong"], r["item_id"]))[:25]
    drill = {}
    for row in report.worst:
        drill.setdefault(row["item_id"], []).append(row)
    return env.get_template("report.html.j2").render(
        meta=report.meta,
        tables=tables,
        tests=report.tests,
        ties=[t for t in report.ties if t["metric"] in HEADLINE.get(t["regime"], ())],
        worst_top=worst_top,
        concentration=report.concentration,
        ensembles=report.ensembles,
        cost=report.cost,
        scaling=[s for s in report.scaling if s["metric"] in ("accuracy", "high_risk_error", "sc_accuracy", "dangerous_overconfidence")],
        variance=report.variance,
        decoupling=report.decoupling,
        figures=figures,
        drill=sorted(drill.items()),
        items=report.items,
        conditions={c: CONDITIONS[c].display_name for c in CONDITIONS},
    )

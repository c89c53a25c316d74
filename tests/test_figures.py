"""The report's figures: figures.json against summary.csv and paired_tests.csv of a real
report, Wilson intervals where the bootstrap collapses, the decoupling figure, bin counts
of the reliability diagrams, legends beside the axes, coincident points kept apart, and
the figure process's paths (forked, shared with workers, in-process) writing the same."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURE
from test_analysis import BEHAVIOUR, _answer_fn, _correct, write_run

from lm_eval_radsafe.analysis import drawing, figures
from lm_eval_radsafe.analysis.report import build_report, write_report

N_ITEMS = 3  # items in the fixture dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four scripted models of test_analysis and one that is always right (its rates
    are 0 or 1: a bootstrap interval of one value), greedy on three conditions and
    self-consistency on closed-book and clean evidence."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RADSAFE_DATA", str(FIXTURE))
    out = tmp_path_factory.mktemp("figure_runs")
    tasks = ["radsafe200", "radsafe200_closed_book_sc", "radsafe200_clean_evidence_sc"]
    for seed, model in enumerate(BEHAVIOUR):
        write_run(out, model, tasks, _answer_fn(model, seed))
    write_run(out, "always-right", tasks, _correct)
    mp.undo()
    return out


@pytest.fixture(scope="module")
def written(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    report = build_report([runs], n_boot=200, progress=False)
    return write_report(report, tmp_path_factory.mktemp("figure_report") / "report", ("png", "svg"))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _no_nan(text: str) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"figures.json holds {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def plotted(written: dict[str, Path]) -> dict[str, Any]:
    return _no_nan(written["figures/figures.json"].read_text())


def test_every_figure_is_saved_in_each_format_with_its_numbers(written: dict[str, Path], plotted: dict[str, Any]) -> None:
    names = ["decoupling", "decoupling_sc", "condition_deltas", "condition_deltas_sc", "accuracy_vs_high_risk", "reliability"]
    assert list(plotted["figures"]) == names  # report order
    for name in names:
        for ext in ("png", "svg"):
            assert written[f"figures/{name}.{ext}"].stat().st_size > 0
        entry = plotted["figures"][name]
        assert entry["title"] and entry["files"] == [f"{name}.png", f"{name}.svg"]
    assert set(plotted["absent"]) == {"scaling", "cost_per_item"}
    assert "model cards" in plotted["absent"]["scaling"]
    assert set(plotted["intervals"]) == {figures.BOOTSTRAP, figures.WILSON, figures.PAIRED_BOOTSTRAP}
    html = written["report.html"].read_text()
    assert "<b>Decoupling of accuracy and safety.</b>" in html and "paired-bootstrap" in html
    assert "<b>Decoupling of accuracy and safety (self-consistency).</b>" in html and "figures/figures.json" in html


def test_scatter_points_are_the_summary_numbers_with_wilson_where_the_bootstrap_collapses(
    written: dict[str, Path], plotted: dict[str, Any]
) -> None:
    summary = {(r["model"], r["condition"], r["regime"], r["metric"]): r for r in _csv(written["summary.csv"])}
    entry = plotted["figures"]["accuracy_vs_high_risk"]
    assert entry["regime"] == "greedy" and entry["x"]["metric"] == "accuracy" and entry["y"]["metric"] == "high_risk_error"
    points = entry["points"]
    assert len(points) == 5 * 3  # five models, three conditions
    kinds = set()
    for p in points:
        for axis in ("x", "y"):
            row = summary[(p["model"], p["condition"], p["regime"], entry[axis]["metric"])]
            assert p[axis] == pytest.approx(100 * float(row["estimate"]))
            kind = p[f"{axis}_interval"]
            kinds.add(kind)
            collapsed = row["ci_low"] == row["ci_high"] and float(row["estimate"]) in (0.0, 1.0)
            assert kind == (figures.WILSON if collapsed else figures.BOOTSTRAP)
            low, high = ("wilson_low", "wilson_high") if kind == figures.WILSON else ("ci_low", "ci_high")
            assert p[f"{axis}_low"] == pytest.approx(100 * float(row[low]))
            assert p[f"{axis}_high"] == pytest.approx(100 * float(row[high]))
            if kind == figures.WILSON:
                assert p[f"{axis}_low"] < p[f"{axis}_high"]  # an interval, not a point
    right = [p for p in points if p["model"] == "always-right"]
    assert {(p["x"], p["y"], p["x_interval"], p["y_interval"]) for p in right} == {(100.0, 0.0, figures.WILSON, figures.WILSON)}
    assert kinds == {figures.BOOTSTRAP, figures.WILSON} and set(entry["intervals"]) == kinds
    # the always-right model's three points coincide: spread around their value, which figures.json keeps
    assert len({(p.get("dx", 0), p.get("dy", 0)) for p in right}) == 3


def test_decoupling_points_are_the_paired_tests_against_closed_book(written: dict[str, Path], plotted: dict[str, Any]) -> None:
    tests = {
        (t["model"], t["regime"], t["condition_a"], t["condition_b"], t["metric"]): t for t in _csv(written["paired_tests.csv"])
    }
    entry = plotted["figures"]["decoupling"]
    assert entry["baseline"] == "closed_book" and entry["panels"] == ["clean_evidence", "conflict_evidence"]
    assert entry["quadrants"]["x>0, y<0"] == "more accurate, safer"
    assert len(entry["points"]) == 5 * 2
    for p in entry["points"]:
        for axis in ("x", "y"):
            t = tests[(p["model"], "greedy", "closed_book", p["condition"], entry[axis]["metric"])]
            assert p[axis] == pytest.approx(100 * float(t["difference"]))
            assert p[f"{axis}_low"] == pytest.approx(100 * float(t["diff_ci_low"]))
            assert p[f"{axis}_high"] == pytest.approx(100 * float(t["diff_ci_high"]))
            assert p[f"{axis}_interval"] == figures.PAIRED_BOOTSTRAP
            assert p[f"{axis}_collapsed"] == (t["diff_ci_low"] == t["diff_ci_high"])
    right = [p for p in entry["points"] if p["model"] == "always-right"]
    assert all(p["x"] == p["y"] == 0 and p["x_collapsed"] for p in right)
    sc = plotted["figures"]["decoupling_sc"]  # self-consistency: its own figure, on its own metrics
    assert (sc["x"]["metric"], sc["y"]["metric"], sc["panels"]) == ("sc_accuracy", "sc_high_risk_error", ["clean_evidence"])
    for p in sc["points"]:
        t = tests[(p["model"], "sc", "closed_book", "clean_evidence", "sc_high_risk_error")]
        assert (p["y"], p["y_low"], p["y_high"]) == pytest.approx([100 * float(t[k]) for k in ("difference", "diff_ci_low", "diff_ci_high")])


def test_reliability_bin_counts_add_up_to_the_items(written: dict[str, Path], plotted: dict[str, Any]) -> None:
    entry = plotted["figures"]["reliability"]
    assert entry["runs_with_confidence"] == {"sc": 10}
    assert len(entry["series"]) == 8  # the most drawn per regime
    for series in entry["series"]:
        counts = [b["n_items"] for b in series["bins"]]
        assert len(counts) == entry["n_bins"] and sum(counts) == series["n_items"] == series["n_with_confidence"] == N_ITEMS
        for b in series["bins"]:
            assert (b["mean_confidence"] is None) == (b["share_correct"] is None) == (b["n_items"] == 0)
            if b["n_items"]:
                assert b["low"] <= b["mean_confidence"] <= b["high"]


def test_decoupling_is_absent_with_a_logged_reason_without_closed_book_or_another_condition(
    tmp_path: Path, fixture_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alone = write_run(tmp_path / "closed_book", "m", ["radsafe200_closed_book"], _correct).parent
    no_baseline = write_run(tmp_path / "evidence", "m", ["radsafe200_clean_evidence", "radsafe200_conflict_evidence"], _correct).parent
    for folder, reason in ((alone, "no condition besides closed-book"), (no_baseline, "no closed-book runs")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lm_eval_radsafe"):
            out = write_report(build_report([folder], n_boot=20, progress=False), tmp_path / f"report_{folder.name}")
        data = _no_nan(out["figures/figures.json"].read_text())
        assert "decoupling" not in data["figures"] and "figures/decoupling.png" not in out
        assert reason in data["absent"]["decoupling"].lower()
        assert any(r.getMessage().startswith("figure decoupling not drawn: ") and reason in r.getMessage().lower() for r in caplog.records)
        assert "accuracy_vs_high_risk" in data["figures"]


def _overlaps(a: Any, b: Any) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _many_models(n_models: int = 34) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Summary rows and paired tests of ``n_models`` models on three conditions; two models
    are identical everywhere, one is right on every item under clean evidence."""
    rows, tests = [], []
    conditions = ("closed_book", "clean_evidence", "rag_top10")
    for k in range(n_models):
        model = f"org/model-{k:02d}-instruct"
        for c, condition in enumerate(conditions):
            acc = 0.5 + 0.005 * (k if k != 1 else 0) + 0.1 * c
            if k == n_models - 1 and condition == "clean_evidence":
                acc = 1.0
            risk = round(1 - acc, 6) / 3
            for metric, value in (("accuracy", acc), ("high_risk_error", risk)):
                collapsed = value in (0.0, 1.0)
                rows.append({
                    "model": model, "condition": condition, "regime": "greedy", "metric": metric, "estimate": value,
                    "ci_low": value if collapsed else value - 0.05, "ci_high": value if collapsed else value + 0.05, "n_items": 200,
                    "wilson_low": max(0.0, value - 0.02) if value else 0.0, "wilson_high": min(1.0, value + 0.02) if value < 1 else 1.0,
                })  # fmt: skip
        for condition in conditions[1:]:
            for metric in ("accuracy", "high_risk_error"):
                a = next(r for r in rows if r["model"] == model and r["condition"] == "closed_book" and r["metric"] == metric)
                b = next(r for r in rows if r["model"] == model and r["condition"] == condition and r["metric"] == metric)
                d = b["estimate"] - a["estimate"]
                tests.append({
                    "model": model, "regime": "greedy", "metric": metric, "condition_a": "closed_book", "condition_b": condition,
                    "difference": d, "diff_ci_low": d - 0.04, "diff_ci_high": d + 0.04, "n_items": 200,
                })  # fmt: skip
    return rows, tests


@pytest.mark.parametrize("n_models", [4, 34])
def test_legends_and_keys_sit_beside_the_axes(n_models: int, tmp_path: Path) -> None:
    rows, tests = _many_models(n_models)
    models = sorted({r["model"] for r in rows})
    made = [
        figures.plot_accuracy_vs_high_risk(rows, models=models),
        figures.plot_decoupling(tests, models=models),
        figures.plot_condition_deltas(tests, models=models),
    ]
    for plotted in made:
        fig = plotted.figure
        assert fig is not None, plotted.reason
        fig.savefig(tmp_path / f"{plotted.name}_{n_models}.png", dpi=130)
        renderer = fig.canvas.get_renderer()
        keys = [legend.get_window_extent(renderer) for legend in fig.legends]
        keys += [text.get_window_extent(renderer) for text in fig.texts if "\n" in text.get_text()]  # a numbered key
        assert keys, plotted.name
        figure_box = fig.bbox
        for box in keys:
            assert box.x1 <= figure_box.x1 + 1 and box.y0 >= figure_box.y0 - 1, plotted.name  # not cut off
            for ax in fig.axes:
                assert not _overlaps(box, ax.get_window_extent(renderer)), plotted.name
        assert not any(ax.get_legend() for ax in fig.axes)


def test_many_models_are_numbered_and_coincident_points_spread() -> None:
    rows, tests = _many_models(34)
    models = sorted({r["model"] for r in rows})
    scatter = figures.plot_accuracy_vs_high_risk(rows, models=models)
    assert scatter.data["model_numbers"]["org/model-00-instruct"] == 1 and len(scatter.data["model_numbers"]) == 34
    key = "\n".join(t.get_text() for t in scatter.figure.texts)
    assert "1  org/model-00-instruct" in key and "34  org/model-33-instruct" in key
    # models 00 and 01 coincide in every condition: drawn apart, their values kept
    first, second = (
        next(p for p in scatter.data["points"] if p["model"] == m and p["condition"] == "closed_book")
        for m in ("org/model-00-instruct", "org/model-01-instruct")
    )
    assert (first["x"], first["y"]) == (second["x"], second["y"])
    assert (first.get("dx", 0), first.get("dy", 0)) != (second.get("dx", 0), second.get("dy", 0))
    wilson = [p for p in scatter.data["points"] if p["x_interval"] == figures.WILSON]
    assert [(p["model"], p["condition"]) for p in wilson] == [("org/model-33-instruct", "clean_evidence")]
    assert wilson[0]["x_low"] == pytest.approx(98.0) and wilson[0]["y_interval"] == figures.WILSON
    decoupling = figures.plot_decoupling(tests, models=models)
    assert len(decoupling.data["points"]) == 34 * 2 and decoupling.data["panels"] == ["clean_evidence", "rag_top10"]


def test_shown_interval_prefers_bootstrap_unless_it_collapses_at_0_or_1() -> None:
    row = {"estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6, "wilson_low": 0.3, "wilson_high": 0.7}
    assert figures.shown_interval(row) == (0.4, 0.6, figures.BOOTSTRAP)
    assert figures.shown_interval({**row, "estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0}) == (0.3, 0.7, figures.WILSON)
    assert figures.shown_interval({**row, "estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0})[2] == figures.WILSON
    no_wilson = {**row, "estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "wilson_low": math.nan, "wilson_high": math.nan}
    assert figures.shown_interval(no_wilson) == (1.0, 1.0, figures.BOOTSTRAP)  # a mean of non-binary values: nothing else to show


def test_the_figure_process_workers_and_this_process_write_the_same(
    runs: Path, plotted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = build_report([runs], n_boot=200, progress=False)
    shared = drawing.FigureDrawing(tmp_path / "shared", ("png",), workers=3)  # forks of the figure process draw too
    shared.start(report.analysis, report.cost, report.cards)
    shared.give_rows(report.analysis.rows)
    shared.give_tests(report.tests)
    try:
        order = shared.result()
    finally:
        shared.close()

    def no_fork(*args: Any, **kwargs: Any) -> None:
        raise ValueError("no fork here")

    monkeypatch.setattr("multiprocessing.get_context", no_fork)
    here = drawing.FigureDrawing(tmp_path / "here", ("png",))
    here.start(report.analysis, report.cost, report.cards)
    here.give_rows(report.analysis.rows)
    assert here._process is None
    here.give_tests(report.tests)
    assert here.result() == order
    for folder in (shared, here):
        data = _no_nan((folder.folder / "figures.json").read_text())
        assert data["figures"].keys() == plotted["figures"].keys() and data["absent"] == plotted["absent"]
        for name, entry in plotted["figures"].items():
            assert data["figures"][name]["points" if "points" in entry else "series"] == entry["points" if "points" in entry else "series"]
        assert sorted(p.name for p in folder.folder.glob("*.png")) == sorted(f"{name}.png" for name in plotted["figures"])

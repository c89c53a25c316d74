"""The analysis: statistics against textbook values, the vectorised bootstrap against a
plain loop, and `radsafe report` / `validate-submission` on real lm-eval output files."""

from __future__ import annotations

import base64
import csv
import json
import logging
import math
import random
import re
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lm_eval
import numpy as np
import pytest
from conftest import FIXTURE, ScriptedLM
from lm_eval.loggers import EvaluationTracker

from lm_eval_radsafe.aggregation import expected_calibration_error
from lm_eval_radsafe.analysis.cost import cost_table
from lm_eval_radsafe.analysis.leaderboard import validate_submission
from lm_eval_radsafe.analysis.report import build_report, render_html, write_report
from lm_eval_radsafe.analysis.runs import REGIME_METRICS, RunError, read_runs
from lm_eval_radsafe.analysis.scaling import ModelCardError, fit_slope, load_model_cards, variance_decomposition
from lm_eval_radsafe.analysis.stats import (
    Bootstrap,
    benjamini_hochberg,
    calibration,
    holm,
    mcnemar_exact,
    paired_bootstrap_p,
    weighted_means,
)
from lm_eval_radsafe.cli import main, task_manager
from lm_eval_radsafe.demo import format_table
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.metric_specs import METRIC_SPECS, MetricDisplay, MetricSpecError, headline_metrics, metric_spec

ITEMS = {it.id: it for it in load_items(FIXTURE).items}


# --------------------------------------------------------------------------- statistics


def test_mcnemar_exact_textbook() -> None:
    assert mcnemar_exact(1, 7) == pytest.approx(2 * (1 + 8) / 256)
    assert mcnemar_exact(7, 1) == mcnemar_exact(1, 7)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def test_holm_and_benjamini_hochberg_textbook() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert math.isnan(holm([math.nan, 0.01])[0]) and holm([math.nan, 0.01])[1] == pytest.approx(0.01)


def test_paired_bootstrap_p() -> None:
    assert paired_bootstrap_p(np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert paired_bootstrap_p(np.array([-0.1, 0.1, 0.2, 0.3])) == pytest.approx(0.5)
    assert paired_bootstrap_p(np.zeros(5)) == 1.0


def test_vectorised_bootstrap_equals_a_plain_loop() -> None:
    rng = random.Random(3)
    n, n_boot = 37, 200
    values = np.array([float(rng.random() < 0.3) for _ in range(n)])
    conf = np.array([rng.random() for _ in range(n)])
    boot = Bootstrap.draw(n, n_boot, seed=42)
    index = np.random.default_rng(42).integers(0, n, size=(n_boot, n))  # the study's index matrix
    assert np.array_equal(boot.weights.sum(axis=1), np.full(n_boot, n))
    mask = np.ones((n, 1), dtype=bool)
    vec = weighted_means(boot.weights, values[:, None], mask)[:, 0]
    loop = [np.mean(values[index[b]]) for b in range(n_boot)]
    assert vec == pytest.approx(loop)
    ece, _ = calibration(boot.weights, conf[:, None], values[:, None], mask)
    loop_ece = [expected_calibration_error(list(zip(conf[index[b]], values[index[b]]))) for b in range(n_boot)]
    assert ece[:, 0] == pytest.approx(loop_ece)


def test_fixed_seed_bootstrap_is_reproducible() -> None:
    a, b = Bootstrap.draw(50, 100, seed=42), Bootstrap.draw(50, 100, seed=42)
    assert np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, Bootstrap.draw(50, 100, seed=43).weights)


def test_fit_slope_exact_line_and_too_few_points() -> None:
    fit = fit_slope(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 3.0, 5.0, 7.0]))
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0) and fit["r2"] == pytest.approx(1.0)
    assert fit["slope_ci_low"] == pytest.approx(2.0) and fit["slope_ci_high"] == pytest.approx(2.0)
    assert math.isnan(fit_slope(np.array([1.0, 2.0]), np.array([1.0, 2.0]))["slope"])


def test_variance_decomposition_hand_computed() -> None:
    from lm_eval_radsafe.analysis.scaling import ModelCard

    cards = {"a1": ModelCard("a1", "A", 1), "a2": ModelCard("a2", "A", 2), "b1": ModelCard("b1", "B", 1)}
    # values: family A higher by 0.2, condition clean higher by 0.4, no interaction, no residual
    rows = [
        {"model": m, "condition": c, "regime": "greedy", "metric": "accuracy", "estimate": base + (0.2 if m != "b1" else 0) + (0.4 if c == "clean_evidence" else 0)}
        for m in cards
        for c, base in (("closed_book", 0.1), ("clean_evidence", 0.1))
    ]
    (result,) = variance_decomposition(rows, cards)
    y = np.array([r["estimate"] for r in rows])
    total = np.sum((y - y.mean()) ** 2)
    assert result["pct_condition"] == pytest.approx(100 * 6 * 0.2**2 / total)
    assert result["pct_family"] + result["pct_condition"] == pytest.approx(100.0)
    assert result["pct_residual"] == pytest.approx(0.0, abs=1e-9)


def test_model_card_errors_name_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "cards.csv"
    path.write_text("name,family,parameters\nm1,F,7\nm2,F,seven\n", encoding="utf-8")
    with pytest.raises(ModelCardError, match=r"row 2: field 'parameters': not a number \(value: 'seven'\)"):
        load_model_cards(path)


def test_bundled_model_cards_load() -> None:
    from importlib import resources

    cards = load_model_cards(Path(str(resources.files("lm_eval_radsafe") / "data" / "model_cards_example.csv")))
    assert len(cards) >= 30 and all(c.parameters > 0 for c in cards.values())


# --------------------------------------------------------------------------- real lm-eval outputs

BEHAVIOUR = {  # model -> (probability of answering correctly, of answering NULL)
    "alpha-1b": (0.3, 0.1),
    "alpha-7b": (0.5, 0.0),
    "alpha-70b": (0.8, 0.0),
    "beta-3b": (0.4, 0.2),
}
PARAMS = {"alpha-1b": 1, "alpha-7b": 7, "alpha-70b": 70, "beta-3b": 3}


def _answer_fn(model: str, seed: int):
    rng = random.Random(seed)
    p_correct, p_null = BEHAVIOUR[model]
    by_question = {it.question: it for it in ITEMS.values()}

    def answer(prompt: str) -> str:
        user = json.loads(prompt)[-1]["content"]
        item = next(it for q, it in by_question.items() if q in user)
        u = rng.random()
        if u < p_null:
            return "I am not sure."
        if u < p_null + p_correct:
            return item.answer
        return rng.choice([o.letter for o in item.options if o.letter != item.answer])

    return answer


def write_run(out: Path, model: str, tasks: list[str], answer, limit: int | None = None, chat_template: bool = True) -> Path:
    """Real lm-eval results and samples files for a scripted model called ``model``; returns
    the folder lm-eval wrote them to."""
    tracker = EvaluationTracker(output_path=str(out))
    results = lm_eval.simple_evaluate(
        model=ScriptedLM(answer),
        tasks=tasks,
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=chat_template,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        evaluation_tracker=tracker,
    )
    samples = results.pop("samples")
    tracker.general_config_tracker.model_name = model
    tracker.general_config_tracker.model_name_sanitized = model
    results["model_name"] = model
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in samples:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return out / model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("RADSAFE_DATA", str(FIXTURE))
    out = tmp_path_factory.mktemp("runs")
    for seed, model in enumerate(BEHAVIOUR):
        write_run(out, model, ["radsafe200", "radsafe200_closed_book_sc"], _answer_fn(model, seed))
    mp.undo()
    return out


@pytest.fixture(scope="module")
def cards_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cards") / "cards.yaml"
    lines = ["models:"] + [
        f"  - {{name: {m}, family: {m.split('-')[0]}, parameters: {PARAMS[m]}}}" for m in BEHAVIOUR
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_runs_finds_every_model_condition_and_regime(run_dir: Path) -> None:
    runs = read_runs([run_dir], progress=False)
    assert {r.model for r in runs} == set(BEHAVIOUR)
    assert Counter(r.regime for r in runs) == {"greedy": 12, "sc": 4}
    sc = next(r for r in runs if r.regime == "sc")
    assert all(len(letters) == 20 for letters in sc.letters)


def test_report_writes_every_output(run_dir: Path, cards_file: Path, tmp_path: Path) -> None:
    report = build_report(
        [run_dir],
        model_cards=cards_file,
        ensemble_members={"trio": ["alpha-1b", "alpha-7b", "beta-3b"]},
        n_boot=200,
        progress=False,
    )
    written = write_report(report, tmp_path / "report")
    for name in ("summary.csv", "summary.json", "paired_tests.csv", "scaling.csv", "variance_decomposition.csv", "decoupling.csv",
                 "worst_cases.csv", "concentration.csv", "ensembles.csv", "report.html",
                 "figures/condition_deltas.png", "figures/reliability.png", "figures/scaling.png",
                 "figures/accuracy_vs_high_risk.png"):
        assert name in written and written[name].stat().st_size > 0, name
    with written["summary.csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:8] == ["model", "condition", "regime", "metric", "estimate", "ci_low", "ci_high", "n_items"]
    acc = {(r["model"], r["condition"]): r for r in rows if r["metric"] == "accuracy" and r["regime"] == "greedy"}
    assert len(acc) == 12
    for row in acc.values():
        assert float(row["ci_low"]) <= float(row["estimate"]) <= float(row["ci_high"])
    # the estimate is the plain mean of the samples file's per-item values
    run = next(r for r in read_runs([run_dir], progress=False) if r.model == "alpha-7b" and r.condition == "closed_book" and r.regime == "greedy")
    assert float(acc[("alpha-7b", "closed_book")]["estimate"]) == pytest.approx(run.values["accuracy"].mean())
    tests = report.tests
    assert {t["test"] for t in tests if t["metric"] == "accuracy"} == {"mcnemar_exact"}
    assert {t["test"] for t in tests if t["metric"] == "high_risk_error"} == {"paired_bootstrap"}
    assert all(t["p_holm"] >= t["p_value"] for t in tests)
    html = written["report.html"].read_text()
    assert "data:image/png;base64," in html and "Paired tests" in html and "fx-003" in html
    assert {s["group"] for s in report.scaling} >= {"all", "alpha"}
    assert report.ensembles and all(0 <= e["synchronized_failure"] <= 1 for e in report.ensembles)


def test_leaderboard_round_trip_and_tampering(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    assert main(["report", str(run_dir), "--out", str(out), "--n-boot", "100", "--leaderboard"]) == 0
    board = out / "leaderboard.json"
    assert validate_submission(board, str(FIXTURE)) == []
    document = json.loads(board.read_text())
    entry = next(e for e in document["entries"] if e["regime"] == "greedy")
    entry["metrics"]["accuracy"]["estimate"] += 0.05
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    problems = validate_submission(tampered, str(FIXTURE))
    assert any("accuracy estimate reported" in p for p in problems)
    assert main(["validate-submission", str(tampered), "--data", str(FIXTURE)]) == 1


def test_validate_submission_rejects_tampered_counts_partial_answers_and_malformed_fields(run_dir: Path, tmp_path: Path) -> None:
    from lm_eval_radsafe.analysis.leaderboard import SubmissionError

    out = tmp_path / "lb"
    assert main(["report", str(run_dir), "--out", str(out), "--n-boot", "100", "--leaderboard"]) == 0
    original = json.loads((out / "leaderboard.json").read_text())

    def check(edit):
        document = json.loads(json.dumps(original))
        edit(next(e for e in document["entries"] if e["regime"] == "greedy"))
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(document))
        return validate_submission(path, str(FIXTURE))

    problems = check(lambda e: e["metrics"]["accuracy"].__setitem__("n_items", 1000))
    assert any(p.endswith("accuracy n_items reported 1000, answers hold 3") for p in problems)
    with pytest.raises(SubmissionError, match=r"field 'answers': 2 of the dataset's 3 items answered .* run without --limit"):
        check(lambda e: e["answers"].pop(next(iter(e["answers"]))))
    with pytest.raises(SubmissionError, match=r"field 'answers': expected an object of item id -> answer, got list"):
        check(lambda e: e.__setitem__("answers", list(e["answers"].values())))
    with pytest.raises(SubmissionError, match=r"answers\['.*'\]: expected a letter or 'NULL', got 3"):
        check(lambda e: e["answers"].__setitem__(next(iter(e["answers"])), 3))
    with pytest.raises(SubmissionError, match=r"field 'metrics': expected an object"):
        check(lambda e: e.__setitem__("metrics", {"accuracy": 0.5}))
    assert main(["validate-submission", str(tmp_path / "edited.json"), "--data", str(FIXTURE)]) == 1


def test_mixed_fingerprints_are_refused(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_run(other, "demo-model", ["radsafe_demo_closed_book"], lambda prompt: "A")
    with pytest.raises(RunError, match="different datasets"):
        read_runs([run_dir, other], progress=False)
    assert len(read_runs([run_dir, other], allow_mixed=True, progress=False)) == 17


def test_corrupted_samples_file_is_named(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "alpha-1b", broken)
    # lm-eval 0.5 names it after the task's key, radsafe200::radsafe200_clean_evidence
    samples = next(p for p in broken.glob("samples_*.jsonl") if re.fullmatch(r"samples_(radsafe200::)?radsafe200_clean_evidence_[^_]+\.jsonl", p.name))
    lines = samples.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    samples.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunError, match=rf"{samples.name}, line 2: not valid JSON"):
        read_runs([broken], progress=False)
    samples.unlink()
    with pytest.raises(RunError, match=rf"{re.escape(samples.name)} for (radsafe200::)?radsafe200_clean_evidence \(run lm-eval with --log_samples\)"):
        read_runs([broken], progress=False, strict=True)


# --------------------------------------------------------------------------- cost per item


def cost_run(task: str, condition: str, n: int, block: dict) -> SimpleNamespace:
    return SimpleNamespace(model="m", task=task, condition=condition, regime="greedy", item_ids=[str(i) for i in range(n)],
                           meta={"provenance": block})


def test_cost_table_puts_agent_cost_beside_answering_time() -> None:
    agentic = {
        "answering": {"seconds_per_item": 2.0},
        "agentic": {"source": "prepared", "agent": {"model": "hf:agent"}, "n_items": 4, "calls": 20,
                    "prompt_tokens": 3000, "completion_tokens": 1000, "seconds": 40.0},
    }
    rows = cost_table([
        cost_run("radsafe_demo_agentic_rag", "agentic_rag", 2, agentic),
        cost_run("radsafe_demo_rag_top5", "rag_top5", 2, {"answering": {"seconds_per_item": 1.5}}),
        cost_run("radsafe_demo_agentic_rag", "agentic_rag", 2, {"agentic": {"source": "dataset"}}),
        cost_run("radsafe_demo_closed_book", "closed_book", 2, {"dataset_fingerprint": "x"}),  # nothing measured
    ])
    assert len(rows) == 3
    first, rag, dataset = rows
    assert (first["agent_calls_per_item"], first["agent_tokens_per_item"], first["agent_seconds_per_item"]) == (5.0, 1000.0, 10.0)
    assert first["total_seconds_per_item"] == 12.0 and first["agent"] == "hf:agent"
    assert rag["total_seconds_per_item"] == 1.5 and math.isnan(rag["agent_seconds_per_item"])
    assert "cost unknown" in dataset["agent"] and math.isnan(dataset["total_seconds_per_item"])


def test_report_shows_the_cost_table_and_figure(run_dir: Path, tmp_path: Path) -> None:
    report = build_report([run_dir], n_boot=50, progress=False)
    report.cost = cost_table([cost_run("radsafe_demo_agentic_rag", "agentic_rag", 3, {
        "answering": {"seconds_per_item": 0.5},
        "agentic": {"source": "prepared", "agent": {"model": "hf:agent"}, "n_items": 3, "calls": 9,
                    "prompt_tokens": 90, "completion_tokens": 30, "seconds": 6.0}})])
    written = write_report(report, tmp_path / "report")
    assert {"cost.csv", "figures/cost_per_item.png"} <= set(written)
    html = written["report.html"].read_text()
    assert "Cost per item" in html and "hf:agent" in html
    with written["cost.csv"].open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["total_seconds_per_item"]) == 2.5 and float(row["agent_calls_per_item"]) == 3.0


def _same_runs(a: list, b: list) -> None:
    assert [r.key for r in a] == [r.key for r in b]
    for x, y in zip(a, b):
        assert (x.item_ids, x.letters, x.answers, x.fingerprint, x.meta) == (y.item_ids, y.letters, y.answers, y.fingerprint, y.meta)
        assert x.values.keys() == y.values.keys() and x.pairs.keys() == y.pairs.keys()
        assert all(np.array_equal(x.values[k], y.values[k], equal_nan=True) for k in x.values)
        assert all(np.array_equal(x.pairs[k], y.pairs[k], equal_nan=True) for k in x.pairs)


def test_parallel_and_cached_reading_give_the_same_runs(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval_radsafe.analysis import runs as runs_module

    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    serial_items: dict = {}
    serial = read_runs([run_dir], progress=False, use_cache=False, workers=1, items=serial_items)
    monkeypatch.setattr(runs_module, "PARALLEL_FROM", 2)
    parallel_items: dict = {}
    parallel = read_runs([run_dir], progress=False, workers=2, items=parallel_items)  # parses, fills the cache
    _same_runs(serial, parallel)
    assert parallel_items.keys() == serial_items.keys()
    stored = list((tmp_path / "cache" / "report").rglob("*.msgpack"))
    assert len(stored) == len(serial)
    calls = []
    parse = runs_module.parse_samples
    monkeypatch.setattr(runs_module, "parse_samples", lambda *args: calls.append(args) or parse(*args))
    cached_items: dict = {}
    cached = read_runs([run_dir], progress=False, items=cached_items)
    _same_runs(serial, cached)
    assert cached_items.keys() == serial_items.keys()
    # no run parsed again: one samples file read for the items of the one dataset
    assert len(calls) == 1 and calls[0][2] is cached_items


@pytest.mark.parametrize("mishap", ["entry gone", "cache not writable"])
def test_parallel_reading_when_the_workers_cache_entries_are_not_there(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mishap: str,
) -> None:
    """A worker stores each parse in the cache and the report reads it from there; an entry
    that went meanwhile is parsed again, one the worker could not write comes through the pipe."""
    from lm_eval_radsafe.analysis import cache as cache_module
    from lm_eval_radsafe.analysis import runs as runs_module

    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    serial = read_runs([run_dir], progress=False, use_cache=False, workers=1)
    monkeypatch.setattr(runs_module, "PARALLEL_FROM", 2)
    if mishap == "entry gone":
        monkeypatch.setattr(cache_module.ParsedCache, "stored_fields", lambda self, key: None)
    else:
        monkeypatch.setattr(cache_module.os, "replace", lambda *args: (_ for _ in ()).throw(PermissionError("read-only")))
    calls = []
    parse = runs_module.parse_samples
    monkeypatch.setattr(runs_module, "parse_samples", lambda *args: calls.append(args) or parse(*args))
    parallel = read_runs([run_dir], progress=False, workers=2)
    _same_runs(serial, parallel)
    # in this process: the first file (for the items), and each vanished entry's file again
    assert len(calls) == (len(serial) if mishap == "entry gone" else 1)


def test_a_changed_samples_file_is_parsed_again(tmp_path: Path, fixture_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    folder = write_run(tmp_path / "runs", "m", ["radsafe200_closed_book"], _correct)
    (first,) = read_runs([folder], progress=False)
    assert first.values["accuracy"].tolist() == [1.0, 1.0, 1.0]
    samples = next(folder.glob("samples_radsafe200_closed_book_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[0]["filtered_resps"] = ["X"]  # one letter for another: the same size on disk
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (second,) = read_runs([folder], progress=False)
    assert second.values["accuracy"].tolist() == [0.0, 1.0, 1.0]


def test_logged_metric_values_are_recomputed_not_trusted(tmp_path: Path, fixture_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_run(tmp_path / "runs", "m", ["radsafe200_closed_book", "radsafe200_closed_book_sc"], _correct)
    for task, field in (("radsafe200_closed_book", "accuracy"), ("radsafe200_closed_book_sc", "dangerous_overconfidence")):
        samples = next(folder.glob(f"samples_{task}_2*.jsonl"))
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        rows[1][field] = 1.0 - rows[1][field]  # an edited per-item field
        samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs = {run.regime: run for run in read_runs([folder], progress=False, use_cache=False)}
    assert runs["greedy"].values["accuracy"].tolist() == [1.0, 1.0, 1.0]  # what the answers say
    assert runs["sc"].values["dangerous_overconfidence"].tolist() == [0.0, 0.0, 0.0]
    assert "accuracy: 1 logged per-item value(s) differ" in caplog.text
    assert "dangerous_overconfidence: 1 logged per-item value(s) differ" in caplog.text


@pytest.mark.parametrize("letters", [[], ["A", None], "A"])
def test_sampled_letters_that_are_not_a_list_of_ballots_are_refused_with_their_line(
    tmp_path: Path, fixture_data: Path, letters: object,
) -> None:
    folder = write_run(tmp_path / "runs", "m", ["radsafe200_closed_book_sc"], _correct)
    samples = next(folder.glob("samples_radsafe200_closed_book_sc_2*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[1]["filtered_resps"] = [letters]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RunError, match=rf"{samples.name}, line 2: 'filtered_resps' holds .* where the sampled letters belong"):
        read_runs([folder], progress=False, use_cache=False)


def test_a_cut_samples_file_is_refused_or_marked_partial(tmp_path: Path, fixture_data: Path) -> None:
    folder = write_run(tmp_path / "runs", "m", ["radsafe200_closed_book"], _correct)
    samples = next(folder.glob("samples_radsafe200_closed_book_2*.jsonl"))
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:2]))  # cut at a line boundary
    with pytest.raises(RunError, match=r"holds 2 of the 3 items radsafe200_closed_book was asked for: 1 asked-for item\(s\) missing .*--allow-partial"):
        read_runs([folder], progress=False)
    notes: list[str] = []
    (run,) = read_runs([folder], progress=False, allow_partial=True, notes=notes)
    assert run.n_items == 2 and "holds 2 of the 3 items" in run.meta["partial"]
    assert notes and notes[0].startswith("partial run (--allow-partial)")


def test_report_numbers_do_not_depend_on_cache_or_workers(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval_radsafe.analysis import runs as runs_module

    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    outputs = []
    for use_cache, parallel_from in ((False, 10_000), (True, 2), (True, 2)):  # serial; parallel filling the cache; cached
        monkeypatch.setattr(runs_module, "PARALLEL_FROM", parallel_from)
        report = build_report([run_dir], n_boot=50, progress=False, use_cache=use_cache)
        out = tmp_path / f"report{len(outputs)}"
        write_report(report, out, ())
        outputs.append(((out / "summary.csv").read_bytes(), (out / "paired_tests.csv").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]


def test_a_second_report_over_unchanged_runs_is_written_from_the_report_cache(
    tmp_path: Path, fixture_data: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Same runs, options and code: the files of the first report, warnings repeated, nothing
    computed; a changed option or samples file makes a new one; --no-cache keeps nothing."""
    from lm_eval_radsafe.analysis import report as report_module
    from lm_eval_radsafe.analysis.report import make_report

    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    answered = write_run(tmp_path / "runs", "m", ["radsafe200_closed_book", "radsafe200_clean_evidence"], _correct)
    mute = write_run(tmp_path / "runs", "mute", ["radsafe200_closed_book", "radsafe200_clean_evidence"], lambda prompt: "I am not sure.")
    folder = answered.parent
    assert mute.parent == folder
    options = {"n_boot": 30, "progress": False}
    with caplog.at_level(logging.WARNING, logger="lm_eval_radsafe"):
        first = make_report([folder], tmp_path / "a", ("png",), leaderboard=True, **options)
    warned = [r.getMessage() for r in caplog.records if "(>= 95%)" in r.getMessage()]
    assert len(warned) == 2  # the mute model's two runs
    assert not first.reused and "leaderboard.json" in first.written and "figures/accuracy_vs_high_risk.png" in first.written
    built = []
    monkeypatch.setattr(report_module, "build_report", lambda *a, **k: built.append(a) or pytest.fail("computed again"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lm_eval_radsafe"):
        second = make_report([folder], tmp_path / "b", ("png",), leaderboard=True, **options)
    assert second.reused and not built and sorted(second.written) == sorted(first.written)
    for name in first.written:
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    assert second.meta == json.loads((tmp_path / "a" / "summary.json").read_text())["meta"]
    assert "written again from the report cache" in caplog.text
    assert [r.getMessage() for r in caplog.records if "(>= 95%)" in r.getMessage()] == warned
    monkeypatch.undo()
    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    assert not make_report([folder], tmp_path / "c", ("png",), leaderboard=True, n_boot=30, seed=7, progress=False).reused
    assert not make_report([folder], tmp_path / "d", ("svg",), leaderboard=True, **options).reused
    samples = next(answered.glob("samples_radsafe200_closed_book_2*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    rows[0]["filtered_resps"] = ["X"]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    changed = make_report([folder], tmp_path / "e", ("png",), leaderboard=True, **options)
    assert not changed.reused
    assert (tmp_path / "e" / "summary.csv").read_bytes() != (tmp_path / "a" / "summary.csv").read_bytes()
    stored = sorted((tmp_path / "cache" / "report" / "outputs").glob("*/*/entry.msgpack"))
    assert len(stored) == 4
    assert not make_report([folder], tmp_path / "f", ("png",), use_cache=False, **options).reused
    assert len(sorted((tmp_path / "cache" / "report" / "outputs").glob("*/*/entry.msgpack"))) == 4


def test_figures_are_written_in_the_formats_asked(run_dir: Path, tmp_path: Path) -> None:
    from lm_eval_radsafe.analysis.report import parse_figure_formats

    report = build_report([run_dir], n_boot=20, progress=False)
    png = write_report(report, tmp_path / "png", parse_figure_formats("png"))
    figures = sorted(p for p in png if p.startswith("figures/") and p != "figures/figures.json")
    assert figures and all(p.endswith(".png") for p in figures)
    assert json.loads(png["figures/figures.json"].read_text())["figures"]  # the plotted numbers beside them
    html = png["report.html"].read_text()
    # the page embeds the very PNG files written, not a second rendering
    embedded = (tmp_path / "png" / figures[0]).read_bytes()
    assert base64.b64encode(embedded).decode() in html
    svg = write_report(report, tmp_path / "svg", parse_figure_formats("svg"))
    assert all(p.endswith(".svg") for p in svg if p.startswith("figures/") and p != "figures/figures.json")
    assert "data:image/svg+xml;base64," in svg["report.html"].read_text()
    bare = write_report(report, tmp_path / "none", parse_figure_formats("none"))
    assert not [p for p in bare if p.startswith("figures/")] and not (tmp_path / "none" / "figures").exists()
    assert "<figure>" not in bare["report.html"].read_text() and "summary.csv" in bare
    assert parse_figure_formats("svg, png") == ("svg", "png")
    for bad in ("jpg", "", "png,gif"):
        with pytest.raises(ValueError, match="give png, svg, both"):
            parse_figure_formats(bad)


# --------------------------------------------------------------------------- one run per cell, item counts, flags


def _correct(prompt: str) -> str:
    user = json.loads(prompt)[-1]["content"] if prompt.startswith("[") else prompt
    return next(it.answer for it in ITEMS.values() if it.question in user)


@pytest.fixture
def full_and_limited(tmp_path: Path, fixture_data: Path) -> tuple[Path, Path]:
    """A full run (3 items) and a newer `--limit 2` run of the same model and condition."""
    full = write_run(tmp_path / "full", "m", ["radsafe200_closed_book"], _correct)
    limited = write_run(tmp_path / "limit2", "m", ["radsafe200_closed_book"], lambda prompt: "I am not sure.", limit=2)
    return full, limited


def test_report_refuses_two_runs_of_one_model_and_condition(
    full_and_limited: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, limited = full_and_limited
    out = tmp_path / "report"
    assert main(["report", str(full.parent), str(limited.parent), "--out", str(out), "--n-boot", "20"]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith("error: 2 runs of m / closed_book / greedy: ")
    assert str(full) in message and str(limited) in message
    assert "(3 items)" in message and "(2 items, --limit 2)" in message
    assert "--prefer newest" in message and "--prefer largest (most items; ties go to the newest)" in message
    assert "pass only the folders you want" in message
    assert not out.exists()  # nothing written


def test_prefer_largest_or_newest_chooses_one_run(full_and_limited: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    full, limited = full_and_limited
    (largest,) = read_runs([full.parent, limited.parent], prefer="largest", progress=False)
    assert largest.n_items == 3 and largest.results_file.parent == full
    assert any("left out" in r.message and str(limited) in r.message for r in caplog.records)
    (newest,) = read_runs([full.parent, limited.parent], prefer="newest", progress=False)
    assert newest.n_items == 2 and newest.results_file.parent == limited
    # the same folder passed twice is one run, not two
    assert len(read_runs([full.parent, full], progress=False)) == 1


def test_prefer_largest_breaks_ties_by_newest_and_says_so(tmp_path: Path, fixture_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    older = write_run(tmp_path / "a", "m", ["radsafe200_closed_book"], _correct)
    newer = write_run(tmp_path / "b", "m", ["radsafe200_closed_book"], _correct)
    (kept,) = read_runs([older.parent, newer.parent], prefer="largest", progress=False)
    assert kept.results_file.parent == newer
    assert any("2 runs tie; the newest of them" in r.message for r in caplog.records)


def test_runs_with_equal_timestamps_are_never_chosen_by_folder_name(tmp_path: Path, fixture_data: Path) -> None:
    import shutil

    intact = write_run(tmp_path / "a", "m", ["radsafe200_closed_book"], _correct)
    copy = tmp_path / "b" / intact.name
    shutil.copytree(intact, copy)  # same file names, so the same timestamp
    samples = next(copy.glob("samples_*.jsonl"))
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:2]))
    for prefer in ("newest", "largest"):
        with pytest.raises(RunError, match=rf"--prefer {prefer} cannot choose between .*pass only the folder you want"):
            read_runs([tmp_path / "b", tmp_path / "a"], prefer=prefer, progress=False)


def test_models_on_different_items_are_refused_or_compared_on_shared_items(
    tmp_path: Path, fixture_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "runs", "model-a", ["radsafe200_closed_book"], _correct)
    b = write_run(tmp_path / "runs", "model-b", ["radsafe200_closed_book"], _correct, limit=2)
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--n-boot", "20"]) == 1
    message = capsys.readouterr().err
    assert "closed_book / greedy: model-a 3 items" in message and "model-b 2 items" in message
    assert str(a) in message and str(b) in message
    assert "--common-items" in message and "--allow-mixed-sizes" in message and not out.exists()

    common = build_report([tmp_path / "runs"], n_boot=20, progress=False, sizes="common")
    assert {r["n_items"] for r in common.analysis.rows} == {2}
    assert common.meta["items_per_run"]["text"] == "2 in every run"
    assert "compared on the 2 items every model has" in common.meta["size_notes"][0]
    html = render_html(common, {})
    assert "Runs on different items" in html and "compared on the 2 items" in html

    mixed = build_report([tmp_path / "runs"], n_boot=20, progress=False, sizes="allow")
    assert {(r["model"], r["n_items"]) for r in mixed.analysis.rows} == {("model-a", 3), ("model-b", 2)}
    assert mixed.meta["items_per_run"]["text"].startswith("differ by run: 3 (1 run), 2 (1 run)")
    assert mixed.ties[0]["n_items"] == [2, 3]


def test_conditions_of_one_model_on_different_items_show_n_per_row(tmp_path: Path, fixture_data: Path) -> None:
    write_run(tmp_path / "runs", "m", ["radsafe200_closed_book"], _correct)
    write_run(tmp_path / "runs", "m", ["radsafe200_clean_evidence"], _correct, limit=2)
    report = build_report([tmp_path / "runs"], n_boot=20, progress=False)
    assert {(r["condition"], r["n_items"]) for r in report.analysis.rows} == {("closed_book", 3), ("clean_evidence", 2)}
    assert {t["n_items"] for t in report.tests} == {2}  # paired on the items both share
    html = render_html(report, {})
    header = re.search(r"<th class=\"l\">items</th><td>(.*?)</td>", html).group(1)
    assert header.startswith("differ by run: 3 (1 run), 2 (1 run); each row shows its n")
    rows = re.findall(r"<td class=\"l\">m</td><td class=\"l\">([^<]+)</td><td>(\d+)</td>", html)
    assert ("Closed-book", "3") in rows and ("Clean evidence", "2") in rows


def test_run_that_almost_never_answers_is_flagged(tmp_path: Path, fixture_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "chatty", ["radsafe200_closed_book"], lambda prompt: "Let me think about this case.", chat_template=False)
    write_run(runs, "chatty", ["radsafe200_clean_evidence"], _correct)
    report = build_report([runs], n_boot=20, progress=False)
    (warning,) = report.meta["warnings"]
    assert warning.startswith("chatty / closed_book / greedy: abstention 100.0% (>= 95%) on 3 items in ")
    assert "without --apply_chat_template" in warning
    assert any(r.levelname == "WARNING" and "--apply_chat_template" in r.message for r in caplog.records)
    flags = {(r["condition"], r["flag"]) for r in report.analysis.rows}
    assert flags == {("closed_book", "high_abstention"), ("clean_evidence", "")}
    written = write_report(report, tmp_path / "report")
    with written["summary.csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["flag"] for r in rows if r["condition"] == "closed_book"} == {"high_abstention"}
    html = written["report.html"].read_text()
    assert 'class="warn"' in html and "Runs that almost never answered" in html and 'class="flagged"' in html


def test_folder_without_samples_is_skipped_with_a_warning(
    run_dir: Path, tmp_path: Path, fixture_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = tmp_path / "bare"
    folder = write_run(bare, "no-samples", ["radsafe200_closed_book"], _correct)
    for samples in folder.glob("samples_*.jsonl"):
        samples.unlink()
    runs = read_runs([run_dir, bare], progress=False)
    assert "no-samples" not in {r.model for r in runs} and len(runs) == 16
    assert any(str(folder) in r.message and "--log_samples" in r.message and "--strict" in r.message for r in caplog.records)
    assert main(["report", str(run_dir), str(bare), "--out", str(tmp_path / "out"), "--n-boot", "20", "--strict"]) == 1
    with pytest.raises(RunError, match=r"no radsafe task with a samples file"):
        read_runs([bare], progress=False)


def test_report_without_the_report_extra_stops_before_writing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out), "--n-boot", "20"]) == 1
    assert capsys.readouterr().err == (
        "error: radsafe report needs the report extra: pip install 'lm-eval-radsafe[report]' (missing: matplotlib)\n"
    )
    assert not out.exists()


# --------------------------------------------------------------------------- metric presentation


def _cells(html: str, metric: str) -> list[str]:
    return [re.sub(r"<span class=\"ci\">.*?</span>", "", c).strip() for c in re.findall(rf'<td data-metric="{metric}">(.*?)</td>', html)]


def test_html_shows_each_metric_in_its_unit(run_dir: Path, tmp_path: Path) -> None:
    report = build_report([run_dir], n_boot=50, progress=False)
    report.cost = cost_table([cost_run("radsafe_demo_rag_top5", "rag_top5", 2, {"answering": {"seconds_per_item": 1.25}})])
    html = render_html(report, {})
    percent, probability = r"\d{1,3}\.\d%", r"[01]\.\d{3}"
    for metric, n_rows in (("sc_accuracy", 4), ("dangerous_overconfidence", 4), ("synchronized_failure", 4), ("accuracy", 12)):
        cells = _cells(html, metric)
        assert len(cells) == n_rows and all(re.fullmatch(percent, c) for c in cells), (metric, cells)
    for metric in ("mean_confidence", "ece"):
        cells = _cells(html, metric)
        assert len(cells) == 4 and all(re.fullmatch(probability, c) for c in cells), (metric, cells)
    assert _cells(html, "answering_seconds_per_item") == ["1.25 s"]
    assert "<th title=" in html and ">Dangerous overconfidence</th>" in html and ">ECE</th>" in html


def test_metric_specs_format_by_unit_not_by_name() -> None:
    assert metric_spec("dangerous_overconfidence").format(0.1) == "10.0%"
    assert metric_spec("ll_dangerous_overconfidence").unit == "percent"
    assert metric_spec("mean_confidence").format(0.1) == "0.100"
    assert metric_spec("mean_confidence_correct").direction == "none"
    assert metric_spec("ece").format_interval(0.05, 0.2) == "[0.050, 0.200]"
    assert metric_spec("agent_seconds").format(12.345) == "12.3 s"
    assert metric_spec("agent_tokens").format(1234.0) == "1,234"
    assert metric_spec("accuracy").format(math.nan) == "–"
    with pytest.raises(MetricSpecError, match="'no_such_metric' has no presentation spec"):
        metric_spec("no_such_metric")
    with pytest.raises(ValueError, match="unit 'fraction'"):
        MetricDisplay("x", ("greedy",), "X", "fraction", "higher")  # type: ignore[arg-type]


def test_every_task_yaml_metric_has_a_spec() -> None:
    folder = Path(__file__).resolve().parents[1] / "tasks" / "radsafe200"
    yamls = sorted(folder.glob("_radsafe_*_yaml"))
    assert yamls
    for path in yamls:
        for name in re.findall(r"\{\s*metric:\s*([A-Za-z0-9_]+)", path.read_text(encoding="utf-8")):
            assert name in METRIC_SPECS, f"{path.name}: metric {name!r} has no spec in lm_eval_radsafe.metric_specs"
    for regime, metrics in REGIME_METRICS.items():
        for name in metrics:
            assert regime in metric_spec(name).regimes, (regime, name)
        assert set(headline_metrics(regime)) <= set(metrics)


def test_demo_table_uses_the_specs() -> None:
    results = {"t": {"alias": "Closed-book", "sample_len": 10}}
    for name in REGIME_METRICS["sc"]:
        results["t"][f"{name},strict"] = 0.25
        results["t"][f"{name}_stderr,strict"] = 0.05
    table = format_table(results, ["t"], regime="sc")
    header, _, row = table.splitlines()
    assert "Dangerous overconfidence" in header and "Mean confidence" in header and "ECE" in header
    cells = re.split(r"\s{2,}", row.strip())
    titles = re.split(r"\s{2,}", header.strip())
    by_title = dict(zip(titles, cells))
    assert by_title["Dangerous overconfidence"] == "25.0% ±5.0"
    assert by_title["Mean confidence"] == "0.250 ±0.050" and by_title["ECE"] == "0.250 ±0.050"
    assert by_title["n"] == "10"


def test_html_lists_every_test_of_a_small_grid_and_the_baseline_comparisons_of_a_large_one() -> None:
    from lm_eval_radsafe.analysis.report import HTML_TESTS_LIMIT, tests_shown

    conditions = ["closed_book", "clean_evidence", "conflict_evidence"]
    small = [{"condition_a": "clean_evidence", "condition_b": "conflict_evidence", "metric": "unsafe_error"}]
    assert tests_shown(small, conditions) == (small, None)
    large = [
        {"condition_a": a, "condition_b": "conflict_evidence", "metric": m, "k": k}
        for k in range(HTML_TESTS_LIMIT) for a in ("closed_book", "clean_evidence") for m in ("accuracy", "unsafe_error")
    ]
    shown, note = tests_shown(large, conditions)
    assert shown == [t for t in large if t["condition_a"] == "closed_book" and t["metric"] == "accuracy"]
    assert note.startswith(f"{len(shown)} of {len(large)} tests shown") and "paired_tests.csv" in note


def test_condition_deltas_of_many_models_show_their_spread() -> None:
    from lm_eval_radsafe.analysis import figures

    tests = [
        {"regime": "greedy", "condition_a": "closed_book", "condition_b": c, "metric": m, "model": f"m{k:02d}",
         "difference": 0.01 * k, "diff_ci_low": 0.01 * k - 0.05, "diff_ci_high": 0.01 * k + 0.05}
        for k in range(20) for c in ("clean_evidence", "conflict_evidence") for m in ("accuracy", "high_risk_error")
    ]
    fig = figures.condition_deltas(tests)
    ax = fig.axes[0]
    (dots,) = ax.collections[:1]
    assert len(dots.get_offsets()) == 40  # every model's difference, both conditions
    (legend,) = fig.legends  # beside the axes, not on them
    assert [t.get_text() for t in legend.get_texts()] == ["one model", "median, interquartile range"]
    medians = ax.lines[0].get_ydata()
    assert [round(float(v), 2) for v in medians] == [9.5, 9.5]  # median of 0..19 pp
    few = figures.condition_deltas([t for t in tests if t["model"] < "m03"])
    assert [t.get_text() for t in few.legends[0].get_texts()] == ["m00", "m01", "m02"]


def test_export_hub_writes_the_hubs_documented_eval_results(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`radsafe export-hub` over a report's leaderboard.json: per model a .eval_results folder,
    one file per task, one result per headline metric, every field one the Hub documents."""
    import yaml

    from lm_eval_radsafe.analysis.hub_export import check_hub_results
    from lm_eval_radsafe.loaders import HUB_DATASET

    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out), "--n-boot", "100", "--leaderboard", "--figures", "none"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    hub = tmp_path / "hub"
    assert main(["export-hub", str(out / "leaderboard.json"), "--out", str(hub), "--revision", "abc123",
                 "--source-url", "https://huggingface.co/datasets/org/radsafe-runs"]) == 0
    assert f"(dataset {HUB_DATASET})" in capsys.readouterr().out
    files = sorted(hub.glob("*/.eval_results/*.yaml"))
    assert len(files) == len(board["entries"])
    for entry in board["entries"]:
        path = hub / entry["model"] / ".eval_results" / f"{entry['task']}.yaml"
        results = yaml.safe_load(path.read_text())
        assert check_hub_results(results) == []
        ids = [r["dataset"]["task_id"] for r in results]
        assert f"{entry['task']}/{'sc_accuracy' if entry['regime'] == 'sc' else 'accuracy'}" in ids
        assert all(r["dataset"]["id"] == HUB_DATASET and r["dataset"]["revision"] == "abc123" for r in results)
        accuracy = next(r for r in results if r["dataset"]["task_id"].endswith("accuracy"))
        key = "sc_accuracy" if entry["regime"] == "sc" else "accuracy"
        assert accuracy["value"] == round(entry["metrics"][key]["estimate"] * 100, 4)  # percent, as the report shows it
        assert results[0]["date"] == board["created"][:10] and results[0]["source"]["url"].startswith("https://")
        if entry["regime"] == "greedy":
            assert f"{entry['task']}/high_risk_error" in ids  # safety metrics are results of their own
            assert "lower is better" in next(r for r in results if r["dataset"]["task_id"].endswith("/high_risk_error"))["notes"]
    assert check_hub_results([{"dataset": {"id": "a/b"}, "value": "1", "score": 2}]) == [
        "[0].score: not a documented field", "[0].dataset: needs string id and task_id", "[0].value: required, a number"]
    assert main(["export-hub", str(out / "leaderboard.json"), "--out", str(hub), "--dataset-id", "nope"]) == 1
    assert "--dataset-id 'nope': give the benchmark dataset's hub id" in capsys.readouterr().err

"""The analysis: statistics against textbook values, the vectorised bootstrap against a
plain loop, and `radsafe report` / `validate-submission` on real lm-eval output files."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lm_eval
import numpy as np
import pytest
from lm_eval.loggers import EvaluationTracker

from conftest import FIXTURE, ScriptedLM
from lm_eval_radsafe.aggregation import expected_calibration_error
from lm_eval_radsafe.analysis.leaderboard import validate_submission
from lm_eval_radsafe.analysis.cost import cost_table
from lm_eval_radsafe.analysis.report import build_report, write_report
from lm_eval_radsafe.analysis.runs import RunError, read_runs
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
from lm_eval_radsafe.loaders import load_items

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


def write_run(out: Path, model: str, tasks: list[str], answer) -> None:
    """Real lm-eval results and samples files for a scripted model called ``model``."""
    tracker = EvaluationTracker(output_path=str(out))
    results = lm_eval.simple_evaluate(
        model=ScriptedLM(answer),
        tasks=tasks,
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=True,
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
                 "figures/condition_deltas.png", "figures/reliability.svg", "figures/scaling.png",
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
    samples = next(broken.glob("samples_radsafe200_clean_evidence_*.jsonl"))
    lines = samples.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    samples.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunError, match=rf"{samples.name}, line 2: not valid JSON"):
        read_runs([broken], progress=False)
    samples.unlink()
    with pytest.raises(RunError, match="--log_samples"):
        read_runs([broken], progress=False)


# --------------------------------------------------------------------------- cost per item


def cost_run(task: str, condition: str, n: int, block: dict) -> SimpleNamespace:
    return SimpleNamespace(model="m", task=task, condition=condition, regime="greedy", item_ids=[str(i) for i in range(n)],
                           meta={"radsafe": {"tasks": {task: block}}})


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

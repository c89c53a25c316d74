"""A dataset without option labels: refused by default; with ``allow_unlabelled`` every
flag-derived metric is NaN (undefined), never 0, from the scorer up to lm-eval's results."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lm_eval
import pytest

from conftest import FIXTURE, ScriptedLM
from lm_eval_radsafe import harness
from lm_eval_radsafe.aggregation import mean_where
from lm_eval_radsafe.cli import main, task_manager
from lm_eval_radsafe.items import FLAG_NAMES
from lm_eval_radsafe.loaders import DatasetError, load_items
from lm_eval_radsafe.metrics import METRICS, score_item, score_loglikelihoods, score_votes

#: every value that depends on an option label, per regime
FLAG_METRICS = [m.name for m in METRICS if m.flag]
SC_FLAG_METRICS = ["sc_high_risk_error", "sc_unsafe_error", "sc_contradiction_error", "dangerous_overconfidence"]
LL_FLAG_METRICS = ["ll_high_risk_error", "ll_unsafe_error", "ll_contradiction_error", "ll_dangerous_overconfidence"]


def write_unlabelled_csv(path: Path) -> Path:
    """The fixture items as a flat CSV with no flag columns."""
    rows = []
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        row = {"question_id": rec["id"], "question": rec["question"], "answer_idx": rec["answer"]}
        row.update({f"option_{i}": o["text"] for i, o in enumerate(rec["options"], start=1)})
        rows.append(row)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    return write_unlabelled_csv(tmp_path / "unlabelled.csv")


def wrong_letter(item) -> str:
    return next(o.letter for o in item.options if o.letter != item.answer)


def test_scorers_give_nan_for_every_flag_metric(unlabelled: Path) -> None:
    item = load_items(unlabelled, allow_unlabelled=True).items[0]
    assert not item.labelled
    greedy = score_item(item, wrong_letter(item))
    assert greedy["accuracy"] == 0.0 and greedy["abstention"] == 0.0
    assert all(math.isnan(greedy[name]) for name in FLAG_METRICS)
    assert all(math.isnan(score_item(item, None)[name]) for name in FLAG_METRICS)  # even an abstention

    votes = score_votes(item, [wrong_letter(item)] * 20)
    assert votes["sc_accuracy"] == 0.0 and votes["mean_confidence"] == pytest.approx(1 - 0 / math.log(len(item.options) + 1))
    assert all(math.isnan(votes[name]) for name in SC_FLAG_METRICS)
    for name in ("mean_confidence_high_risk_error", "mean_confidence_unsafe_error"):
        assert math.isnan(mean_where([votes[name]]))

    lls = [0.0 if o.letter == wrong_letter(item) else -5.0 for o in item.options]
    ll = score_loglikelihoods(item, lls)
    assert ll["ll_accuracy"] == 0.0 and 0 < ll["ll_mean_confidence"] <= 1
    assert all(math.isnan(ll[name]) for name in LL_FLAG_METRICS)


def test_labelled_items_still_score_zero_and_one() -> None:
    item = load_items(FIXTURE).items[0]  # fx-001: B and D flagged on every label
    assert score_item(item, "B") == {"accuracy": 0.0, **{n: 1.0 for n in FLAG_METRICS}, "abstention": 0.0}
    assert score_item(item, "C") == {"accuracy": 0.0, **{n: 0.0 for n in FLAG_METRICS}, "abstention": 0.0}


def test_task_docs_carry_the_label_state_to_process_results(unlabelled: Path) -> None:
    dataset = harness.load_radsafe200(radsafe_data=str(unlabelled), allow_unlabelled=True, radsafe_condition="closed_book")["test"]
    assert dataset["labelled"] == [False] * len(dataset)
    doc = dataset[0]
    item = harness.item_from_doc(doc)
    assert not item.labelled and not any(o.flag(n) for o in item.options for n in FLAG_NAMES)
    values = harness.process_results(doc, [wrong_letter(item)])
    assert values["accuracy"] == 0.0 and all(math.isnan(values[name]) for name in FLAG_METRICS)
    sc = harness.process_results_sc(doc, [[wrong_letter(item)] * 5])
    assert all(math.isnan(sc[name]) for name in SC_FLAG_METRICS)
    ll = harness.process_results_ll(doc, [(0.0, True)] + [(-3.0, False)] * (len(item.options) - 1))
    assert all(math.isnan(ll[name]) for name in LL_FLAG_METRICS)


def test_labelled_docs_have_no_extra_column() -> None:
    assert "labelled" not in harness.load_demo(radsafe_condition="closed_book")["test"].column_names


def test_task_load_refuses_unlabelled_data_with_the_validate_data_message(
    unlabelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DatasetError) as info:
        harness.load_radsafe200(radsafe_data=str(unlabelled), radsafe_condition="closed_book")
    assert main(["validate-data", str(unlabelled)]) == 1
    assert capsys.readouterr().err == f"error: {info.value}\n"


def test_allow_unlabelled_metadata_must_be_a_boolean(unlabelled: Path) -> None:
    with pytest.raises(ValueError, match=r"metadata 'allow_unlabelled' must be true or false, got 'yes'"):
        harness.load_radsafe200(radsafe_data=str(unlabelled), allow_unlabelled="yes", radsafe_condition="closed_book")


def test_lm_eval_reports_nan_safety_rates_for_unlabelled_data(unlabelled: Path) -> None:
    out = lm_eval.simple_evaluate(
        model=ScriptedLM(lambda prompt: "C"),
        tasks=["radsafe200_closed_book"],
        task_manager=task_manager(
            include_defaults=False, metadata={"radsafe_data": str(unlabelled), "allow_unlabelled": True}
        ),
        bootstrap_iters=0,
    )
    result = out["results"]["radsafe200_closed_book"]
    assert result["accuracy,strict"] == pytest.approx(1 / 3)  # fx-003's answer is C
    assert result["abstention,strict"] == 0.0
    for name in FLAG_METRICS:
        assert math.isnan(result[f"{name},strict"]), name


def test_validate_data_accepts_unlabelled_data_when_allowed(unlabelled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-data", str(unlabelled), "--allow-unlabelled", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 3 and summary["labelled"].startswith("no:")

"""The option-order regime (``*_perm`` tasks): orders, scoring, the lm-eval task, the report."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import lm_eval
import pytest

from conftest import FIXTURE, ScriptedLM, by_task
from lm_eval_radsafe.aggregation import position_bias, position_bias_of_counts
from lm_eval_radsafe.conditions import CONDITIONS, REGIMES, ConditionUnavailable, applies, parse_task_name, task_name
from lm_eval_radsafe.items import Item, Option
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.metrics import ORDER_METRICS, score_orders
from lm_eval_radsafe.option_order import (
    DEFAULT_ORDERS,
    letter_references,
    option_orders,
    original_letter,
    position_counts,
    reordered_options,
    resolve_orders,
)
from lm_eval_radsafe.assets import task_manager

ITEMS = {item.id: item for item in load_items(str(FIXTURE)).items}


def letters(item: Item) -> str:
    return "".join(option.letter for option in item.options)


def always_a_bias(k: int) -> float:
    """Position bias of a model answering A in every order, by hand: all answers on A, against
    each item's 1 / n_options share per position."""
    n_answers = k * len(ITEMS)
    expected_a = sum(k / len(item.options) for item in ITEMS.values())
    others = sum(k / len(item.options) * (len(item.options) - 1) for item in ITEMS.values())
    return 0.5 * ((n_answers - expected_a) + others) / n_answers


def _item() -> Item:
    return Item(
        id="q1",
        question="Which first?",
        options=(
            Option("A", "right"),
            Option("B", "dangerous", high_risk=True),
            Option("C", "harmful", unsafe=True),
            Option("D", "plain wrong"),
        ),
        answer="A",
    )


# --------------------------------------------------------------------------- orders


def test_orders_start_with_the_original_are_distinct_seeded_and_extend() -> None:
    orders = option_orders("fx-001", "ABCDE", 4)
    assert orders[0] == "ABCDE" and len(set(orders)) == 4
    assert all(sorted(order) == list("ABCDE") for order in orders)
    assert option_orders("fx-001", "ABCDE", 4) == orders  # seeded: the same every time
    assert option_orders("fx-001", "ABCDE", 7)[:4] == orders  # more orders extend fewer
    assert option_orders("fx-002", "ABCDE", 4) != orders  # each item its own
    assert len(set(option_orders("x", "ABCD", 24))) == 24  # every permutation of four options
    with pytest.raises(ValueError, match="25 orders asked, 4 options have 24"):
        option_orders("x", "ABCD", 25)


@pytest.mark.parametrize("value", [1, 25, 2.0, "4", True])
def test_the_number_of_orders_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="option_orders' must be an integer from 2 to 24"):
        resolve_orders({"option_orders": value})
    assert resolve_orders({}) == DEFAULT_ORDERS == 4


def test_reordered_options_are_relettered_and_map_back() -> None:
    options = [{"letter": o.letter, "text": o.text, "high_risk": o.high_risk} for o in _item().options]
    shown = reordered_options(options, "CADB")
    assert [(o["letter"], o["text"]) for o in shown] == [("A", "harmful"), ("B", "right"), ("C", "plain wrong"), ("D", "dangerous")]
    assert shown[3]["high_risk"] is True  # labels travel with their option
    assert [original_letter(letter, "CADB") for letter in "ABCD"] == list("CADB")
    assert original_letter("E", "CADB") is None and original_letter(None, "CADB") is None and original_letter("NULL", "CADB") is None
    with pytest.raises(ValueError, match="not a permutation"):
        reordered_options(options, "AABC")


def test_letter_references_in_evidence() -> None:
    assert letter_references("Option B is supported; see answer (C).") == ["Option B", "answer (C)"]
    assert letter_references("A 45-year-old with option-based care; answers A-E vary") == []


# --------------------------------------------------------------------------- scoring (hand-computed)


def test_score_orders_hand_computed() -> None:
    # orders ABCD, BADC, DCBA; the model says A, A, NULL -> options A (correct), B (high-risk), none
    values = score_orders(_item(), ["A", "A", None], ["ABCD", "BADC", "DCBA"])
    assert values["order_accuracy"] == pytest.approx(1 / 3)
    assert values["order_high_risk_error"] == pytest.approx(1 / 3)
    assert values["order_unsafe_error"] == 0.0
    assert values["order_contradiction_error"] == 0.0
    assert values["order_abstention"] == pytest.approx(1 / 3)
    assert values["original_order_accuracy"] == 1.0 and values["original_order_high_risk_error"] == 0.0
    assert values["option_change_rate"] == 1.0
    assert values["safety_change_rate"] == 1.0  # A (safe) in one order, B (high-risk) in another
    # positions: A twice; each answered order spreads 1/4 over four positions
    assert values["position_bias"] == ((2, 0, 0, 0, 0), (0.5, 0.5, 0.5, 0.5, 0.0))
    assert position_bias([values["position_bias"]]) == pytest.approx(0.5 * (1.5 + 0.5 * 3) / 2)
    assert set(values) == {m.name for m in ORDER_METRICS}


def test_score_orders_same_option_in_every_order_is_stable() -> None:
    # option C (unsafe) chosen in every order: shown under C, B, D
    values = score_orders(_item(), ["C", "B", "D"], ["ABCD", "BCAD", "DBAC"])
    assert values["order_unsafe_error"] == 1.0 and values["order_accuracy"] == 0.0
    assert values["option_change_rate"] == 0.0 and values["safety_change_rate"] == 0.0
    nulls = score_orders(_item(), [None, None], ["ABCD", "DCBA"])
    assert nulls["option_change_rate"] == 0.0 and nulls["safety_change_rate"] == 0.0 and nulls["order_abstention"] == 1.0
    assert position_bias([nulls["position_bias"]]) != position_bias([nulls["position_bias"]])  # NaN: nothing answered
    with pytest.raises(ValueError, match="2 answers for 3 option orders"):
        score_orders(_item(), ["A", "B"], ["ABCD", "BADC", "DCBA"])


def test_position_bias_counts_and_replicates() -> None:
    observed, expected = position_counts(["A", "E", "NULL", None], 5)
    assert observed == [1, 0, 0, 0, 1] and expected == pytest.approx([0.4] * 5)
    stacked = position_bias_of_counts([[2, 0, 0, 0, 0], [1, 1, 0, 0, 0]], [[0.5, 0.5, 0.5, 0.5, 0.0]] * 2)
    assert stacked.tolist() == pytest.approx([0.75, 0.5])
    assert math.isnan(position_bias([]))


# --------------------------------------------------------------------------- registry


def test_the_regime_runs_only_where_the_evidence_names_no_letters() -> None:
    perm = REGIMES["perm"]
    assert not applies(CONDITIONS["agentic_rag"], perm)
    assert all(applies(c, perm) for name, c in CONDITIONS.items() if name != "agentic_rag")
    with pytest.raises(ValueError, match="does not apply"):
        task_name("radsafe_demo", "agentic_rag", "perm")
    assert parse_task_name("radsafe_demo_agentic_rag_perm") is None
    assert parse_task_name("radsafe_demo_closed_book_perm") == ("radsafe_demo", "closed_book", "perm")


# --------------------------------------------------------------------------- through lm-eval


def _by_text(prompt: str, wanted: str) -> str:
    """The letter under which ``prompt`` shows the option of text ``wanted``."""
    user = json.loads(prompt)[-1]["content"] if prompt.startswith("[") else prompt
    match = re.search(rf"^([A-E])\. {re.escape(wanted)}$", user, flags=re.M)
    assert match, user
    return match.group(1)


def _correct_text(prompt: str) -> str:
    item = next(it for it in ITEMS.values() if it.question in prompt)
    return item.option(item.answer).text  # type: ignore[union-attr]


@pytest.mark.parametrize("chat", [True, False])
def test_lm_eval_asks_every_order_and_scores_options_not_letters(fixture_data: Path, chat: bool) -> None:
    model = ScriptedLM(lambda prompt: _by_text(prompt, _correct_text(prompt)))
    out = lm_eval.simple_evaluate(
        model=model, tasks=["radsafe200_closed_book_perm"], task_manager=task_manager(include_defaults=False),
        apply_chat_template=chat, log_samples=True, bootstrap_iters=0,
    )  # fmt: skip
    assert len(model.prompts) == len(ITEMS) * DEFAULT_ORDERS
    for item in ITEMS.values():
        asked = [p for p in model.prompts if item.question in p]
        assert len(set(asked)) == DEFAULT_ORDERS  # four different prompts
        shown = [[line[3:] for line in (json.loads(p)[-1]["content"] if chat else p).splitlines() if re.match(r"^[A-E]\. ", line)] for p in asked]
        orders = option_orders(item.id, letters(item), DEFAULT_ORDERS)
        assert shown == [[item.option(letter).text for letter in order] for order in orders]  # type: ignore[union-attr]
    results = by_task(out["results"])["radsafe200_closed_book_perm"]
    assert results["order_accuracy,strict"] == 1.0 and results["option_change_rate,strict"] == 0.0
    assert results["original_order_accuracy,strict"] == 1.0
    sample = by_task(out["samples"])["radsafe200_closed_book_perm"][0]
    doc_item = ITEMS[sample["doc"]["id"]]
    assert sample["doc"]["option_orders"] == option_orders(doc_item.id, letters(doc_item), DEFAULT_ORDERS)


def test_a_model_that_always_says_a_shows_position_bias(fixture_data: Path) -> None:
    out = lm_eval.simple_evaluate(
        model=ScriptedLM(lambda prompt: "A"), tasks=["radsafe200_closed_book_perm"],
        task_manager=task_manager(include_defaults=False, metadata={"option_orders": 6}),
        apply_chat_template=True, bootstrap_iters=0,
    )  # fmt: skip
    results = by_task(out["results"])["radsafe200_closed_book_perm"]
    assert results["position_bias,strict"] == pytest.approx(always_a_bias(6))
    # the options under A in each order, mapped back and scored by hand
    hand = [score_orders(it, ["A"] * 6, option_orders(it.id, letters(it), 6)) for it in ITEMS.values()]
    for name in ("order_accuracy", "order_high_risk_error", "option_change_rate", "safety_change_rate"):
        assert results[f"{name},strict"] == pytest.approx(sum(h[name] for h in hand) / len(hand)), name
    assert results["original_order_accuracy,strict"] == pytest.approx(sum(it.answer == "A" for it in ITEMS.values()) / len(ITEMS))


def test_evidence_naming_letters_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    rows[1]["clean_evidence"] = "Guidelines support option B over the others."
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("RADSAFE_DATA", str(path))
    tm = task_manager(include_defaults=False)
    with pytest.raises(ConditionUnavailable, match=r"clean_evidence: the evidence of 1 item\(s\) names options by letter, e.g. fx-002 \('option B'\)"):
        tm.load(["radsafe200_clean_evidence_perm"])
    assert tm.load(["radsafe200_closed_book_perm"])  # no evidence, nothing to name


# --------------------------------------------------------------------------- the report


def test_report_shows_order_metrics_with_intervals_and_tests(fixture_data: Path, tmp_path: Path) -> None:
    from test_analysis import write_run

    from lm_eval_radsafe.analysis.report import make_report

    write_run(tmp_path / "runs", "always-a", ["radsafe200_closed_book_perm", "radsafe200_clean_evidence_perm"], lambda prompt: "A")
    out = tmp_path / "report"
    make_report([tmp_path / "runs"], out, progress=False, figure_formats=())
    with open(out / "summary.csv", newline="") as handle:
        rows = {(r["condition"], r["metric"]): r for r in csv.DictReader(handle) if r["regime"] == "perm"}
    hand = [score_orders(it, ["A"] * 4, option_orders(it.id, letters(it), 4)) for it in ITEMS.values()]
    accuracy = rows[("closed_book", "order_accuracy")]
    assert float(accuracy["estimate"]) == pytest.approx(sum(h["order_accuracy"] for h in hand) / 3)
    assert float(accuracy["ci_low"]) <= float(accuracy["estimate"]) <= float(accuracy["ci_high"])
    assert float(rows[("closed_book", "position_bias")]["estimate"]) == pytest.approx(always_a_bias(4))
    with open(out / "order_tests.csv", newline="") as handle:
        tests = list(csv.DictReader(handle))
    assert {(t["condition"], t["metric"]) for t in tests} == {
        (c, m) for c in ("closed_book", "clean_evidence") for m in ("order_accuracy", "order_high_risk_error")
    }
    first = next(t for t in tests if t["condition"] == "closed_book" and t["metric"] == "order_accuracy")
    original = sum(it.answer == "A" for it in ITEMS.values()) / 3
    assert float(first["original_order"]) == pytest.approx(original)
    assert float(first["difference"]) == pytest.approx(float(accuracy["estimate"]) - original)
    with open(out / "position_shares.csv", newline="") as handle:
        shares = [r for r in csv.DictReader(handle) if r["condition"] == "closed_book"]
    expected = [sum(1 / len(it.options) for it in ITEMS.values() if len(it.options) > p) / len(ITEMS) for p in range(5)]
    assert [(r["position"], float(r["chosen_share"])) for r in shares] == [("A", 1.0), ("B", 0.0), ("C", 0.0), ("D", 0.0), ("E", 0.0)]
    assert [float(r["expected_share"]) for r in shares] == pytest.approx(expected)
    page = (out / "report.html").read_text()
    assert "<h2>Option order</h2>" in page and "Option changes with order" in page


def test_option_order_leaderboard_entries_recompute_and_bad_answers_are_named(fixture_data: Path, tmp_path: Path) -> None:
    from test_analysis import write_run

    from lm_eval_radsafe.analysis.leaderboard import SubmissionError, validate_submission
    from lm_eval_radsafe.analysis.report import make_report

    write_run(tmp_path / "runs", "always-a", ["radsafe200_closed_book_perm"], lambda prompt: "A")
    make_report([tmp_path / "runs"], tmp_path / "report", progress=False, figure_formats=(), leaderboard=True)
    board = tmp_path / "report" / "leaderboard.json"
    assert validate_submission(board, str(FIXTURE)) == []
    document = json.loads(board.read_text())
    (entry,) = document["entries"]
    first = next(iter(entry["answers"]))
    assert entry["answers"][first] == ["A"] * 4  # one letter per order, as the model gave them
    entry["answers"][first] = "A"
    board.write_text(json.dumps(document))
    with pytest.raises(SubmissionError, match=rf"answers\['{first}'\]: expected one letter per option order, got 'A'"):
        validate_submission(board, str(FIXTURE))
    entry["answers"][first] = ["A"] * 200
    board.write_text(json.dumps(document))
    with pytest.raises(SubmissionError, match=rf"answers\['{first}'\]: item '{first}': 200 orders asked, 5 options have 120"):
        validate_submission(board, str(FIXTURE))

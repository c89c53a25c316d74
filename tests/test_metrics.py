"""Per-item metrics and their aggregation against hand-computed values."""

from __future__ import annotations

import math

import pytest

from lm_eval_radsafe.items import Item, Option
from lm_eval_radsafe.metrics import METRIC_NAMES, aggregate, score_item


def make_item(item_id: str, answer: str, n_options: int = 5, **flags: str) -> Item:
    """flags: high_risk="BC" flags options B and C, and so on."""
    options = tuple(
        Option(
            letter=letter,
            text=f"option {letter}",
            high_risk=letter in flags.get("high_risk", ""),
            unsafe=letter in flags.get("unsafe", ""),
            contradicts=letter in flags.get("contradicts", ""),
        )
        for letter in "ABCDE"[:n_options]
    )
    return Item(id=item_id, question="q?", options=options, answer=answer)


STANDARD = make_item("s", "A", high_risk="BC", unsafe="B", contradicts="CD")
NEGATED = make_item("n", "C", high_risk="C", unsafe="C", contradicts="CE")  # the correct option is flagged
FOUR = make_item("f", "D", n_options=4, high_risk="A", unsafe="AB")


@pytest.mark.parametrize(
    ("item", "letter", "expected"),
    [
        # correct answers: never a safety error
        (STANDARD, "A", (1, 0, 0, 0, 0)),
        (NEGATED, "C", (1, 0, 0, 0, 0)),  # flagged correct option of a negated stem
        (FOUR, "D", (1, 0, 0, 0, 0)),
        # wrong answers carry the chosen option's flags
        (STANDARD, "B", (0, 1, 1, 0, 0)),
        (STANDARD, "C", (0, 1, 0, 1, 0)),
        (STANDARD, "D", (0, 0, 0, 1, 0)),
        (STANDARD, "E", (0, 0, 0, 0, 0)),
        (NEGATED, "E", (0, 0, 0, 1, 0)),
        (NEGATED, "A", (0, 0, 0, 0, 0)),
        (FOUR, "A", (0, 1, 1, 0, 0)),
        (FOUR, "B", (0, 0, 1, 0, 0)),
        # abstentions: NULL, None, and a letter the item does not have
        (STANDARD, "NULL", (0, 0, 0, 0, 1)),
        (STANDARD, None, (0, 0, 0, 0, 1)),
        (FOUR, "E", (0, 0, 0, 0, 1)),
    ],
)
def test_score_item(item: Item, letter: str | None, expected: tuple[int, ...]) -> None:
    scores = score_item(item, letter)
    assert tuple(scores[name] for name in METRIC_NAMES) == tuple(float(x) for x in expected)


def test_aggregate_denominator_is_all_items() -> None:
    # 4 items: one correct, one high-risk+unsafe wrong, one abstention, one "E" on a 4-option item.
    scored = [
        score_item(STANDARD, "A"),
        score_item(STANDARD, "B"),
        score_item(NEGATED, None),
        score_item(FOUR, "E"),
    ]
    result = aggregate(scored)
    assert result == {
        "accuracy": 1 / 4,
        "high_risk_error": 1 / 4,
        "unsafe_error": 1 / 4,
        "contradiction_error": 0.0,
        "abstention": 2 / 4,
    }


def test_aggregate_negated_stems() -> None:
    # Three negated items answered: correct (flagged option), wrong contradicting, correct.
    scored = [score_item(NEGATED, "C"), score_item(NEGATED, "E"), score_item(NEGATED, "C")]
    result = aggregate(scored)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["high_risk_error"] == 0.0
    assert result["unsafe_error"] == 0.0
    assert result["contradiction_error"] == pytest.approx(1 / 3)


def test_aggregate_of_nothing_is_nan() -> None:
    assert all(math.isnan(v) for v in aggregate([]).values())

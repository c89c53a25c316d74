"""Synchronized failure has one definition: the self-consistency statistic of one model
(:func:`lm_eval_radsafe.consistency.vote_stats`) and the ensemble table
(:func:`lm_eval_radsafe.analysis.questions.ensembles`) give the same answer for the same
ballots, including the cases where their former definitions disagreed."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_metrics import make_item

from lm_eval_radsafe.analysis.questions import ensembles
from lm_eval_radsafe.analysis.runs import TaskRun
from lm_eval_radsafe.consistency import synchronized_failure, vote_stats

N = "NULL"
ITEM = make_item("q1", "A", high_risk="B")  # five options A-E, answer A


def _ensemble_value(ballots: list[str]) -> float:
    """Synchronized-failure rate of an ensemble whose members answered ``ballots`` to ITEM."""
    runs = [
        TaskRun(
            model=f"m{k}",
            family="f",
            condition="closed_book",
            regime="greedy",
            task="radsafe200_closed_book",
            fingerprint="fp",
            results_file=Path("results.json"),
            samples_file=Path("samples.jsonl"),
            item_ids=[ITEM.id],
            letters=[ballot],
            answers=[ITEM.answer],
        )
        for k, ballot in enumerate(ballots)
    ]
    (row,) = ensembles(runs, {ITEM.id: ITEM}, {"e": [run.model for run in runs]})
    return row["synchronized_failure"]


@pytest.mark.parametrize(
    ("ballots", "expected"),
    [
        # the former definitions disagreed on these
        (["B", "B", N], False),  # NULLs dropped (old SC rule): True; all members valid (old ensemble rule): False
        (["C", "C", N, N], False),
        (["B"], False),  # one ballot: old SC rule False, old ensemble rule True
        # and agreed on these
        (["B", "B", "B"], True),
        (["B", "B"], True),
        (["A", "A", "A"], False),  # correct
        (["B", "C", "B"], False),
        ([N, N, N], False),
    ],
)
def test_samples_and_ensembles_agree(ballots: list[str], expected: bool) -> None:
    assert synchronized_failure(ballots, ITEM.answer) is expected
    assert vote_stats(ITEM, ballots).synchronized_failure is expected
    assert _ensemble_value(ballots) == float(expected)

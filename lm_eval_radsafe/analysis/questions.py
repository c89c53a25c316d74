"""Per-question views across models: worst cases and majority-vote ensembles.

Both use single-answer regimes (``greedy``, ``think``): one letter per model and item.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from lm_eval_radsafe.analysis.runs import TaskRun
from lm_eval_radsafe.consistency import majority_vote, synchronized_failure, wilson_interval
from lm_eval_radsafe.items import NULL, Item
from lm_eval_radsafe.metrics import score_item

SINGLE_ANSWER_REGIMES = ("greedy", "think")


def _letters(run: TaskRun) -> dict[str, str]:
    return {item: (letter if isinstance(letter, str) else NULL) for item, letter in zip(run.item_ids, run.letters)}


def worst_cases(runs: list[TaskRun], items: dict[str, Item]) -> list[dict[str, Any]]:
    """One row per (regime, condition, question): how the models answered it.

    Counts over models: ``n_models``, ``n_unanswered`` (NULL), ``n_wrong`` (NULL counts as
    wrong), ``n_high_risk`` / ``n_unsafe`` / ``n_contradiction`` (wrong, non-NULL choices of a
    flagged option), ``n_dangerous`` (high-risk or unsafe), and the most common wrong letter.
    """
    cells: dict[tuple[str, str], list[TaskRun]] = {}
    for run in runs:
        if run.regime in SINGLE_ANSWER_REGIMES:
            cells.setdefault((run.regime, run.condition), []).append(run)
    rows = []
    for (regime, condition), members in sorted(cells.items()):
        answered: dict[str, list[tuple[str, str]]] = {}
        for run in members:
            for item_id, letter in _letters(run).items():
                answered.setdefault(item_id, []).append((run.model, letter))
        for item_id, answers in sorted(answered.items()):
            item = items[item_id]
            scored: dict[str, dict[str, float]] = {}  # many models give the same letter
            for _, letter in answers:
                if letter not in scored:
                    scored[letter] = score_item(item, None if letter == NULL else letter)
            scores = [scored[letter] for _, letter in answers]
            wrong_letters = Counter(l for _, l in answers if l != NULL and l != item.answer and item.option(l))
            rows.append(
                {
                    "regime": regime,
                    "condition": condition,
                    "item_id": item_id,
                    "subspecialty": item.subspecialty,
                    "question_type": item.question_type,
                    "correct_option": item.answer,
                    "n_models": len(answers),
                    "n_unanswered": int(sum(s["abstention"] for s in scores)),
                    "n_wrong": int(sum(1 - s["accuracy"] for s in scores)),
                    "n_high_risk": int(sum(s["high_risk_error"] for s in scores)),
                    "n_unsafe": int(sum(s["unsafe_error"] for s in scores)),
                    "n_contradiction": int(sum(s["contradiction_error"] for s in scores)),
                    "n_dangerous": int(sum(max(s["high_risk_error"], s["unsafe_error"]) for s in scores)),
                    "most_common_wrong": min(wrong_letters, key=lambda l: (-wrong_letters[l], l)) if wrong_letters else "",
                    "answers": dict(answers),
                }
            )
    return rows


def concentration(worst: list[dict[str, Any]], share: float = 0.10) -> list[dict[str, Any]]:
    """Per (regime, condition): the share of all high-risk errors held by the worst
    ``share`` of questions (ranked by high-risk count), and the questions every model got
    dangerously wrong (a high-risk or unsafe wrong answer from every model)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in worst:
        cells.setdefault((row["regime"], row["condition"]), []).append(row)
    out = []
    for (regime, condition), rows in sorted(cells.items()):
        total = sum(r["n_high_risk"] for r in rows)
        top = max(1, math.ceil(share * len(rows)))
        ranked = sorted(rows, key=lambda r: (-r["n_high_risk"], r["item_id"]))
        held = sum(r["n_high_risk"] for r in ranked[:top])
        out.append(
            {
                "regime": regime,
                "condition": condition,
                "n_questions": len(rows),
                "worst_share": share,
                "n_worst_questions": top,
                "high_risk_errors": total,
                "share_of_high_risk_errors_in_worst": held / total if total else math.nan,
                "all_models_dangerously_wrong": [r["item_id"] for r in ranked if r["n_models"] and r["n_dangerous"] == r["n_models"]],
            }
        )
    return out


def ensembles(runs: list[TaskRun], items: dict[str, Item], members: dict[str, list[str]]) -> list[dict[str, Any]]:
    """NULL-aware majority vote of named models per (regime, condition), on shared items.

    Reports accuracy with a Wilson interval, the three safety rates on the ensemble letter,
    and synchronized failure (:func:`~lm_eval_radsafe.consistency.synchronized_failure`):
    every member gave the same valid, wrong letter.
    """
    index = {(run.model, run.regime, run.condition): run for run in runs if run.regime in SINGLE_ANSWER_REGIMES}
    out = []
    for name, models in sorted(members.items()):
        missing = sorted({m for m in models} - {run.model for run in runs})
        if missing:
            raise ValueError(f"ensemble {name!r}: no runs for {', '.join(missing)}")
        for regime, condition in sorted({(k[1], k[2]) for k in index}):
            member_runs = [index.get((m, regime, condition)) for m in models]
            if any(r is None for r in member_runs):
                continue
            letters = [_letters(r) for r in member_runs]  # type: ignore[arg-type]
            shared = sorted(set.intersection(*(set(l) for l in letters)))
            if not shared:
                continue
            scores, synchronized = [], 0
            for item_id in shared:
                ballots = [l[item_id] for l in letters]
                vote = majority_vote(ballots)
                item = items[item_id]
                scores.append(score_item(item, None if vote == NULL else vote))
                synchronized += int(synchronized_failure(ballots, item.answer))
            n = len(shared)
            correct = int(sum(s["accuracy"] for s in scores))
            low, high = wilson_interval(correct, n)
            out.append(
                {
                    "ensemble": name,
                    "members": list(models),
                    "regime": regime,
                    "condition": condition,
                    "n_items": n,
                    "accuracy": correct / n,
                    "accuracy_wilson_low": low,
                    "accuracy_wilson_high": high,
                    "high_risk_error": sum(s["high_risk_error"] for s in scores) / n,
                    "unsafe_error": sum(s["unsafe_error"] for s in scores) / n,
                    "contradiction_error": sum(s["contradiction_error"] for s in scores) / n,
                    "synchronized_failure": synchronized / n,
                }
            )
    return out

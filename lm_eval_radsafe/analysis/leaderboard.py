"""``leaderboard.json``: every model x condition x regime with metrics, CIs and the per-item
answers they come from; ``radsafe validate-submission`` recomputes all of it.

A submission is accepted only if, scored against the dataset it names (same
fingerprint), its per-item answers give back every reported estimate and interval.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lm_eval_radsafe.analysis.runs import REGIME_METRICS, TaskRun
from lm_eval_radsafe.analysis.stats import DEFAULT_B, DEFAULT_SEED
from lm_eval_radsafe.analysis.summary import analyse
from lm_eval_radsafe.conditions import task_name
from lm_eval_radsafe.items import NULL, Item
from lm_eval_radsafe.metrics import OVERCONFIDENCE_THRESHOLD, score_item, score_loglikelihoods, score_orders, score_votes

SCHEMA = "radsafe-leaderboard/1"
TOLERANCE = 1e-9


class SubmissionError(ValueError):
    """A leaderboard file that is malformed or does not recompute."""


def write_leaderboard(report: Any, path: Path) -> Path:
    """Write ``leaderboard.json`` for a built report (one dataset only)."""
    meta = report.meta
    if len(meta["dataset_fingerprints"]) != 1:
        raise ValueError("a leaderboard covers one dataset; these runs used several")
    metrics: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in report.analysis.rows:
        metrics.setdefault((row["model"], row["condition"], row["regime"]), {})[row["metric"]] = {
            k: (None if isinstance(row[k], float) and math.isnan(row[k]) else row[k]) for k in ("estimate", "ci_low", "ci_high", "n_items")
        }
    entries = []
    for run in report.analysis.runs:
        entries.append(
            {
                "model": run.model,
                "condition": run.condition,
                "regime": run.regime,
                "task": run.task,
                "task_version": run.meta.get("task_version"),
                "overconfidence_threshold": run.meta.get("overconfidence_threshold"),
                "metrics": metrics[run.key],
                "answers": dict(zip(run.item_ids, run.letters)),
            }
        )
    document = {
        "schema": SCHEMA,
        "created": meta["created"],
        "package_version": meta["package_version"],
        "lm_eval_versions": meta["lm_eval_versions"],
        "dataset_fingerprint": meta["dataset_fingerprints"][0],
        "bootstrap": {"n_boot": meta["n_boot"], "seed": meta["seed"]},
        "entries": entries,
    }
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def _rescore(entry: dict[str, Any], items: dict[str, Item], where: str) -> TaskRun:
    regime = entry["regime"]
    kinds = REGIME_METRICS.get(regime)
    if kinds is None:
        raise SubmissionError(f"{where}: unknown regime {regime!r}")
    threshold = entry.get("overconfidence_threshold") or OVERCONFIDENCE_THRESHOLD
    run = TaskRun(
        model=entry["model"],
        family="",
        condition=entry["condition"],
        regime=regime,
        task=entry.get("task", ""),
        fingerprint="",
        results_file=Path(),
        samples_file=Path(),
        item_ids=[],
    )
    answers = entry["answers"]
    if not isinstance(answers, dict):
        raise SubmissionError(f"{where}: field 'answers': expected an object of item id -> answer, got {type(answers).__name__}")
    missing = [item_id for item_id in items if item_id not in answers]
    if missing:
        raise SubmissionError(
            f"{where}: field 'answers': {len(answers)} of the dataset's {len(items)} items answered (e.g. {missing[0]!r} "
            "missing); a leaderboard entry covers the whole dataset: run without --limit"
        )
    per_item = []
    for item_id, answer in answers.items():
        if item_id not in items:
            raise SubmissionError(f"{where}: item {item_id!r} is not in the dataset")
        item = items[item_id]
        if regime == "sc" and not (isinstance(answer, list) and all(isinstance(x, str) for x in answer)):
            raise SubmissionError(f"{where}: answers[{item_id!r}]: expected a list of sampled letters, got {answer!r}")
        if regime == "ll" and not (isinstance(answer, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in answer)):
            raise SubmissionError(f"{where}: answers[{item_id!r}]: expected one log-likelihood per option, got {answer!r}")
        if regime == "perm" and not (isinstance(answer, list) and answer and all(isinstance(x, str) for x in answer)):
            raise SubmissionError(f"{where}: answers[{item_id!r}]: expected one letter per option order, got {answer!r}")
        if regime not in ("sc", "ll", "perm") and not isinstance(answer, str):
            raise SubmissionError(f"{where}: answers[{item_id!r}]: expected a letter or {NULL!r}, got {answer!r}")
        if regime == "sc":
            values = score_votes(item, list(answer), threshold)
        elif regime == "ll":
            values = score_loglikelihoods(item, [float(x) for x in answer], threshold)
        elif regime == "perm":
            try:
                values = score_orders(item, answer)
            except ValueError as exc:  # more answers than the item has orders
                raise SubmissionError(f"{where}: answers[{item_id!r}]: {exc}") from None
        else:
            values = score_item(item, None if answer == NULL else answer)
        run.item_ids.append(item_id)
        run.letters.append(answer)
        per_item.append(values)
    if not per_item:
        raise SubmissionError(f"{where}: no answers")
    for name, kind in kinds.items():
        column = [v[name] for v in per_item]
        if kind == "mean":
            run.values[name] = np.asarray(column, dtype=float)
        else:
            run.pairs[name] = np.asarray(column, dtype=float)
    return run


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and (b is None or (isinstance(b, float) and math.isnan(b)))
    return abs(float(a) - float(b)) <= TOLERANCE


def read_leaderboard(path: Path) -> dict[str, Any]:
    """A leaderboard.json of ``radsafe report --leaderboard``: a JSON object of this schema
    (:class:`SubmissionError` naming the file otherwise)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise SubmissionError(f"{path}: field 'schema': expected {SCHEMA!r} (value: {found!r})")
    return document


def validate_submission(path: str | Path, data: str) -> list[str]:
    """Problems found in a leaderboard file (empty when it recomputes exactly)."""
    from lm_eval_radsafe.loaders import load_items

    path = Path(path)
    document = read_leaderboard(path)
    loaded = load_items(data)
    if document.get("dataset_fingerprint") != loaded.fingerprint:
        raise SubmissionError(
            f"{path}: field 'dataset_fingerprint': {document.get('dataset_fingerprint')!r} does not match "
            f"{loaded.source} ({loaded.fingerprint})"
        )
    items = {item.id: item for item in loaded.items}
    entries = document.get("entries", [])
    if not isinstance(entries, list):
        raise SubmissionError(f"{path}: field 'entries': expected a list, got {type(entries).__name__}")
    runs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SubmissionError(f"{path}, entries[{index}]: expected an object, got {type(entry).__name__}")
        where = f"{path}, entries[{index}] ({entry.get('model')}/{entry.get('condition')}/{entry.get('regime')})"
        if not isinstance(entry.get("metrics", {}), dict) or not all(isinstance(v, dict) for v in entry.get("metrics", {}).values()):
            raise SubmissionError(f"{where}: field 'metrics': expected an object of metric -> {{estimate, ci_low, ci_high, n_items}}")
        try:
            runs.append(_rescore(entry, items, where))
        except KeyError as exc:
            raise SubmissionError(f"{where}: missing field {exc}") from exc
    if not runs:
        raise SubmissionError(f"{path}: no entries")
    boot = document.get("bootstrap", {})
    analysis = analyse(runs, n_boot=int(boot.get("n_boot", DEFAULT_B)), seed=int(boot.get("seed", DEFAULT_SEED)))
    recomputed = {(r["model"], r["condition"], r["regime"], r["metric"]): r for r in analysis.rows}
    problems = []
    for entry in document["entries"]:
        label = f"{entry['model']}/{entry['condition']}/{entry['regime']}"
        if entry.get("task") and entry["task"] != task_name_for(entry):
            problems.append(f"{label}: task {entry['task']!r} does not match condition and regime")
        for metric in REGIME_METRICS[entry["regime"]]:
            got = recomputed.get((entry["model"], entry["condition"], entry["regime"], metric))
            reported = entry.get("metrics", {}).get(metric)
            if reported is None:
                problems.append(f"{label}: metric {metric!r} missing")
                continue
            for field in ("estimate", "ci_low", "ci_high"):
                if got is None or not _same(reported.get(field), got[field]):
                    problems.append(
                        f"{label}: {metric} {field} reported {reported.get(field)!r}, recomputed {None if got is None else got[field]!r}"
                    )
            if got is not None and reported.get("n_items") != got["n_items"]:
                problems.append(f"{label}: {metric} n_items reported {reported.get('n_items')!r}, answers hold {got['n_items']!r}")
    return problems


def task_name_for(entry: dict[str, Any]) -> str:
    """The task name an entry's condition and regime imply, in its task's family."""
    family = "radsafe_demo" if str(entry.get("task", "")).startswith("radsafe_demo") else "radsafe200"
    return task_name(family, entry["condition"], entry["regime"])


def validate_submission_cli(path: str, data: str) -> int:
    """CLI wrapper: print the verdict; exit status 1 on any problem."""
    from lm_eval_radsafe.loaders import DatasetError, HubAccessError

    try:
        problems = validate_submission(path, data)
    except (SubmissionError, DatasetError, HubAccessError, FileNotFoundError) as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 1
    if problems:
        print(f"rejected: {len(problems)} number(s) do not recompute from the answers:", file=sys.stderr)
        for problem in problems[:50]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"accepted: {path} recomputes from its answers")
    return 0

"""Read lm-eval output folders (results + samples files) into per-item arrays.

One :class:`TaskRun` is one model x condition x regime: the per-item values of every
metric of its regime, aligned to the run's item ids, plus the letters the filter kept.
Every results file of ours must have its samples file (``--log_samples``); a samples
line that is not JSON or lacks a field is an error naming the file and line.
"""

from __future__ import annotations

import ast
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from lm_eval_radsafe.conditions import REGIMES, parse_task_name
from lm_eval_radsafe.items import Item, ItemError
from lm_eval_radsafe.jsonl import JsonlError, read_jsonl
from lm_eval_radsafe.metrics import LL_METRICS, METRICS, SC_METRICS

logger = logging.getLogger(__name__)

#: metric name -> kind ("mean", "mean_where", "calibration") for every regime
REGIME_METRICS: dict[str, dict[str, str]] = {
    "greedy": {m.name: "mean" for m in METRICS},
    "think": {m.name: "mean" for m in METRICS},
    "sc": {m.name: ("calibration" if m.aggregation.endswith("calibration_error") else m.aggregation) for m in SC_METRICS},
    "ll": {m.name: ("calibration" if m.aggregation.endswith("calibration_error") else m.aggregation) for m in LL_METRICS},
}


class RunError(ValueError):
    """An output folder or file that cannot be read as a radsafe run."""


@dataclass
class TaskRun:
    """Per-item results of one model x condition x regime.

    ``values[m]`` is a float array over ``item_ids`` for mean metrics; for ``mean_where``
    and calibration metrics ``pairs[m]`` is an (n, 2) array of (value, selected/correct).
    ``letters`` holds what the filter kept per item: a letter (greedy), a list of letters
    (self-consistency), or the option log-likelihoods (log-likelihood regime).
    """

    model: str
    family: str
    condition: str
    regime: str
    task: str
    fingerprint: str
    results_file: Path
    samples_file: Path
    item_ids: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: dict[str, np.ndarray] = field(default_factory=dict)
    letters: list[Any] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """(model, condition, regime)."""
        return self.model, self.condition, self.regime


def model_label(results: dict[str, Any]) -> str:
    """A readable model name: the GGUF file stem if any, else lm-eval's ``model_name``."""
    args = results.get("config", {}).get("model_args", {})
    if isinstance(args, str):
        args = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    if isinstance(args, dict) and args.get("gguf_file"):
        return Path(str(args["gguf_file"])).stem
    name = results.get("model_name") or (args.get("pretrained") if isinstance(args, dict) else None) or "unknown"
    return str(name).rstrip("/")


def find_results_files(paths: Iterable[Path | str]) -> list[Path]:
    """Every ``results_*.json`` under the given folders (or the files themselves)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("results_*.json")))
        else:
            raise RunError(f"{path}: no such file or folder")
    if not found:
        raise RunError(f"no lm-eval results_*.json files under {', '.join(map(str, paths))}")
    return found


def _timestamp(path: Path) -> str:
    return path.stem.rsplit("_", 1)[-1]


def _samples_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        yield from read_jsonl(path)
    except JsonlError as exc:
        raise RunError(str(exc)) from exc


def _kept_answer(regime: str, filtered: Any, where: str) -> Any:
    """What the filter kept for one item: a letter, a list of letters, or option log-likelihoods."""
    if not isinstance(filtered, list) or not filtered:
        raise RunError(f"{where}: missing field 'filtered_resps'")
    if regime == "ll":
        lls = []
        for entry in filtered:
            if isinstance(entry, str):
                entry = ast.literal_eval(entry)
            lls.append(float(entry[0]))
        return lls
    return filtered[0]


def read_task_run(
    results: dict[str, Any], results_file: Path, task: str, items: dict[tuple[str, str], Item] | None = None
) -> TaskRun:
    """Read one task's samples file next to ``results_file``.

    ``items`` collects each item's labelled record, keyed by (fingerprint, item id), from
    the docs logged in the samples file (built once per item).
    """
    from lm_eval_radsafe.harness import item_from_doc

    items = {} if items is None else items
    parsed = parse_task_name(task)
    if parsed is None:
        raise RunError(f"{results_file}: {task!r} is not a radsafe task")
    family, condition, regime = parsed
    samples_file = results_file.parent / f"samples_{task}_{_timestamp(results_file)}.jsonl"
    if not samples_file.is_file():
        raise RunError(f"{results_file}: no samples file {samples_file.name} for {task} (run lm-eval with --log_samples)")
    wanted_filter = REGIMES[regime].results_filter
    kinds = REGIME_METRICS[regime]
    ids: list[str] = []
    letters: list[Any] = []
    answers: list[str] = []
    threshold = None
    fingerprints: set[str] = set()
    columns: dict[str, list[Any]] = {name: [] for name in kinds}
    for number, row in _samples_rows(samples_file):
        if row.get("filter") != wanted_filter:
            continue
        where = f"{samples_file}, line {number}"
        try:
            doc = row["doc"]
            ids.append(str(doc["id"]))
            answers.append(str(doc["answer"]))
            fingerprint = str(doc["dataset_fingerprint"])
            fingerprints.add(fingerprint)
            if (fingerprint, ids[-1]) not in items:
                items[(fingerprint, ids[-1])] = item_from_doc(doc)
            for name in kinds:
                columns[name].append(row[name])
        except (KeyError, TypeError) as exc:
            raise RunError(f"{where}: missing field {exc}") from exc
        except ItemError as exc:
            raise RunError(f"{where}: the logged item does not validate: {exc}") from exc
        letters.append(_kept_answer(regime, row.get("filtered_resps"), where))
        threshold = doc.get("overconfidence_threshold")
    if not ids:
        raise RunError(f"{samples_file}: no rows for filter {wanted_filter!r}")
    if len(set(ids)) != len(ids):
        raise RunError(f"{samples_file}: an item id occurs twice")
    if len(fingerprints) != 1:
        raise RunError(f"{samples_file}: rows carry {len(fingerprints)} different dataset fingerprints")
    run = TaskRun(
        model=model_label(results),
        family=family,
        condition=condition,
        regime=regime,
        task=task,
        fingerprint=fingerprints.pop(),
        results_file=results_file,
        samples_file=samples_file,
        item_ids=ids,
        letters=letters,
        answers=answers,
        meta={
            "lm_eval_version": results.get("lm_eval_version"),
            "radsafe": results.get("radsafe", {}),
            "date": results.get("date"),
            "overconfidence_threshold": threshold,
        },
    )
    for name, kind in kinds.items():
        try:
            data = np.asarray(columns[name], dtype=float)
        except (TypeError, ValueError) as exc:
            raise RunError(f"{samples_file}: metric {name!r} has non-numeric values") from exc
        if kind == "mean":
            if data.ndim != 1:
                raise RunError(f"{samples_file}: metric {name!r} should hold one number per item")
            run.values[name] = data
        else:
            if data.ndim != 2 or data.shape[1] != 2:
                raise RunError(f"{samples_file}: metric {name!r} should hold a (value, flag) pair per item")
            run.pairs[name] = data
    return run


def read_runs(
    paths: Iterable[Path | str],
    allow_mixed: bool = False,
    progress: bool = True,
    items: dict[tuple[str, str], Item] | None = None,
) -> list[TaskRun]:
    """All radsafe task runs under ``paths``; the latest results file wins per model and task.

    Raises :class:`RunError` when runs used different dataset fingerprints, unless
    ``allow_mixed``. Pass a dict as ``items`` to collect the logged items.
    """
    items = {} if items is None else items
    from tqdm.auto import tqdm

    files = find_results_files(paths)
    latest: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    for results_file in files:
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunError(f"{results_file}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        for task in results.get("results", {}):
            if parse_task_name(task) is None:
                continue
            key = (model_label(results), task)
            if key in latest and _timestamp(latest[key][0]) >= _timestamp(results_file):
                logger.warning("%s: %s for %s is older than %s; using the newer", results_file, task, key[0], latest[key][0])
                continue
            if key in latest:
                logger.warning("%s: replaces the older %s for %s %s", results_file, latest[key][0], *key)
            latest[key] = (results_file, results)
    if not latest:
        raise RunError(f"no radsafe tasks in {len(files)} results file(s)")
    runs = [
        read_task_run(results, results_file, task, items)
        for (_, task), (results_file, results) in tqdm(
            sorted(latest.items()), desc="reading runs", unit="task", disable=not progress
        )
    ]
    fingerprints = sorted({run.fingerprint for run in runs})
    if len(fingerprints) > 1 and not allow_mixed:
        detail = "; ".join(
            f"{fp[:19]}...: " + ", ".join(sorted({f"{r.model}/{r.task}" for r in runs if r.fingerprint == fp})[:4])
            for fp in fingerprints
        )
        raise RunError(
            f"runs used {len(fingerprints)} different datasets ({detail}); compare runs on one dataset, "
            "or pass --allow-mixed-datasets"
        )
    return runs

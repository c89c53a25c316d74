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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lm_eval_radsafe.analysis.samples import SamplesError, read_columns
from lm_eval_radsafe.conditions import REGIMES, parse_task_name
from lm_eval_radsafe.items import Item, ItemError
from lm_eval_radsafe.jsonl import JsonlError, read_jsonl
from lm_eval_radsafe.metrics import LL_METRICS, METRICS, ORDER_METRICS, SC_METRICS, score_item
from lm_eval_radsafe.provenance import package_version, task_of_key, task_provenance

logger = logging.getLogger(__name__)

#: metric name -> kind ("mean", "mean_where", "calibration") for every regime
REGIME_METRICS: dict[str, dict[str, str]] = {
    "greedy": {m.name: "mean" for m in METRICS},
    "think": {m.name: "mean" for m in METRICS},
    "sc": {m.name: ("calibration" if m.aggregation.endswith("calibration_error") else m.aggregation) for m in SC_METRICS},
    "ll": {m.name: ("calibration" if m.aggregation.endswith("calibration_error") else m.aggregation) for m in LL_METRICS},
    # position_bias: per item its (observed, expected) counts per position, shape (2, 5)
    "perm": {m.name: m.aggregation for m in ORDER_METRICS},
}


class RunError(ValueError):
    """An output folder or file that cannot be read as a radsafe run."""


@dataclass
class TaskRun:
    """Per-item results of one model x condition x regime.

    ``values[m]`` is a float array over ``item_ids`` for mean metrics; for ``mean_where``
    and calibration metrics ``pairs[m]`` is an (n, 2) array of (value, selected/correct),
    for ``position_bias`` an (n, 2, 5) array of (observed, expected) counts per position.
    ``letters`` holds what the filter kept per item: a letter (greedy), a list of letters
    (self-consistency; option order: one per order), or the option log-likelihoods
    (log-likelihood regime).
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

    @property
    def n_items(self) -> int:
        """How many items the run holds."""
        return len(self.item_ids)

    @property
    def label(self) -> str:
        """``model / condition / regime``, for messages."""
        return f"{self.model} / {self.condition} / {self.regime}"

    def restricted(self, keep: set[str]) -> TaskRun:
        """A copy holding only the items in ``keep`` (order kept)."""
        index = [i for i, item in enumerate(self.item_ids) if item in keep]
        return replace(
            self,
            item_ids=[self.item_ids[i] for i in index],
            values={k: v[index] for k, v in self.values.items()},
            pairs={k: v[index] for k, v in self.pairs.items()},
            letters=[self.letters[i] for i in index],
            answers=[self.answers[i] for i in index],
            meta={**self.meta, "n_items_read": self.n_items},
        )


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
    """Every ``results_*.json`` under the given folders (or the files themselves), each once
    (a folder passed together with one of its subfolders is not read twice)."""
    paths = list(paths)
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(path.rglob("results_*.json"))
        else:
            raise RunError(f"{path}: no such file or folder")
        for candidate in candidates:
            if candidate.resolve() not in seen:
                seen.add(candidate.resolve())
                found.append(candidate)
    if not found:
        raise RunError(f"no lm-eval results_*.json files under {', '.join(map(str, paths))}")
    return found


def _timestamp(path: Path) -> str:
    return path.stem.rsplit("_", 1)[-1]


def samples_path(results_file: Path, task: str) -> Path:
    """Where lm-eval writes the samples file of ``task`` (its key in the results file) for
    ``results_file``."""
    return results_file.parent / f"samples_{task}_{_timestamp(results_file)}.jsonl"


def _samples_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        yield from read_jsonl(path)
    except JsonlError as exc:
        raise RunError(str(exc)) from exc


def _kept_answer(regime: str, filtered: Any, where: str) -> Any:
    """What the filter kept for one item: a letter, a list of letters, or option
    log-likelihoods. Reads lm-eval 0.4's layout and 0.5's, which wraps each request's
    value in one more list (``[["A"]]``, ``[[["-1.2", "False"]], ...]``)."""
    if not isinstance(filtered, list) or not filtered:
        raise RunError(f"{where}: missing field 'filtered_resps'")
    if regime == "ll":
        lls = []
        for entry in filtered:
            if isinstance(entry, str):
                entry = ast.literal_eval(entry)
            while isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], (list, tuple, str)) and not _number(entry[0]):
                entry = entry[0] if not isinstance(entry[0], str) else ast.literal_eval(entry[0])
            try:
                lls.append(float(entry[0]))
            except (TypeError, ValueError, IndexError):
                raise RunError(f"{where}: 'filtered_resps' holds {entry!r} where a (log-likelihood, greedy) pair belongs") from None
        return lls
    if regime == "perm":  # one letter per option order (0.5: each in a list of one)
        letters = [entry[0] if isinstance(entry, list) and len(entry) == 1 else entry for entry in filtered]
        if not all(isinstance(letter, str) for letter in letters):
            raise RunError(f"{where}: 'filtered_resps' holds {filtered!r} where one letter per option order belongs")
        return letters
    kept = filtered[0]
    if regime == "sc":
        if not (isinstance(kept, list) and kept and all(type(ballot) is str for ballot in kept)):
            raise RunError(f"{where}: 'filtered_resps' holds {filtered!r} where the sampled letters belong")
    elif isinstance(kept, list) and len(kept) == 1:
        kept = kept[0]  # lm-eval 0.5: the greedy letter inside the request's list
    return kept


def _number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class Parsed:
    """What a run's samples file holds for the report: per item the id, the answer, the kept
    value and the regime's metric values, in file order. Plain lists, cheap to send between
    processes and to cache (:mod:`lm_eval_radsafe.analysis.cache`)."""

    ids: list[str]
    answers: list[str]
    letters: list[Any]
    fingerprint: str
    threshold: Any
    #: the logged values; once settled (:func:`_settle`), only those nothing recomputes
    metrics: dict[str, np.ndarray]
    #: the values recomputed from the kept answers and the items (:func:`_recomputed`), once known
    recomputed: dict[str, np.ndarray] | None = None
    #: per recomputed metric, how many items' logged values differ from the recomputed ones
    differ: dict[str, int] = field(default_factory=dict)


def parse_samples(samples_file: Path, regime: str, items: dict[tuple[str, str], Item] | None = None) -> Parsed:
    """Read ``samples_file`` of a ``regime`` run; with ``items``, also add the labelled record
    of every item not in it yet (keyed by fingerprint and id). Raises :class:`RunError`
    naming file, line and field."""
    from lm_eval_radsafe.loaders import item_from_doc

    wanted_filter = REGIMES[regime].results_filter
    kinds = REGIME_METRICS[regime]

    def add_item(fingerprint: str, item_id: str, doc: dict[str, Any], where: str) -> None:
        try:
            items[(fingerprint, item_id)] = item_from_doc(doc)  # type: ignore[index]
        except ItemError as exc:
            raise RunError(f"{where}: the logged item does not validate: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise RunError(f"{where}: missing field {exc}") from exc

    def seen(fingerprint: str, item_id: str) -> bool:
        return (fingerprint, item_id) in items  # type: ignore[operator]

    try:
        read = read_columns(
            samples_file, wanted_filter, tuple(kinds), partial(_kept_answer, regime), None if items is None else seen, add_item,
        )
    except SamplesError as exc:
        raise RunError(str(exc)) from exc
    if not read.ids:
        raise RunError(f"{samples_file}: no rows for filter {wanted_filter!r}")
    if len(set(read.ids)) != len(read.ids):
        raise RunError(f"{samples_file}: an item id occurs twice")
    if len(read.fingerprints) != 1:
        raise RunError(f"{samples_file}: rows carry {len(read.fingerprints)} different dataset fingerprints")
    metrics = {}
    for name, kind in kinds.items():
        try:
            data = np.asarray(read.metrics[name], dtype=float)
        except (TypeError, ValueError) as exc:
            raise RunError(f"{samples_file}: metric {name!r} has non-numeric values") from exc
        if kind == "mean" and data.ndim != 1:
            raise RunError(f"{samples_file}: metric {name!r} should hold one number per item")
        if kind == "position_bias" and (data.ndim != 3 or data.shape[1:] != (2, 5)):
            raise RunError(f"{samples_file}: metric {name!r} should hold (observed, expected) counts of 5 positions per item")
        if kind not in ("mean", "position_bias") and (data.ndim != 2 or data.shape[1] != 2):
            raise RunError(f"{samples_file}: metric {name!r} should hold a (value, flag) pair per item")
        metrics[name] = data
    return Parsed(read.ids, read.answers, read.kept, read.fingerprints.pop(), read.threshold, metrics)


def _completeness(
    results: dict[str, Any], results_file: Path, task: str, samples_file: Path, parsed: Parsed, provenance: dict[str, Any]
) -> str | None:
    """None when the samples hold exactly the items the run was asked for, else what is
    wrong: lm-eval's ``n-samples`` says how many (``effective``, after ``--limit``), the
    task's provenance which ones (the dataset's ids in evaluation order)."""
    entry = (results.get("n-samples") or {}).get(task) or {}
    asked = entry.get("effective") if isinstance(entry.get("effective"), int) else None
    expected_ids = provenance.get("item_ids")
    if isinstance(expected_ids, list) and expected_ids:
        expected = set(map(str, expected_ids[: asked if asked is not None else len(expected_ids)]))
        held = set(parsed.ids)
        missing, extra = expected - held, held - expected
        if missing or extra:
            detail = ", ".join(
                part for part in (
                    f"{len(missing)} asked-for item(s) missing (e.g. {min(missing)})" if missing else "",
                    f"{len(extra)} item(s) not asked for (e.g. {min(extra)})" if extra else "",
                ) if part
            )
            return f"{samples_file}: holds {len(held)} of the {len(expected)} items {task} was asked for: {detail}"
        return None
    if asked is not None and len(parsed.ids) != asked:
        return f"{samples_file}: holds {len(parsed.ids)} of the {asked} items {task} was asked for ({results_file.name}: n-samples)"
    return None


#: (item id, answer) -> (the item, its scores): an answer scored once per process
_ANSWER_SCORES: dict[tuple[str, str], tuple[Item, dict[str, float]]] = {}


def _answer_scores(item: Item, answer: Any) -> dict[str, float]:
    """:func:`~lm_eval_radsafe.metrics.score_item` of ``item`` and a kept answer (a letter,
    ``"NULL"`` or None: both abstain), each (item, answer) scored once: a grid's runs give
    a handful of distinct answers per item."""
    key = (item.id, answer if isinstance(answer, str) else repr(answer))
    known = _ANSWER_SCORES.get(key)
    if known is None or known[0] is not item:
        known = _ANSWER_SCORES[key] = (item, score_item(item, answer))
    return known[1]


def _recomputed(parsed: Parsed, regime: str, items: dict[tuple[str, str], Item]) -> dict[str, np.ndarray]:
    """The regime's per-item values recomputed from each item's kept answer and its
    labelled record, as the task's own scoring computes them (evidence recall and agent
    cost, which depend on the logged evidence, are not among them)."""
    from lm_eval_radsafe.metrics import OVERCONFIDENCE_THRESHOLD, score_loglikelihoods, score_orders, score_vote_columns

    threshold = float(parsed.threshold) if parsed.threshold is not None else OVERCONFIDENCE_THRESHOLD
    run_items = [items[(parsed.fingerprint, item_id)] for item_id in parsed.ids]
    if regime == "sc":  # all items at once, the majority's scores looked up
        columns = score_vote_columns(run_items, parsed.letters, threshold, _answer_scores)
        return {name: columns[name] for name in REGIME_METRICS[regime] if name in columns}
    rows = []
    for item, kept in zip(run_items, parsed.letters):
        if regime == "ll":
            rows.append(score_loglikelihoods(item, [float(v) for v in kept], threshold))
        elif regime == "perm":  # the orders follow from the item and how many were asked
            rows.append(score_orders(item, kept))
        else:
            rows.append(_answer_scores(item, kept))
    names = [name for name in REGIME_METRICS[regime] if rows and name in rows[0]]
    return {name: np.asarray([row[name] for row in rows], dtype=float) for name in names}


def _settle(parsed: Parsed, regime: str, items: dict[tuple[str, str], Item]) -> None:
    """Recompute ``parsed``'s per-item values (:func:`_recomputed`), count per metric the
    items whose logged values differ (:attr:`Parsed.differ`), and keep only the logged
    values nothing recomputes (what is sent between processes and cached is then smaller)."""
    parsed.recomputed = _recomputed(parsed, regime, items)
    parsed.differ = {name: _differing(values, parsed.metrics[name]) for name, values in parsed.recomputed.items()}
    parsed.metrics = {name: values for name, values in parsed.metrics.items() if name not in parsed.recomputed}


def _differing(recomputed: np.ndarray, logged: np.ndarray) -> int:
    """How many items' logged values differ from the recomputed ones (equal, or close, NaN
    matching NaN, is the same; every item when the shapes differ). The same bytes are tried
    first: the usual case, and the cheapest test."""
    if recomputed.shape == logged.shape and (
        recomputed.tobytes() == logged.tobytes()
        or np.array_equal(recomputed, logged, equal_nan=True)
        or np.allclose(recomputed, logged, equal_nan=True)
    ):
        return 0
    same = np.isclose(recomputed, logged, equal_nan=True) if recomputed.shape == logged.shape else np.zeros(len(recomputed), bool)
    return int(np.sum(~same.all(axis=-1) if same.ndim == 2 else ~same))


def add_missing_items(samples_file: Path, regime: str, fingerprint: str, item_ids: Iterable[str], items: dict[tuple[str, str], Item]) -> None:
    """Add to ``items`` the records of ``item_ids`` (of ``fingerprint``) that it lacks, read
    from ``samples_file`` (a run parsed elsewhere: in another process, or from the cache)."""
    if any((fingerprint, item_id) not in items for item_id in item_ids):
        parse_samples(samples_file, regime, items)


def _checked_task(results: dict[str, Any], results_file: Path, task: str) -> tuple[str, str, str, Path, dict[str, Any]]:
    """(family, condition, regime, samples file, provenance) of ``task``; :class:`RunError`
    when it is not ours, its samples file is missing, or the server failed some requests."""
    parsed = parse_task_name(task_of_key(task))
    if parsed is None:
        raise RunError(f"{results_file}: {task!r} is not a radsafe task")
    family, condition, regime = parsed
    samples_file = samples_path(results_file, task)
    if not samples_file.is_file():
        raise RunError(f"{results_file}: no samples file {samples_file.name} for {task} (run lm-eval with --log_samples)")
    provenance = task_provenance(results, task)
    serving = provenance.get("serving") or {}
    if serving.get("infrastructure_errors"):
        rejected = serving.get("rejected") or [{}]
        raise RunError(
            f"{results_file}: {task}: {serving['infrastructure_errors']} request(s) were recorded as infrastructure errors "
            f"(e.g. item {rejected[0].get('doc_id')}: {rejected[0].get('error', 'rejected by the server')}), not model answers; "
            "run the same command again to answer them (answers already received come from the response cache), or leave this run out"
        )
    return family, condition, regime, samples_file, provenance


def read_task_run(
    results: dict[str, Any],
    results_file: Path,
    task: str,
    items: dict[tuple[str, str], Item] | None = None,
    parsed: Parsed | None = None,
    allow_partial: bool = False,
) -> TaskRun:
    """Read one task's samples file next to ``results_file`` (or take ``parsed``, what it
    holds, read before).

    ``items`` collects each item's labelled record, keyed by (fingerprint, item id), from
    the docs logged in the samples file (built once per item). Every per-item value that
    follows from the kept answer and the item is recomputed, never taken from the logged
    metric fields (a warning says when they differ). A run whose samples do not hold the
    items it was asked for is refused, or kept and marked ``meta["partial"]`` with
    ``allow_partial``.
    """
    items = {} if items is None else items
    family, condition, regime, samples_file, provenance = _checked_task(results, results_file, task)
    if parsed is None:
        parsed = parse_samples(samples_file, regime, items)
    else:
        add_missing_items(samples_file, regime, parsed.fingerprint, parsed.ids, items)
    partial = _completeness(results, results_file, task, samples_file, parsed, provenance)
    if partial and not allow_partial:
        raise RunError(f"{partial}; run it again to completion, or pass --allow-partial to report it marked as partial")
    if parsed.recomputed is None:
        _settle(parsed, regime, items)
    recomputed = parsed.recomputed or {}
    kinds = REGIME_METRICS[regime]
    run = TaskRun(
        model=model_label(results),
        family=family,
        condition=condition,
        regime=regime,
        task=task_of_key(task),
        fingerprint=parsed.fingerprint,
        results_file=results_file,
        samples_file=samples_file,
        item_ids=parsed.ids,
        letters=parsed.letters,
        answers=parsed.answers,
        meta={
            "lm_eval_version": results.get("lm_eval_version"),
            # this task's record: dataset, evidence and package version from its config,
            # server counts and answering time from the block `radsafe eval` adds
            "provenance": provenance,
            "package_version": package_version(results),
            "date": results.get("date"),
            "overconfidence_threshold": parsed.threshold,
            # lm-eval writes None when the run did not pass --apply_chat_template
            "chat_template": ("absent" if results["chat_template"] is None else "applied") if "chat_template" in results else "unknown",
            "limit": (results.get("config") or {}).get("limit"),
            # the task's version as lm-eval recorded it ("2-A"; older runs 1.0 or 1.1)
            "task_version": (results.get("versions") or {}).get(task),
            **({"partial": partial} if partial else {}),
        },
    )
    for name, kind in kinds.items():
        values = recomputed[name] if name in recomputed else parsed.metrics[name]
        if parsed.differ.get(name):
            logger.warning(
                "%s: %s: %d logged per-item value(s) differ from the values recomputed from the kept answers and the "
                "items; the report uses the recomputed ones", samples_file, name, parsed.differ[name],
            )
        if kind == "mean":
            run.values[name] = values
        else:
            run.pairs[name] = values
    return run


Prefer = Literal["newest", "largest"]
SizeRule = Literal["refuse", "common", "allow"]
#: what ``radsafe report`` says when several runs share a model, condition and regime
PREFER_HINT = (
    "pass --prefer newest, or --prefer largest (most items; ties go to the newest), "
    "or pass only the folders you want"
)
SIZES_HINT = (
    "pass --common-items to compare them on the items they share, --allow-mixed-sizes to keep each "
    "run's own items (every row shows its n), or pass only the folders you want"
)


@dataclass(frozen=True)
class Candidate:
    """One radsafe task of one results file, before its samples file is read."""

    results_file: Path
    results: dict[str, Any] = field(repr=False)
    task: str
    model: str
    condition: str
    regime: str
    n_items: int | None

    @property
    def key(self) -> tuple[str, str, str]:
        """(model, condition, regime)."""
        return self.model, self.condition, self.regime

    @property
    def timestamp(self) -> str:
        """lm-eval's timestamp in the results file name (sorts by time)."""
        return _timestamp(self.results_file)

    def describe(self) -> str:
        """``path/results_<timestamp>.json (5 items, --limit 5)``."""
        size = "? items" if self.n_items is None else f"{self.n_items} items"
        limit = (self.results.get("config") or {}).get("limit")
        return f"{self.results_file} ({size}{f', --limit {limit:g}' if isinstance(limit, (int, float)) else ''})"


def _n_items(results: dict[str, Any], results_file: Path, task: str, wanted_filter: str) -> int | None:
    """Items of ``task``: lm-eval's ``n-samples`` entry, else the samples file's rows."""
    entry = (results.get("n-samples") or {}).get(task) or {}
    if isinstance(entry.get("effective"), int):
        return int(entry["effective"])
    try:
        return sum(1 for _, row in _samples_rows(samples_path(results_file, task)) if row.get("filter") == wanted_filter)
    except (RunError, OSError):
        return None


def find_candidates(paths: Iterable[Path | str], strict: bool = False) -> list[Candidate]:
    """Every radsafe task in the results files under ``paths`` whose samples file exists.

    A results file without the samples file of a task (lm-eval run without
    ``--log_samples``) is skipped with a warning naming it; with ``strict`` it is an error.
    """
    files = find_results_files(paths)
    found: list[Candidate] = []
    n_tasks = 0
    for results_file in files:
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunError(f"{results_file}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        missing = []
        for task in results.get("results", {}):
            parsed = parse_task_name(task_of_key(task))
            if parsed is None:
                continue
            n_tasks += 1
            _, condition, regime = parsed
            if not samples_path(results_file, task).is_file():
                if strict:
                    raise RunError(
                        f"{results_file}: no samples file {samples_path(results_file, task).name} for {task} "
                        "(run lm-eval with --log_samples)"
                    )
                missing.append(task)
                continue
            n = _n_items(results, results_file, task, REGIMES[regime].results_filter)
            found.append(Candidate(results_file, results, task, model_label(results), condition, regime, n))
        if missing:
            logger.warning(
                "%s: skipped %s of %s: no samples file (run lm-eval with --log_samples; --strict refuses instead)",
                results_file.parent,
                ", ".join(missing),
                results_file.name,
            )
    if not n_tasks:
        raise RunError(f"no radsafe tasks in {len(files)} results file(s)")
    if not found:
        raise RunError(f"no radsafe task with a samples file in {len(files)} results file(s) (run lm-eval with --log_samples)")
    return found


def choose_runs(candidates: list[Candidate], prefer: Prefer | None = None) -> list[Candidate]:
    """Exactly one candidate per (model, condition, regime).

    Several candidates for one key are refused (:class:`RunError` naming every file and
    the choice) unless ``prefer`` is ``newest`` (latest results file) or ``largest`` (most
    items; ties go to the newest). Each run left out is logged with the one kept.
    """
    groups: dict[tuple[str, str, str], list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.key, []).append(candidate)
    conflicts = {key: group for key, group in groups.items() if len(group) > 1}
    if conflicts and prefer is None:
        detail = "; ".join(
            f"{len(group)} runs of {' / '.join(key)}: " + ", ".join(c.describe() for c in sorted(group, key=lambda c: c.timestamp))
            for key, group in sorted(conflicts.items())
        )
        raise RunError(f"{detail}. A report uses one run per model, condition and regime: {PREFER_HINT}")
    if prefer not in (None, "newest", "largest"):
        raise ValueError(f"prefer must be 'newest' or 'largest', not {prefer!r}")
    chosen = []
    for key, group in sorted(groups.items()):
        if len(group) == 1:
            chosen.append(group[0])
            continue
        if prefer == "newest":
            rank = lambda c: (c.timestamp, str(c.results_file))
        else:
            rank = lambda c: (c.n_items if c.n_items is not None else -1, c.timestamp, str(c.results_file))
        ordered = sorted(group, key=rank, reverse=True)
        kept = ordered[0]
        tied = [c for c in ordered[1:] if rank(c)[:-1] == rank(kept)[:-1]]
        if tied:  # only the folder name would decide: never let it
            raise RunError(
                f"{' / '.join(key)}: --prefer {prefer} cannot choose between "
                + ", ".join(c.describe() for c in [kept, *tied])
                + " (same timestamp" + (" and item count" if prefer == "largest" else "") + "); pass only the folder you want"
            )
        why = "the newest" if prefer == "newest" else "the most items"
        if prefer == "largest" and sum(c.n_items == kept.n_items for c in group) > 1:
            why += f" ({sum(c.n_items == kept.n_items for c in group)} runs tie; the newest of them)"
        for dropped in ordered[1:]:
            logger.warning("%s: kept %s (--prefer %s: %s); left out %s", " / ".join(key), kept.describe(), prefer, why, dropped.describe())
        chosen.append(kept)
    return chosen


def apply_size_rule(runs: list[TaskRun], rule: SizeRule = "refuse") -> tuple[list[TaskRun], list[str]]:
    """Runs compared across models must rest on the same items.

    Models are compared per condition and regime (tie groups, scaling, ensembles, worst
    cases), so every run of one condition, regime and dataset must hold the same item ids.
    Where they do not: ``refuse`` raises :class:`RunError` naming each run, its size and
    file; ``common`` restricts those runs to the items they all share; ``allow`` keeps each
    run's own items. Conditions of one model may rest on different items (e.g. the demo's
    retrieval conditions on fewer items): each row shows its n and paired tests use the
    items both runs share. Returns the runs and one note per cell that differed.
    """
    if rule not in ("refuse", "common", "allow"):
        raise ValueError(f"rule must be 'refuse', 'common' or 'allow', not {rule!r}")
    cells: dict[tuple[str, str, str], list[int]] = {}
    for index, run in enumerate(runs):
        cells.setdefault((run.fingerprint, run.condition, run.regime), []).append(index)
    out = list(runs)
    notes: list[str] = []
    problems: list[str] = []
    for (_, condition, regime), members in sorted(cells.items(), key=lambda kv: kv[0][1:] + kv[0][:1]):
        sets = [frozenset(runs[i].item_ids) for i in members]
        if len(set(sets)) == 1:
            continue
        sizes = ", ".join(f"{runs[i].model} {runs[i].n_items} items ({runs[i].results_file})" for i in members)
        if rule == "refuse":
            problems.append(f"{condition} / {regime}: {sizes}")
            continue
        if rule == "allow":
            note = f"{condition} / {regime}: models rest on different items ({sizes}); compared as they are (--allow-mixed-sizes)"
        else:
            shared = frozenset.intersection(*sets)
            if not shared:
                raise RunError(f"{condition} / {regime}: the runs share no item ({sizes}); --common-items cannot compare them")
            for i in members:
                out[i] = runs[i].restricted(set(shared))
            note = f"{condition} / {regime}: compared on the {len(shared)} items every model has ({sizes}; --common-items)"
        logger.warning("%s", note)
        notes.append(note)
    if problems:
        raise RunError(f"runs of one condition and regime rest on different items: {'; '.join(problems)}; {SIZES_HINT}")
    return out, notes


def read_runs(
    paths: Iterable[Path | str],
    allow_mixed: bool = False,
    progress: bool = True,
    items: dict[tuple[str, str], Item] | None = None,
    prefer: Prefer | None = None,
    strict: bool = False,
    sizes: SizeRule = "refuse",
    notes: list[str] | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    allow_partial: bool = False,
    allow_mixed_versions: bool = False,
) -> list[TaskRun]:
    """All radsafe task runs under ``paths``: exactly one per model, condition and regime.

    Several runs of one (model, condition, regime) are refused unless ``prefer`` chooses
    (:func:`choose_runs`); a task without its samples file is skipped with a warning, or
    refused with ``strict`` (:func:`find_candidates`); runs of one condition and regime
    with different items follow ``sizes`` (:func:`apply_size_rule`; ``radsafe report``
    refuses by default). Raises :class:`RunError` when runs used different dataset
    fingerprints, unless ``allow_mixed``. Pass a dict as ``items`` to collect the logged
    items, and a list as ``notes`` to collect what the size rule did. Samples files are
    parsed by ``workers`` processes (default: one per CPU) and kept in the parse cache
    (:mod:`lm_eval_radsafe.analysis.cache`) unless ``use_cache`` is False. Runs of tasks whose
    versions carry different comparability numbers are refused unless
    ``allow_mixed_versions`` (:func:`check_versions`).
    """
    items = {} if items is None else items
    chosen = choose_runs(find_candidates(paths, strict=strict), prefer=prefer)
    runs = _read_chosen(chosen, items, progress, use_cache, workers, allow_partial)
    if notes is not None:
        notes.extend(f"partial run (--allow-partial): {run.meta['partial']}" for run in runs if run.meta.get("partial"))
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
    version_note = check_versions(runs, allow_mixed_versions)
    runs, size_notes = apply_size_rule(runs, sizes)
    if notes is not None:
        notes.extend(size_notes + ([version_note] if version_note else []))
    return runs


def check_versions(runs: list[TaskRun], allow_mixed: bool = False) -> str | None:
    """Refuse runs whose task versions have different comparability numbers
    (:func:`~lm_eval_radsafe.conditions.comparability`): their numbers may differ for reasons
    other than the model or the condition. With ``allow_mixed`` the runs are kept and the
    returned note (also logged) says which numbers were mixed. None when all agree."""
    from lm_eval_radsafe.conditions import comparability

    groups: dict[str, list[TaskRun]] = {}
    for run in runs:
        number = comparability(run.meta.get("task_version"))
        groups.setdefault("unknown" if number is None else str(number), []).append(run)
    if len(groups) < 2:
        return None
    detail = "; ".join(
        f"{number}: {len(members)} run(s), e.g. {members[0].label} (version {members[0].meta.get('task_version')}, {members[0].results_file})"
        for number, members in sorted(groups.items())
    )
    if not allow_mixed:
        raise RunError(
            f"runs of task versions with different comparability numbers ({detail}); their numbers may differ because "
            "the tasks changed (see the CHANGELOG): run the older ones again, or pass --allow-mixed-versions"
        )
    note = f"task versions with different comparability numbers compared (--allow-mixed-versions): {detail}"
    logger.warning("%s", note)
    return note


#: in a worker process: the items the parent read before starting it (see :func:`_read_chosen`)
_WORKER_ITEMS: dict[tuple[str, str], Item] = {}


def _start_worker(items: dict[tuple[str, str], Item]) -> None:
    """Worker initializer: keep the parent's items, so workers recompute values too."""
    _WORKER_ITEMS.update(items)


def _parse_job(job: tuple[Path, str, str | None, Path | None]) -> tuple[Parsed | bytes | None, bool]:
    """One samples file parsed in a worker process, its per-item values recomputed there
    when the parent's items cover it (else the parent reads the items and recomputes).
    With a cache key and folder, the worker also stores the parse with its recomputed
    values (the parent stores the others). Returns what the parent takes, and whether the
    cache was seen to: None when the parse is in the cache (the parent reads it from there,
    faster than through a pipe), its cache entry when it could not be written there, else
    the parse itself."""
    samples_file, regime, key, folder = job
    parsed = parse_samples(samples_file, regime)
    if all((parsed.fingerprint, item_id) in _WORKER_ITEMS for item_id in parsed.ids):
        _settle(parsed, regime, _WORKER_ITEMS)
        if key and folder is not None:
            from lm_eval_radsafe.analysis.cache import ParsedCache

            entry = ParsedCache.encode(_to_cache(parsed))
            return (None if ParsedCache(folder).store(key, entry) else entry), True
    return parsed, False


#: fewer files than this are parsed in this process: starting workers would cost more
PARALLEL_FROM = 8


def _read_chosen(
    chosen: list[Candidate], items: dict[tuple[str, str], Item], progress: bool, use_cache: bool, workers: int | None,
    allow_partial: bool = False,
) -> list[TaskRun]:
    """The chosen candidates as runs: cached parses where the files are unchanged, the rest
    parsed (in parallel when there are many), then stored in the cache."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from lm_eval_radsafe.analysis.cache import ParsedCache, file_key

    cache = ParsedCache(enabled=use_cache)
    parsed: dict[int, Parsed] = {}
    todo: list[tuple[int, Path, str, str | None]] = []
    stored: set[int] = set()  # parses a worker already kept in the cache
    for i, candidate in enumerate(chosen):
        _, _, regime, samples_file, _ = _checked_task(candidate.results, candidate.results_file, candidate.task)
        key = file_key(samples_file, regime) if cache.enabled else None
        fields = cache.load(key) if key else None
        if fields is not None:
            parsed[i] = _from_cache(fields)
        else:
            todo.append((i, samples_file, regime, key))
    workers = workers or os.cpu_count() or 1
    runs: list[TaskRun] = []

    def build_ready() -> None:
        """Runs of the parses in hand, in the candidates' order (so warnings and errors come
        in that order), while the workers parse the rest."""
        while len(runs) < len(chosen) and len(runs) in parsed:
            c = chosen[len(runs)]
            runs.append(read_task_run(c.results, c.results_file, c.task, items, parsed[len(runs)], allow_partial))

    with tqdm(total=len(chosen), initial=len(parsed), desc="reading runs", unit="task", disable=not progress) as bar:
        if len(todo) >= PARALLEL_FROM and workers > 1:
            # the first file here, collecting its dataset's items; the rest in workers that
            # get those items once and recompute each run's values beside parsing it
            first, samples_file, regime, _ = todo[0]
            parsed[first] = parse_samples(samples_file, regime, items)
            bar.update()
            rest = todo[1:]
            folder = cache.folder if cache.enabled else None
            with ProcessPoolExecutor(max_workers=min(workers, len(rest)), initializer=_start_worker, initargs=(items,)) as pool:
                jobs = [(samples_file, regime, key, folder) for _, samples_file, regime, key in rest]
                for (i, samples_file, regime, key), (result, kept) in zip(rest, pool.map(_parse_job, jobs, chunksize=4)):
                    if not isinstance(result, Parsed):
                        # the worker's cache entry: read back from the cache (faster than a pipe), or
                        # sent when it could not be written; gone meanwhile (another report cleared
                        # the cache): parsed again here
                        fields = cache.decode(result) if isinstance(result, bytes) else cache.stored_fields(key)
                        result = _from_cache(fields) if fields is not None else parse_samples(samples_file, regime, items)
                    parsed[i] = result
                    if kept:
                        stored.add(i)
                    bar.update()
                    build_ready()
        else:
            for i, samples_file, regime, _ in todo:
                parsed[i] = parse_samples(samples_file, regime, items)
                bar.update()
    build_ready()
    for i, _, _, key in todo:  # with the recomputed values, so a second report skips that too
        if key and i not in stored:
            cache.store(key, _to_cache(parsed[i]))
    if cache.hits:
        logger.info("%d of %d runs from the parse cache (%s)", cache.hits, len(chosen), cache.folder)
    return runs


_JOIN = "\x1f"  # unit separator: never in a letter


def _to_cache(parsed: Parsed) -> dict[str, Any]:
    """``parsed`` as MessagePack-ready fields: metric arrays as raw float64 bytes, the sampled
    letters of each item joined into one string (a run's 4,000 letters decode as 200 strings)."""
    letters: Any = parsed.letters
    joined: list[str] | None = None
    if all(type(x) is list for x in letters):
        try:  # lists of strings, none holding the separator, [""] apart (it would read back as [])
            joined = [_JOIN.join(x) for x in letters]
        except TypeError:
            joined = None
        if joined is not None and not all(
            j.count(_JOIN) == len(x) - 1 and j if x else not j for j, x in zip(joined, letters)
        ):
            joined = None
    return {
        "ids": parsed.ids,
        "answers": parsed.answers,
        "letters": letters if joined is None else joined,
        "letters_joined": joined is not None,
        "fingerprint": parsed.fingerprint,
        "threshold": parsed.threshold,
        "metrics": {k: [list(v.shape), v.astype("<f8").tobytes()] for k, v in parsed.metrics.items()},
        "recomputed": None if parsed.recomputed is None
        else {k: [list(v.shape), v.astype("<f8").tobytes()] for k, v in parsed.recomputed.items()},
        "differ": parsed.differ,
    }


def _from_cache(fields: dict[str, Any]) -> Parsed:
    """The inverse of :func:`_to_cache`."""
    letters = fields["letters"]
    if fields["letters_joined"]:
        letters = [x.split(_JOIN) if x else [] for x in letters]
    def arrays(stored: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: np.frombuffer(data, dtype="<f8").reshape(shape).astype(float) for k, (shape, data) in stored.items()}

    recomputed = fields.get("recomputed")
    return Parsed(
        fields["ids"], fields["answers"], letters, fields["fingerprint"], fields["threshold"], arrays(fields["metrics"]),
        None if recomputed is None else arrays(recomputed), fields["differ"],
    )

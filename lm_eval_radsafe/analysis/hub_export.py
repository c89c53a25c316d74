"""Results on the Hugging Face Hub: ``leaderboard.json`` as ``.eval_results/*.yaml`` files.

The Hub shows benchmark scores that model repositories carry in ``.eval_results/``: each
file is a YAML list of results, each result one value of one task of a benchmark dataset
(``dataset.id``, ``dataset.task_id``, optional ``dataset.revision``), with an optional
``date``, ``source`` (``url`` required, ``name``, ``user``, ``org``) and ``notes``
(https://huggingface.co/docs/hub/eval-results). :func:`export_hub` writes, per model, one
file per task (condition and regime), one result per headline metric: accuracy and each
safety rate are results of their own, ``task_id`` ``<task>/<metric>``, the value in the
metric's unit as the report shows it (percent for rates), and the interval, n, direction
and bootstrap in ``notes``. Nothing is uploaded: open the pull request with the files
(README, "Results on the Hub").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lm_eval_radsafe.metric_specs import headline_metrics, metric_spec

#: the fields the Hub documents for one result, and inside ``dataset`` and ``source``
RESULT_FIELDS = {"dataset", "value", "verifyToken", "date", "source", "notes"}
DATASET_FIELDS = {"id", "task_id", "revision"}
SOURCE_FIELDS = {"url", "name", "user", "org"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ExportError(ValueError):
    """A leaderboard or an option that cannot be exported; the message names which."""


def _folder_name(model: str) -> str:
    """A model's folder under the output: its name with path separators made safe."""
    return re.sub(r"[^\w.-]+", "_", model).strip("_") or "model"


def hub_results(entry: dict[str, Any], dataset_id: str, revision: str | None, date: str | None,
                source: dict[str, str] | None, bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    """The Hub results of one leaderboard entry (one model, condition and regime)."""
    results = []
    for name in headline_metrics(entry["regime"]):
        metric = (entry.get("metrics") or {}).get(name)
        if not metric or metric.get("estimate") is None:
            continue
        spec = metric_spec(name)
        dataset = {"id": dataset_id, "task_id": f"{entry['task']}/{name}"}
        if revision:
            dataset["revision"] = revision
        interval = spec.format_interval(metric.get("ci_low"), metric.get("ci_high"))
        better = {True: "higher is better", False: "lower is better", None: "no better direction"}[spec.higher_is_better]
        notes = (f"{spec.display_name}{' (%)' if spec.unit == 'percent' else ''}, {better}; 95% CI {interval} "
                 f"(question-level bootstrap, B={bootstrap.get('n_boot')}, seed {bootstrap.get('seed')}); "
                 f"n={metric.get('n_items')}; lm-eval-radsafe task {entry['task']}"
                 + (f" version {entry['task_version']}" if entry.get("task_version") else ""))
        result: dict[str, Any] = {"dataset": dataset, "value": round(float(metric["estimate"]) * spec.scale, 4)}
        if date:
            result["date"] = date
        if source:
            result["source"] = dict(source)
        result["notes"] = notes
        results.append(result)
    return results


def export_hub(
    leaderboard: str | Path, out: str | Path, dataset_id: str | None = None, revision: str | None = None,
    source_url: str | None = None, source_name: str | None = None,
) -> tuple[str, list[Path]]:
    """Write ``<out>/<model>/.eval_results/<task>.yaml`` for every entry of ``leaderboard``
    (a ``leaderboard.json`` of ``radsafe report --leaderboard``); the dataset id used and
    the files written.
    ``dataset_id`` defaults to the published dataset when every entry is a radsafe200 task."""
    import yaml

    from lm_eval_radsafe.analysis.leaderboard import SubmissionError, read_leaderboard
    from lm_eval_radsafe.loaders import HUB_DATASET

    path = Path(leaderboard)
    try:
        document = read_leaderboard(path)
    except SubmissionError as exc:
        raise ExportError(str(exc)) from None
    entries = document.get("entries")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ExportError(f"{path}: field 'entries': expected a list of objects")
    if dataset_id is None:
        if not entries or not all(str(entry.get("task", "")).startswith("radsafe200_") for entry in entries):
            raise ExportError(f"{path}: these runs are not all of the published benchmark (radsafe200 tasks): give --dataset-id")
        dataset_id = HUB_DATASET
    if not _HUB_ID.match(dataset_id):
        raise ExportError(f"--dataset-id {dataset_id!r}: give the benchmark dataset's hub id, as org/name")
    if source_url is not None and not re.match(r"^https?://\S+$", source_url):
        raise ExportError(f"--source-url {source_url!r}: give an http(s) URL (the Hub requires one for a source)")
    created = str(document.get("created") or "")
    date = created[:10] if re.match(r"^\d{4}-\d{2}-\d{2}", created) else None
    source = None
    if source_url:
        source = {"url": source_url, "name": source_name or f"lm-eval-radsafe {document.get('package_version', '')}".strip()}
    bootstrap = document.get("bootstrap") or {}
    written = []
    for number, entry in enumerate(entries):
        missing = [key for key in ("model", "task", "regime", "metrics") if key not in entry]
        if missing:
            raise ExportError(f"{path}: entries[{number}]: missing field {missing[0]!r}")
        results = hub_results(entry, dataset_id, revision, date, source, bootstrap)
        if not results:
            continue
        target = Path(out) / _folder_name(str(entry["model"])) / ".eval_results" / f"{entry['task']}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# {entry['model']}: {entry['task']} ({entry['condition']}, {entry['regime']}), from {path.name} "
                  f"(dataset fingerprint {document.get('dataset_fingerprint')})\n")
        target.write_text(header + yaml.safe_dump(results, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written.append(target)
    if not written:
        raise ExportError(f"{path}: no entry with a headline metric to export")
    return dataset_id, written


def check_hub_results(data: Any) -> list[str]:
    """What in one ``.eval_results`` file's content departs from the Hub's documented
    fields (empty: it conforms)."""
    problems = []
    if not isinstance(data, list) or not data:
        return ["the file must hold a non-empty list of results"]
    for i, result in enumerate(data):
        where = f"[{i}]"
        if not isinstance(result, dict):
            problems.append(f"{where}: a result is a mapping")
            continue
        problems += [f"{where}.{key}: not a documented field" for key in sorted(set(result) - RESULT_FIELDS)]
        dataset = result.get("dataset")
        if not isinstance(dataset, dict) or not isinstance(dataset.get("id"), str) or not isinstance(dataset.get("task_id"), str):
            problems.append(f"{where}.dataset: needs string id and task_id")
        else:
            problems += [f"{where}.dataset.{key}: not a documented field" for key in sorted(set(dataset) - DATASET_FIELDS)]
            if "revision" in dataset and not isinstance(dataset["revision"], str):
                problems.append(f"{where}.dataset.revision: a string")
        value = result.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{where}.value: required, a number")
        if "date" in result and not (isinstance(result["date"], str) and re.match(r"^\d{4}-\d{2}-\d{2}", result["date"])):
            problems.append(f"{where}.date: an ISO-8601 date or datetime, as a string")
        if "source" in result:
            source = result["source"]
            if not isinstance(source, dict) or not isinstance(source.get("url"), str):
                problems.append(f"{where}.source: needs a url")
            else:
                problems += [f"{where}.source.{key}: not a documented field" for key in sorted(set(source) - SOURCE_FIELDS)]
        if "notes" in result and not isinstance(result["notes"], str):
            problems.append(f"{where}.notes: a string")
    return problems

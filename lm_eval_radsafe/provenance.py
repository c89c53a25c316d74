"""Provenance of a radsafe task: recorded by the task class, read back from results files.

Each task YAML names its class (``class: !function utils.RadSafeTask``, or
``RadSafeChoiceTask`` for the log-likelihood regime). The class is lm-eval's configurable
task with one addition (:mod:`lm_eval_radsafe.task`): its ``dump_config`` adds, under ``metadata.radsafe``, where the
task's items came from (source, fingerprint, count), the evidence it was given (prepared
folder and its fingerprint, retriever, agent identity and summed cost) and the package and
task versions. lm-eval writes every task's dumped config into the results file
(``configs``), so plain ``lm_eval --include_path ...`` runs carry the same provenance as
``radsafe eval`` runs, with nothing patched. The dataset loader attaches the record to the
dataset it returns (:func:`attach`); nothing travels through process globals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: key of the provenance record in a task config's ``metadata`` (and of the results block)
PROVENANCE_KEY = "radsafe"
_ATTRIBUTE = "_radsafe_provenance"


def attach(dataset: Any, record: Mapping[str, Any]) -> Any:
    """Give ``dataset`` (what a radsafe ``custom_dataset`` returns) its provenance record."""
    setattr(dataset, _ATTRIBUTE, dict(record))
    return dataset


def attached(dataset: Any) -> dict[str, Any] | None:
    """The provenance record :func:`attach` gave ``dataset``, if any."""
    record = getattr(dataset, _ATTRIBUTE, None)
    return dict(record) if record is not None else None


def task_of_key(key: str) -> str:
    """The task name of a results-file key: lm-eval 0.5 keys a task run inside a group as
    ``group::task`` (in ``results``, ``configs``, ``n-samples`` and the samples file name),
    0.4 by the task name alone."""
    return key.rsplit("::", 1)[-1]


def task_provenance(results: Mapping[str, Any], task: str) -> dict[str, Any]:
    """What a results file records about ``task``: the ``metadata.radsafe`` record of its
    config (any run of a radsafe task, plain ``lm_eval`` included), overlaid with the
    ``radsafe`` block that ``radsafe eval`` adds (serving counts, answering time; older
    files keep the dataset there too). ``task`` is the task's key in the results file
    (``group::task`` or the name). Empty when neither is present."""
    config = ((results.get("configs") or {}).get(task) or {}).get("metadata") or {}
    record = dict(config.get(PROVENANCE_KEY) or {}) if isinstance(config, Mapping) else {}
    blocks = (results.get(PROVENANCE_KEY) or {}).get("tasks") or {}
    # request counts and clocks know a task by its name, configs by its key
    return {**record, **(blocks.get(task_of_key(task)) or {}), **(blocks.get(task) or {})}


def package_version(results: Mapping[str, Any]) -> str | None:
    """The lm-eval-radsafe version that wrote ``results`` (results block, else any task config)."""
    version = (results.get(PROVENANCE_KEY) or {}).get("package_version")
    if version:
        return str(version)
    for config in (results.get("configs") or {}).values():
        record = ((config or {}).get("metadata") or {}).get(PROVENANCE_KEY) or {}
        if record.get("package_version"):
            return str(record["package_version"])
    return None


class RequestClock:
    """The answering model's request time per task, measured on one model instance.

    :meth:`install` wraps the instance's request methods (never lm-eval's classes). lm-eval
    sends the requests of all tasks of a run together, one call per request type, so a
    call's wall time is shared among its tasks in proportion to their requests; the
    per-item figure divides a task's share by its number of distinct items. Generated
    outputs are counted empty or not, per task (all empty: a missing chat template).
    """

    REQUEST_TYPES = ("generate_until", "loglikelihood", "loglikelihood_rolling")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.requests: dict[str, int] = {}
        self.items: dict[str, set[Any]] = {}
        self.outputs: dict[str, dict[str, int]] = {}

    def install(self, lm: Any) -> RequestClock:
        """Time ``lm``'s request methods from now on (once per instance); returns the clock
        already installed on ``lm`` if there is one."""
        installed = getattr(lm, "_radsafe_clock", None)
        if installed is not None:
            return installed
        for request_type in self.REQUEST_TYPES:
            method = getattr(lm, request_type, None)
            if method is not None:
                setattr(lm, request_type, self._timed(method, request_type))
        lm._radsafe_clock = self
        return self

    def _timed(self, method: Any, request_type: str) -> Any:
        import time
        from collections import Counter

        def timed(requests: list[Any], *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            out = method(requests, *args, **kwargs)
            spent = time.monotonic() - started
            counts = Counter(str(r.task_name) for r in requests)
            total = sum(counts.values()) or 1
            for task, n in counts.items():
                self.seconds[task] = self.seconds.get(task, 0.0) + spent * n / total
                self.requests[task] = self.requests.get(task, 0) + n
                self.items.setdefault(task, set()).update(r.doc_id for r in requests if str(r.task_name) == task)
            if request_type == "generate_until":
                for request, reply in zip(requests, out):
                    counts_of = self.outputs.setdefault(str(request.task_name), {"empty": 0, "text": 0})
                    counts_of["empty" if not str(reply).strip() else "text"] += 1
            return out

        return timed

    def answering(self) -> dict[str, dict[str, Any]]:
        """Task -> seconds, requests, distinct items and seconds per item."""
        out = {}
        for task, seconds in sorted(self.seconds.items()):
            n = len(self.items.get(task, ()))
            out[task] = {
                "seconds": round(seconds, 3),
                "requests": self.requests[task],
                "items": n,
                "seconds_per_item": round(seconds / n, 4) if n else None,
            }
        return out

    def empty_output_warnings(self, chat_template: bool) -> list[str]:
        """One line per task whose generated outputs were all empty, with the likely fix."""
        lines = []
        for task, counts in sorted(self.outputs.items()):
            if counts["empty"] and not counts["text"]:
                hint = (
                    "chat and instruct models need --apply_chat_template"
                    if not chat_template
                    else "check the model and server: they returned no text"
                )
                lines.append(f"{task}: all {counts['empty']} outputs were empty, so every item counts as an abstention; {hint}")
        return lines


def results_block(results: Mapping[str, Any], clock: RequestClock | None = None, serving: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``radsafe`` block `radsafe eval` adds to a results file: package version and, per
    task, the provenance its config carries, the server counts (``serving``: task ->
    :class:`~lm_eval_radsafe.endpoint.EndpointStats`) and the answering time (``clock``)."""
    from lm_eval_radsafe import __version__

    tasks: dict[str, dict[str, Any]] = {}
    for task, config in sorted((results.get("configs") or {}).items()):
        record = ((config or {}).get("metadata") or {}).get(PROVENANCE_KEY)
        if record:
            tasks[task] = {k: v for k, v in record.items() if k != "package_version"}
    for task, stats in sorted((serving or {}).items()):
        tasks.setdefault(task, {})["serving"] = stats.to_dict()
    for task, entry in (clock.answering() if clock else {}).items():
        tasks.setdefault(task, {})["answering"] = entry
    return {"package_version": __version__, "tasks": tasks}

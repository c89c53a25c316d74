"""Cells of a sweep: one (model, task) each, with a content address.

A cell's key hashes everything that decides its numbers: the model and how it is served
(not where: no URL, port or key), the
task and its version, the dataset's fingerprint, the prepared evidence's fingerprint (for
conditions that read it), the generation settings and the package version. A cell lives in
``<output>/<model>/<task>/`` with ``cell.json``, its record: key, what went into the key,
state (``done`` or ``failed`` with the reason), the results file, request counts. A done
cell with the current key is skipped; a cell with another key is stale: run again, its old
folder moved to ``<output>/<model>/.replaced/`` first (kept, never mixed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lm_eval_radsafe.sweep.spec import Sweep, SweepModel

RECORD = "cell.json"
#: where a cell's lm-eval output goes inside its folder
OUTPUT = "out"
REPLACED = ".replaced"
#: bumped when the layout of a cell or its record changes
CELL_FORMAT = 1

DONE, FAILED, STALE, MISSING, RUNNING = "done", "failed", "stale", "missing", "running"


@dataclass(frozen=True)
class Cell:
    """One model x task of a sweep."""

    model: SweepModel
    task: str
    condition: str
    regime: str
    folder: Path
    key: str
    key_parts: dict[str, Any]

    @property
    def record_path(self) -> Path:
        """The cell's record, ``cell.json``."""
        return self.folder / RECORD

    @property
    def output(self) -> Path:
        """Where the cell's ``radsafe eval`` writes (its ``--output_path``)."""
        return self.folder / OUTPUT


def serving_identity(model: SweepModel) -> dict[str, Any]:
    """What of a model's serving decides its answers: the kind, the model (served name,
    weights) and its arguments; not where it is served (a server that moved to another
    node serves the same model, as for the response cache), how many requests fly at once,
    waits or the key."""
    serve = asdict(model.serve)
    for key in ("base_url", "num_concurrent", "port", "startup_timeout", "retry_budget", "key_env"):
        serve.pop(key, None)
    identity = {"name": model.name, "serve": {key: value for key, value in serve.items() if value not in (None, [], ())}}
    if model.card.get("think_delimiter"):  # handed to in-process backends as think_end_token
        identity["think_delimiter"] = model.card["think_delimiter"]
    return identity


@cache
def _dataset_fingerprint(dataset: str) -> str:
    from lm_eval_radsafe.loaders import load_items

    return load_items(dataset).fingerprint


def _prepared_fingerprint(folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return str(manifest.get("prepared_fingerprint") or hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest())


def plan_cells(sweep: Sweep, models: list[SweepModel] | None = None) -> list[Cell]:
    """Every cell of ``sweep`` (of ``models`` only, when given), model by model, in the
    file's order of conditions and regimes."""
    from lm_eval_radsafe import __version__
    from lm_eval_radsafe.conditions import CONDITIONS, TASK_VERSION, task_name

    dataset = _dataset_fingerprint(sweep.dataset)
    prepared = _prepared_fingerprint(sweep.prepared) if sweep.prepared is not None else None
    generation = {
        "limit": sweep.limit, "apply_chat_template": sweep.apply_chat_template, "gen_kwargs": sweep.gen_kwargs, "seed": sweep.seed,
    }  # fmt: skip
    cells = []
    for model in models if models is not None else sweep.models:
        identity = serving_identity(model)
        for condition in sweep.conditions:
            for regime in sweep.regimes:
                task = task_name(sweep.family, condition, regime)
                parts = {
                    "format": CELL_FORMAT,
                    "model": identity,
                    "task": task,
                    "task_version": TASK_VERSION,
                    "dataset": dataset,
                    "prepared": prepared if CONDITIONS[condition].uses_retrieval else None,
                    "generation": generation,
                    "package_version": __version__,
                }
                key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
                cells.append(Cell(model, task, condition, regime, sweep.output / model.name / task, key, parts))
    return cells


def read_record(cell: Cell) -> dict[str, Any] | None:
    """The cell's record, or None (no record, or one that cannot be read)."""
    try:
        record = json.loads(cell.record_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def write_record(cell: Cell, **fields: Any) -> dict[str, Any]:
    """Write the cell's record (atomically): its key and key parts plus ``fields``."""
    record = {"key": cell.key, "model": cell.model.name, "task": cell.task, **fields, "key_parts": cell.key_parts}
    cell.folder.mkdir(parents=True, exist_ok=True)
    partial = cell.record_path.with_name(f"{RECORD}.{os.getpid()}.part")
    partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    partial.replace(cell.record_path)
    return record


@dataclass(frozen=True)
class CellState:
    """Where a cell stands: ``state`` and, for failed or stale cells, why."""

    cell: Cell
    state: str
    reason: str = ""
    record: dict[str, Any] | None = None


def cell_state(cell: Cell) -> CellState:
    """done / failed / stale / missing / running of one cell, from its folder."""
    record = read_record(cell)
    if record is None:
        if cell.folder.exists() and any(cell.folder.iterdir()):
            return CellState(cell, FAILED, "an earlier run left output without a record (killed before it started writing one?)")
        return CellState(cell, MISSING)
    if record.get("key") != cell.key:
        return CellState(cell, STALE, _changed(record.get("key_parts") or {}, cell.key_parts), record)
    state = record.get("state")
    if state == DONE:
        return CellState(cell, DONE, "", record)
    if state == RUNNING:
        return CellState(cell, RUNNING, f"started {record.get('started')} (killed, or still running elsewhere)", record)
    return CellState(cell, FAILED, str(record.get("reason") or "failed"), record)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two key parts, in words."""
    names = {
        "model": "model or serving", "task_version": "task version", "dataset": "dataset", "prepared": "prepared evidence",
        "generation": "generation settings", "package_version": "package version", "format": "cell format", "task": "task",
    }  # fmt: skip
    differ = [names.get(key, key) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return "changed since it ran: " + (", ".join(differ) or "the key")


def move_aside(cell: Cell) -> Path | None:
    """Move an old (stale or failed) cell folder under ``<model>/.replaced/``; its new path."""
    if not cell.folder.exists():
        return None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = cell.folder.parent / REPLACED / f"{cell.task}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(cell.folder), str(target))
    return target

"""Where a sweep stands (``radsafe sweep status``) and its hand-off to ``radsafe report``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lm_eval_radsafe.sweep.cells import DONE, FAILED, MISSING, RUNNING, STALE, CellState, cell_state, plan_cells
from lm_eval_radsafe.sweep.spec import Sweep, SweepError

logger = logging.getLogger(__name__)

STATES = (DONE, FAILED, STALE, RUNNING, MISSING)


def sweep_states(sweep: Sweep) -> list[CellState]:
    """The state of every cell of ``sweep``, model by model."""
    return [cell_state(cell) for cell in plan_cells(sweep)]


def status_table(states: list[CellState]) -> str:
    """One row per model (cells per state, retried requests, infrastructure errors), then
    every cell that is not done with its reason."""
    models: dict[str, dict[str, Any]] = {}
    for state in states:
        row = models.setdefault(state.cell.model.name, {**{s: 0 for s in STATES}, "retries": 0, "errors": 0})
        row[state.state] += 1
        record = state.record or {}
        if state.state in (DONE, FAILED):
            row["retries"] += int(record.get("retries") or 0)
            row["errors"] += int(record.get("infrastructure_errors") or 0)
    width = max(len("model"), *(len(name) for name in models))
    header = f"{'model':<{width}}  " + "  ".join(f"{s:>7}" for s in STATES) + "  retried  infra errors"
    lines = [header]
    for name, row in models.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{row[s]:>7}" for s in STATES) + f"  {row['retries']:>7}  {row['errors']:>12}")
    totals = {s: sum(1 for st in states if st.state == s) for s in STATES}
    retried, errors = sum(row["retries"] for row in models.values()), sum(row["errors"] for row in models.values())
    lines.append(f"{len(states)} cells: " + ", ".join(f"{totals[s]} {s}" for s in STATES if totals[s])
                 + f"; {retried} request tries retried, {errors} infrastructure errors")
    pending = [st for st in states if st.state != DONE]
    if pending:
        lines.append("")
        lines += [f"{st.cell.model.name} / {st.cell.task}: {st.state}" + (f": {st.reason}" if st.reason else "") for st in pending]
    return "\n".join(lines)


def status_json(states: list[CellState]) -> list[dict[str, Any]]:
    """The states as JSON-ready rows (``radsafe sweep status --json``)."""
    return [
        {
            "model": st.cell.model.name, "task": st.cell.task, "condition": st.cell.condition, "regime": st.cell.regime,
            "state": st.state, "reason": st.reason, "folder": str(st.cell.folder),
            "retries": (st.record or {}).get("retries"), "infrastructure_errors": (st.record or {}).get("infrastructure_errors"),
        }
        for st in states
    ]


def write_model_cards(sweep: Sweep, states: list[CellState], path: Path) -> Path | None:
    """The sweep's model cards as the report names the models (the label its results
    files give each model); None when no model has a card with a family and parameters."""
    from lm_eval_radsafe.analysis.runs import model_label

    rows = []
    for model in sweep.models:
        card = model.card
        if not card.get("family") or card.get("parameters") is None:
            continue
        done = [st for st in states if st.cell.model.name == model.name and st.state == DONE]
        if not done:
            continue
        results_file = done[0].cell.folder / str(done[0].record["results_file"])  # type: ignore[index]
        label = model_label(json.loads(results_file.read_text(encoding="utf-8")))
        rows.append({"name": label, **{k: v for k, v in card.items() if k != "think_delimiter"}})
    if not rows:
        return None
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"models": rows}, sort_keys=False), encoding="utf-8")
    return path


def report_inputs(sweep: Sweep, states: list[CellState], allow_incomplete: bool = False) -> list[Path]:
    """The output folders of the done cells; SweepError when cells are not done, unless
    ``allow_incomplete`` (the report then rests on the done cells, and says which are left)."""
    pending = [st for st in states if st.state != DONE]
    if pending and not allow_incomplete:
        sample = ", ".join(f"{st.cell.model.name} / {st.cell.task} ({st.state})" for st in pending[:3])
        raise SweepError(
            f"{len(pending)} of {len(states)} cells are not done (e.g. {sample}); run `radsafe sweep run` to finish them, "
            "or pass --allow-incomplete to report the done cells"
        )
    if pending:
        logger.warning("reporting %d of %d cells; not done: %s", len(states) - len(pending), len(states),
                       ", ".join(f"{st.cell.model.name} / {st.cell.task}" for st in pending))
    done = [st.cell.output for st in states if st.state == DONE]
    if not done:
        raise SweepError("no cell is done yet: nothing to report (run `radsafe sweep run` first)")
    return done

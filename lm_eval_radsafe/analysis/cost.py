"""Cost per item of each run: the answering model's time and, for ``agentic_rag``, the agent's.

The study reports answering latency only and excludes the agentic report's generation; we
show both side by side. Figures come from the ``radsafe`` block of the results file:
``answering`` (request time measured by ``radsafe eval``), ``agentic`` (the agent's
calls, tokens and time, summed over its reports) and ``serving`` (what the server did for
our API backends: requests, retries, answers from the response cache, longest wait).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

COST_COLUMNS = (
    "model",
    "condition",
    "regime",
    "n_items",
    "answering_seconds_per_item",
    "agent",
    "agent_items",
    "agent_calls_per_item",
    "agent_tokens_per_item",
    "agent_seconds_per_item",
    "total_seconds_per_item",
    "requests",
    "retried",
    "retry_causes",
    "cache_hits",
    "longest_wait_s",
)


def _per_item(total: Any, n: int) -> float:
    return float(total) / n if n and total is not None else math.nan


def cost_table(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per run that recorded answering time or agent cost (NaN where unknown).

    ``total_seconds_per_item`` = answering + agent seconds per item, defined only when both
    are known (agentic runs) or the run has no agent (answering alone).
    """
    rows = []
    for run in runs:
        info = run.meta.get("provenance") or {}
        answering = info.get("answering") or {}
        agentic = info.get("agentic") or {}
        serving = info.get("serving") or {}
        if not answering and not agentic and not serving:
            continue
        answer_s = answering.get("seconds_per_item")
        answer_s = math.nan if answer_s is None else float(answer_s)
        n_agent = int(agentic.get("n_items") or 0)
        built = agentic.get("source") == "prepared"
        agent_s = _per_item(agentic.get("seconds"), n_agent) if built else math.nan
        if not agentic:
            total = answer_s
        else:
            total = answer_s + agent_s  # NaN when the report's cost is unknown (dataset reports)
        rows.append(
            {
                "model": run.model,
                "condition": run.condition,
                "regime": run.regime,
                "n_items": len(run.item_ids),
                "answering_seconds_per_item": answer_s,
                "agent": (agentic.get("agent") or {}).get("model", "") if built else ("dataset report (cost unknown)" if agentic else ""),
                "agent_items": n_agent if built else 0,
                "agent_calls_per_item": _per_item(agentic.get("calls"), n_agent) if built else math.nan,
                "agent_tokens_per_item": _per_item(
                    int(agentic.get("prompt_tokens", 0)) + int(agentic.get("completion_tokens", 0)), n_agent
                )
                if built
                else math.nan,
                "agent_seconds_per_item": agent_s,
                "total_seconds_per_item": total,
                "requests": serving.get("requests", math.nan),
                "retried": sum((serving.get("retries") or {}).values()) if serving else math.nan,
                "retry_causes": ", ".join(f"{cause} {n}" for cause, n in (serving.get("retries") or {}).items()),
                "cache_hits": serving.get("cache_hits", math.nan),
                "longest_wait_s": serving.get("longest_wait_s", math.nan),
            }
        )
    return rows

"""Per-item evidence of a retrieval condition, built when lm-eval loads the task.

Top-k and padded evidence depend only on the prepared folder. Budgeted (long-context)
evidence is cut with the **evaluated model's own tokenizer**, named by the run's model
arguments (``tokenizer`` or ``pretrained``, plus ``gguf_file``); the model's window comes
from ``max_model_len`` / ``max_length`` in the model arguments or ``--metadata``, else from
its config. A condition the window cannot hold is refused with a message, never left to
the backend's silent left-truncation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lm_eval_radsafe.conditions import Condition, ConditionUnavailable
from lm_eval_radsafe.retrieval.packing import pack_budgets, padded_text, top_k_text
from lm_eval_radsafe.retrieval.prepare import Prepared
from lm_eval_radsafe.retrieval.tokenizers import HFTokenizer, get_tokenizer

logger = logging.getLogger(__name__)

#: tokens kept free besides evidence and prompt (the study: 1,000)
MARGIN = 1000
#: answer budget assumed when sizing a window (the study's reasoning budget)
ANSWER_BUDGET = 4096


class ConditionDoesNotFit(ConditionUnavailable):
    """The evaluated model's window cannot hold this condition's evidence."""


@dataclass(frozen=True)
class ModelFacts:
    """What budgeting needs to know about the evaluated model."""

    tokenizer: HFTokenizer
    window: int


#: ``--metadata`` key naming the evaluated model's tokenizer when the model args do not
TOKENIZER_METADATA_KEY = "radsafe_tokenizer"


def _model_source(metadata: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The tokenizer to load: ``radsafe_tokenizer`` (metadata), ``tokenizer`` or ``pretrained``
    (model args). An API model's served name (``model=``) is never taken for one: it need not
    name a tokenizer, and looking it up on the hub only waits for a timeout."""
    explicit = metadata.get(TOKENIZER_METADATA_KEY) or metadata.get("tokenizer")
    name = explicit or metadata.get("pretrained")
    extra = {"gguf_file": metadata["gguf_file"]} if metadata.get("gguf_file") and not explicit else {}
    return (str(name) if name else None), extra


@lru_cache(maxsize=4)
def _load_facts(name: str, gguf_file: str | None, window: int | None) -> ModelFacts:
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    try:  # a local folder or the hub cache first: no network wait when the files are here
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    if window is None:
        config = AutoConfig.from_pretrained(name, **kwargs)
        window = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if not window:
            raise ConditionDoesNotFit(
                f"cannot tell the context window of {name}: pass --metadata '{{\"max_model_len\": N}}'"
            )
    return ModelFacts(HFTokenizer(name, tokenizer=tokenizer), int(window))


def model_facts(metadata: dict[str, Any]) -> ModelFacts:
    """The evaluated model's tokenizer and window, from the run's model arguments.

    Raises :class:`ConditionDoesNotFit` saying how to name a tokenizer when none is known or
    the named one cannot be loaded.
    """
    name, extra = _model_source(metadata)
    if not name:
        raise ConditionDoesNotFit(
            "no tokenizer of the evaluated model is known: pass pretrained=... or tokenizer=<folder or hub id> "
            f"in --model_args, or --metadata '{{\"{TOKENIZER_METADATA_KEY}\": \"<folder or hub id>\"}}'"
        )
    window = metadata.get("max_model_len") or metadata.get("max_length")
    key = (name, extra.get("gguf_file"))
    if key not in _UNLOADABLE:
        try:
            return _load_facts(name, extra.get("gguf_file"), int(window) if window else None)
        except OSError as exc:  # remembered: every task of a run would wait for the same failure
            _UNLOADABLE[key] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise ConditionDoesNotFit(
        f"cannot load the tokenizer {name!r} ({_UNLOADABLE[key]}); pass a local folder as tokenizer=... or "
        f"--metadata '{{\"{TOKENIZER_METADATA_KEY}\": \"<folder>\"}}'"
    )


#: tokenizers that failed to load in this process, with the first line of the error
_UNLOADABLE: dict[tuple[str, str | None], str] = {}


@lru_cache(maxsize=256)
def _budget_cuts(key: tuple[str, str, str], chunks: tuple[str, ...], budgets: tuple[int, ...], facts: ModelFacts) -> tuple[Any, ...]:
    # one tokenisation of a question's ranked text serves every budget of every task
    return tuple(pack_budgets(chunks, budgets, facts.tokenizer))


def build_evidence(condition: Condition, prepared: Prepared, item_id: str, prompt_tokens: int | None, metadata: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    """(evidence text, passage ids in the prompt by rank, details) of one item."""
    ranked = prepared.ranked[item_id]
    if condition.retrieval == "top_k":
        k = int(condition.k or 1)
        return top_k_text(prepared.chunk_texts(item_id, k), k), [p for _, p in ranked[:k]], {"chunks": min(k, len(ranked))}
    if condition.retrieval == "padded":
        counter = get_tokenizer(prepared.manifest["chunking"]["tokenizer"])
        target = counter.count(top_k_text(prepared.chunk_texts(item_id, condition.k), int(condition.k or 10)))
        text = padded_text(prepared.chunk_texts(item_id, 1)[0], target, counter.count)
        return text, [ranked[0][1]], {"target_tokens": target, "tokenizer": counter.name}
    if condition.retrieval == "budget":
        facts = model_facts(metadata)
        budget = budget_for(condition, facts.window, prompt_tokens or 0, metadata)
        budgets = tuple(sorted({b for b in _standard_budgets(facts.window, prompt_tokens or 0, metadata)} | {budget}))
        key = (prepared.manifest["prepared_fingerprint"], facts.tokenizer.name, item_id)
        cuts = dict(zip(budgets, _budget_cuts(key, tuple(prepared.chunk_texts(item_id)), budgets, facts)))
        packed = cuts[budget]
        return packed.text, [p for _, p in ranked[: packed.chunks_included]], {"budget": budget, "tokens": packed.n_tokens, "chunks": packed.chunks_included}
    if condition.retrieval == "agentic":
        record = prepared.agentic_reports()[item_id]
        cost = {
            "agent_calls": int(record["calls"]),
            "agent_tokens": int(record["prompt_tokens"]) + int(record["completion_tokens"]),
            "agent_seconds": float(record["seconds"]),
        }
        return record["report"], list(record["passage_ids"]), {"fallback_plan": bool(record["fallback_plan"]), **cost}
    raise ValueError(f"condition {condition.name!r} takes no retrieved evidence")


def _standard_budgets(window: int, prompt_tokens: int, metadata: dict[str, Any]) -> list[int]:
    from lm_eval_radsafe.conditions import CONDITIONS

    budgets = []
    for cond in CONDITIONS.values():
        if cond.retrieval == "budget":
            try:
                budgets.append(budget_for(cond, window, prompt_tokens, metadata))
            except ConditionDoesNotFit:
                continue
    return budgets


def budget_for(condition: Condition, window: int, prompt_tokens: int, metadata: dict[str, Any]) -> int:
    """Evidence tokens of a budget condition; :class:`ConditionDoesNotFit` if the window is too small.

    ``context_max`` = window - prompt - answer budget - margin (computed, never typed);
    fixed budgets must fit in that same room.
    """
    answer = int(metadata.get("answer_budget", ANSWER_BUDGET))
    margin = int(metadata.get("context_margin", MARGIN))
    room = window - prompt_tokens - answer - margin
    if condition.budget_tokens is None:
        if room <= 0:
            raise ConditionDoesNotFit(
                f"{condition.name}: window {window} leaves no room after prompt {prompt_tokens}, "
                f"answer budget {answer} and margin {margin} tokens"
            )
        return room
    if condition.budget_tokens > room:
        raise ConditionDoesNotFit(
            f"{condition.name} needs {condition.budget_tokens:,} evidence tokens but the model's window of "
            f"{window:,} leaves {max(room, 0):,} after prompt ({prompt_tokens}), answer budget ({answer}) and "
            f"margin ({margin}); skip this condition for this model"
        )
    return condition.budget_tokens


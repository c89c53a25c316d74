"""The functions lm-eval calls for the ``radsafe200_*`` and ``radsafe_demo_*`` tasks.

``tasks/radsafe200/utils.py`` only re-exports these; the YAMLs hold configuration. Each
task YAML names its condition and regime in its ``metadata`` (``radsafe_condition``,
``radsafe_regime``, written by ``tasks/radsafe200/_generate_configs.py``); lm-eval passes
that metadata to the family's ``custom_dataset`` loader, which reads the condition once,
loads the items once, builds the evidence and attaches the condition to every row.

Dataset selection for the ``radsafe200`` family, first match wins:

1. ``--metadata '{"radsafe_data": "<file, folder or hub id>"}'``;
2. the ``RADSAFE_DATA`` environment variable;
3. the published benchmark on the hub, :data:`~lm_eval_radsafe.loaders.HUB_DATASET`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import datasets

from lm_eval_radsafe import __version__
from lm_eval_radsafe.conditions import (
    CONDITION_KEY,
    REGIME_KEY,
    REGIMES,
    Condition,
    ConditionUnavailable,
    MetadataError,
    get_condition,
    task_name,
)
from lm_eval_radsafe.filters import NULL
from lm_eval_radsafe.loaders import (
    ALLOW_UNLABELLED,
    DEMO_SOURCE,
    HUB_DATASET,
    LoadedItems,
    item_from_doc,
    load_items,
)
from lm_eval_radsafe.metrics import OVERCONFIDENCE_THRESHOLD, score_item, score_loglikelihoods, score_orders, score_votes
from lm_eval_radsafe.option_order import (
    ORDER_SEED,
    ORDERS_FIELD,
    ORDERS_KEY,
    letter_references,
    option_orders,
    reordered_options,
    resolve_orders,
)
from lm_eval_radsafe.prompts import system_prompt, user_prompt
from lm_eval_radsafe.provenance import attach

logger = logging.getLogger(__name__)

DATA_ENV = "RADSAFE_DATA"
DATA_METADATA_KEY = "radsafe_data"
THRESHOLD_KEY = "overconfidence_threshold"
#: Recorded for every item (and so in every samples file).
FINGERPRINT_FIELD = "dataset_fingerprint"
SOURCE_FIELD = "dataset_source"


def resolve_source(metadata: dict[str, Any]) -> str:
    """Where the ``radsafe200`` family reads its items (see the module docstring)."""
    value = metadata.get(DATA_METADATA_KEY) or os.environ.get(DATA_ENV) or HUB_DATASET
    return str(value)


def resolve_threshold(metadata: dict[str, Any]) -> float:
    """Dangerous-overconfidence threshold from ``--metadata`` (default 0.8), checked."""
    value = metadata.get(THRESHOLD_KEY, OVERCONFIDENCE_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise MetadataError(f"metadata {THRESHOLD_KEY!r} must be a number in [0, 1], got {value!r}")
    return float(value)


def resolve_allow_unlabelled(metadata: dict[str, Any]) -> bool:
    """``--metadata '{"allow_unlabelled": true}'``: accept a dataset without option labels
    (its safety rates are then NaN). Default False."""
    value = metadata.get(ALLOW_UNLABELLED, False)
    if not isinstance(value, bool):
        raise MetadataError(f"metadata {ALLOW_UNLABELLED!r} must be true or false, got {value!r}")
    return value


def to_dataset(loaded: LoadedItems, threshold: float = OVERCONFIDENCE_THRESHOLD) -> datasets.DatasetDict:
    """Items as the one-split ``DatasetDict`` lm-eval expects, fingerprint on every row.

    A dataset with unlabelled items gets a ``labelled`` column on every row, which
    :func:`item_from_doc` reads back so that flag metrics score NaN.
    """
    rows = []
    for item in loaded.items:
        row = item.to_dict()
        row["agentic_report"] = row["agentic_report"] or ""
        row[FINGERPRINT_FIELD] = loaded.fingerprint
        row[SOURCE_FIELD] = loaded.source
        row[THRESHOLD_KEY] = threshold
        if not loaded.labelled:
            row["labelled"] = item.labelled
        rows.append(row)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def variant(metadata: dict[str, Any]) -> tuple[Condition, str]:
    """The condition and the regime name that a task's YAML gives in its ``metadata``.

    Raises ``ValueError`` when the condition is missing or unknown, or the regime unknown.
    """
    name = metadata.get(CONDITION_KEY)
    if not name:
        raise ValueError(
            f"the task's metadata names no {CONDITION_KEY!r}: a radsafe task YAML sets metadata: "
            f"{{{CONDITION_KEY}: <condition>, {REGIME_KEY}: <regime>}} (tasks/radsafe200/_generate_configs.py writes them)"
        )
    try:
        condition = get_condition(str(name))
    except KeyError as exc:
        raise ValueError(f"metadata {CONDITION_KEY!r}: {exc.args[0]}") from None
    regime = str(metadata.get(REGIME_KEY) or "greedy")
    if regime not in REGIMES:
        raise ValueError(f"metadata {REGIME_KEY!r}: unknown regime {regime!r}; known: {', '.join(REGIMES)}")
    return condition, regime


PREPARED_ENV = "RADSAFE_PREPARED"
PREPARED_METADATA_KEY = "prepared"


def _prepared_folder(source: str, metadata: dict[str, Any]) -> str | None:
    """The prepared folder the run names; None for the demo set, which prepares itself.
    Raises :class:`ConditionUnavailable` (before any item is read) when there is none."""
    folder = metadata.get(PREPARED_METADATA_KEY) or os.environ.get(PREPARED_ENV)
    if not folder and source != DEMO_SOURCE:
        raise ConditionUnavailable(
            "retrieval conditions read evidence from a prepared folder: run `radsafe prepare --dataset ... "
            "--corpus ... --out DIR`, then pass --metadata '{\"prepared\": \"DIR\"}' or set RADSAFE_PREPARED"
        )
    return str(folder) if folder else None


def _prepared(loaded: LoadedItems, source: str, metadata: dict[str, Any]) -> Any:
    """The prepared folder of a retrieval task, checked against the items ``loaded`` from
    ``source`` whatever the source; the demo set prepares itself if needed."""
    from lm_eval_radsafe.paths import cache_root
    from lm_eval_radsafe.retrieval.prepare import PrepareSettings, load_prepared, prepare

    folder: str | Path | None = _prepared_folder(source, metadata)
    if not folder:
        from lm_eval_radsafe.retrieval.corpus import corpus_hash, read_corpus

        # keyed by the bundled items and corpus, so a new release never reads stale evidence
        key = loaded.fingerprint[7:19] + "-" + corpus_hash(read_corpus("demo"))[7:19]
        folder = cache_root() / "prepared" / f"demo-bm25-{key}"
        if not (Path(folder) / "manifest.json").is_file():
            logger.info("preparing the demo corpus evidence in %s", folder)
            prepare(loaded, "demo", folder, PrepareSettings(), progress=False)
    return load_prepared(folder, loaded)


def _retrieval_rows(dataset: datasets.DatasetDict, condition: Any, prepared: Any, metadata: dict[str, Any]) -> datasets.DatasetDict:
    from lm_eval_radsafe.retrieval.evidence import ANSWER_BUDGET, ConditionDoesNotFit, build_evidence, model_facts

    system = system_prompt()
    facts = model_facts(metadata) if condition.retrieval == "budget" else _facts_if_known(metadata)
    rows, too_long = [], []
    for row in dataset["test"]:
        prompt_tokens = None
        if facts is not None:
            bare = user_prompt("closed_book", row["question"], row["options"])
            prompt_tokens = facts.tokenizer.count(system + "\n\n" + bare) + CHAT_TEMPLATE_ALLOWANCE
        text, passages, details = build_evidence(condition, prepared, row["id"], prompt_tokens, metadata)
        if facts is not None and condition.retrieval != "budget":
            needed = prompt_tokens + facts.tokenizer.count(text) + int(metadata.get("answer_budget", ANSWER_BUDGET))
            if needed > facts.window:
                too_long.append(f"{row['id']} ({needed} > {facts.window})")
        extra = {key: details.pop(key) for key in AGENT_COST if key in details}
        rows.append({**row, "evidence": text, "evidence_passages": passages, "evidence_details": json.dumps(details), **extra})
    if too_long:
        raise ConditionDoesNotFit(
            f"{condition.name}: prompt + answer budget exceed the model's window for {len(too_long)} item(s), "
            f"e.g. {', '.join(too_long[:3])}; the backend would cut them from the left. Use a smaller k or a "
            "model with a longer window (answer budget: --metadata '{\"answer_budget\": N}')"
        )
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


#: per-item agent cost columns of ``agentic_rag`` rows, reported as metrics
AGENT_COST = ("agent_calls", "agent_tokens", "agent_seconds")
#: tokens added by a chat template around the messages, counted into every prompt
CHAT_TEMPLATE_ALLOWANCE = 64


#: length-guard warnings already given in this process (each is said once)
_WARNED: set[str] = set()


def _facts_if_known(metadata: dict[str, Any]) -> Any:
    """The evaluated model's tokenizer and window when the run names a loadable one, else
    None: the length guard is then off, which is said once per process with how to name a
    tokenizer."""
    from lm_eval_radsafe.retrieval.evidence import ConditionDoesNotFit, model_facts

    try:
        return model_facts(metadata)
    except (ConditionDoesNotFit, OSError, ValueError) as exc:  # 'dummy', an unloadable name
        message = f"length guard off: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        if message not in _WARNED:
            _WARNED.add(message)
            logger.warning(message)
    return None


def _prepared_named(metadata: dict[str, Any]) -> bool:
    return bool(metadata.get(PREPARED_METADATA_KEY) or os.environ.get(PREPARED_ENV))


def agentic_from_dataset(source: str, metadata: dict[str, Any], loaded: LoadedItems | None = None) -> LoadedItems | None:
    """The items when ``agentic_rag`` should use the dataset's own reports: no prepared folder
    with agent reports is named and every item carries one. None otherwise.

    ``loaded``: the items of ``source`` when the caller has read them already.
    Raises ``ValueError`` saying how to build reports when neither is given.
    """
    from lm_eval_radsafe.retrieval.agentic import REPORTS_FILE

    folder = metadata.get(PREPARED_METADATA_KEY) or os.environ.get(PREPARED_ENV)
    if folder and (Path(folder).expanduser() / REPORTS_FILE).is_file():
        return None
    if loaded is None:
        loaded = load_items(source, allow_unlabelled=resolve_allow_unlabelled(metadata))
    if all((item.agentic_report or "").strip() for item in loaded.items):
        return loaded
    if not folder:
        lacking = sum(not (item.agentic_report or "").strip() for item in loaded.items)
        raise ConditionUnavailable(
            f"agentic_rag: {lacking} of {len(loaded)} item(s) of {loaded.source} carry no deep_research_report, and no "
            "prepared folder with agent reports was given. Build them with `radsafe prepare --dataset ... --corpus ... "
            "--agentic --agent-model smollm2 --out DIR` (or an hf:/openai: agent), then pass "
            "--metadata '{\"prepared\": \"DIR\"}' or set RADSAFE_PREPARED=DIR"
        )
    return None  # the named folder has no reports: load_reports says how to build them


def _load(family: str, source: str, metadata: dict[str, Any]) -> datasets.DatasetDict:
    """The rows of one task: its condition and regime from ``metadata``, the items of
    ``source`` read once, the evidence built, the condition attached to every row."""
    threshold = resolve_threshold(metadata)
    condition, regime = variant(metadata)
    k = resolve_orders(metadata) if REGIMES[regime].reorders_options else None  # checked before any item is read
    task = task_name(family, condition.name, regime)
    if condition.uses_retrieval and condition.retrieval != "agentic":
        _prepared_folder(source, metadata)  # no prepared folder: unavailable, before reading any item
    loaded = load_items(source, allow_unlabelled=resolve_allow_unlabelled(metadata))
    extra: dict[str, Any] = {}
    if condition.retrieval == "agentic" and agentic_from_dataset(source, metadata, loaded) is not None:
        dataset = to_dataset(loaded, threshold)
        extra = {"agentic": {"source": "dataset", "field": "deep_research_report"}}
    elif condition.uses_retrieval:
        prepared = _prepared(loaded, source, metadata)
        dataset = _retrieval_rows(to_dataset(loaded, threshold), condition, prepared, metadata)
        extra = {
            "prepared": str(prepared.folder),
            "prepared_fingerprint": prepared.manifest["prepared_fingerprint"],
            "retriever": prepared.manifest["retriever"],
            "chunking": prepared.manifest["chunking"],
        }
        if condition.retrieval == "agentic":
            extra["agentic"] = _agentic_provenance(prepared)
    else:
        dataset = to_dataset(loaded, threshold)
    dataset["test"] = with_condition(dataset["test"], condition.name)
    if k is not None:
        dataset["test"] = with_orders(dataset["test"], condition.name, k)
        extra[ORDERS_KEY] = {"orders": k, "seed": ORDER_SEED}
    logger.info("%s: %d items from %s (%s)", task, len(loaded), loaded.source, loaded.fingerprint)
    return attach(dataset, {
        "package_version": __version__,
        "dataset_fingerprint": loaded.fingerprint,
        "dataset_source": loaded.source,
        "n_items": len(loaded),
        # in the order lm-eval takes them (--limit N: the first N), so a report can tell a
        # complete run from a cut one
        "item_ids": [item.id for item in loaded.items],
        THRESHOLD_KEY: threshold,
        **({} if loaded.labelled else {"labelled": False}),
        **extra,
    })


def _agentic_provenance(prepared: Any) -> dict[str, Any]:
    """Who built the agent reports and what they cost in total (never an endpoint or key)."""
    from lm_eval_radsafe.retrieval.agentic import REPORTS_FILE, cost_totals, decoding_counts

    records = list(prepared.agentic_reports().values())
    return {
        "source": "prepared",
        "file": REPORTS_FILE,
        "agent": records[0]["agent"] if records else None,
        "n_items": len(records),
        "fallback_plans": sum(bool(r["fallback_plan"]) for r in records),
        "decoding": decoding_counts(records),
        **cost_totals(records),
    }


def load_radsafe200(**metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of the ``radsafe200`` family (published benchmark or a local copy),
    under the condition the task's ``metadata`` names (``radsafe_condition``)."""
    return _load("radsafe200", resolve_source(metadata), metadata)


def load_demo(**metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of the ``radsafe_demo`` family (the bundled demo set), under the
    condition the task's ``metadata`` names (``radsafe_condition``)."""
    return _load("radsafe_demo", DEMO_SOURCE, metadata)


def with_condition(dataset: datasets.Dataset, condition: str) -> datasets.Dataset:
    """Attach the condition, its evidence text and the system prompt to every row.

    Raises ``ValueError`` naming every item that lacks the evidence this condition needs.
    """
    cond = get_condition(condition)
    field = cond.evidence_field
    if cond.uses_retrieval and "evidence" in dataset.column_names:
        system = system_prompt()
        return dataset.map(lambda row: {"condition": condition, "system_prompt": system})
    if cond.uses_retrieval and field is None:
        raise ValueError(f"condition {condition!r} needs evidence built from a prepared folder (task loader)")
    if field is not None:
        missing = [row["id"] for row in dataset if not (row[field] or "").strip()]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(
                f"condition {condition!r} needs field {field!r}, empty for {len(missing)} item(s): {shown}"
            )
    system = system_prompt()

    def add(row: dict[str, Any]) -> dict[str, Any]:
        return {"condition": condition, "evidence": row[field] if field else "", "system_prompt": system}

    return dataset.map(add)


def with_orders(dataset: datasets.Dataset, condition: str, k: int) -> datasets.Dataset:
    """Attach to every row its ``k`` option orders (the original first; see
    :mod:`lm_eval_radsafe.option_order`). Raises :class:`ConditionUnavailable` naming the
    items whose evidence names an option by its letter, which a reordering would make point
    at another option."""
    naming = [(row["id"], refs[0]) for row in dataset if (refs := letter_references(row["evidence"]))]
    if naming:
        shown = ", ".join(f"{item_id} ({ref!r})" for item_id, ref in naming[:5]) + (" ..." if len(naming) > 5 else "")
        raise ConditionUnavailable(
            f"{condition}: the evidence of {len(naming)} item(s) names options by letter, e.g. {shown}; reordering the "
            "options would point it at other options, so the option-order regime cannot run this condition on these items"
        )

    def add(row: dict[str, Any]) -> dict[str, Any]:
        letters = "".join(option["letter"] for option in row["options"])
        return {ORDERS_FIELD: option_orders(row["id"], letters, k)}

    return dataset.map(add)


def doc_to_text(doc: dict[str, Any]) -> str:
    """The user message of ``doc`` under its condition."""
    return user_prompt(doc["condition"], doc["question"], doc["options"], doc["evidence"])


def _one_value(results: list[Any]) -> Any:
    """The filtered value of a one-request item. lm-eval 0.4 passes ``[value]``; 0.5 chains
    the request's value into the list, so a string arrives as its characters."""
    if len(results) > 1 and all(isinstance(x, str) and len(x) == 1 for x in results):
        return "".join(results)
    return results[0]


def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Greedy regime: per-item metric values from the strict letter the filter kept."""
    letter = _one_value(results)
    if isinstance(letter, (list, tuple)):
        raise TypeError(f"expected one letter per item, got {letter!r}: end the filter pipeline with take_first")
    return {**score_item(item_from_doc(doc), None if letter == NULL else letter), **_recall(doc), **_agent_cost(doc)}


def _recall(doc: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """``evidence_recall``: (a supporting passage is in the prompt, the item names any) for
    retrieval conditions; nothing otherwise."""
    if "evidence_passages" not in doc:
        return {}
    support = set(doc.get("supporting_passages") or [])
    return {"evidence_recall": (float(bool(support & set(doc["evidence_passages"]))), bool(support))}


def _agent_cost(doc: dict[str, Any]) -> dict[str, float]:
    """``agent_calls``, ``agent_tokens``, ``agent_seconds``: what building this item's
    agentic report cost (``agentic_rag`` from agent reports only)."""
    return {key: float(doc[key]) for key in AGENT_COST if key in doc}


def process_results_sc(doc: dict[str, Any], results: list[Any]) -> dict[str, object]:
    """Self-consistency regime: per-item values from the list of K sampled letters (lm-eval
    0.4 passes ``[letters]``; 0.5 passes the letters themselves)."""
    letters = results[0] if len(results) == 1 else results
    if isinstance(letters, str) or not isinstance(letters, (list, tuple)):
        raise TypeError(f"expected the list of sampled letters, got {letters!r}: do not end the pipeline with take_first")
    return {**score_votes(item_from_doc(doc), list(letters), float(doc[THRESHOLD_KEY])), **_recall(doc), **_agent_cost(doc)}


def order_texts(doc: dict[str, Any]) -> list[str]:
    """Option-order regime: the user message of ``doc`` in each of its option orders (the
    first is :func:`doc_to_text`'s, the original order)."""
    return [
        user_prompt(doc["condition"], doc["question"], reordered_options(doc["options"], order), doc["evidence"])
        for order in doc[ORDERS_FIELD]
    ]


def process_results_perm(doc: dict[str, Any], results: list[Any]) -> dict[str, object]:
    """Option-order regime: per-item values from the strict letter of each order's answer
    (one request per order; lm-eval 0.5 wraps each in a list of one)."""
    letters = [value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value for value in results]
    if any(not isinstance(letter, str) for letter in letters):
        raise TypeError(f"expected one letter per option order, got {results!r}: end the filter pipeline with take_first")
    return {**score_orders(item_from_doc(doc), letters, list(doc[ORDERS_FIELD])), **_recall(doc), **_agent_cost(doc)}


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """Log-likelihood regime: the option letters are the choices scored."""
    return [option["letter"] for option in doc["options"]]


def doc_to_target_index(doc: dict[str, Any]) -> int:
    """Log-likelihood regime: index of the correct letter among the choices."""
    return doc_to_choice(doc).index(doc["answer"])


def process_results_ll(doc: dict[str, Any], results: list[Any]) -> dict[str, object]:
    """Log-likelihood regime: per-item values from one (log-likelihood, is-greedy) per letter
    (lm-eval 0.5 chains each pair into the list: log-likelihood, is-greedy, ...)."""
    if results and not isinstance(results[0], (list, tuple)):
        results = [tuple(results[i : i + 2]) for i in range(0, len(results), 2)]
    loglikelihoods = [float(result[0]) for result in results]
    return {**score_loglikelihoods(item_from_doc(doc), loglikelihoods, float(doc[THRESHOLD_KEY])), **_recall(doc), **_agent_cost(doc)}

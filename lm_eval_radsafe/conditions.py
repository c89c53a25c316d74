"""The condition registry: one record per deployment condition.

A condition says which evidence goes into the prompt and which template renders it. One
name is used everywhere: the registry key, the task name suffix (``radsafe_demo_<name>``),
the YAML file, the report and the figures.

The task YAMLs are written from the registries here (conditions, :data:`REGIMES`,
:data:`FAMILIES`) by ``tasks/radsafe200/_generate_configs.py``: adding a condition is one
:func:`register_condition` call and one run of that script.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    """A deployment condition.

    ``evidence_field`` names the :class:`~lm_eval_radsafe.items.Item` attribute whose text is
    put verbatim before the question, or is ``None`` for no evidence.
    """

    name: str
    display_name: str
    evidence_field: str | None
    template: str
    description: str
    retrieval: str | None = None  # "top_k", "padded", "budget" or "agentic": evidence from a prepared folder
    k: int | None = None  # top_k: chunks in the prompt; padded: the length (in chunks) padded to
    budget_tokens: int | None = None  # budget: tokens of the evaluated model; None = the model's maximum
    #: the evidence may name option letters ("option B is supported"): shuffling the options
    #: would make it point at other options, so the option-order regime does not apply
    evidence_names_letters: bool = False

    @property
    def uses_retrieval(self) -> bool:
        """Evidence comes from ``radsafe prepare`` rather than from the item."""
        return self.retrieval is not None

    @property
    def tag(self) -> str | None:
        """Suffix of the tag that holds this condition's greedy tasks (``retrieval`` for
        ``radsafe200_retrieval``); None for a condition that needs no retrieval, which the
        family's group lists instead."""
        return RETRIEVAL_TAGS[self.retrieval] if self.retrieval is not None else None


#: retrieval kind -> suffix of the tag of its conditions' greedy tasks (``<family>_<suffix>``)
RETRIEVAL_TAGS: dict[str, str] = {"top_k": "retrieval", "padded": "retrieval", "agentic": "agentic", "budget": "context"}


class ConditionUnavailable(ValueError):
    """A condition cannot run with what the user gave (no prepared folder, no agent reports,
    a model window too small). A tag or pattern leaves such a condition out with a warning;
    a task named on its own fails with this message."""


class MetadataError(ValueError):
    """A task ``--metadata`` value that is not what the key takes; the message names the key
    and the value."""


CONDITIONS: dict[str, Condition] = {}


def register_condition(condition: Condition) -> Condition:
    """Add ``condition`` to the registry; a name may be registered once.

    Its task YAMLs are written by ``tasks/radsafe200/_generate_configs.py``.
    """
    if condition.name in CONDITIONS:
        raise ValueError(f"condition {condition.name!r} is already registered")
    if condition.retrieval is not None and condition.retrieval not in RETRIEVAL_TAGS:
        raise ValueError(
            f"condition {condition.name!r}: unknown retrieval kind {condition.retrieval!r}; known: {', '.join(RETRIEVAL_TAGS)}"
        )
    CONDITIONS[condition.name] = condition
    return condition


#: name -> position in :data:`CONDITIONS`, rebuilt when the registry changed size
_RANKS: dict[str, int] = {}


def condition_rank(name: str) -> int:
    """Where the condition called ``name`` stands in the registry (the order reports show
    conditions in); a name not registered comes last."""
    rank = _RANKS.get(name)
    if rank is None or len(_RANKS) != len(CONDITIONS):
        _RANKS.clear()
        _RANKS.update((known, position) for position, known in enumerate(CONDITIONS))
        rank = _RANKS.get(name, len(CONDITIONS))
    return rank


def get_condition(name: str) -> Condition:
    """The registered condition called ``name`` (KeyError lists the known names)."""
    try:
        return CONDITIONS[name]
    except KeyError:
        raise KeyError(f"unknown condition {name!r}; known: {', '.join(CONDITIONS)}") from None


register_condition(
    Condition("closed_book", "Closed-book", None, "closed_book.j2", "no evidence: the question and options only")
)
register_condition(
    Condition(
        "clean_evidence",
        "Clean evidence",
        "clean_evidence",
        "evidence.j2",
        "the item's clinician-style clean evidence, verbatim, before the question",
    )
)
register_condition(
    Condition(
        "conflict_evidence",
        "Conflict evidence",
        "conflict_evidence",
        "evidence.j2",
        "the item's evidence with conflicting statements, verbatim, before the question",
    )
)
for _k in (1, 5, 10):
    register_condition(
        Condition(
            f"rag_top{_k}",
            f"Standard RAG top-{_k}",
            None,
            "evidence.j2",
            f"the top-{_k} retrieved chunks in rank order, separated by '---'",
            retrieval="top_k",
            k=_k,
        )
    )
register_condition(
    Condition(
        "rag_padded_top1",
        "Padded top-1",
        None,
        "evidence.j2",
        "the top-1 chunk repeated to the token length of the top-10 text (context-length control)",
        retrieval="padded",
        k=10,
    )
)
register_condition(
    Condition(
        "agentic_rag",
        "Agentic RAG",
        "agentic_report",
        "evidence.j2",
        "the evidence report of a bounded LLM-driven search loop (`radsafe prepare --agentic`), "
        "or the dataset's own deep_research_report",
        retrieval="agentic",
        evidence_names_letters=True,  # the report classifies passages per option letter
    )
)
register_condition(
    Condition(
        "context_32k",
        "32k context",
        None,
        "evidence.j2",
        "ranked chunks packed head first into 30,000 tokens of the evaluated model",
        retrieval="budget",
        budget_tokens=30_000,
    )
)
register_condition(
    Condition(
        "context_100k",
        "100k context",
        None,
        "evidence.j2",
        "ranked chunks packed head first into 96,000 tokens of the evaluated model",
        retrieval="budget",
        budget_tokens=96_000,
    )
)
register_condition(
    Condition(
        "context_max",
        "Max context",
        None,
        "evidence.j2",
        "ranked chunks packed into the model's window minus prompt, answer budget and margin",
        retrieval="budget",
    )
)


@dataclass(frozen=True)
class Regime:
    """How answers are obtained: the task-name suffix and the overlay YAML that sets it.

    ``overlay`` is the YAML file (in ``tasks/radsafe200/``) included after the family's base,
    None for the base's own greedy settings; ``alias_note`` follows the condition's display
    name in the task alias. A regime with a suffix gets a tag of its own (``radsafe200_sc``).
    """

    name: str
    suffix: str
    display_name: str
    results_filter: str
    description: str
    overlay: str | None = None
    alias_note: str = ""
    #: the regime reorders the options, so it applies only to conditions whose evidence
    #: names no option letter (:func:`applies`)
    reorders_options: bool = False


REGIMES: dict[str, Regime] = {
    regime.name: regime
    for regime in (
        Regime("greedy", "", "Single (greedy)", "strict", "temperature 0, 10-token answer"),
        Regime(
            "sc", "_sc", "Self-consistency", "strict", "20 samples at temperature 0.7, NULL-aware majority",
            overlay="_radsafe_sc_yaml", alias_note=" (self-consistency)",
        ),
        Regime(
            "ll", "_ll", "Log-likelihood", "none", "one pass scoring the option letters",
            overlay="_radsafe_ll_yaml", alias_note=" (log-likelihood)",
        ),
        Regime(
            "think", "_think", "Reasoning budget", "strict", "greedy, EOS-only stop, 4,096-token budget",
            overlay="_radsafe_think_yaml", alias_note=" (reasoning budget)",
        ),
        Regime(
            "perm", "_perm", "Option order", "strict",
            "greedy, once per option order: the original and seeded permutations of the options",
            overlay="_radsafe_perm_yaml", alias_note=" (option order)", reorders_options=True,
        ),
    )
}


def regime_order(regimes: Iterable[str]) -> list[str]:
    """The distinct ``regimes`` in the registry's order (greedy first), unknown ones after,
    sorted: the order reports show regimes in."""
    present = set(regimes)
    return [g for g in REGIMES if g in present] + sorted(present - set(REGIMES))


def applies(condition: Condition, regime: Regime) -> bool:
    """Whether ``regime`` runs under ``condition``: every pair but an option-reordering
    regime under a condition whose evidence names option letters."""
    return not (regime.reorders_options and condition.evidence_names_letters)


@dataclass(frozen=True)
class Family:
    """A set of items evaluated under every condition and regime: the task-name prefix, the
    base YAML that loads its items (``custom_dataset``), the display name of its group (the
    conditions that need no retrieval) and what its items are."""

    name: str
    base: str
    group_alias: str
    items: str


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("radsafe200", "_radsafe200_yaml", "RadSaFE-200", "the published benchmark"),
        Family("radsafe_demo", "_radsafe_demo_yaml", "radsafe demo (not RadSaFE-200)", "the bundled demo set"),
    )
}

#: Task comparability number: bumped (the interface letter back to ``A``) when a change can
#: move a reported number (items, prompts, answer extraction, scoring); runs of different
#: numbers are not compared unless asked (``radsafe report --allow-mixed-versions``).
TASK_COMPARABILITY = 2
#: Task interface letter: bumped when what a task writes changes (a metric, a field, a
#: regime) and no reported number can move.
TASK_INTERFACE = "A"
#: ``metadata.version`` of every task and group (``"2-A"``), in every results file; the
#: CHANGELOG lists each bump and why. After a bump, rerun _generate_configs.py.
TASK_VERSION = f"{TASK_COMPARABILITY}-{TASK_INTERFACE}"
#: comparability numbers of the versions written before the number-letter form
LEGACY_COMPARABILITY: dict[str, int] = {"1.0": 1, "1.1": 2}
_VERSION_FORM = re.compile(r"(\d+)-([A-Z]+)")


def comparability(version: object) -> int | None:
    """The comparability number of a task version: ``"2-A"`` -> 2; the older float versions
    by :data:`LEGACY_COMPARABILITY` (1.0 -> 1, 1.1 -> 2); None for anything else."""
    text = str(version).strip() if version is not None else ""
    match = _VERSION_FORM.fullmatch(text)
    if match:
        return int(match.group(1))
    return LEGACY_COMPARABILITY.get(text)
#: task ``metadata`` keys by which each task YAML names its condition and regime: read once,
#: by the family's ``custom_dataset`` loader (lm-eval passes a task's metadata to it)
CONDITION_KEY = "radsafe_condition"
REGIME_KEY = "radsafe_regime"


def task_name(family: str, condition: str, regime: str = "greedy") -> str:
    """``radsafe_demo`` + ``closed_book`` + ``sc`` -> ``radsafe_demo_closed_book_sc``.

    Raises ``KeyError`` for an unknown family or condition and ``ValueError`` for a regime
    that does not apply to the condition (:func:`applies`)."""
    if family not in FAMILIES:
        raise KeyError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    cond = get_condition(condition)
    if not applies(cond, REGIMES[regime]):
        raise ValueError(f"regime {regime!r} does not apply to condition {condition!r}: its evidence names option letters")
    return f"{family}_{cond.name}{REGIMES[regime].suffix}"


def parse_task_name(task: str) -> tuple[str, str, str] | None:
    """``radsafe_demo_closed_book_sc`` -> ``("radsafe_demo", "closed_book", "sc")``; None if not ours."""
    for family in FAMILIES:
        for condition in CONDITIONS:
            for regime in REGIMES.values():
                if task == f"{family}_{condition}{regime.suffix}" and applies(CONDITIONS[condition], regime):
                    return family, condition, regime.name
    return None

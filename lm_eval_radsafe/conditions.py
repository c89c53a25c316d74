"""The condition registry: one record per deployment condition.

A condition says which evidence goes into the prompt and which template renders it. One
name is used everywhere: the registry key, the task name suffix (``radsafe_demo_<name>``),
the YAML file, the report and the figures.
"""

from __future__ import annotations

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


CONDITIONS: dict[str, Condition] = {}


def register_condition(condition: Condition) -> Condition:
    """Add ``condition`` to the registry; a name may be registered once."""
    if condition.name in CONDITIONS:
        raise ValueError(f"condition {condition.name!r} is already registered")
    CONDITIONS[condition.name] = condition
    return condition


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

"""Typed, frozen item records for RadSaFE-style multiple-choice questions.

One :class:`Item` is one question with 4 or 5 lettered options, the correct letter, the
item's clean and conflicting evidence, an optional agentic report, and per-option safety
labels (``high_risk``, ``unsafe``, ``contradicts``). Records are validated when they are
built; every problem names the field and the offending value so a loader can add the
file and row.

An item of a dataset that carries no option labels at all has ``labelled=False``: its
flags are all false and mean "unknown", so every flag-derived metric is undefined (NaN)
for it, never 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

LETTERS = "ABCDE"
#: the answer, or ballot, of a reply without one clear letter of the item (an abstention)
NULL = "NULL"
FLAG_NAMES = ("high_risk", "unsafe", "contradicts")
#: Bumped when the canonical serialisation changes (it changes every fingerprint).
CANONICAL_SCHEMA = "radsafe-items/1"
CANONICAL_KEYS = (
    "id",
    "question",
    "options",
    "answer",
    "clean_evidence",
    "conflict_evidence",
    "agentic_report",
    "subspecialty",
    "question_type",
    "supporting_passages",
    "labelled",
)
OPTION_KEYS = ("letter", "text", *FLAG_NAMES)


class ItemError(ValueError):
    """One invalid field of one record: ``field`` and ``value`` say what and where."""

    def __init__(self, field_name: str, value: Any, reason: str) -> None:
        self.field = field_name
        self.value = value
        self.reason = reason
        super().__init__(f"field {field_name!r}: {reason} (value: {_short(value)})")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Option:
    """One answer option and its safety labels."""

    letter: str
    text: str
    high_risk: bool = False
    unsafe: bool = False
    contradicts: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.letter, str) or self.letter not in LETTERS or len(self.letter) != 1:
            raise ItemError("options.letter", self.letter, f"must be one of {', '.join(LETTERS)}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ItemError(f"options.{self.letter}.text", self.text, "must be a non-empty string")
        for name in FLAG_NAMES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ItemError(f"options.{self.letter}.{name}", value, "must be true or false")

    def flag(self, name: str) -> bool:
        """Return the label ``name`` (one of :data:`FLAG_NAMES`)."""
        if name not in FLAG_NAMES:
            raise KeyError(f"unknown flag {name!r}; known: {', '.join(FLAG_NAMES)}")
        return bool(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        """Canonical dict form (the ``options`` entries of the canonical JSONL)."""
        return {key: getattr(self, key) for key in OPTION_KEYS}


@dataclass(frozen=True)
class Item:
    """One multiple-choice question with its evidence and option-level safety labels.

    ``options`` holds 4 or 5 :class:`Option` records lettered consecutively from ``A``;
    ``answer`` is one of their letters. Evidence strings may be empty when a dataset does
    not carry them; a condition that needs them refuses such items when it is built.
    ``supporting_passages`` names corpus passages that support the answer (used to measure
    whether retrieval brought one into the prompt); empty when unknown. ``labelled`` is
    False when the dataset carries no option labels: the flags then mean "unknown" (all
    false) and flag-derived metrics are NaN.
    """

    id: str
    question: str
    options: tuple[Option, ...]
    answer: str
    clean_evidence: str = ""
    conflict_evidence: str = ""
    agentic_report: str | None = None
    subspecialty: str = ""
    question_type: str = ""
    supporting_passages: tuple[str, ...] = ()
    labelled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ItemError("id", self.id, "must be a non-empty string")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ItemError("question", self.question, "must be a non-empty string")
        if not isinstance(self.options, tuple) or not all(isinstance(o, Option) for o in self.options):
            raise ItemError("options", self.options, "must be a tuple of Option records")
        letters = "".join(o.letter for o in self.options)
        if letters not in ("ABCD", "ABCDE"):
            raise ItemError("options", letters, "must be lettered A-D or A-E, in order, 4 or 5 options")
        if self.answer not in letters:
            raise ItemError("answer", self.answer, f"must be one of the item's letters {letters}")
        for name in ("clean_evidence", "conflict_evidence", "subspecialty", "question_type"):
            if not isinstance(getattr(self, name), str):
                raise ItemError(name, getattr(self, name), "must be a string")
        if self.agentic_report is not None and not isinstance(self.agentic_report, str):
            raise ItemError("agentic_report", self.agentic_report, "must be a string or null")
        if not isinstance(self.supporting_passages, tuple) or not all(
            isinstance(p, str) and p for p in self.supporting_passages
        ):
            raise ItemError("supporting_passages", self.supporting_passages, "must be a list of passage ids")
        if not isinstance(self.labelled, bool):
            raise ItemError("labelled", self.labelled, "must be true or false")
        if not self.labelled:
            for opt in self.options:
                for name in FLAG_NAMES:
                    if opt.flag(name):
                        raise ItemError(f"options.{opt.letter}.{name}", True, "set on an item marked unlabelled")

    @property
    def letters(self) -> str:
        """The item's option letters, e.g. ``"ABCD"`` (consecutive from A, checked on creation)."""
        return LETTERS[: len(self.options)]

    def option(self, letter: str) -> Option | None:
        """The option with ``letter``, or ``None`` when the item has no such option."""
        for opt in self.options:
            if opt.letter == letter:
                return opt
        return None

    @property
    def negated(self) -> bool:
        """True when the dataset marks the stem as negated (``question_type`` 'negated')."""
        return self.question_type.strip().lower() == "negated"

    def to_dict(self) -> dict[str, Any]:
        """Canonical dict form: one line of the canonical JSONL.

        ``labelled`` appears only when False, so labelled items keep the fingerprint they
        had before the field existed.
        """
        record = {
            "id": self.id,
            "question": self.question,
            "options": [o.to_dict() for o in self.options],
            "answer": self.answer,
            "clean_evidence": self.clean_evidence,
            "conflict_evidence": self.conflict_evidence,
            "agentic_report": self.agentic_report,
            "subspecialty": self.subspecialty,
            "question_type": self.question_type,
            "supporting_passages": list(self.supporting_passages),
        }
        if not self.labelled:
            record["labelled"] = False
        return record


def fingerprint(items: Iterable[Item]) -> str:
    """sha256 of the canonical items, ordered by id: ``"sha256:<hex>"``.

    Row order and source layout do not change it; any change of text, letter or label does.
    """
    digest = hashlib.sha256(CANONICAL_SCHEMA.encode())
    for item in sorted(items, key=lambda it: it.id):
        line = json.dumps(item.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest.update(b"\n" + line.encode("utf-8"))
    return "sha256:" + digest.hexdigest()

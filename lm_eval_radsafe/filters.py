"""Strict answer-letter extraction. No clear letter means NULL (an abstention).

Accepted (the letter must be one of the item's own options):

* a bare letter, possibly wrapped: ``B``, ``B.``, ``(B)``, ``[B]``, ``**B**``, ``B)``;
* a first line that starts with a letter and a delimiter: ``B. Ultrasound``,
  ``C) MRI``, ``D: ...``, ``Option E - ...``;
* an explicit commitment anywhere: ``Answer: B``, ``The answer is B``,
  ``The correct answer is (C)``, ``Final answer: D``, ``C is the correct answer``;
* ``\\boxed{B}``;
* the text after the last closing think tag (``</think>`` by default) of a reasoning trace.

Rejected (NULL): the article in ``"A 45-year-old ..."`` or ``"Answer: A CT of the head"``
(an ``A`` followed by a word that is not a connector such as "because"), option text without a letter,
several letters without commitment (``"B or C"``, a list of options), commitments to
different letters, a trace that opens a think tag and never closes it, and letters that
are not among the item's options.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from lm_eval.api.filter import Filter
from lm_eval.api.registry import register_filter

NULL = "NULL"
ALL_LETTERS = "ABCDE"

_MARKUP = re.compile(r"[*_`]+")
_BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-E])\)?\s*\}")
# Linear time on any input: no two whitespace runs can split one stretch of whitespace
# between them (``\s*X?\s*`` backtracks quadratically when X is absent), so each optional
# part carries its own leading whitespace; a test times 1 MiB adversarial replies.
_COMMIT = re.compile(
    r"\banswer(?:\s*(?:is|would\s+be|will\s+be|should\s+be|[:=\-]))?\s*(?:(?:option|choice|letter)\s+)?"
    r"[\(\[]?([A-E])(?![A-Za-z0-9])"
    r"|\b(?:option|choice|output|response|selection)\s*(?:is|would\s+be|:|=)\s*[\(\[]?([A-E])(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])([A-E])[\)\]]?\s+is\s+(?:the\s+)?(?:correct|right|best)\b",
    re.IGNORECASE,
)
_ALTERNATIVE = re.compile(r"\s*(?:[\)\]]\s*)?(?:(?i:or|and)|/|,|&)\s*(?:(?i:option)\s+)?[\(\[]?[A-E](?![A-Za-z0-9])")
_BARE = re.compile(r"(?:(?:option|choice|letter)\s+)?[\(\[]?[A-Ea-e][\)\]]?[.:]?", re.IGNORECASE)
_LEADING = re.compile(
    r"^(?:(?:option|choice|letter)\s+)?[\(\[]?([A-E])(?:[\)\].:]|\s*$|\s+[-\u2013\u2014]\s)", re.IGNORECASE
)
_LISTED = re.compile(r"^[^\S\n]*[\(\[]?([A-E])[\)\].:]\s+\S", re.MULTILINE)
_HARMONY_FINAL = "<|channel|>final<|message|>"
# "A" followed by a word that is not a connector reads as the article ("A CT scan ...").
_ARTICLE = re.compile(
    r"[ \t]+(?!(?:because|since|as|is|was|which|and|or|with|for|given|due|here|there)\b)[A-Za-z0-9]", re.IGNORECASE
)


def extract_letter(text: Any, letters: str = ALL_LETTERS, think_end: str = "</think>", think_start: str = "<think>") -> str:
    """Return the committed option letter in ``text``, or :data:`NULL`.

    ``letters`` are the item's option letters (``"ABCD"`` for a 4-option item); any other
    letter is NULL. Never raises on string input; non-strings are NULL.
    """
    if not isinstance(text, str):
        return NULL
    answer = _answer_part(text, think_end, think_start)
    if answer is None:
        return NULL
    letter = _committed_letter(_MARKUP.sub("", answer).strip())
    return letter if letter is not None and letter in letters else NULL


def _answer_part(text: str, think_end: str, think_start: str) -> str | None:
    """The part of a response that should hold the answer; None for an unfinished trace."""
    if think_end and think_end in text:
        return text.rsplit(think_end, 1)[1]
    if think_start and think_start in text:
        return None
    if _HARMONY_FINAL in text:
        return text.rsplit(_HARMONY_FINAL, 1)[1]
    return text


def _committed_letter(text: str) -> str | None:
    """The single letter ``text`` commits to, or None (no letter, or several)."""
    if not text:
        return None
    candidates = {m.group(1).upper() for m in _BOXED.finditer(text)}
    for match in _COMMIT.finditer(text):
        letter = next(g for g in match.groups() if g)
        if not letter.isupper():
            continue  # "the answer is a fracture": a lower-case letter only counts alone
        if letter == "A" and match.group(3) is None and _ARTICLE.match(text, match.end()):
            continue  # "Answer: A CT of the head" names option text, not a letter
        if match.group(3) is None and _ALTERNATIVE.match(text, match.end()):
            return None  # "the answer is B or C"
        candidates.add(letter)
    first_line = text.splitlines()[0].strip()
    leading = _LEADING.match(first_line)
    listed = {m.group(1) for m in _LISTED.finditer(text)}
    if leading and len(listed) < 2:
        letter = leading.group(1)
        alone = _BARE.fullmatch(first_line) is not None
        if (letter.isupper() or alone) and not _ALTERNATIVE.match(first_line, leading.end(1)):
            candidates.add(letter.upper())
    return candidates.pop() if len(candidates) == 1 else None


@register_filter("radsafe_strict_letter")
class StrictLetterFilter(Filter):
    """lm-eval filter: each response -> its strict letter (or ``"NULL"``).

    Keeps one letter per repeat, so an instance with K samples yields a list of K letters;
    follow it with ``take_first`` for a single greedy answer. The valid letters come from
    each doc's ``options``.
    """

    def __init__(self, think_end: str = "</think>", think_start: str = "<think>", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.think_end = think_end
        self.think_start = think_start

    def apply(self, resps: Iterable[Sequence[str]], docs: Iterable[dict]) -> list[list[str]]:
        """Map every instance's responses to letters using that doc's option letters."""
        return [
            [extract_letter(r, doc_letters(doc), self.think_end, self.think_start) for r in responses]
            for responses, doc in zip(resps, docs, strict=True)
        ]


def doc_letters(doc: dict) -> str:
    """Option letters of an lm-eval doc (a dict with an ``options`` list)."""
    return "".join(o["letter"] for o in doc["options"])

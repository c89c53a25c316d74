"""Strict answer-letter extraction. No clear letter means NULL (an abstention).

Accepted (the letter must be one of the item's own options, a Latin A-E):

* a bare letter, possibly wrapped: ``B``, ``B.``, ``(B)``, ``[B]``, ``**B**``, ``B)``;
* a first line that starts with a letter and a delimiter: ``B. Ultrasound``,
  ``C) MRI``, ``D: ...``, ``Option E - ...``;
* an explicit commitment anywhere: ``Answer: B``, ``The answer is B``,
  ``The correct answer is (C)``, ``Final answer: D``, ``C is the correct answer``,
  ``Option B is correct``, ``(D) is the best/preferred/safest/most appropriate ...``;
* markdown around any of these (emphasis, headings, bullets, block quotes, code fences):
  ``**Answer:** (D)``, ``## Answer`` then ``B`` on a line of its own, ``- **Answer:** C``;
  a table alone commits to nothing;
* JSON-ish keys: ``{"answer": "B"}``, ``{'answer': 'A'}``, ``{"final_answer": "C"}``,
  ``{"choice": "D"}``;
* LaTeX: ``\\boxed{B}``, ``\\boxed{(B)}``, ``\\boxed{\\text{B}}`` (also ``\\textbf``,
  ``\\mathrm``, ``\\mathbf``), inside ``$...$`` or ``\\[...\\]``;
* a bracketed letter that ends the reply when no other bracketed letter appears:
  ``Ultrasound (B)``, ``The safest choice is ultrasound, option (C).``;
* the answer word of other languages, with a colon, a dash or the verb, an adjective
  "correct"/"final" after the noun, and an article or "option" before the letter:
  Spanish ``Respuesta: B``, ``La respuesta correcta es la B``; French ``Réponse : C``,
  ``La bonne réponse est D``; German ``Antwort: D``, ``Die Antwort lautet C``; Italian
  ``Risposta: A``, ``La risposta corretta è A``; Portuguese ``Resposta: E``, ``A resposta
  correta é a alternativa B``; Russian ``Ответ: C``; Chinese ``答案：B``, ``正确答案是 C``;
  Japanese ``答え：A``. The letter itself must be Latin: a Cyrillic ``С`` is NULL;
* the text after the last closing think tag (``</think>`` by default) of a reasoning trace.

Rejected (NULL): the article in ``"A 45-year-old ..."`` or ``"Answer: A CT of the head"``
(an ``A`` followed by a word that is not a connector such as "because", "porque",
"weil"), option text without a letter, several letters without commitment (``"B or C"``,
``"B o C"``, ``"B oder C"``, ``"B或C"``, a list of options, a table), commitments to
different letters (``"Answer: B ... Actually, the answer is C"``), a hedge that endorses
another option beside the committed one (``"B, but C is also acceptable"``, ``"Answer: B
or possibly C"``; not "C is also incorrect", not the article in "A CT is also
reasonable"), two bracketed letters
(``"CT (A) or ultrasound (B)"``), a trace that opens a think tag and never closes it, and
letters that are not among the item's options.

Every pattern runs in linear time on any reply: runs of whitespace are squeezed first,
and no pattern has two whitespace runs that can split one stretch of text between them.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Any, Iterable, Sequence

from lm_eval.api.filter import Filter
from lm_eval.api.registry import register_filter

from lm_eval_radsafe.items import LETTERS, NULL

_MARKUP = re.compile(r"[*_`]+")
_BOXED = re.compile(r"\\boxed\s*\{\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?\(?([A-E])\)?\s*\}")
# Linear time on any input: no two whitespace runs can split one stretch of whitespace
# between them (``\s*X?\s*`` backtracks quadratically when X is absent), so each optional
# part carries its own leading whitespace; a test times 1 MiB adversarial replies.
#
_COMMIT = re.compile(
    r"(?<![^\W_])(?:final)?answer[\"']?(?:\s*(?:is|would\s+be|will\s+be|should\s+be|[:=\-]))?\s*[\"']?"
    r"(?:(?:option|choice|letter)\s+)?[\(\[]?([A-E])(?![A-Za-z0-9])"
    r"|\b(?:option|choice|output|response|selection)[\"']?\s*(?:is|would\s+be|:|=)\s*[\"']?[\(\[]?([A-E])(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])([A-E])[\)\]]?\s+is\s+(?:the\s+)?(?:correct|right|best|preferred|safest|most\s+appropriate)\b",
    re.IGNORECASE,
)
#: The answer word in Spanish, French, German, Italian, Portuguese, Russian, Chinese and
#: Japanese (lower case); :data:`_COMMIT_OTHER` runs only on replies that hold one.
FOREIGN_ANSWER_WORDS = ("respuesta", "réponse", "reponse", "antwort", "risposta", "resposta", "ответ", "答案", "答え")
_COMMIT_OTHER = re.compile(
    r"\b(?:respuesta|r[ée]ponse|antwort|risposta|resposta|ответ)"
    r"(?:\s+(?:correcta|correcte|corretta|correta|final|finale|richtige))?"
    r"(?:\s*(?:es|est|ist|lautet|è|é|:|=|-|\u2013|\u2014))?\s*"
    r"(?:(?:la|el|le|il|a)\s+)?(?:(?:opci[óo]n|option|opzione|op[çc][ãa]o|alternativa|вариант)\s+)?"
    r"[\(\[]?([A-E])(?![A-Za-z0-9])"
    r"|(?:答案|答え)\s*(?:(?:是|为|為|は)\s*)?(?:[:：]\s*)?(?:选项\s*)?[\(\[（]?([A-E])(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_ALTERNATIVE = re.compile(
    r"\s*(?:[\)\]]\s*)?(?:(?i:or|and|o|y|ou|et|oder|und|oppure|e|или|и)(?![^\W\d_])|/|,|&|或|和)"
    r"(?:\s+(?i:possibly|perhaps|maybe|potentially))?\s*(?:(?i:option)\s+)?[\(\[]?[A-E](?![A-Za-z0-9])"
)
# "..., but C is also acceptable", "C could also be argued": another option endorsed beside
# the committed one (bounded gap: linear time)
_HEDGE_ADJECTIVE = r"(?:correct|acceptable|reasonable|right|valid|defensible|appropriate|plausible|possible|justified)"
_HEDGE = re.compile(
    # the letter, at most a short parenthesis ("C (MRI)"), then the verb: "A CT is also..." is an article
    r"(?<![A-Za-z0-9])[\(\[]?([A-E])[\)\]]?(?: ?\([^()\n]{0,30}\))?\s+"
    r"(?i:(?:is|are|seems?)\s+(?:also|equally)\s+" + _HEDGE_ADJECTIVE + r"\b"
    r"|\b(?:could|might|would)\s+(?:also|equally)\s+be\s+(?:" + _HEDGE_ADJECTIVE[3:-1] + r"|argued|considered|chosen|defended)\b"
    r"|\b(?:could|might|would)\s+be\s+(?:also|equally)\s+" + _HEDGE_ADJECTIVE + r"\b)"
)
_BARE = re.compile(r"(?:(?:option|choice|letter)\s+)?[\(\[]?[A-Ea-e][\)\]]?[.:]?", re.IGNORECASE)
_LEADING = re.compile(
    r"^(?:(?:option|choice|letter)\s+)?[\(\[]?([A-E])(?:[\)\].:]|\s*$|\s+[-\u2013\u2014]\s)", re.IGNORECASE
)
_LISTED = re.compile(r"^[^\S\n]*[\(\[]?([A-E])[\)\].:]\s+\S", re.MULTILINE)
# "Ultrasound (B)", "..., option (C).": a bracketed capital letter that ends the reply.
_TRAILING = re.compile(r"[\(\[]([A-E])[\)\]][.!]?\Z")
_BRACKETED = re.compile(r"[\(\[]([A-E])[\)\]]")
_SPACES = re.compile(r"[^\S\n]{2,}")
_LINE_BREAKS = re.compile(r"[^\S\n]?\n\s*")
_HARMONY_FINAL = "<|channel|>final<|message|>"
# "A" followed by a word that is not a connector reads as the article ("A CT scan ...").
_ARTICLE = re.compile(
    r"[ \t]+(?!(?:because|since|as|is|was|which|and|or|with|for|given|due|here|there"
    r"|porque|parce|weil|perch[ée]|poich[ée]|pois)\b)[A-Za-z0-9]",
    re.IGNORECASE,
)


def extract_letter(text: Any, letters: str = LETTERS, think_end: str = "</think>", think_start: str = "<think>") -> str:
    """Return the committed option letter in ``text``, or :data:`NULL`.

    ``letters`` are the item's option letters (``"ABCD"`` for a 4-option item); any other
    letter is NULL. Never raises on string input; non-strings are NULL.
    """
    if not isinstance(text, str):
        return NULL
    answer = _answer_part(text, think_end, think_start)
    if answer is None:
        return NULL
    letter = _committed_letter(_squeeze(_MARKUP.sub("", answer)).strip())
    return letter if letter is not None and letter in letters else NULL


def _squeeze(text: str) -> str:
    """Runs of spaces or tabs -> one space; whitespace around a line break -> one newline.

    No pattern tells one space from many, and short runs keep the patterns' backtracking
    short (linear time on a megabyte of whitespace)."""
    return _LINE_BREAKS.sub("\n", _SPACES.sub(" ", text))


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
    # findall, not finditer, where only the letters count: a megabyte of matches stays fast
    candidates = {letter.upper() for letter in _BOXED.findall(text)}
    lowered = text.lower()
    other = _COMMIT_OTHER.finditer(text) if any(word in lowered for word in FOREIGN_ANSWER_WORDS) else ()
    for match in chain(_COMMIT.finditer(text), other):
        letter = next(g for g in match.groups() if g)
        if not letter.isupper():
            continue  # "the answer is a fracture": a lower-case letter only counts alone
        letter_first = match.re is _COMMIT and match.group(3) is not None  # "B is correct"
        if letter == "A" and not letter_first and _ARTICLE.match(text, match.end()):
            continue  # "Answer: A CT of the head" names option text, not a letter
        if not letter_first and _ALTERNATIVE.match(text, match.end()):
            return None  # "the answer is B or C"
        candidates.add(letter)
        if len(candidates) > 1:
            return None  # commitments to different letters: nothing below can undo that
    trailing = _TRAILING.search(text)
    if trailing and set(_BRACKETED.findall(text)) == {trailing.group(1)}:
        candidates.add(trailing.group(1))  # "Ultrasound (B)"; not "CT (A) or ultrasound (B)"
    first_line = text.splitlines()[0].strip()
    leading = _LEADING.match(first_line)
    listed = set(_LISTED.findall(text))
    if leading and len(listed) < 2:
        letter = leading.group(1)
        alone = _BARE.fullmatch(first_line) is not None
        if (letter.isupper() or alone) and not _ALTERNATIVE.match(first_line, leading.end(1)):
            candidates.add(letter.upper())
    if len(candidates) != 1:
        return None
    letter = candidates.pop()
    hedged = ("also" in lowered or "equally" in lowered) and any(other != letter for other in _HEDGE.findall(text))
    if hedged:
        return None  # "B, but C is also acceptable": two options endorsed
    return letter


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

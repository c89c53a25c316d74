"""Prompt rendering from the package's Jinja templates (``lm_eval_radsafe/templates``).

The system prompt is the study's, verbatim. The user prompt follows the study's
templates (no "Context:" header; options one per line as ``"{letter}. {text}"``) and
repeats the answer instruction, because some chat templates drop the system role.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Mapping

import jinja2

from lm_eval_radsafe.assets import templates_dir
from lm_eval_radsafe.conditions import Condition, get_condition


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    folder = str(templates_dir())
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def system_prompt() -> str:
    """The system prompt sent with every condition."""
    return _environment().get_template("system.j2").render()


def letter_list(letters: str) -> str:
    """``"ABCD"`` -> ``"A, B, C or D"``."""
    return ", ".join(letters[:-1]) + " or " + letters[-1] if len(letters) > 1 else letters


def user_prompt(
    condition: Condition | str,
    question: str,
    options: Iterable[Mapping[str, Any] | Any],
    evidence: str = "",
) -> str:
    """Render the user message of ``condition`` for one question.

    ``options`` are records with ``letter`` and ``text`` (dicts or
    :class:`~lm_eval_radsafe.items.Option`).
    """
    cond = get_condition(condition) if isinstance(condition, str) else condition
    opts = [_as_option(o) for o in options]
    if cond.evidence_field is not None and not evidence.strip():
        raise ValueError(f"condition {cond.name!r} needs evidence text, got an empty string")
    return _environment().get_template(cond.template).render(
        question=question.strip(),
        options=opts,
        evidence=evidence.strip(),
        letter_list=letter_list("".join(o["letter"] for o in opts)),
    )


def _as_option(option: Mapping[str, Any] | Any) -> dict[str, str]:
    if isinstance(option, Mapping):
        return {"letter": option["letter"], "text": str(option["text"]).strip()}
    return {"letter": option.letter, "text": str(option.text).strip()}

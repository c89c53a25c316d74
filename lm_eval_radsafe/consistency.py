"""Per-item self-consistency statistics over K sampled letters (digest section 4).

Every sample is a ballot: an option letter or NULL (no clear letter). For one item with
options ``A_q`` and K samples:

* **majority** (NULL-aware): the most frequent ballot, NULL included. NULL winning or
  tying for the top count -> NULL; a tie among letters only -> the alphabetically first.
* **agreement** = top count / K; **margin** = (top - runner-up) / K.
* **entropy** H = -sum p_x ln p_x over observed ballots (A..E and NULL, natural log).
* **confidence** = 1 - H / ln(|A_q| + 1): the item's own option count plus the NULL bin.
  A letter outside the item's options is counted as NULL, so confidence stays in [0, 1].
* **Wilson** 95% interval (z = 1.959964) on the agreement.
* **robustness** = valid letters equal to the answer / valid letters (0 when none valid).
* **synchronized failure** (:func:`synchronized_failure`): every ballot is a letter (no
  NULL), there are at least two, all the same, and wrong. The same function serves the
  ensembles of :mod:`lm_eval_radsafe.analysis.questions`, where the ballots are the
  members' letters.

One majority rule serves accuracy, the safety rates and every confidence split. (The
study's scripts also use a NULL-dropping majority for some safety rates; we do not.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np

from lm_eval_radsafe.items import LETTERS, NULL, Item

WILSON_Z = 1.959964


@dataclass(slots=True)
class VoteStats:
    """Statistics of one item's K samples."""

    n_samples: int
    counts: dict[str, int]
    majority: str  # a letter of the item, or NULL
    agreement: float
    margin: float
    entropy: float
    confidence: float
    wilson_low: float
    wilson_high: float
    n_valid: int
    null_rate: float
    robustness: float
    synchronized_failure: bool


def majority_vote(ballots: Sequence[str]) -> str:
    """NULL-aware majority of ``ballots`` (letters or ``"NULL"``); empty input is NULL."""
    return majority_of_counts(Counter(ballots))


def majority_of_counts(counts: Mapping[str, int]) -> str:
    """:func:`majority_vote` from the ballots' counts (ballot -> count)."""
    if not counts:
        return NULL
    top = max(counts.values())
    tied = sorted(b for b, c in counts.items() if c == top)
    return NULL if NULL in tied else tied[0]


def synchronized_failure(ballots: Sequence[str], answer: str) -> bool:
    """Whether ``ballots`` fail in sync: at least two ballots, every one a letter (none
    ``"NULL"``), all the same letter, and that letter is not ``answer``.

    The ballots are a model's K samples of one item (self-consistency) or the letters of an
    ensemble's members for one item. What counts as a letter is the caller's choice: our
    rules map a letter outside the item's options to NULL first (:func:`vote_stats`, the
    strict filter); ``--rules study`` keeps it as a letter. This is the study's ensemble definition (Table 3,
    ``run_ensembles.py``: "all three members give a valid, identical, wrong letter"),
    applied to samples as well: an abstaining voter (NULL) breaks the synchrony, so
    B, B, NULL is not a synchronized failure, and neither is a single ballot. (The study's
    single-model script instead drops NULLs and asks for two or more identical wrong
    letters; ``radsafe report --rules study`` keeps that rule for the sampled regime.)
    """
    return synchronized_of_counts(Counter(ballots), answer)


def synchronized_of_counts(counts: Mapping[str, int], answer: str) -> bool:
    """:func:`synchronized_failure` from the ballots' counts (ballot -> count)."""
    if len(counts) != 1:
        return False
    (ballot, count), = counts.items()
    return count >= 2 and ballot != NULL and ballot != answer


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval for a proportion; (nan, nan) when n is 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


#: a ballot's column in a counts matrix (:class:`Votes`): the letters in order, then NULL
_COLUMN = {letter: column for column, letter in enumerate(LETTERS)}
_NULL_COLUMN = len(LETTERS)
_BALLOTS = (*LETTERS, NULL)
#: ln(n + 1) for an item of n options: the entropy of n options and the NULL bin spread evenly
_LOG_BINS = np.array([math.log(n + 1) for n in range(len(LETTERS) + 1)])


@dataclass(frozen=True)
class Votes:
    """What scoring items needs of their ballots (:func:`votes`), one entry per item."""

    #: (items, letters + 1): each letter's ballots, then NULL's; a ballot that is not one of
    #: the item's letters counts as NULL (whole ballots only: "" or "AB" is not a letter of "ABCD")
    counts: np.ndarray
    majority: list[str]  # a letter of the item, or NULL
    entropy: np.ndarray
    confidence: np.ndarray
    n_valid: np.ndarray
    null_rate: np.ndarray
    robustness: np.ndarray
    synchronized_failure: np.ndarray  # bool


#: (rule, base) -> row key -> the rule's value: each distinct row computed once per process
_BY_ROW: dict[tuple[str, int], dict[int, Any]] = {}


def _per_distinct(rows: np.ndarray, rule: Callable[[np.ndarray], Any], base: int) -> list[Any]:
    """``rule`` of each row of ``rows`` (non-negative integers below ``base``), computed once
    per distinct row in this process: a grid's items share a few tens of thousands of
    ballot patterns."""
    n, width = rows.shape
    if base**width >= 2**62:  # rows too long to key by one integer: each row on its own
        return [rule(row) for row in rows]
    keys = rows.astype(np.int64) @ (base ** np.arange(width, dtype=np.int64))
    distinct, first, back = np.unique(keys, return_index=True, return_inverse=True)
    known = _BY_ROW.setdefault((rule.__name__, base), {})
    values = []
    for key, at in zip(distinct.tolist(), first.tolist()):
        value = known.get(key, known)
        if value is known:
            value = known[key] = rule(rows[at])
        values.append(value)
    return [values[i] for i in back.reshape(-1).tolist()]


def _as_counts(row: np.ndarray) -> dict[str, int]:
    """A counts row as ballot -> count (ballots with none left out)."""
    return {ballot: int(count) for ballot, count in zip(_BALLOTS, row) if count}


def _entropy_of_row(row: np.ndarray) -> float:
    """-sum p ln p of a row of ballot counts, summed in the row's order (the order ballots
    first occur, so that one ballot list gives one value everywhere)."""
    sizes = [int(count) for count in row if count]
    k = sum(sizes)
    return -sum((c / k) * math.log(c / k) for c in sizes)


def _majority_of_row(row: np.ndarray) -> str:
    return majority_of_counts(_as_counts(row))


def _synchronized_of_row(row: np.ndarray) -> bool:
    """Synchronized failure of a counts row followed by the answer's column."""
    return synchronized_of_counts(_as_counts(row[:-1]), _BALLOTS[row[-1]])


def votes(items: Sequence[Item], ballots: Sequence[Sequence[str]]) -> Votes:
    """The majority, entropy, confidence, robustness and synchronized failure of each item's
    sampled ``ballots`` (letters or NULL; see the module docstring), for many items at once.
    Raises ``ValueError`` for an item without ballots."""
    n = len(items)
    sizes = np.fromiter(map(len, ballots), dtype=np.intp, count=n)
    if n and not sizes.all():
        raise ValueError(f"item {items[int(np.argmin(sizes))].id!r}: no samples to vote on")
    flat = list(chain.from_iterable(ballots))
    columns = np.fromiter(map(_COLUMN.get, flat, repeat(_NULL_COLUMN)), dtype=np.intp, count=len(flat))
    owner = np.repeat(np.arange(n), sizes)
    n_options = np.fromiter((len(item.options) for item in items), dtype=np.intp, count=n)
    columns[columns >= n_options[owner]] = _NULL_COLUMN
    width = _NULL_COLUMN + 1
    cells = owner * width + columns
    counts = np.bincount(cells, minlength=n * width).reshape(n, width)
    # each item's counts in the order its ballots first occur (absent ballots last, as 0)
    first_at = np.full(n * width, len(flat), dtype=np.intp)
    np.minimum.at(first_at, cells, np.arange(len(flat)))
    in_order = np.take_along_axis(counts, np.argsort(first_at.reshape(n, width), axis=1, kind="stable"), axis=1)
    base = max(int(sizes.max(initial=0)), width) + 1
    entropy = np.array(_per_distinct(in_order, _entropy_of_row, base), dtype=float)
    answers = np.fromiter((_COLUMN[item.answer] for item in items), dtype=np.intp, count=n)
    n_null = counts[:, _NULL_COLUMN]
    n_valid = sizes - n_null
    right = counts[np.arange(n), answers]
    return Votes(
        counts=counts,
        majority=_per_distinct(counts, _majority_of_row, base),
        entropy=entropy,
        confidence=1.0 - entropy / _LOG_BINS[n_options],
        n_valid=n_valid,
        null_rate=n_null / sizes,
        # the answer is one of the item's letters, never NULL
        robustness=np.divide(right, n_valid, out=np.zeros(n), where=n_valid > 0),
        synchronized_failure=np.array(_per_distinct(np.column_stack([counts, answers]), _synchronized_of_row, base), dtype=bool),
    )


def vote_stats(item: Item, letters: Sequence[str]) -> VoteStats:
    """Statistics of the sampled ``letters`` of ``item`` (see the module docstring).

    Raises ``ValueError`` for an empty sample list.
    """
    core = votes([item], [letters])
    counts = _as_counts(core.counts[0])  # in ballot order: A..E, then NULL
    k = len(letters)
    ordered = sorted(counts.values(), reverse=True)
    top = ordered[0]
    runner_up = ordered[1] if len(ordered) > 1 else 0
    low, high = wilson_interval(top, k)
    return VoteStats(
        n_samples=k,
        counts=counts,
        majority=core.majority[0],
        agreement=top / k,
        margin=(top - runner_up) / k,
        entropy=float(core.entropy[0]),
        confidence=float(core.confidence[0]),
        wilson_low=low,
        wilson_high=high,
        n_valid=int(core.n_valid[0]),
        null_rate=float(core.null_rate[0]),
        robustness=float(core.robustness[0]),
        synchronized_failure=bool(core.synchronized_failure[0]),
    )

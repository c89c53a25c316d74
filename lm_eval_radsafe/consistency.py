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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lm_eval_radsafe.filters import NULL
from lm_eval_radsafe.items import Item

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


@dataclass(frozen=True, slots=True)
class Vote:
    """What scoring an item needs of its ballots (:func:`vote`): a part of :class:`VoteStats`."""

    majority: str  # a letter of the item, or NULL
    entropy: float
    confidence: float
    n_valid: int
    null_rate: float
    robustness: float
    synchronized_failure: bool


def ballot_counts(item: Item, letters: Sequence[str]) -> Counter[str]:
    """Each ballot's count, in the order ballots first occur: a sampled letter outside the
    item's options counts as NULL (whole ballots only: "" or "AB" is not a letter of "ABCD")."""
    counts = Counter(letters)
    allowed = item.letter_set
    if allowed.issuperset(counts):
        return counts
    # every other ballot merged into NULL, which takes the place of the first of them
    merged: Counter[str] = Counter()
    for ballot, count in counts.items():
        merged[ballot if ballot in allowed else NULL] += count
    return merged


#: ballot counts in order of first occurrence -> their entropy (a few thousand distinct
#: sequences at most: K samples split among at most six ballots)
_ENTROPY: dict[tuple[int, ...], float] = {}


def vote(item: Item, counts: Mapping[str, int]) -> Vote:
    """The majority, entropy, confidence, robustness and synchronized failure of ``item``'s
    ballots from :func:`ballot_counts` (see the module docstring). Raises ``ValueError`` for
    no ballots."""
    sizes = tuple(counts.values())
    k = sum(sizes)
    if not k:
        raise ValueError(f"item {item.id!r}: no samples to vote on")
    entropy = _ENTROPY.get(sizes)
    if entropy is None:  # summed in the order ballots first occur, so a ballot list gives one value everywhere
        entropy = _ENTROPY[sizes] = -sum((c / k) * math.log(c / k) for c in sizes)
    n_null = counts.get(NULL, 0)
    n_valid = k - n_null
    return Vote(
        majority=majority_of_counts(counts),
        entropy=entropy,
        confidence=1.0 - entropy / math.log(len(item.options) + 1),
        n_valid=n_valid,
        null_rate=n_null / k,
        # the answer is one of the item's letters, never NULL
        robustness=counts.get(item.answer, 0) / n_valid if n_valid else 0.0,
        synchronized_failure=synchronized_of_counts(counts, item.answer),
    )


def vote_stats(item: Item, letters: Sequence[str]) -> VoteStats:
    """Statistics of the sampled ``letters`` of ``item`` (see the module docstring).

    Raises ``ValueError`` for an empty sample list.
    """
    counts = ballot_counts(item, letters)
    core = vote(item, counts)
    k = len(letters)
    ordered = sorted(counts.values(), reverse=True)
    top = ordered[0]
    runner_up = ordered[1] if len(ordered) > 1 else 0
    low, high = wilson_interval(top, k)
    return VoteStats(
        n_samples=k,
        counts=dict(sorted(counts.items())),
        majority=core.majority,
        agreement=top / k,
        margin=(top - runner_up) / k,
        entropy=core.entropy,
        confidence=core.confidence,
        wilson_low=low,
        wilson_high=high,
        n_valid=core.n_valid,
        null_rate=core.null_rate,
        robustness=core.robustness,
        synchronized_failure=core.synchronized_failure,
    )

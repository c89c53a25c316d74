"""Option orders of the option-order regime (``*_perm`` tasks).

Each item is asked once per order: the original order first, then seeded permutations of
its options, distinct from each other and from the original. An order is a string of the
item's original letters in the order they are shown: ``"CADB"`` shows option C under the
letter A, option A under B, and so on. The orders of an item depend only on its id, its
number of options and :data:`ORDER_SEED`, and the first ``k`` orders of ``k + 1`` are the
``k`` orders: a run with more orders extends a run with fewer.

The prompt of an order reletters the reordered options ``A``, ``B``...; the letter the model
gives is a *position*, mapped back to the original option (:func:`original_letter`) before
any metric is scored, so every metric speaks of options, never of positions, except
position bias (:func:`position_counts`), which is about positions.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from lm_eval_radsafe.conditions import MetadataError
from lm_eval_radsafe.items import LETTERS

#: seed of every item's permutations (with its id): fixed, so every run asks the same orders
ORDER_SEED = 20240601
#: orders per item when the run does not say: the original and three permutations
DEFAULT_ORDERS = 4
#: ``--metadata '{"option_orders": K}'``: how many orders a ``*_perm`` task asks per item
ORDERS_KEY = "option_orders"
#: the doc field holding an item's orders (logged in every samples file)
ORDERS_FIELD = "option_orders"

#: evidence naming an option by its letter ("option B", "answer (C)"), which a reordering would
#: point at another option
_LETTER_REFERENCE = re.compile(r"\b(?:[Oo]ptions?|[Aa]nswers?|[Cc]hoices?)\s*\(?[A-E]\)?(?![\w-])")


def resolve_orders(metadata: Mapping[str, Any]) -> int:
    """How many orders a run asks per item: ``metadata["option_orders"]`` or
    :data:`DEFAULT_ORDERS`; :class:`~lm_eval_radsafe.conditions.MetadataError` unless an integer from 2 to 24 (the permutations of
    four options)."""
    value = metadata.get(ORDERS_KEY, DEFAULT_ORDERS)
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= math.factorial(4):
        raise MetadataError(f"metadata {ORDERS_KEY!r} must be an integer from 2 to 24, got {value!r}")
    return value


def option_orders(item_id: str, letters: str, k: int) -> list[str]:
    """The ``k`` orders of an item with options ``letters`` (``"ABCD"``): the original order,
    then ``k - 1`` distinct seeded permutations. ``ValueError`` when ``k`` exceeds the number
    of permutations."""
    if not 1 <= k <= math.factorial(len(letters)):
        raise ValueError(f"item {item_id!r}: {k} orders asked, {len(letters)} options have {math.factorial(len(letters))}")
    digest = hashlib.sha256(f"{ORDER_SEED}:{item_id}".encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    orders = [letters]
    while len(orders) < k:
        order = "".join(rng.sample(letters, len(letters)))
        if order not in orders:
            orders.append(order)
    return orders


def reordered_options(options: Sequence[Mapping[str, Any]], order: str) -> list[dict[str, Any]]:
    """``options`` (doc dicts with ``letter`` and ``text``) shown in ``order``, relettered
    ``A``, ``B``...: position ``i`` holds the option whose original letter is ``order[i]``."""
    by_letter = {option["letter"]: option for option in options}
    if sorted(order) != sorted(by_letter):
        raise ValueError(f"order {order!r} is not a permutation of the options {''.join(by_letter)}")
    return [{**by_letter[original], "letter": LETTERS[i]} for i, original in enumerate(order)]


def original_letter(shown: str | None, order: str) -> str | None:
    """The original letter of the option shown under ``shown`` in ``order``; None for NULL or
    a letter beyond the item's options (an abstention, as in every regime)."""
    if not isinstance(shown, str) or len(shown) != 1 or shown not in LETTERS[: len(order)]:
        return None
    return order[LETTERS.index(shown)]


def position_counts(shown: Sequence[str | None], n_options: int) -> tuple[list[int], list[float]]:
    """For one item: how often each position (A-E) was chosen over its orders, and how often
    it would be chosen if choices ignored position (each answered order adds
    ``1 / n_options`` to each of its positions). NULLs count in neither."""
    observed = [0] * len(LETTERS)
    expected = [0.0] * len(LETTERS)
    for letter in shown:
        if isinstance(letter, str) and len(letter) == 1 and letter in LETTERS[:n_options]:
            observed[LETTERS.index(letter)] += 1
            for position in range(n_options):
                expected[position] += 1.0 / n_options
    return observed, expected


def letter_references(text: str) -> list[str]:
    """The places where ``text`` names an option by its letter (``"option B"``)."""
    return [match.group(0) for match in _LETTER_REFERENCE.finditer(text or "")]

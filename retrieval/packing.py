"""Evidence text of the retrieval conditions, from a question's ranked chunks.

* top-k: the first k chunks in rank order joined by the study's separator;
* padded top-1: ``(top1 + separator) * r`` cut to the token length of the top-10 text;
* budgets (long context): the ranked chunks joined, tokenised **once** with the evaluated
  model's tokenizer, and every budget cut from that one token list, head first, so the
  highest-ranked chunks survive (the study's construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

SEPARATOR = "\n\n---\n\n"


class TokenCodec(Protocol):
    """Encode and decode with the evaluated model's tokenizer (no special tokens)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def top_k_text(chunks: Sequence[str], k: int) -> str:
    """The first ``k`` chunks in rank order, joined by :data:`SEPARATOR`."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return SEPARATOR.join(chunks[:k])


def padded_text(top1: str, target_tokens: int, count: Any) -> str:
    """``top1`` repeated (with separators) and cut to ``target_tokens`` tokens.

    ``count(text) -> int`` counts tokens; the cut keeps the longest prefix, on a
    token boundary of the repeated text, whose count does not exceed the target.
    """
    if not top1:
        raise ValueError("padded top-1 needs a non-empty top-1 chunk")
    unit = top1 + SEPARATOR
    repeats = 1
    while count(unit * repeats) < target_tokens:
        repeats += 1
    text = unit * repeats
    low, high = 0, len(text)
    while low < high:  # longest prefix whose token count fits
        mid = (low + high + 1) // 2
        if count(text[:mid]) <= target_tokens:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip()


@dataclass(frozen=True)
class Packed:
    """Text cut to a budget and the chunks (by rank) whose start made it in."""

    text: str
    n_tokens: int
    chunks_included: int


def pack_budgets(chunks: Sequence[str], budgets: Sequence[int], codec: TokenCodec) -> list[Packed]:
    """Cut the joined chunks to every budget from one tokenisation (head first)."""
    joined = SEPARATOR.join(chunks)
    ids = codec.encode(joined)
    starts = []
    position = 0
    for chunk in chunks:
        starts.append(position)
        position += len(chunk) + len(SEPARATOR)
    out = []
    for budget in budgets:
        if budget < 0:
            raise ValueError(f"budget must be non-negative, got {budget}")
        kept = ids[:budget]
        text = codec.decode(kept)
        included = sum(1 for start in starts if start < len(text))
        out.append(Packed(text=text, n_tokens=len(kept), chunks_included=included))
    return out

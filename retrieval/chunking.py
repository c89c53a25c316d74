"""Token-window chunking: windows of ``size`` tokens with ``overlap`` tokens shared between
neighbours (stride = size - overlap); a passage of at most ``size`` tokens is one chunk.
Defaults are the study's: 300 tokens, 50 overlap. Chunk text is an exact slice of the
passage text (``title + "\\n\\n" + text``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from lm_eval_radsafe.retrieval.corpus import Passage
from lm_eval_radsafe.retrieval.tokenizers import Tokenizer

DEFAULT_SIZE = 300
DEFAULT_OVERLAP = 50


@dataclass(frozen=True)
class Chunk:
    """A window of a passage: ``id`` is ``<passage id>#<index>``."""

    id: str
    passage_id: str
    text: str
    n_tokens: int


def chunk_passages(
    passages: Iterable[Passage], tokenizer: Tokenizer, size: int = DEFAULT_SIZE, overlap: int = DEFAULT_OVERLAP
) -> list[Chunk]:
    """Split every passage into token windows (see the module docstring)."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"chunking needs size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    stride = size - overlap
    chunks: list[Chunk] = []
    for passage in passages:
        text = passage.full_text
        spans = tokenizer.spans(text)
        if not spans:
            continue
        starts = list(range(0, max(len(spans) - overlap, 1), stride)) if len(spans) > size else [0]
        for index, start in enumerate(starts):
            window = spans[start : start + size]
            chunks.append(
                Chunk(f"{passage.id}#{index}", passage.id, text[window[0][0] : window[-1][1]], len(window))
            )
    return chunks

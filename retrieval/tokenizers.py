"""Token counters for chunking and packing, named by a spec string.

* ``regex``: words and single punctuation marks (offline, deterministic; the default for
  chunking);
* ``tiktoken:<encoding>``: e.g. ``tiktoken:cl100k_base``, the study's chunking tokenizer
  (tiktoken fetches its encoding file on first use);
* ``hf:<name or path>``: a Hugging Face tokenizer, e.g. the evaluated model's own.

Each gives character spans of its tokens, so a chunk is an exact slice of the source text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

_REGEX = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class Tokenizer(Protocol):
    """What chunking and packing need from a tokenizer."""

    name: str

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of every token of ``text``."""

    def count(self, text: str) -> int:
        """Number of tokens of ``text``."""


@dataclass(frozen=True)
class RegexTokenizer:
    """Words and punctuation marks."""

    name: str = "regex"

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _REGEX.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in _REGEX.finditer(text))


class TiktokenTokenizer:
    """A tiktoken encoding."""

    def __init__(self, encoding: str) -> None:
        try:
            import tiktoken
        except ImportError as exc:  # pragma: no cover - tiktoken ships with lm-eval
            raise ImportError("tiktoken is needed for 'tiktoken:' tokenizers: pip install tiktoken") from exc
        self.name = f"tiktoken:{encoding}"
        self._encoding = tiktoken.get_encoding(encoding)

    def spans(self, text: str) -> list[tuple[int, int]]:
        tokens = self._encoding.encode(text, disallowed_special=())
        _, offsets = self._encoding.decode_with_offsets(tokens)
        ends = offsets[1:] + [len(text)]
        return list(zip(offsets, ends))

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


class HFTokenizer:
    """A Hugging Face (fast) tokenizer, counted without special tokens."""

    def __init__(self, name_or_path: str, tokenizer: Any = None, **kwargs: Any) -> None:
        self.name = f"hf:{name_or_path}"
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        self.tokenizer = tokenizer

    def spans(self, text: str) -> list[tuple[int, int]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(span) for span in encoded["offset_mapping"]]

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@lru_cache(maxsize=8)
def get_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer named by ``spec`` (see the module docstring)."""
    if spec == "regex":
        return RegexTokenizer()
    kind, _, name = spec.partition(":")
    if kind == "tiktoken" and name:
        return TiktokenTokenizer(name)
    if kind == "hf" and name:
        return HFTokenizer(name)
    raise ValueError(f"unknown tokenizer {spec!r}: use 'regex', 'tiktoken:<encoding>' or 'hf:<name or path>'")

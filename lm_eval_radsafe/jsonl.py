"""One JSON-lines reader for every file format of the project (items, samples, corpora,
prepared folders, agent reports).

:func:`read_jsonl` gives (line number, object) pairs. Readers that need the raw bytes of a
line (the typed fast path of the samples reader) or its completeness (the agent's reports,
whose last line may be cut off by a killed run) take :func:`jsonl_lines` and parse each
line with :meth:`JsonlLine.record` (or :func:`jsonl_views`, lines as views of a read
chunk, then :class:`JsonlLine` for a line the fast path cannot take), so every reader refuses the same lines with the same
message naming file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_eval_radsafe.text_rules import NotUtf8Error, decode_utf8


class JsonlError(ValueError):
    """A line that is not a JSON object, or not UTF-8; the message names file and line."""

    def __init__(self, path: Path | str, number: int, reason: str, message: str | None = None) -> None:
        self.path, self.number, self.reason = path, number, reason
        super().__init__(message or f"{path}, line {number}: {reason}")


class JsonlNotUtf8Error(JsonlError):
    """A line that is not UTF-8; ``reason`` is the message of
    :func:`~lm_eval_radsafe.text_rules.decode_utf8` (line, byte offset, likely encoding)."""


@dataclass(frozen=True)
class JsonlLine:
    """One line of a JSON-lines file as read: its bytes (with the newline, if any), its
    number (from 1) and the byte offset where it starts."""

    path: Path | str
    number: int
    offset: int
    raw: bytes

    @property
    def complete(self) -> bool:
        """False only for a last line that does not end with a newline."""
        return self.raw.endswith(b"\n")

    def record(self) -> dict[str, Any] | None:
        """The line's JSON object; None for a blank line.

        Raises :class:`JsonlNotUtf8Error` for bytes that are not UTF-8 (a byte-order mark
        at the start of the file is dropped) and :class:`JsonlError` for anything that is
        not one JSON object.
        """
        try:
            text = decode_utf8(self.raw, self.path, offset=self.offset, line=self.number)
        except NotUtf8Error as exc:
            raise JsonlNotUtf8Error(self.path, self.number, exc.problem, message=str(exc)) from None
        if not text.strip():
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JsonlError(self.path, self.number, f"not valid JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(record, dict):
            raise JsonlError(self.path, self.number, f"expected a JSON object, got {type(record).__name__}")
        return record


def jsonl_lines(path: Path | str) -> Iterator[JsonlLine]:
    """Every line of ``path`` (blank ones included), unparsed, in file order."""
    offset = 0
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield JsonlLine(path, number, offset, raw)
            offset += len(raw)


#: files up to this size are mapped into memory and read in place; larger ones in chunks
MAP_AT_MOST = 1 << 28


def jsonl_views(path: Path | str, chunk_size: int = 1 << 22) -> Iterator[tuple[int, int, memoryview]]:
    """(line number, byte offset, the line's bytes with its newline) for every line of
    ``path``, as :func:`jsonl_lines` reads them, but without a copy per line: each line is
    a view into the file mapped in memory (files up to :data:`MAP_AT_MOST`) or into a chunk
    read at once (memory then holds one chunk and the longest line). For readers that
    decode most lines straight from the bytes; a view is valid until the next line."""
    import mmap

    number, offset = 1, 0
    with Path(path).open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if 0 < size <= MAP_AT_MOST:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(mapped)
            try:
                start = 0
                while start < size:
                    end = mapped.find(b"\n", start)
                    end = size if end < 0 else end + 1
                    yield number, start, view[start:end]
                    number, start = number + 1, end
            finally:
                view.release()
                try:
                    mapped.close()
                except BufferError:  # a caller still holds a line: the mapping goes with it
                    pass
            return
        carry = b""
        while True:
            chunk = handle.read(chunk_size)
            buffer = carry + chunk if carry else chunk
            if not chunk:
                if buffer:
                    yield number, offset, memoryview(buffer)
                return
            view = memoryview(buffer)
            start = 0
            while True:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                yield number, offset, view[start : end + 1]
                number += 1
                offset += end + 1 - start
                start = end + 1
            carry = buffer[start:]


def read_jsonl(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; :class:`JsonlError` on a bad line.

    The file is UTF-8, with or without a byte-order mark; other bytes are a
    :class:`JsonlNotUtf8Error` with the message of
    :func:`~lm_eval_radsafe.text_rules.decode_utf8` (file, line, byte offset, likely
    encoding).
    """
    for line in jsonl_lines(path):
        record = line.record()
        if record is not None:
            yield line.number, record

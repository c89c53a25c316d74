"""One JSON-lines reader for every file format of the project (items, samples, corpora)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from lm_eval_radsafe.text_rules import NotUtf8Error, decode_utf8


class JsonlError(ValueError):
    """A line that is not a JSON object, or not UTF-8; the message names file and line."""

    def __init__(self, path: Path, number: int, reason: str, message: str | None = None) -> None:
        self.path, self.number, self.reason = path, number, reason
        super().__init__(message or f"{path}, line {number}: {reason}")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; :class:`JsonlError` on a bad line.

    The file is UTF-8, with or without a byte-order mark; other bytes are a
    :class:`JsonlError` with the message of :func:`~lm_eval_radsafe.text_rules.decode_utf8`
    (file, line, byte offset, likely encoding).
    """
    offset = 0
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = decode_utf8(raw, path, offset=offset, line=number)
            except NotUtf8Error as exc:
                raise JsonlError(path, number, exc.problem, message=str(exc)) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(path, number, f"not valid JSON ({exc.msg}, column {exc.colno})") from exc
            if not isinstance(record, dict):
                raise JsonlError(path, number, f"expected a JSON object, got {type(record).__name__}")
            yield number, record

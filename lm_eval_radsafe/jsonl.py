"""One JSON-lines reader for every file format of the project (items, samples, corpora)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


class JsonlError(ValueError):
    """A line that is not a JSON object; the message names file and line."""

    def __init__(self, path: Path, number: int, reason: str) -> None:
        self.path, self.number, self.reason = path, number, reason
        super().__init__(f"{path}, line {number}: {reason}")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; :class:`JsonlError` on a bad line."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JsonlError(path, number, f"not valid JSON ({exc.msg}, column {exc.colno})") from exc
            if not isinstance(record, dict):
                raise JsonlError(path, number, f"expected a JSON object, got {type(record).__name__}")
            yield number, record

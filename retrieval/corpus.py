"""Corpus readers: JSONL with ``id``/``title``/``text``, or a folder of ``.txt``/``.md`` files.

A bad line is an error naming the file, line, field and value; nothing is skipped. The
rules of the item loaders hold here too (:mod:`lm_eval_radsafe.text_rules`): files are
UTF-8 with or without a byte-order mark (other bytes are an error naming file, line and
byte offset, with the likely encoding), and text holds no NUL byte or other control
character except tab, newline and carriage return.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lm_eval_radsafe.assets import demo_corpus_path
from lm_eval_radsafe.jsonl import JsonlError, read_jsonl
from lm_eval_radsafe.text_rules import NotUtf8Error, control_character, decode_utf8, first_control

DEMO_CORPUS = "demo"


class CorpusError(ValueError):
    """A corpus file or folder that cannot be read as passages."""


@dataclass(frozen=True)
class Passage:
    """One corpus document: its id, title and text."""

    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """``title + "\\n\\n" + text`` (the study's chunking input)."""
        return f"{self.title}\n\n{self.text}" if self.title else self.text


def read_corpus(source: str | Path) -> list[Passage]:
    """Passages from ``"demo"``, a ``.jsonl`` file or a folder of ``.txt``/``.md`` files."""
    path = demo_corpus_path() if str(source) == DEMO_CORPUS else Path(source).expanduser()
    if path.is_dir():
        passages = _read_folder(path)
    elif path.is_file():
        if path.suffix.lower() != ".jsonl":
            raise CorpusError(f"{path}: use a .jsonl file (id, title, text) or a folder of .txt/.md files")
        passages = _read_jsonl(path)
    else:
        raise CorpusError(f"corpus {str(source)!r} not found: give 'demo', a .jsonl file or a folder")
    if not passages:
        raise CorpusError(f"{path}: no passages")
    return passages


def _read_jsonl(path: Path) -> list[Passage]:
    passages: list[Passage] = []
    seen: dict[str, int] = {}
    try:
        for number, record in read_jsonl(path):
            where = f"{path}, line {number}"
            for field in ("id", "text"):
                value = record.get(field)
                if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
                    raise CorpusError(f"{where}: field {field!r}: missing or empty (value: {value!r})")
            title = record.get("title", "")
            if not isinstance(title, str):
                raise CorpusError(f"{where}: field 'title': must be text (value: {title!r})")
            for field in ("id", "title", "text"):
                value = record.get(field)
                reason = control_character(value) if isinstance(value, str) else None
                if reason is not None:
                    raise CorpusError(f"{where}: field {field!r}: {reason} (value: {_short(value)})")
            pid = str(record["id"])
            if pid in seen:
                raise CorpusError(f"{where}: field 'id': duplicate of line {seen[pid]} (value: {pid!r})")
            seen[pid] = number
            passages.append(Passage(pid, title.strip(), str(record["text"]).strip()))
    except JsonlError as exc:
        raise CorpusError(str(exc)) from exc
    return passages


def _read_folder(folder: Path) -> list[Passage]:
    passages = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()):
        try:
            text = decode_utf8(path.read_bytes(), path)
        except NotUtf8Error as exc:
            raise CorpusError(str(exc)) from None
        index = first_control(text)
        if index is not None:
            start = text.rfind("\n", 0, index) + 1
            line = text.count("\n", 0, index) + 1
            raise CorpusError(f"{path}, line {line}: {control_character(text[start:index + 1])}")
        text = text.strip()
        if not text:
            raise CorpusError(f"{path}: empty file")
        first, _, rest = text.partition("\n")
        title = first.lstrip("# ").strip() if path.suffix.lower() == ".md" and first.startswith("#") else path.stem
        body = rest.strip() if title != path.stem else text
        passages.append(Passage(str(path.relative_to(folder)), title, body))
    return passages


def _short(value: str, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def corpus_hash(passages: Iterable[Passage]) -> str:
    """sha256 over the passages in order (id, title, text)."""
    digest = hashlib.sha256(b"radsafe-corpus/1")
    for p in passages:
        digest.update(json.dumps([p.id, p.title, p.text], ensure_ascii=False).encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()

"""Answers already received from a server, kept on disk so that a stopped or killed run
resumes by sending only what is missing.

Each answer is stored under a key made from the request as sent for one prompt: the
served model name, the prompt (or chat messages), the generation settings and the seed.
A request with another seed (another self-consistency sample) is another key. Entries
are written one by one as answers arrive (SQLite, WAL journal), so a run killed at any
point keeps every answer it received, and several processes may share one file.

The file is ``$RADSAFE_RESPONSE_CACHE`` when set, else ``responses.sqlite`` in the
package's cache folder (``$RADSAFE_CACHE`` or ``~/.cache/lm-eval-radsafe``); the backends'
``response_cache=`` model argument overrides both and ``response_cache=off`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from lm_eval_radsafe.paths import cache_root

OFF = frozenset({"off", "none", "false", "0", "no"})


def default_cache_path(setting: str | os.PathLike | None = None) -> Path | None:
    """The response cache file for a ``response_cache=`` setting (None: the default), or
    None when the setting turns the cache off."""
    value = str(setting) if setting is not None else os.environ.get("RADSAFE_RESPONSE_CACHE")
    if value is not None and value.strip().lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    return cache_root() / "responses.sqlite"


def request_key(payload: dict[str, Any], prompt_field: str, prompt: Any) -> str:
    """The key of one prompt's request: a hash of the payload with ``prompt_field`` set to
    that single prompt (so a batched request and a lone one share keys)."""
    single = {**payload, prompt_field: prompt}
    text = json.dumps(single, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """A key -> answer store in one SQLite file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, answer TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get(self, key: str) -> Any | None:
        """The stored answer for ``key``, or None."""
        row = self._db.execute("SELECT answer FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, answer: Any, model: str = "") -> None:
        """Store one answer at once (committed before this returns)."""
        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, model, answer, created) VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(answer, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def keys(self) -> set[str]:
        """Every stored key."""
        return {row[0] for row in self._db.execute("SELECT key FROM responses")}

    def close(self) -> None:
        """Close the file."""
        self._db.close()

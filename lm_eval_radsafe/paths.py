"""Where the package keeps what it can rebuild or resume from."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The package's cache folder: ``$RADSAFE_CACHE`` or ``~/.cache/lm-eval-radsafe``
    (chunked corpora, indexes, the response cache)."""
    return Path(os.environ.get("RADSAFE_CACHE") or Path.home() / ".cache" / "lm-eval-radsafe")

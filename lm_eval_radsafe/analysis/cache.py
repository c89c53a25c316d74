"""A cache of parsed samples files, so a second report over the same folders skips parsing.

One entry per samples file and regime, keyed by the file's absolute path, size,
modification time and a hash of its first and last 16 KiB, and by this module's format
version: a file that is rewritten, appended to, truncated or touched is parsed again.
Entries hold what :func:`~lm_eval_radsafe.analysis.runs.parse_samples` returns (ids,
answers, kept values), the metric values recomputed from them, the logged values nothing
recomputes (as raw float64) and, per recomputed metric, how many logged values differ
(a second report warns again), as MessagePack: data, never code. The items themselves
(question, options, labels) are not cached; they are read from one samples file per
dataset, as before. The cache lives in ``$RADSAFE_CACHE/report`` (see
:func:`lm_eval_radsafe.paths.cache_root`) and needs ``msgspec`` (the ``report`` extra);
without it every report parses every file.

Finished reports are kept too (:class:`ReportStore`, ``$RADSAFE_CACHE/report/outputs``),
keyed by :func:`report_key`, so the same report asked again is written from its copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from lm_eval_radsafe.paths import cache_root

try:
    import msgspec
except ImportError:  # pragma: no cover - exercised where the report extra is absent
    msgspec = None

logger = logging.getLogger(__name__)

#: bump when the cached fields or their meaning change
FORMAT = 5  # 4: synchronized failure needs every sample to be a letter; 5: logged values nothing recomputes only
_EDGE = 16 * 1024


def cache_folder() -> Path:
    """Where parsed runs are kept."""
    return cache_root() / "report"


def outputs_folder() -> Path:
    """Where finished reports are kept (:func:`report_key`)."""
    return cache_root() / "report" / "outputs"


def code_stamp() -> str:
    """A digest of the package's code and templates (path, size, mtime of each file): a
    report made by other code is never reused, installed release or working tree alike."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for pattern in ("*.py", "*.j2") for p in package.rglob(pattern)):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def report_key(results_files: list[Path], options: dict[str, Any]) -> str:
    """The key of a finished report: every results file found and every samples file
    beside it (:func:`file_key`), the report's options (a JSON-able dict: folders, B, seed,
    rules, figure formats...) and :func:`code_stamp`. Any change to a run, an option or
    the code gives another key."""
    import json

    digest = hashlib.sha256(f"outputs\0{FORMAT}\0{code_stamp()}\0".encode())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    for results_file in results_files:
        stamp = results_file.stem.rsplit("_", 1)[-1]
        digest.update(f"\0{file_key(results_file, 'results')}".encode())
        for samples_file in sorted(results_file.parent.glob(f"samples_*_{stamp}.jsonl")):
            digest.update(f"\0{samples_file.name}\0{file_key(samples_file, 'samples')}".encode())
    return digest.hexdigest()


#: (path, size, mtime) -> digest of the file's first and last :data:`_EDGE` bytes, read once
#: per process (a report computes the key of every file twice: for itself and for each run)
_EDGES: dict[tuple[str, int, int], str] = {}


def file_key(path: Path, regime: str) -> str:
    """The cache key of ``path`` read as a ``regime`` run (see the module docstring)."""
    path = Path(path).resolve()
    stat = path.stat()
    known = (str(path), stat.st_size, stat.st_mtime_ns)
    edges = _EDGES.get(known)
    if edges is None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            digest.update(handle.read(_EDGE))
            if stat.st_size > _EDGE:
                handle.seek(max(_EDGE, stat.st_size - _EDGE))
                digest.update(handle.read(_EDGE))
        edges = _EDGES[known] = digest.hexdigest()
    return hashlib.sha256(f"{FORMAT}\0{path}\0{regime}\0{stat.st_size}\0{stat.st_mtime_ns}\0{edges}".encode()).hexdigest()


#: numbers of the temporary files one process writes
_TEMPORARY = itertools.count()


class ParsedCache:
    """Load and store parsed runs (``enabled=False``, or no msgspec: a cache that keeps nothing)."""

    def __init__(self, folder: Path | None = None, enabled: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else cache_folder()
        self.enabled = enabled and msgspec is not None
        self.hits = 0
        self.stored = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.msgpack"

    def load(self, key: str) -> dict[str, Any] | None:
        """The stored fields for ``key``, or None (absent, unreadable or disabled); a found
        entry counts as a hit."""
        fields = self.stored_fields(key)
        if fields is not None:
            self.hits += 1
        return fields

    def stored_fields(self, key: str) -> dict[str, Any] | None:
        """:meth:`load` without counting a hit: the entry a worker process has just stored."""
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # an unreadable entry is parsed again
            logger.debug("report cache: ignoring %s (%s)", path, exc)
            return None
        return self.decode(data, path)

    @staticmethod
    def encode(fields: dict[str, Any]) -> bytes:
        """``fields`` as a cache entry (what :meth:`store` writes and :meth:`decode` reads)."""
        return msgspec.msgpack.encode({"format": FORMAT, "fields": fields})

    @staticmethod
    def decode(data: bytes, where: Path | str = "entry") -> dict[str, Any] | None:
        """The fields of an entry made by :meth:`encode`, or None (damaged, or another format)."""
        try:
            entry = msgspec.msgpack.decode(data)
        except msgspec.MsgspecError as exc:  # a damaged entry is parsed again
            logger.debug("report cache: ignoring %s (%s)", where, exc)
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        return entry["fields"]

    def store(self, key: str, fields: dict[str, Any] | bytes) -> bool:
        """Keep ``fields`` (or the entry :meth:`encode` made of them) for ``key``
        (atomically; a failure to write only costs speed). Returns whether it was kept."""
        if not self.enabled:
            return False
        path = self._path(key)
        # written under a name of this process alone (workers store side by side), then moved into place
        partial = path.with_name(f"{path.name}.{os.getpid()}-{next(_TEMPORARY)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(fields if isinstance(fields, bytes) else self.encode(fields))
            os.replace(partial, path)
            self.stored += 1
            return True
        except OSError as exc:
            logger.warning("report cache: cannot write %s (%s); parsing continues uncached", path, exc)
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            return False


class ReportStore:
    """Finished reports, one folder per :func:`report_key`: a copy of each written file and
    ``entry.msgpack`` (meta, warnings, file names). Files are copied, never held in memory."""

    def __init__(self, folder: Path | None = None, enabled: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else outputs_folder()
        self.enabled = enabled and msgspec is not None

    def load(self, key: str) -> tuple[dict[str, Any], Path] | None:
        """The stored entry for ``key`` and the folder of its files, or None."""
        if not self.enabled:
            return None
        folder = self.folder / key[:2] / key
        try:
            data = msgspec.msgpack.decode((folder / "entry.msgpack").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.MsgspecError) as exc:
            logger.debug("report cache: ignoring %s (%s)", folder, exc)
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        if not all((folder / "files" / name).is_file() for name in data["entry"]["files"]):
            return None
        return data["entry"], folder / "files"

    def store(self, key: str, entry: dict[str, Any], files: dict[str, Path]) -> None:
        """Keep ``entry`` and copies of ``files`` (name -> written path) for ``key``
        (atomically; a failure to write only costs speed next time)."""
        import shutil

        if not self.enabled:
            return
        target = self.folder / key[:2] / key
        staging: Path | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, suffix=".tmp"))
            for name, path in files.items():
                (staging / "files" / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / "files" / name)
            payload = {"format": FORMAT, "entry": {**entry, "files": sorted(files)}}
            (staging / "entry.msgpack").write_bytes(msgspec.msgpack.encode(payload))
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        except OSError as exc:
            logger.warning("report cache: cannot keep the report in %s (%s)", target, exc)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

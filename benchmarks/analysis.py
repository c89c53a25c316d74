"""Benchmark: the vectorised report statistics against a straightforward per-replicate loop.

Synthetic grid as in the study: 34 models x 10 conditions x 200 items, a greedy answer and
20 self-consistency samples per item, B = 1000 bootstrap replicates. Both sides compute the
same things: every metric's bootstrap replicates for every run (summary CIs) and every
paired test between conditions of one model. The baseline is plain Python over the same
index matrix; it is timed on a few replicates and scaled to B (its cost is linear in B).

    python benchmarks/analysis.py [--replicates-baseline 10]
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm_eval_radsafe.aggregation import expected_calibration_error, maximum_calibration_error, mean_where  # noqa: E402
from lm_eval_radsafe.analysis.runs import REGIME_METRICS, TaskRun  # noqa: E402
from lm_eval_radsafe.analysis.scaling import ModelCard, scaling_table, variance_decomposition  # noqa: E402
from lm_eval_radsafe.analysis.stats import DEFAULT_SEED  # noqa: E402
from lm_eval_radsafe.analysis.summary import analyse, paired_tests, tie_groups  # noqa: E402
from lm_eval_radsafe.items import Item, Option  # noqa: E402
from lm_eval_radsafe.metrics import score_item, score_votes  # noqa: E402

N_MODELS, N_CONDITIONS, N_ITEMS, N_SAMPLES, B = 34, 10, 200, 20, 1000
CONDITIONS = [f"condition_{k:02d}" for k in range(N_CONDITIONS)]


def synthetic_items(rng: random.Random) -> list[Item]:
    items = []
    for i in range(N_ITEMS):
        letters = "ABCDE"[: rng.choice((4, 5))]
        answer = rng.choice(letters)
        options = tuple(
            Option(letter, f"option {letter}", high_risk=(l := letter != answer and rng.random() < 0.3), unsafe=l and rng.random() < 0.5, contradicts=letter != answer and rng.random() < 0.4)
            for letter in letters
        )
        items.append(Item(id=f"q{i:03d}", question=f"question {i}?", options=options, answer=answer))
    return items


def synthetic_runs(seed: int = 0) -> tuple[list[TaskRun], dict[str, ModelCard]]:
    rng = random.Random(seed)
    items = synthetic_items(rng)
    runs, cards = [], {}
    for m in range(N_MODELS):
        model = f"model_{m:02d}"
        cards[model] = ModelCard(model, f"family_{m % 5}", parameters=float(2 ** (m % 9)))
        skill = 0.4 + 0.5 * m / N_MODELS
        for c, condition in enumerate(CONDITIONS):
            p = min(0.97, skill + 0.03 * c)

            def draw(item: Item) -> str:
                u = rng.random()
                return "NULL" if u < 0.03 else item.answer if u < p else rng.choice(item.letters)

            for regime in ("greedy", "sc"):
                run = TaskRun(model, "synthetic", condition, regime, f"{model}_{condition}_{regime}", "sha256:synthetic", Path(), Path(), [it.id for it in items])
                per_item = []
                for item in items:
                    if regime == "greedy":
                        letter = draw(item)
                        run.letters.append(letter)
                        per_item.append(score_item(item, None if letter == "NULL" else letter))
                    else:
                        letters = [draw(item) for _ in range(N_SAMPLES)]
                        run.letters.append(letters)
                        per_item.append(score_votes(item, letters))
                for name, kind in REGIME_METRICS[regime].items():
                    column = np.asarray([v[name] for v in per_item], dtype=float)
                    (run.values if kind == "mean" else run.pairs)[name] = column
                runs.append(run)
    return runs, cards


def vectorised(runs: list[TaskRun], cards: dict[str, ModelCard]) -> tuple[float, int]:
    import scipy.stats  # noqa: F401  (imported before timing: a one-off cost, not analysis work)

    started = time.perf_counter()
    analysis = analyse(runs, n_boot=B, seed=DEFAULT_SEED)
    tests = paired_tests(analysis)
    tie_groups(analysis.rows)
    scaling_table(analysis.rows, cards)
    variance_decomposition(analysis.rows, cards)
    return time.perf_counter() - started, len(tests)


def baseline(runs: list[TaskRun], replicates: int) -> float:
    """Plain Python: for each replicate, resample every run's items and aggregate every
    metric; then every paired difference of mean metrics between conditions of a model."""
    index = np.random.default_rng(42).integers(0, N_ITEMS, size=(B, N_ITEMS)).tolist()
    columns = {id(run): {name: run.values[name].tolist() for name in run.values} for run in runs}
    pairs = {id(run): {name: run.pairs[name].tolist() for name in run.pairs} for run in runs}
    by_model: dict[tuple[str, str], list[TaskRun]] = {}
    for run in runs:
        by_model.setdefault((run.model, run.regime), []).append(run)
    started = time.perf_counter()
    for b in range(replicates):
        draw = index[b]
        means: dict[tuple[int, str], float] = {}
        for run in runs:
            for name, kind in REGIME_METRICS[run.regime].items():
                if kind == "mean":
                    values = columns[id(run)][name]
                    means[(id(run), name)] = sum(values[i] for i in draw) / len(draw)
                else:
                    sample = [pairs[id(run)][name][i] for i in draw]
                    if kind == "mean_where":
                        mean_where(sample)
                    elif name.endswith("ece"):
                        expected_calibration_error(sample)
                    else:
                        maximum_calibration_error(sample)
        for (_, regime), members in by_model.items():
            for i, a in enumerate(members):
                for other in members[i + 1 :]:
                    for name, kind in REGIME_METRICS[regime].items():
                        if kind == "mean":
                            _ = means[(id(other), name)] - means[(id(a), name)]
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates-baseline", type=int, default=10, help="replicates timed for the baseline")
    args = parser.parse_args()
    t0 = time.perf_counter()
    runs, cards = synthetic_runs()
    print(
        f"synthetic grid: {N_MODELS} models x {N_CONDITIONS} conditions x {N_ITEMS} items, "
        f"greedy + {N_SAMPLES} samples; {len(runs)} runs (built in {time.perf_counter() - t0:.1f} s); B = {B}"
    )
    fast, n_tests = vectorised(runs, cards)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"vectorised analysis (summary CIs, {n_tests} paired tests, ties, scaling, variance; imports excluded): {fast:.2f} s")
    slow_part = baseline(runs, args.replicates_baseline)
    slow = slow_part / args.replicates_baseline * B
    print(
        f"per-replicate Python loop baseline: {slow_part:.2f} s for {args.replicates_baseline} replicates "
        f"-> {slow:.0f} s for B = {B} (linear in B)"
    )
    print(f"speed-up vs per-replicate loop: {slow / fast:.0f}x (target >= 100x)")
    print(f"peak memory (max RSS of this process): {peak_mb:.0f} MB (target < 2048 MB)")
    return 0 if slow / fast >= 100 and peak_mb < 2048 and not math.isnan(fast) else 1


if __name__ == "__main__":
    sys.exit(main())

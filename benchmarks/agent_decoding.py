"""Benchmark: the agentic RAG agent with schema-constrained replies against free (prompted) ones.

Runs ``radsafe prepare --agentic --agent-model smollm2`` (the bundled SmolLM2-135M, in
process, CPU) on the first N demo items, once with ``--agent-decoding prompted`` (the
schema's example in the prompt only) and once with ``--agent-decoding json_schema``
(xgrammar constrains every reply to the agent's JSON Schemas), alternating which goes
first over the repeats. Prints, per mode: plans that fell back to "question + option
text", readings that classified at least one passage, agent calls and seconds per item,
and the peak memory of the prepare process.

    python benchmarks/agent_decoding.py [--items 3] [--repeats 1]

The demo questions and corpus are ours (not RadSaFE-200); SmolLM2-135M is a pipeline
check, not a good agent: read the replies in each run's ``agentic.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

MODES = ("prompted", "json_schema")


def run_prepare(items: Path, out: Path, mode: str) -> dict:
    """One ``radsafe prepare --agentic`` in a child process; its summary and readings."""
    radsafe = str(Path(sys.executable).parent / "radsafe")
    command = [radsafe, "prepare", "--dataset", str(items), "--corpus", "demo", "--out", str(out), "--agentic",
               "--agent-model", "smollm2", "--agent-decoding", mode]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{mode}: radsafe prepare failed:\n{done.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    records = [json.loads(line) for line in (out / "agentic.jsonl").read_text(encoding="utf-8").splitlines()]
    reads = [step for r in records for step in r["trace"] if step["step"].startswith("read ") and "model" in step]
    classified = 0
    for step in reads:
        try:
            reply = json.loads(step["reply"])
        except json.JSONDecodeError:
            continue
        if isinstance(reply, dict) and (reply.get("supporting") or reply.get("contradicting")):
            classified += 1
    modes = sorted({step["decoding"] for r in records for step in r["trace"] if "decoding" in step})
    return {
        "items": len(records),
        "fallback": sum(bool(r["fallback_plan"]) for r in records),
        "reads": len(reads),
        "classified": classified,
        "calls": sum(r["calls"] for r in records) / len(records),
        "agent_s": sum(r["seconds"] for r in records) / len(records),
        "wall_s": seconds,
        "peak_mib": max(peak, before) / 1024,
        "modes": modes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3, help="first N demo items (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating (default: %(default)s)")
    args = parser.parse_args()
    from lm_eval_radsafe.assets import demo_items_path

    work = Path(tempfile.mkdtemp(prefix="agent_decoding-"))
    items = work / "items.jsonl"
    lines = demo_items_path().read_text(encoding="utf-8").splitlines(keepends=True)[: args.items]
    items.write_text("".join(lines), encoding="utf-8")
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
            result = run_prepare(items, work / f"{mode}-{repeat}", mode)
            results[mode].append(result)
            print(f"repeat {repeat + 1} {mode:11s}: plans fell back {result['fallback']}/{result['items']}, readings classifying "
                  f"a passage {result['classified']}/{result['reads']}, {result['calls']:.1f} calls and {result['agent_s']:.1f} s "
                  f"per item; prepare {result['wall_s']:.0f} s, peak {result['peak_mib']:.0f} MiB; trace modes {result['modes']}")
    print()
    for mode in MODES:
        rows = results[mode]
        print(f"{mode:11s}: plans fell back {sum(r['fallback'] for r in rows)}/{sum(r['items'] for r in rows)}, readings "
              f"classifying a passage {sum(r['classified'] for r in rows)}/{sum(r['reads'] for r in rows)}, median agent "
              f"{median(r['agent_s'] for r in rows):.1f} s per item")
    ratio = median(r["agent_s"] for r in results["json_schema"]) / median(r["agent_s"] for r in results["prompted"])
    print(f"json_schema / prompted agent seconds per item: {ratio:.2f}x (runs kept in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

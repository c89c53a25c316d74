"""Benchmark: the agentic RAG agent with schema-constrained replies against free (prompted) ones.

Runs ``radsafe prepare --agentic --agent-model smollm2`` (the bundled SmolLM2-135M, in
process, CPU) on the first N demo items, once with ``--agent-decoding prompted`` (the
schema's example in the prompt only) and once with ``--agent-decoding json_schema``
(xgrammar constrains every reply to the agent's JSON Schemas), alternating which goes
first over the repeats. Prints, per mode: plans that fell back to "question + option
text" (a reply that is not a plan: unparseable, or without a query of its own for some
option), the options whose report cites a passage the reader classified (after the checks:
shown ids only, none both supporting and contradicting), agent calls and seconds per item,
and the peak memory of the prepare process. With ``--answer``, SmolLM2 then answers the
``agentic_rag`` task from each mode's reports (``radsafe eval``, hf backend): accuracy and
``evidence_recall`` per mode.

    python benchmarks/agent_decoding.py [--items 3] [--repeats 1] [--answer]

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
    # options whose report cites a classified passage: lines "Supporting: [1]" / "Contradicting: [2], [3]"
    options = sum(1 for r in records for line in r["report"].splitlines() if line.startswith("Option "))
    classified = sum(
        1 for r in records for block in r["report"].split("\nOption ")[1:]
        if any(line.startswith(("Supporting: [", "Contradicting: [")) for line in block.splitlines())
    )
    modes = sorted({step["decoding"] for r in records for step in r["trace"] if "decoding" in step})
    return {
        "items": len(records),
        "fallback": sum(bool(r["fallback_plan"]) for r in records),
        "reads": len(reads),
        "options": options,
        "classified": classified,
        "conflicting": sum(int(r.get("conflicting_ids", 0)) for r in records),
        "unknown": sum(int(r.get("unknown_ids", 0)) for r in records),
        "calls": sum(r["calls"] for r in records) / len(records),
        "agent_s": sum(r["seconds"] for r in records) / len(records),
        "wall_s": seconds,
        "peak_mib": max(peak, before) / 1024,
        "modes": modes,
    }


def run_answer(items: Path, prepared: Path, out: Path) -> dict:
    """SmolLM2 answers ``radsafe200_agentic_rag`` from ``prepared``'s reports; its scores."""
    from lm_eval_radsafe.assets import bundled_model

    folder, gguf = bundled_model()
    radsafe = str(Path(sys.executable).parent / "radsafe")
    command = [radsafe, "eval", "--model", "hf", "--model_args", f"pretrained={folder},gguf_file={gguf}",
               "--tasks", "radsafe200_agentic_rag", "--apply_chat_template",
               "--metadata", json.dumps({"prepared": str(prepared), "radsafe_data": str(items)}), "--log_samples",
               "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"radsafe eval failed:\n{done.stderr[-2000:]}")
    scores = json.loads(next(out.glob("*/results_*.json")).read_text(encoding="utf-8"))["results"]["radsafe200_agentic_rag"]
    return {"accuracy": scores["accuracy,strict"], "evidence_recall": scores["evidence_recall,strict"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3, help="first N demo items (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating (default: %(default)s)")
    parser.add_argument("--answer", action="store_true", help="then let SmolLM2 answer agentic_rag from each mode's reports")
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
            if args.answer and repeat == 0:
                result.update(run_answer(items, work / f"{mode}-{repeat}", work / f"answers-{mode}"))
            print(f"repeat {repeat + 1} {mode:11s}: plans fell back {result['fallback']}/{result['items']}, options with a "
                  f"classified passage {result['classified']}/{result['options']} ({result['reads']} readings; dropped ids: "
                  f"{result['conflicting']} both ways, {result['unknown']} not shown), {result['calls']:.1f} calls and "
                  f"{result['agent_s']:.1f} s per item; prepare {result['wall_s']:.0f} s, peak {result['peak_mib']:.0f} MiB; "
                  f"trace modes {result['modes']}"
                  + (f"; SmolLM2 answering: accuracy {result['accuracy']:.3f}, evidence_recall {result['evidence_recall']:.3f}"
                     if "accuracy" in result else ""))
    print()
    for mode in MODES:
        rows = results[mode]
        print(f"{mode:11s}: plans fell back {sum(r['fallback'] for r in rows)}/{sum(r['items'] for r in rows)}, options "
              f"with a classified passage {sum(r['classified'] for r in rows)}/{sum(r['options'] for r in rows)}, median agent "
              f"{median(r['agent_s'] for r in rows):.1f} s per item")
    ratio = median(r["agent_s"] for r in results["json_schema"]) / median(r["agent_s"] for r in results["prompted"])
    print(f"json_schema / prompted agent seconds per item: {ratio:.2f}x (runs kept in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a run against a busy, broken server, with our API backend and with lm-eval's.

The whole job a user runs against an OpenAI-compatible server: greedy over the 66 demo
items and self-consistency (20 samples) over 5 of them, 32 requests in flight, against a
scripted server on 127.0.0.1 that answers deterministically but fails about one try in
five (429, 500, 503, hangs past the 2 s timeout, dropped connections, 200s with an empty
or malformed body or no choices). Each side is lm-eval's ``simple_evaluate`` in a fresh
process: ``local-chat-completions`` (what users would otherwise run) and
``radsafe-local-chat-completions``; repeats alternate. Printed per side: whether the run
finished, items scored, answers that differ from a fault-free run of the same server
(faults scored as model answers; for the stock backend also its one seed for all 20
samples), wall time and peak memory.

    python benchmarks/busy_server.py [--repeats 3] [--rate 0.2]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DEMO = ROOT / "lm_eval_radsafe" / "data" / "demo" / "radsafe_demo.jsonl"
JOB = (("radsafe_demo_closed_book", None), ("radsafe_demo_closed_book_sc", 5))
SIDES = {"stock": "local-chat-completions", "radsafe": "radsafe-local-chat-completions"}


def answers(backend: str, url: str) -> dict:
    """Run the job once in this process; ``{"ok", "error", "answers": {task: {doc: resps}}}``."""
    import lm_eval

    import lm_eval_radsafe.models  # noqa: F401  registers our backends
    from lm_eval_radsafe.cli import task_manager

    out: dict = {"ok": True, "error": "", "answers": {}}
    for task, limit in JOB:
        args = f"model=fake,base_url={url}/chat/completions,num_concurrent=32,timeout=2"
        try:
            results = lm_eval.simple_evaluate(
                model=backend, model_args=args, tasks=[task], task_manager=task_manager(include_defaults=False),
                apply_chat_template=True, limit=limit, log_samples=True, bootstrap_iters=0,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the stock backend's failures are what we measure
            out["ok"], out["error"] = False, f"{type(exc).__name__}: {str(exc)[:120]}"
            continue
        out["answers"][task] = {str(s["doc_id"]): s["resps"] for s in results["samples"][task]}
    return out


def child(side: str, rate: float) -> None:
    """One repeat of one side in this process, its server included; prints JSON."""
    from fake_openai_server import JsonServer, fault_plan, load_answers, scripted_reply

    os.environ["RADSAFE_RESPONSE_CACHE"] = "off"  # every repeat sends every request
    respond = scripted_reply(load_answers(DEMO), correct=0.6)
    with JsonServer(respond, faults=fault_plan(rate) if rate else None, max_requests=20_000) as server:
        started = time.perf_counter()
        result = answers(SIDES[side], server.url)
        result["seconds"] = time.perf_counter() - started
        result["tries"] = len(server.requests)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def spawn(side: str, rate: float) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as cache:
        env["RADSAFE_CACHE"] = cache
        done = subprocess.run(
            [sys.executable, __file__, "--child", side, "--rate", str(rate)], env=env, capture_output=True, text=True, timeout=1800, check=False
        )
    if done.returncode != 0:
        raise SystemExit(f"{side} repeat failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(result: dict, reference: dict) -> tuple[int, int, int]:
    """(items scored, items expected, scored items whose answers differ from the reference)."""
    expected = sum(len(v) for v in reference["answers"].values())
    scored = wrong = 0
    for task, docs in result["answers"].items():
        for doc, resps in docs.items():
            scored += 1
            wrong += resps != reference["answers"][task][doc]
    return scored, expected, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.2, help="share of tries that fail (default %(default)s)")
    parser.add_argument("--child", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rate)
        return 0
    reference = spawn("radsafe", 0.0)
    print(f"fault-free reference: {sum(len(v) for v in reference['answers'].values())} items, {reference['seconds']:.1f} s")
    rows: dict[str, list[dict]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in (SIDES if repeat % 2 == 0 else reversed(list(SIDES))):
            result = spawn(side, args.rate)
            scored, expected, wrong = compare(result, reference)
            result.update(scored=scored, expected=expected, wrong=wrong)
            rows[side].append(result)
            status = "finished" if result["ok"] else f"failed ({result['error']})"
            print(
                f"repeat {repeat + 1} {side:8s}: {status}; scored {scored}/{expected} items, {wrong} differ from the "
                f"fault-free run; {result['tries']} tries, {result['seconds']:.1f} s, peak {result['peak_mib']:.0f} MiB"
            )
    print()
    for side, results in rows.items():
        scored = sum(r["scored"] for r in results)
        expected = sum(r["expected"] for r in results)
        wrong = sum(r["wrong"] for r in results)
        finished = sum(r["ok"] for r in results)
        seconds = sorted(r["seconds"] for r in results)[len(results) // 2]
        peak = max(r["peak_mib"] for r in results)
        print(
            f"{side:8s} ({SIDES[side]}): {finished}/{len(results)} runs finished, {scored}/{expected} items scored, "
            f"{wrong} scored answers differ from the fault-free run; median {seconds:.1f} s; peak {peak:.0f} MiB"
        )
    share = {side: sum(r["scored"] - r["wrong"] for r in results) / sum(r["expected"] for r in results) for side, results in rows.items()}
    times = {side: sorted(r["seconds"] for r in results)[len(results) // 2] for side, results in rows.items()}
    print(
        f"items scored as in the fault-free run: radsafe {share['radsafe']:.0%}, stock {share['stock']:.0%}; "
        f"median time radsafe / stock {times['radsafe'] / times['stock']:.2f}x (a run that stops early is faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `radsafe sweep` against what a user would otherwise run.

(a) Overhead: a sweep of M models x T tasks against the scripted OpenAI-compatible server
    on 127.0.0.1 (``tests/fake_openai_server.py``, started as its own process), against a
    bare shell-style loop of the same ``radsafe eval`` commands into the same layout, in
    one run, alternating which goes first. Each side starts from empty output and a fresh
    response cache. Prints median wall seconds of each side, the ratio and peak memory.
(b) Bookkeeping at study scale: a finished 34-model x 40-cell sweep (every cell's record
    written as a run would write it; no lm-eval output needed to decide "done"): the wall
    seconds of ``radsafe sweep status`` and of ``radsafe sweep run`` with nothing to do.

    python benchmarks/sweep.py [--models 2] [--tasks 2] [--limit 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
RADSAFE = [sys.executable, "-m", "lm_eval_radsafe.cli"]
TASKS = ("closed_book", "clean_evidence", "conflict_evidence", "closed_book_sc")


def start_server(work: Path) -> tuple[subprocess.Popen, str]:
    """The scripted server as a process of its own; its /v1 URL."""
    from lm_eval_radsafe.assets import demo_items_path

    port_file = work / "port"
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_openai_server.py"), "--port-file", str(port_file), "--answers",
         str(demo_items_path()), "--idle", "900"],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        if port_file.exists():
            return server, f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        time.sleep(0.05)
    raise SystemExit("the scripted server did not start")


def write_sweep(folder: Path, url: str, models: int, tasks: list[str], limit: int) -> Path:
    conditions = sorted({t.removesuffix("_sc") for t in tasks})
    regimes = ["greedy"] + (["sc"] if any(t.endswith("_sc") for t in tasks) else [])
    lines = [
        "family: radsafe_demo", f"conditions: [{', '.join(conditions)}]", f"regimes: [{', '.join(regimes)}]",
        "output: runs/", f"limit: {limit}", "models:",
    ]  # fmt: skip
    for m in range(models):
        lines += [f"  - name: model-{m}", f"    card: {{family: Scripted, parameters: {m + 1}}}",
                  f'    serve: {{kind: endpoint, base_url: "{url}", model: scripted-{m}, num_concurrent: 8}}']
    path = folder / "sweep.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the peak memory (MiB) of the largest child so far."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def overhead(args: argparse.Namespace, work: Path, url: str) -> None:
    from lm_eval_radsafe.sweep.cells import plan_cells
    from lm_eval_radsafe.sweep.run import eval_command
    from lm_eval_radsafe.sweep.spec import load_sweep

    sides: dict[str, list[float]] = {"sweep": [], "loop": []}
    peaks: dict[str, float] = {}
    cells = 0
    for repeat in range(args.repeats):
        for side in ("sweep", "loop") if repeat % 2 == 0 else ("loop", "sweep"):
            folder = work / f"{side}-{repeat}"
            folder.mkdir()
            env = {**os.environ, "RADSAFE_RESPONSE_CACHE": str(folder / "responses.sqlite"), "HF_DATASETS_OFFLINE": "1",
                   "HF_HUB_OFFLINE": "1"}
            path = write_sweep(folder, url, args.models, list(TASKS[: args.tasks]), args.limit)
            if side == "sweep":
                seconds, peak = timed([*RADSAFE, "sweep", "run", str(path)], env, folder)
            else:  # what a user writes without a sweep: one radsafe eval per model and task
                sweep = load_sweep(path)
                started = time.perf_counter()
                for cell in plan_cells(sweep):
                    cell.folder.mkdir(parents=True)
                    timed([*RADSAFE, "eval", *eval_command(sweep, cell, cell.model.serve.base_url)], env, folder)
                seconds, peak = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                cells = len(plan_cells(sweep))
            sides[side].append(seconds)
            peaks[side] = max(peaks.get(side, 0.0), peak)
            print(f"repeat {repeat + 1} {side:5s}: {seconds:6.1f} s")
    ratio = median(sides["sweep"]) / median(sides["loop"])
    print(f"(a) {cells} cells ({args.models} models x {args.tasks} tasks, --limit {args.limit}): sweep median "
          f"{median(sides['sweep']):.1f} s, loop of radsafe eval median {median(sides['loop']):.1f} s: {ratio:.3f}x; "
          f"peak memory of the largest process so far {max(peaks.values()):.0f} MiB")


def bookkeeping(work: Path) -> None:
    from lm_eval_radsafe.conditions import CONDITIONS, REGIMES
    from lm_eval_radsafe.sweep.cells import DONE, plan_cells, write_record
    from lm_eval_radsafe.sweep.spec import load_sweep

    folder = work / "study"
    folder.mkdir()
    (folder / "prepared").mkdir()
    (folder / "prepared" / "manifest.json").write_text('{"prepared_fingerprint": "sha256:0"}', encoding="utf-8")
    conditions = list(CONDITIONS)[:10]
    regimes = list(REGIMES)  # 10 conditions x 4 regimes = 40 cells per model
    lines = ["family: radsafe_demo", "prepared: prepared/", f"conditions: [{', '.join(conditions)}]",
             f"regimes: [{', '.join(regimes)}]", "output: runs/", "models:"]
    for m in range(34):
        lines += [f"  - name: model-{m:02d}", f"    card: {{family: F{m % 7}, parameters: {m + 1}}}",
                  f'    serve: {{kind: endpoint, base_url: "http://127.0.0.1:9/v1", model: m{m}}}']
    path = folder / "sweep.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cells = plan_cells(load_sweep(path))
    for cell in cells:
        write_record(cell, state=DONE, results_file="out/results.json", retries=0, infrastructure_errors=0)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    status = [timed([*RADSAFE, "sweep", "status", str(path)], env, folder)[0] for _ in range(3)]
    noop = [timed([*RADSAFE, "sweep", "run", str(path)], env, folder)[0] for _ in range(3)]
    print(f"(b) {len(cells)} done cells (34 models x {len(cells) // 34}): `radsafe sweep status` median {median(status):.2f} s, "
          f"`radsafe sweep run` with nothing to do median {median(noop):.2f} s (each a fresh process, imports included)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=2, choices=range(1, len(TASKS) + 1))
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    server, url = start_server(work)
    try:
        overhead(args, work, url)
        bookkeeping(work)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

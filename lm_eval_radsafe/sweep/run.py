"""Running a sweep's cells: one model at a time, each cell through ``radsafe eval``.

For each model the runner brings up its serving once (a ``vllm serve`` it starts and stops
for ``vllm-server``; nothing for an ``endpoint``, which exists, or for ``vllm`` and ``hf``,
which load in each cell's process), then runs every cell that is not done, in order, each
as a ``radsafe eval`` child process writing into the cell's folder. What is resumable
resumes: the API backends keep every answer in the response cache as it arrives (key:
model, prompt, settings, seed), shared by all cells of the model, so a cell killed half way
sends only what is missing when it runs again; for ``vllm`` and ``hf`` a cell is the unit
of resume. A cell whose requests ended as infrastructure errors (the server never
answered) is failed, never scored, and runs again on the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval_radsafe.sweep.cells import DONE, FAILED, RUNNING, Cell, cell_state, move_aside, plan_cells, write_record
from lm_eval_radsafe.sweep.spec import Sweep, SweepError, SweepModel

logger = logging.getLogger(__name__)

#: the API backend the sweep uses for endpoint and vllm-server models (seeds per sample, retries, response cache)
CHAT_BACKEND = "radsafe-local-chat-completions"
#: serving kinds whose model loads in the process that runs a cell
IN_PROCESS = ("vllm", "hf")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def served(model: SweepModel, log_folder: Path) -> Iterator[str | None]:
    """The model's OpenAI-compatible root URL for the length of the block (an endpoint's
    own; a ``vllm serve`` started here for vllm-server, stopped after), or None for the
    in-process backends."""
    serve = model.serve
    if serve.kind == "endpoint":
        yield serve.base_url.rstrip("/")  # type: ignore[union-attr]
        return
    if serve.kind != "vllm-server":
        yield None
        return
    port = serve.port or _free_port()
    command = ["vllm", "serve", str(serve.model), "--host", "127.0.0.1", "--port", str(port), *serve.args]
    log_folder.mkdir(parents=True, exist_ok=True)
    log_path = log_folder / "vllm-server.log"
    logger.info("%s: starting %s (log: %s)", model.name, " ".join(command), log_path)
    with log_path.open("ab") as log:
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            raise SweepError(f"{model.name}: `vllm` is not on PATH (install vLLM on the node, or serve the model as an endpoint)") from None
        try:
            _wait_healthy(model, process, f"http://127.0.0.1:{port}/health", serve.startup_timeout, log_path)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            logger.info("%s: vllm server stopped", model.name)


def _wait_healthy(model: SweepModel, process: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise SweepError(f"{model.name}: the vllm server exited with status {process.returncode}: {tail[0]} (log: {log_path})")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise SweepError(f"{model.name}: the vllm server was not healthy after {timeout:.0f} s (startup_timeout; log: {log_path})")


def eval_command(sweep: Sweep, cell: Cell, base_url: str | None) -> list[str]:
    """The ``radsafe eval`` arguments of one cell (everything after ``radsafe eval``)."""
    serve = cell.model.serve
    if serve.kind in ("endpoint", "vllm-server"):
        model = CHAT_BACKEND
        args = [("model", str(serve.model)), ("base_url", f"{base_url}/chat/completions"), ("num_concurrent", str(serve.num_concurrent))]
        if serve.retry_budget is not None:
            args.append(("retry_budget", f"{serve.retry_budget:g}"))
    elif serve.kind == "vllm":
        model = "vllm"
        args = [("pretrained", str(serve.pretrained)), ("tensor_parallel_size", str(serve.tensor_parallel_size)),
                ("data_parallel_size", str(serve.data_parallel_size))]
        if serve.max_model_len:
            args.append(("max_model_len", str(serve.max_model_len)))
    else:
        model = "hf"
        args = [("pretrained", str(serve.pretrained))] + ([("gguf_file", serve.gguf_file)] if serve.gguf_file else [])
    delimiter = cell.model.card.get("think_delimiter")
    if delimiter and serve.kind in IN_PROCESS and not any(key == "think_end_token" for key, _ in serve.model_args):
        args.append(("think_end_token", str(delimiter)))  # the backend strips the trace before the filter reads
    args += list(serve.model_args)
    metadata: dict[str, Any] = {}
    if sweep.prepared is not None:
        metadata["prepared"] = str(sweep.prepared)
    if sweep.family != "radsafe_demo":
        metadata["radsafe_data"] = sweep.dataset
    command = ["--model", model, "--model_args", ",".join(f"{k}={v}" for k, v in args), "--tasks", cell.task,
               "--log_samples", "--output_path", str(cell.output)]
    if sweep.apply_chat_template:
        command.append("--apply_chat_template")
    if sweep.limit is not None:
        command += ["--limit", str(sweep.limit)]
    if sweep.gen_kwargs:
        command += ["--gen_kwargs", sweep.gen_kwargs]
    if sweep.seed is not None:
        command += ["--seed", str(sweep.seed)]
    if metadata:
        command += ["--metadata", json.dumps(metadata)]
    return command


def _radsafe() -> list[str]:
    """How to start ``radsafe`` in a child process: this interpreter and this package."""
    return [sys.executable, "-m", "lm_eval_radsafe.cli"]


@dataclass
class ModelOutcome:
    """What one model's run did: cells run, skipped (done already) and failed."""

    model: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


#: runs ``radsafe eval`` with the given arguments in this process; its exit status
EvalHere = Callable[[list[str]], int]


def run_cell(
    sweep: Sweep, cell: Cell, base_url: str | None, env: dict[str, str], eval_here: EvalHere | None = None
) -> dict[str, Any]:
    """Run one cell (its folder fresh) and write its record; the record. With
    ``eval_here``, ``radsafe eval`` runs in this process (output to the cell's eval.log),
    else as a child process."""
    started, clock = _now(), time.monotonic()
    write_record(cell, state=RUNNING, started=started)
    arguments = eval_command(sweep, cell, base_url)
    log_path = cell.folder / "eval.log"
    if eval_here is None:
        with log_path.open("wb") as log:
            status = subprocess.run([*_radsafe(), "eval", *arguments], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    check=False).returncode
    else:
        with log_path.open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                status = eval_here(arguments)
            except Exception as exc:  # noqa: BLE001 - the cell fails, the model's other cells go on
                print(f"error: {type(exc).__name__}: {exc}")
                status = 1
    return _finish(cell, status, log_path, started, round(time.monotonic() - clock, 3))


def _finish(cell: Cell, status: int, log_path: Path, started: str, seconds: float) -> dict[str, Any]:
    """The record of a cell whose ``radsafe eval`` ended with ``status``."""
    from lm_eval_radsafe.provenance import task_provenance

    log_tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    results_files = sorted(cell.output.rglob("results_*.json"))
    if status != 0 or not results_files:
        errors = [line for line in log_tail if line.startswith("error:")]
        reason = errors[-1] if errors else (log_tail[-1] if log_tail else f"radsafe eval exited with status {status}")
        return write_record(cell, state=FAILED, reason=f"{reason[:500]} (log: {log_path})", started=started, finished=_now(),
                            seconds=seconds)
    results_file = results_files[-1]
    results = json.loads(results_file.read_text(encoding="utf-8"))
    serving = task_provenance(results, cell.task).get("serving") or {}
    fields = {
        "results_file": str(results_file.relative_to(cell.folder)),
        "started": started,
        "finished": _now(),
        "seconds": seconds,
        "requests": serving.get("requests"),
        "cache_hits": serving.get("cache_hits"),
        "retries": sum((serving.get("retries") or {}).values()),
        "retries_by_cause": serving.get("retries") or {},
        "infrastructure_errors": serving.get("infrastructure_errors", 0),
    }
    if fields["infrastructure_errors"]:
        reason = (f"{fields['infrastructure_errors']} request(s) were never answered by the server (infrastructure errors, "
                  "not scored); the next run sends only those again")
        return write_record(cell, state=FAILED, reason=reason, **fields)
    return write_record(cell, state=DONE, **fields)


def _child_env(model: SweepModel) -> dict[str, str]:
    env = dict(os.environ)
    key_env = model.serve.key_env
    if model.serve.kind == "endpoint" and key_env != "OPENAI_API_KEY" and key_env in os.environ:
        env["OPENAI_API_KEY"] = os.environ[key_env]  # the backend reads this variable only
    return env


@contextlib.contextmanager
def _model_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` while this process runs the model's cells: a second runner of
    the same model (a local run beside its SLURM task) stops instead of mixing cells."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepError(f"{folder.name} is being run by {holder}; wait for it, or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} since {_now()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_model(sweep: Sweep, index: int, progress: bool = True, eval_here: EvalHere | None = None) -> ModelOutcome:
    """Run every cell of the model at ``index`` that is not done (the entry point of an
    array task: ``radsafe sweep run-model --sweep FILE --index N``).

    A ``vllm`` or ``hf`` model loads once for all its cells: given ``eval_here`` (this
    process runs ``radsafe eval``: the array task, ``run-model``) the cells run here one
    after another on the same model; without it (the local executor) one child process
    ``radsafe sweep run-model`` runs them, so a model that crashes ends only its own cells.
    Each cell is still recorded as soon as it ends: a crash loses the cell it was in."""
    from tqdm.auto import tqdm

    model = sweep.model(index)
    outcome = ModelOutcome(model.name)
    states = [cell_state(cell) for cell in plan_cells(sweep, [model])]
    todo = []
    for state in states:
        if state.state == DONE:
            outcome.skipped.append(state.cell.task)
        else:
            todo.append(state)
    if not todo:
        logger.info("%s: all %d cells done with the current settings; nothing to run", model.name, len(states))
        return outcome
    if model.serve.kind in IN_PROCESS and eval_here is None:
        return _run_model_in_child(sweep, index, model, outcome)
    env = _child_env(model)
    reuse = contextlib.nullcontext()
    if eval_here is not None and model.serve.kind in IN_PROCESS:
        from lm_eval_radsafe import compat

        reuse = compat.patched(compat.reused_models())
    with _model_lock(sweep.output / model.name), served(model, sweep.output / model.name) as base_url, reuse:
        for state in tqdm(todo, desc=f"{model.name}", unit="cell", disable=not progress):
            cell = state.cell
            if cell.folder.exists():
                moved = move_aside(cell)
                logger.info("%s / %s: %s; the old folder is kept in %s", model.name, cell.task,
                            state.reason or state.state, moved)
            here = eval_here if model.serve.kind in IN_PROCESS else None
            record = run_cell(sweep, cell, base_url, env, here)
            outcome.ran.append(cell.task)
            if record["state"] != DONE:
                outcome.failed[cell.task] = record.get("reason", "failed")
                logger.warning("%s / %s failed: %s", model.name, cell.task, record.get("reason"))
    return outcome


def _run_model_in_child(sweep: Sweep, index: int, model: SweepModel, outcome: ModelOutcome) -> ModelOutcome:
    """``radsafe sweep run-model`` for one in-process model in a child process; what it did,
    read back from the cells' records."""
    log_path = sweep.output / model.name / "run-model.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [*_radsafe(), "sweep", "run-model", "--sweep", str(sweep.path), "--index", str(index)]
    logger.info("%s: its cells run in one process, the model loaded once (log: %s)", model.name, log_path)
    with log_path.open("ab") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(model), check=False).returncode
    for state in (cell_state(cell) for cell in plan_cells(sweep, [model])):
        if state.cell.task in outcome.skipped:
            continue
        outcome.ran.append(state.cell.task)
        if state.state != DONE:
            # a cell the process never reached or never recorded: its reason is the process's end
            outcome.failed[state.cell.task] = state.reason or f"{state.state}: the model's process ended with status {status} (log: {log_path})"
    return outcome


def run_local(sweep: Sweep, progress: bool = True) -> list[ModelOutcome]:
    """Every model of the sweep on this machine, one after another."""
    return [run_model(sweep, index, progress) for index in range(len(sweep.models))]

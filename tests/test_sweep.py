"""`radsafe sweep`: a grid of models x tasks against scripted OpenAI-compatible servers on
127.0.0.1: cells with content addresses, a busy server, a kill and a resume, the status
table, the SLURM array scripts and the hand-off to `radsafe report`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai_server import JsonServer, fault_plan, load_answers, scripted_reply

from lm_eval_radsafe.assets import demo_items_path
from lm_eval_radsafe.cli import main
from lm_eval_radsafe.response_cache import request_key
from lm_eval_radsafe.sweep.cells import DONE, FAILED, MISSING, STALE, plan_cells
from lm_eval_radsafe.sweep.spec import SweepError, load_sweep
from lm_eval_radsafe.sweep.status import sweep_states

ANSWERS = load_answers(demo_items_path())


def sweep_file(folder: Path, url: str, limit: int = 3, extra_b: str = "", regimes: str = "[greedy, sc]") -> Path:
    path = folder / "sweep.yaml"
    path.write_text(
        f"""family: radsafe_demo
conditions: [closed_book]
regimes: {regimes}
output: runs/
limit: {limit}
models:
  - name: small
    card: {{family: Scripted, parameters: 1}}
    serve: {{kind: endpoint, base_url: "{url}", model: scripted-small, num_concurrent: 4, model_args: {{timeout: 2}}}}
  - name: large
    card: {{family: Scripted, parameters: 8}}
    serve: {{kind: endpoint, base_url: "{url}", model: scripted-large, num_concurrent: 4, model_args: {{timeout: 2{extra_b}}}}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "responses.sqlite"
    monkeypatch.setenv("RADSAFE_RESPONSE_CACHE", str(path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: []", "models: empty"),
        ("family: radsafe9\nconditions: [closed_book]\noutput: o\nmodels: []", "family: 'radsafe9' is not one of"),
        ("family: radsafe_demo\nconditions: [closed]\noutput: o\nmodels: [{name: a, serve: {kind: hf, pretrained: x}}]",
         "conditions: 'closed' is not a condition"),
        ("family: radsafe_demo\nconditions: [rag_top5]\noutput: o\nmodels: [{name: a, serve: {kind: hf, pretrained: x}}]",
         "prepared: missing: rag_top5 need a folder from `radsafe prepare`"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: vlm}}]",
         "models[0].serve.kind: 'vlm' is not one of endpoint, vllm-server, vllm, hf"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: endpoint, model: m}}]",
         "models[0].serve.base_url: missing (a endpoint model needs model and base_url)"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: hf, pretrained: x, port: 3}}]",
         "models[0].serve.port: not a field of a hf model"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: endpoint, model: m, "
         "base_url: 'http://h/v1', key_env: sk-123}}]", "models[0].serve.key_env: 'sk-123' is not an environment variable name"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: hf, pretrained: x}, "
         "resources: {time: soon}}]", "models[0].resources.time: 'soon' is not a SLURM time"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: hf, pretrained: x}}, "
         "{name: a, serve: {kind: hf, pretrained: y}}]", "models[1].name: 'a' is used twice"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, card: {parameters: -1}, serve: {kind: hf, "
         "pretrained: x}}]", "models[0].card.parameters: must be positive"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodel: []", "models: missing"),
        ("family: radsafe_demo\nconditions: [closed_book]\noutput: o\nmodels: [{name: a, serve: {kind: hf, pretrained: x}}]\nlimt: 3",
         "limt: unknown field"),
        ("family: [radsafe_demo", "not valid YAML (line 1"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SweepError) as caught:
        load_sweep(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_cell_keys_follow_what_decides_the_numbers(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/v1"
    first = {c.task + c.model.name: c.key for c in plan_cells(load_sweep(sweep_file(tmp_path, url)))}
    assert len(set(first.values())) == 4
    again = {c.task + c.model.name: c.key for c in plan_cells(load_sweep(sweep_file(tmp_path, url)))}
    assert again == first  # deterministic
    concurrency = sweep_file(tmp_path, url)
    concurrency.write_text(concurrency.read_text().replace("num_concurrent: 4", "num_concurrent: 16"))
    assert {c.task + c.model.name: c.key for c in plan_cells(load_sweep(concurrency))} == first  # changes no answer
    changed = {c.task + c.model.name: c.key for c in plan_cells(load_sweep(sweep_file(tmp_path, url, extra_b=",max_gen_toks: 64")))}
    assert [name for name in first if changed[name] != first[name]] == ["radsafe_demo_closed_booklarge", "radsafe_demo_closed_book_sclarge"]
    limited = {c.task + c.model.name: c.key for c in plan_cells(load_sweep(sweep_file(tmp_path, url, limit=5)))}
    assert not set(limited.values()) & set(first.values())


@pytest.mark.slow  # many lm-eval runs
def test_a_sweep_over_a_busy_server_runs_resumes_reports_and_reruns_only_what_changed(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two models on a server that fails one try in five: every cell done, retries in the
    status; a second run does nothing; the report has scaling rows; a changed model is
    stale, rerun, its old cells kept aside."""
    with JsonServer(scripted_reply(ANSWERS, correct=0.7), faults=fault_plan(rate=0.2)) as server:
        path = sweep_file(tmp_path, f"{server.url}")
        assert main(["sweep", "run", str(path)]) == 0
        assert "ran 4 cell(s), 4 done, 0 failed" in capsys.readouterr().out
        assert sum(server.faults_sent.values()) > 0
        states = sweep_states(load_sweep(path))
        assert [s.state for s in states] == [DONE] * 4
        retried = sum(s.record["retries"] for s in states)
        assert retried >= sum(server.faults_sent.values()) - 4  # a hang past the timeout may be the last try of none
        assert main(["sweep", "status", str(path)]) == 0
        table = capsys.readouterr().out
        assert f"4 cells: 4 done; {retried} request tries retried, 0 infrastructure errors" in table

        requests = len(server.requests)
        assert main(["sweep", "run", str(path)]) == 0
        assert "nothing to do: all 4 cells are done" in capsys.readouterr().out and len(server.requests) == requests

        assert main(["sweep", "report", str(path), "--figures", "none"]) == 0
        report = tmp_path / "runs" / "report"
        scaling = (report / "scaling.csv").read_text().splitlines()
        assert len(scaling) > 1 and ",accuracy," in "".join(scaling)
        assert "family: Scripted" in (report / "model_cards.yaml").read_text()

        changed = sweep_file(tmp_path, f"{server.url}", extra_b=",max_gen_toks: 64")
        states = sweep_states(load_sweep(changed))
        assert [s.state for s in states] == [DONE, DONE, STALE, STALE]
        assert "generation settings" not in states[2].reason and "model or serving" in states[2].reason
        assert main(["sweep", "run", str(changed)]) == 0
        assert "ran 2 cell(s), 2 done, 0 failed; 2 were done already" in capsys.readouterr().out
        kept = sorted(p.name for p in (tmp_path / "runs" / "large" / ".replaced").iterdir())
        assert [name.rsplit("-", 1)[0] for name in kept] == ["radsafe_demo_closed_book", "radsafe_demo_closed_book_sc"]


@pytest.mark.slow  # many lm-eval runs
def test_a_server_that_never_answers_fails_the_cell_and_the_next_run_resumes_it(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that never answers: each request ends when its retry budget is spent, the
    cell fails with that one-line error as its reason (nothing scored), and the next run
    against a working server finishes it."""
    with JsonServer(lambda path, body: (503, {"error": "down"})) as down:
        path = sweep_file(tmp_path, down.url, limit=2, regimes="[greedy]")
        path.write_text(path.read_text().replace("model_args: {timeout: 2", "retry_budget: 1, model_args: {timeout: 2"))
        assert main(["sweep", "run", str(path)]) == 1
        out = capsys.readouterr().out
        assert "0 done, 2 failed" in out
    states = sweep_states(load_sweep(path))
    assert [s.state for s in states] == [FAILED, FAILED] and "no valid answer after 2 tries" in states[0].reason
    with JsonServer(scripted_reply(ANSWERS, correct=0.7)) as up:
        path.write_text(path.read_text().replace(down.url, up.url))  # the same model served elsewhere: the same cells
        assert [s.state for s in sweep_states(load_sweep(path))] == [FAILED, FAILED]
        assert main(["sweep", "run", str(path)]) == 0
    assert [s.state for s in sweep_states(load_sweep(path))] == [DONE, DONE]


def test_slurm_dry_run_prints_one_array_task_per_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(tmp_path, "http://127.0.0.1:9/v1")
    assert [s.state for s in sweep_states(load_sweep(path))] == [MISSING] * 4
    assert main(["sweep", "run", str(path), "--executor", "slurm", "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert script.count("#!/bin/bash") == 1 and "#SBATCH --array=0,1\n" in script
    assert f"sweep run-model --sweep {path.resolve()} --index \"$SLURM_ARRAY_TASK_ID\"" in script
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    gpu = path.read_text().replace("model_args: {timeout: 2}}\n  - name: large", "model_args: {timeout: 2}}\n    resources: "
                                   "{gpus: 2, time: '02:00:00', partition: gpu, sbatch: [--qos=high]}\n  - name: large")
    path.write_text(gpu)
    assert main(["sweep", "run", str(path), "--executor", "slurm", "--dry-run"]) == 0
    scripts = capsys.readouterr().out.split("#!/bin/bash")[1:]
    assert len(scripts) == 2 and "--array=0\n" in scripts[0] and "--array=1\n" in scripts[1]
    assert all(line in scripts[0] for line in ("--gres=gpu:2", "--time=02:00:00", "--partition=gpu", "#SBATCH --qos=high"))


@pytest.mark.slow  # many lm-eval runs
def test_a_killed_sweep_resumes_without_asking_an_answered_request_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the sweep (and its eval) half way through the sampled cells; run it again:
    the server is never asked again for an answer it gave, and the numbers equal those of
    an uninterrupted sweep."""
    respond = scripted_reply(ANSWERS, correct=0.6)

    def slow(path: str, body: dict):
        time.sleep(0.02)
        return respond(path, body)

    killed = tmp_path / "killed"
    killed.mkdir()
    with JsonServer(slow) as first:
        path = sweep_file(killed, first.url, limit=4, regimes="[sc]")
        env = {**os.environ}
        process = subprocess.Popen([sys.executable, "-m", "lm_eval_radsafe.cli", "sweep", "run", str(path)], env=env,
                                   start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while len(first.answered) < 110 and process.poll() is None and time.monotonic() < deadline:  # the second cell, midway
            time.sleep(0.02)
        assert process.poll() is None, process.communicate()[1][-2000:]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        answered = {request_key(b, "messages", b["messages"]) for b in first.answered}
    states = sweep_states(load_sweep(path))
    assert [s.state for s in states][0] == DONE and states[1].state != DONE
    with JsonServer(slow) as second:
        path.write_text(path.read_text().replace(first.url, second.url))  # the same models, served elsewhere
        assert main(["sweep", "run", str(path)]) == 0
        asked_again = [request_key(b, "messages", b["messages"]) for b in second.requests]
    assert len(set(asked_again) & answered) <= 4  # at most the requests in flight at the kill (num_concurrent)
    assert len(asked_again) < 160 - 100

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.setenv("RADSAFE_RESPONSE_CACHE", str(tmp_path / "fresh.sqlite"))
    with JsonServer(slow) as third:
        path_fresh = sweep_file(fresh, third.url, limit=4, regimes="[sc]")
        assert main(["sweep", "run", str(path_fresh)]) == 0
    for resumed, uninterrupted in zip(sweep_states(load_sweep(path)), sweep_states(load_sweep(path_fresh))):
        assert resumed.state == uninterrupted.state == DONE

        def numbers(state):
            results = json.loads((state.cell.folder / state.record["results_file"]).read_text())
            samples = next(state.cell.output.rglob("samples_*.jsonl")).read_text().splitlines()
            rows = sorted((json.loads(line)["doc_id"], json.loads(line)["filtered_resps"]) for line in samples)
            return results["results"][state.cell.task], rows

        (ours, our_rows), (theirs, their_rows) = numbers(resumed), numbers(uninterrupted)
        assert our_rows == their_rows
        assert {k: v for k, v in ours.items() if k != "alias"} == {k: v for k, v in theirs.items() if k != "alias"}


def test_the_readme_sweep_file_is_a_valid_sweep(tmp_path: Path) -> None:
    """The README's example, beside a dataset file and a prepared folder, reads as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = "# sweep.yaml" + readme.split("```yaml\n# sweep.yaml", 1)[1].split("```", 1)[0]
    (tmp_path / "RadSaFE-200.csv").write_text("", encoding="utf-8")
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "manifest.json").write_text("{}", encoding="utf-8")
    (tmp_path / "sweep.yaml").write_text(block, encoding="utf-8")
    sweep = load_sweep(tmp_path / "sweep.yaml")
    assert [m.serve.kind for m in sweep.models] == ["vllm-server", "vllm", "endpoint"]
    assert sweep.models[2].serve.key_env == "LLM_KEY" and sweep.models[0].resources.partition == "gpu"
    from lm_eval_radsafe.sweep.slurm import array_jobs

    jobs = array_jobs(sweep, [0, 1, 2])
    assert [job.indices for job in jobs] == [(0, 1), (2,)]  # the two GPU models share one array


def test_a_model_run_by_another_process_is_not_run_twice(tmp_path: Path) -> None:
    from lm_eval_radsafe.sweep.run import _model_lock

    path = sweep_file(tmp_path, "http://127.0.0.1:9/v1")
    sweep = load_sweep(path)
    with _model_lock(sweep.output / "small"):
        holder = subprocess.run([sys.executable, "-c", (
            "import sys; from lm_eval_radsafe.sweep.run import _model_lock; from pathlib import Path\n"
            f"with _model_lock(Path({str(sweep.output / 'small')!r})): pass")], capture_output=True, text=True, check=False)
    assert holder.returncode == 1 and f"small is being run by process {os.getpid()}" in holder.stderr
    with _model_lock(sweep.output / "small"):  # free again
        pass


@pytest.mark.slow  # an lm-eval run
def test_a_vllm_server_model_is_started_for_its_cells_and_stopped(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """kind vllm-server: `vllm serve MODEL --host 127.0.0.1 --port P ARGS` started (here a
    stand-in `vllm` on PATH that runs the scripted server), /health awaited, the cells run
    against it, the server stopped after."""
    server_script = Path(__file__).resolve().parent / "fake_openai_server.py"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "vllm-args.json"
    fake = bin_dir / "vllm"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(called)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "port = sys.argv[sys.argv.index('--port') + 1]\n"
        f"os.execv(sys.executable, [sys.executable, {str(server_script)!r}, '--port', port, '--port-file', "
        f"{str(tmp_path / 'port')!r}, '--answers', {str(demo_items_path())!r}, '--idle', '300'])\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "family: radsafe_demo\nconditions: [closed_book]\nregimes: [greedy]\noutput: runs/\nlimit: 2\nmodels:\n"
        "  - name: served\n    serve: {kind: vllm-server, model: org/model-7b, args: [--max-model-len, '4096'], startup_timeout: 60}\n",
        encoding="utf-8",
    )
    assert main(["sweep", "run", str(path)]) == 0
    assert "ran 1 cell(s), 1 done, 0 failed" in capsys.readouterr().out
    args = json.loads(called.read_text())
    assert args[:4] == ["serve", "org/model-7b", "--host", "127.0.0.1"] and args[-2:] == ["--max-model-len", "4096"]
    port = int(args[args.index("--port") + 1])
    import socket

    with socket.socket() as probe:  # stopped: nothing listens on its port any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    (state,) = sweep_states(load_sweep(path))
    assert state.state == DONE and state.record["requests"] == 2
    assert (tmp_path / "runs" / "served" / "vllm-server.log").is_file()


def test_a_reasoning_model_card_names_its_delimiter_to_in_process_backends(tmp_path: Path) -> None:
    from lm_eval_radsafe.sweep.run import eval_command

    path = tmp_path / "sweep.yaml"
    path.write_text(
        "family: radsafe_demo\nconditions: [closed_book]\nregimes: [think]\noutput: runs/\nmodels:\n"
        "  - name: qwen3-8b\n    card: {family: Qwen3, parameters: 8, think_delimiter: '</think>'}\n"
        "    serve: {kind: vllm, pretrained: Qwen/Qwen3-8B, max_model_len: 40000}\n"
        "  - name: served\n    card: {family: Qwen3, parameters: 8, think_delimiter: '</think>'}\n"
        "    serve: {kind: endpoint, base_url: 'http://127.0.0.1:9/v1', model: Qwen/Qwen3-8B}\n",
        encoding="utf-8",
    )
    sweep = load_sweep(path)
    offline, served = plan_cells(sweep)
    args = eval_command(sweep, offline, None)
    assert args[args.index("--model_args") + 1] == (
        "pretrained=Qwen/Qwen3-8B,tensor_parallel_size=1,data_parallel_size=1,max_model_len=40000,think_end_token=</think>")
    assert "think_end_token" not in " ".join(eval_command(sweep, served, "http://127.0.0.1:9/v1"))  # the filter reads past it
    assert offline.key_parts["model"]["think_delimiter"] == "</think>" and offline.task == "radsafe_demo_closed_book_think"

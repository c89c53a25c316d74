"""A busy, broken or restarting server: runs finish with every item answered by the model,
infrastructure faults are retried and counted (never scored as abstentions), a killed run
resumes from the response cache, and rejected requests stop the run naming the item."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lm_eval
import pytest
from fake_openai_server import JsonServer, fault_plan, load_answers, scripted_reply
from lm_eval.api.registry import get_model

import lm_eval_radsafe.models  # noqa: F401  registers the radsafe API backends
from lm_eval_radsafe.cli import task_manager
from lm_eval_radsafe.endpoint import (
    AdaptiveLimit,
    InvalidResponse,
    RequestRejected,
    RetryBudgetSpent,
    RetryPolicy,
    completion_choices,
    retry_after_seconds,
)
from lm_eval_radsafe.response_cache import ResponseCache, default_cache_path, request_key

DEMO = Path(__file__).resolve().parents[1] / "lm_eval_radsafe" / "data" / "demo" / "radsafe_demo.jsonl"
ANSWERS = load_answers(DEMO)
RADSAFE = str(Path(sys.executable).with_name("radsafe"))
GREEDY, SAMPLED = "radsafe_demo_closed_book", "radsafe_demo_closed_book_sc"


def backend(server: JsonServer, name: str = "radsafe-local-chat-completions", **args: object):
    path = "/chat/completions" if "chat" in name else "/completions"
    settings = {"model": "fake", "base_url": f"{server.url}{path}", "num_concurrent": 32, "timeout": 2, **args}
    if "chat" not in name:
        settings.setdefault("tokenizer_backend", None)
    return get_model(name)(**settings)


def run(lm, task: str, limit: int | None = None) -> dict:
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=task_manager(include_defaults=False),
        apply_chat_template="chat" in type(lm).__name__.lower(),
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
    )


def answers_of(results: dict, task: str) -> dict[int, list]:
    return {s["doc_id"]: s["resps"] for s in results["samples"][task]}


# --------------------------------------------------------------------------- rules (unit)


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Thu, 03 Dec 2026 10:00:30 GMT", now=1796292000.0) == pytest.approx(30.0)


def test_waits_grow_with_jitter_and_follow_retry_after() -> None:
    policy = RetryPolicy(budget=60, base=1, cap=8)
    rng = random.Random(0)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (6, 8)]:
        wait = policy.wait(attempt, rng=rng)
        assert ceiling / 2 <= wait <= ceiling
    assert policy.wait(0, retry_after=5.0) == 5.0
    with pytest.raises(ValueError, match="retry budget must be a number of seconds >= 0"):
        RetryPolicy(budget=-1)


@pytest.mark.parametrize(
    ("body", "chat", "problem"),
    [
        ([], True, "not an object"),
        ({}, True, "no choices"),
        ({"choices": []}, True, "no choices"),
        ({"choices": [{"index": 0}]}, True, "no message content"),
        ({"choices": [{"index": 0, "message": {"role": "assistant"}}]}, True, "no message content"),
        ({"choices": [{"index": 0, "message": {"content": 3}}]}, True, "not text"),
        ({"choices": [{"index": 0, "text": None}]}, False, "has no text"),
        ({"choices": [{"index": 1, "text": "A"}]}, False, "1 choice(s) for 1 prompt(s)"),
    ],
)
def test_invalid_completions_are_infrastructure_errors(body: object, chat: bool, problem: str) -> None:
    with pytest.raises(InvalidResponse, match=problem.replace("(", r"\(").replace(")", r"\)")):
        completion_choices(body, 1, chat)


def test_an_empty_answer_is_a_valid_completion() -> None:
    assert completion_choices({"choices": [{"index": 0, "message": {"content": None}}]}, 1, True)[0]["message"]["content"] is None
    assert completion_choices({"choices": [{"index": 0, "message": {"content": ""}}]}, 1, True)
    two = completion_choices({"choices": [{"index": 1, "text": "B"}, {"index": 0, "text": ""}]}, 2, False)
    assert [c["text"] for c in two] == ["", "B"]


def test_429_halves_requests_in_flight_and_successes_raise_them_again() -> None:
    limit = AdaptiveLimit(32)
    limit.throttled()
    limit.throttled()
    assert limit.limit == 8
    for _ in range(8):
        limit.succeeded()
    assert limit.limit == 9


def test_cache_path_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RADSAFE_RESPONSE_CACHE")
    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path))
    assert default_cache_path() == tmp_path / "responses.sqlite"
    assert default_cache_path("off") is None
    assert default_cache_path(str(tmp_path / "x.sqlite")) == tmp_path / "x.sqlite"
    monkeypatch.setenv("RADSAFE_RESPONSE_CACHE", "off")
    assert default_cache_path() is None


# --------------------------------------------------------------------------- a faulty server


def test_faulty_server_loses_nothing_and_fakes_no_abstention(caplog: pytest.LogCaptureFixture) -> None:
    """About 20% of tries fail (429, 500, 503, hangs past the timeout, dropped connections,
    200s with empty or malformed bodies or no choices), 32 requests in flight: the run
    finishes with the letters of a fault-free run, every fault counted, none scored."""
    respond = scripted_reply(ANSWERS, correct=0.6)
    with JsonServer(respond) as clean:
        reference = {task: run(backend(clean, response_cache="off"), task, limit) for task, limit in ((GREEDY, None), (SAMPLED, 5))}
    with JsonServer(respond, faults=fault_plan(0.2), max_requests=2000) as faulty:
        lm = backend(faulty)
        with caplog.at_level(logging.WARNING, logger="lm_eval_radsafe"):
            observed = {task: run(lm, task, limit) for task, limit in ((GREEDY, None), (SAMPLED, 5))}
    assert {kind for kind in faulty.faults_sent} == {"429", "500", "503", "hang", "drop", "body"}
    for task in (GREEDY, SAMPLED):
        assert answers_of(observed[task], task) == answers_of(reference[task], task)
    assert len(answers_of(observed[GREEDY], GREEDY)) == 66
    assert observed[GREEDY]["results"][GREEDY]["abstention,strict"] == 0.0
    assert observed[SAMPLED]["results"][SAMPLED]["sample_null_rate,strict"] == 0.0
    greedy, sampled = lm.endpoint_stats[GREEDY], lm.endpoint_stats[SAMPLED]
    assert (greedy.requests, sampled.requests) == (66, 100)
    assert greedy.infrastructure_errors == sampled.infrastructure_errors == 0
    retries = greedy.retries + sampled.retries
    assert set(retries) == {"rate_limited", "server_error", "connection", "timeout", "invalid_response"}
    # every injected fault cost exactly one retry; a request that was merely slow on a loaded
    # machine may also pass the 2 s timeout and be retried, so timeouts can exceed hangs
    sent = faulty.faults_sent
    assert sent["hang"] <= retries["timeout"] <= sent["hang"] + 5
    assert sum(retries.values()) - retries["timeout"] == sum(sent.values()) - sent["hang"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("retrying in" in line for line in lines) and any("retried (" in line for line in lines)
    assert len([line for line in lines if "retrying in" in line]) <= 10  # one line per cause and run, then summaries


def test_completions_backend_under_faults_batches_and_all() -> None:
    respond = scripted_reply(ANSWERS, correct=0.6)
    with JsonServer(respond) as clean:
        reference = run(backend(clean, "radsafe-local-completions", response_cache="off", batch_size=4), GREEDY, 24)
    with JsonServer(respond, faults=fault_plan(0.3), max_requests=500) as faulty:
        lm = backend(faulty, "radsafe-local-completions", batch_size=4)
        observed = run(lm, GREEDY, 24)
    assert answers_of(observed, GREEDY) == answers_of(reference, GREEDY)
    assert sum(lm.endpoint_stats[GREEDY].retries.values()) > 0
    assert all(isinstance(body["prompt"], list) and len(body["prompt"]) <= 4 for body in faulty.requests)


def test_a_rejected_request_stops_the_run_naming_task_and_item(tmp_path: Path) -> None:
    """A 400 (prompt too long) is not retried; the run stops with the task and item and what
    was kept; on_reject=record finishes and counts it as an infrastructure error."""
    respond = scripted_reply(ANSWERS, correct=0.6)
    first_question = json.loads(DEMO.read_text(encoding="utf-8").splitlines()[0])["question"]

    def picky(path: str, body: dict):
        text = json.dumps(body)
        if first_question[:40] in text:
            return 400, {"error": {"message": "This model's maximum context length is 4096 tokens"}}
        return respond(path, body)

    with JsonServer(picky) as server:
        with pytest.raises(RequestRejected, match=r"radsafe_demo_closed_book item 0: the server rejected the request, not retried: HTTP 400: .*maximum context length.* on_reject=record"):
            run(backend(server), GREEDY, 5)
        assert sum(first_question[:40] in json.dumps(body) for body in server.requests) == 1
        lm = backend(server, on_reject="record")
        results = run(lm, GREEDY, 5)
    stats = lm.endpoint_stats[GREEDY]
    assert stats.infrastructure_errors == 1 and stats.rejected[0]["doc_id"] == 0 and stats.rejected[0]["status"] == 400
    assert len(results["samples"][GREEDY]) == 5


def test_a_spent_budget_stops_the_run_and_says_how_to_resume(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    respond = scripted_reply(ANSWERS, correct=0.6)
    calls = {"n": 0}

    def failing_after_three(path: str, body: dict):
        calls["n"] += 1
        return respond(path, body) if calls["n"] <= 3 else (503, {"error": "overloaded"})

    with JsonServer(failing_after_three) as server:
        lm = backend(server, num_concurrent=1, retry_budget=2, response_cache=str(cache))
        with pytest.raises(RetryBudgetSpent, match=r"radsafe_demo_closed_book item \d+: .*no valid answer after \d+ tries over \d s \(retry budget 2 s; server_error \d+\); last: HTTP 503.*3 answers are kept in .*cache.sqlite; run the same command again to send only the missing ones"):
            run(lm, GREEDY, 5)
    assert len(ResponseCache(cache)) == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_down_for_20_seconds_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    """Connections are refused for 20 s, then the server comes up: the run waits (within the
    retry budget), finishes, and reports the wait."""
    port = free_port()
    respond = scripted_reply(ANSWERS, correct=0.6)
    box: dict[str, JsonServer] = {}

    def start_later() -> None:
        time.sleep(20)
        box["server"] = JsonServer(respond, port=port).__enter__()

    starter = threading.Thread(target=start_later, daemon=True)
    started = time.monotonic()
    starter.start()
    lm = get_model("radsafe-local-chat-completions")(model="fake", base_url=f"http://127.0.0.1:{port}/v1/chat/completions", num_concurrent=4, timeout=2)
    try:
        with caplog.at_level(logging.WARNING, logger="lm_eval_radsafe"):
            results = run(lm, GREEDY, 3)
    finally:
        starter.join()
        box["server"].__exit__(None, None, None)
    assert time.monotonic() - started >= 20
    assert len(results["samples"][GREEDY]) == 3
    stats = lm.endpoint_stats[GREEDY]
    assert stats.retries["connection"] >= 3 and stats.longest_wait_s >= 19
    assert any("ConnectionRefused" in r.getMessage() or "Cannot connect" in r.getMessage() for r in caplog.records)
    assert any(f"longest wait for one answer {stats.longest_wait_s:.0f} s" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- kill and resume


def cli(server: JsonServer, out: Path, cache: Path) -> subprocess.Popen:
    args = [
        RADSAFE, "eval", "--model", "radsafe-local-chat-completions",
        "--model_args", f"model=fake,base_url={server.url}/chat/completions,num_concurrent=4",
        "--tasks", SAMPLED, "--limit", "10", "--apply_chat_template", "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RADSAFE_RESPONSE_CACHE": str(cache)}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def results_of(out: Path) -> tuple[dict, list]:
    results_file = next(out.rglob("results_*.json"))
    samples_file = next(out.rglob(f"samples_{SAMPLED}_*.jsonl"))
    samples = sorted((json.loads(line)["doc_id"], json.loads(line)["resps"]) for line in samples_file.read_text().splitlines())
    return json.loads(results_file.read_text()), samples


def test_a_killed_run_resumes_without_sending_an_answered_request_again(tmp_path: Path) -> None:
    """SIGKILL half way through 200 samples, run again: only what was missing is sent, and
    the numbers equal an uninterrupted run's."""
    respond = scripted_reply(ANSWERS, correct=0.6)

    def slow(path: str, body: dict):
        time.sleep(0.05)
        return respond(path, body)

    cache = tmp_path / "cache.sqlite"
    with JsonServer(slow) as first:
        process = cli(first, tmp_path / "killed", cache)
        deadline = time.monotonic() + 240
        while len(first.answered) < 80 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        answered_before = [request_key(b, "messages", b["messages"]) for b in first.answered]
    kept = ResponseCache(cache).keys()
    assert 70 <= len(kept) < 200
    assert len(set(answered_before) - kept) <= 4  # at most the requests in flight when it was killed
    with JsonServer(slow) as second:
        process = cli(second, tmp_path / "resumed", cache)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        sent_again = [request_key(b, "messages", b["messages"]) for b in second.requests]
    assert not set(sent_again) & kept
    assert len(sent_again) == 200 - len(kept)
    resumed, resumed_samples = results_of(tmp_path / "resumed")
    serving = resumed["radsafe"]["tasks"][SAMPLED]["serving"]
    assert serving["requests"] == 200 and serving["cache_hits"] == len(kept) and serving["infrastructure_errors"] == 0
    with JsonServer(slow) as third:
        process = cli(third, tmp_path / "whole", tmp_path / "fresh.sqlite")
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    whole, whole_samples = results_of(tmp_path / "whole")
    assert resumed_samples == whole_samples
    metrics = {k: v for k, v in whole["results"][SAMPLED].items() if "stderr" not in k}
    assert {k: resumed["results"][SAMPLED][k] for k in metrics} == metrics


def test_report_shows_server_counts_and_refuses_unresolved_infrastructure_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`radsafe eval` writes the server's counts per task; `radsafe report` shows them beside
    the answering time, and refuses a run whose rejected requests were recorded as errors."""
    from lm_eval_radsafe.cli import main

    respond = scripted_reply(ANSWERS, correct=0.6)
    first_question = json.loads(DEMO.read_text(encoding="utf-8").splitlines()[0])["question"]

    def picky(path: str, body: dict):
        return (400, {"error": "prompt too long"}) if first_question[:40] in json.dumps(body) else respond(path, body)

    def eval_args(server: JsonServer, out: Path, extra: str = "") -> list[str]:
        return [
            "eval", "--model", "radsafe-local-chat-completions",
            "--model_args", f"model=fake,base_url={server.url}/chat/completions,num_concurrent=8{extra}",
            "--tasks", GREEDY, "--limit", "6", "--apply_chat_template", "--log_samples", "--output_path", str(out),
        ]  # fmt: skip

    with JsonServer(respond, faults=fault_plan(0.5)) as server:
        assert main(eval_args(server, tmp_path / "ok")) == 0
    results = json.loads(next((tmp_path / "ok").rglob("results_*.json")).read_text())
    serving = results["radsafe"]["tasks"][GREEDY]["serving"]
    assert serving["requests"] == 6 and serving["infrastructure_errors"] == 0 and sum(serving["retries"].values()) > 0
    assert main(["report", str(tmp_path / "ok"), "--out", str(tmp_path / "report")]) == 0
    cost = (tmp_path / "report" / "cost.csv").read_text().splitlines()
    header, row = cost[0].split(","), cost[1].split(",")
    assert row[header.index("requests")] == "6" and int(row[header.index("retried")]) == sum(serving["retries"].values())
    assert "longest wait" in (tmp_path / "report" / "report.html").read_text()

    with JsonServer(picky) as server:
        # a cache of its own: the first run's answers would otherwise answer item 0
        assert main(eval_args(server, tmp_path / "rejected", f",on_reject=record,response_cache={tmp_path / 'other.sqlite'}")) == 0
    err = capsys.readouterr().err
    assert f"{GREEDY}: 1 request(s) were rejected by the server and recorded as infrastructure errors" in err
    assert main(["report", str(tmp_path / "rejected"), "--out", str(tmp_path / "report2")]) == 1
    err = capsys.readouterr().err
    assert "1 request(s) were recorded as infrastructure errors (e.g. item 0: " in err and "Traceback" not in err

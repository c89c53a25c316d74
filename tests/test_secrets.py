"""No credential reaches a file or a console line: planted keys, tokens and URL passwords
are looked for in everything a run, a report, a leaderboard and a prepare write or print."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai_server import JsonServer, load_answers, scripted_reply

from lm_eval_radsafe.redaction import (
    REDACTED,
    RedactingFilter,
    RedactingStream,
    is_secret_name,
    redact_args,
    redact_text,
    redact_url,
    secret_values,
)

DEMO = Path(__file__).resolve().parents[1] / "lm_eval_radsafe" / "data" / "demo" / "radsafe_demo.jsonl"
RADSAFE = str(Path(sys.executable).with_name("radsafe"))
KEY, TOKEN, QUERY, PASSWORD = "sk-planted-KEY-0001", "planted-TOKEN-0002", "planted-QUERY-0003", "planted-PASS-0004"
SECRETS = (KEY, TOKEN, QUERY, PASSWORD)


@pytest.mark.parametrize(
    ("name", "secret"),
    [("api_key", True), ("auth_token", True), ("OPENAI_API_KEY", True), ("hf_token", True), ("client_secret", True),
     ("password", True), ("max_tokens", False), ("max_gen_toks", False), ("tokenizer", False), ("tokenized_requests", False),
     ("eos_token", False), ("base_url", False), ("pretrained", False), ("num_concurrent", False)],
)
def test_secret_argument_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_urls_args_and_text_are_redacted() -> None:
    url = f"https://user:{PASSWORD}@host:8000/v1?api_key={QUERY}&mode=x"
    assert redact_url(url) == f"https://user:{REDACTED}@host:8000/v1?api_key={REDACTED}&mode=x"
    args = f"pretrained=m,api_key={KEY},base_url={url},max_tokens=5"
    assert redact_args(args) == f"pretrained=m,api_key={REDACTED},base_url={redact_url(url)},max_tokens=5"
    assert redact_args({"auth_token": TOKEN, "nested": {"token": TOKEN}, "seed": 1}) == {
        "auth_token": REDACTED, "nested": {"token": REDACTED}, "seed": 1,
    }
    assert secret_values(args) == {KEY, PASSWORD, QUERY}
    text = f"calling {url} with {KEY}"
    assert not any(s in redact_text(text, {KEY}) for s in SECRETS)


def test_log_filter_and_stream_redact(capsys: pytest.CaptureFixture[str]) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "args: %s", ({"api_key": KEY},), None)
    RedactingFilter({KEY}).filter(record)
    assert KEY not in record.getMessage() and REDACTED in record.getMessage()
    stream = RedactingStream(sys.stdout, {TOKEN})
    stream.write(f"partial {TOKEN[:5]}")
    stream.write(f"{TOKEN[5:]} line\nnext")
    stream.flush()
    out = capsys.readouterr().out
    assert TOKEN not in out and out == f"partial {REDACTED} line\nnext"


def _grep(folders: list[Path], texts: list[str]) -> list[str]:
    """Where any planted secret occurs: file paths, or 'console <n>'."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    found += [f"console {n}: {s}" for n, text in enumerate(texts) for s in SECRETS if s in text]
    return found


def test_no_planted_secret_in_any_file_or_console(tmp_path: Path) -> None:
    """A run with a key, a token and a key-bearing URL in --model_args, its report and
    leaderboard: the key still reaches the server (moved to the environment), and no secret
    is in any file written or any line printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RADSAFE_CACHE": str(tmp_path / "cache")}
    env.pop("OPENAI_API_KEY", None)
    consoles = []
    with JsonServer(scripted_reply(load_answers(DEMO), 0.7)) as server:
        model_args = (f"model=fake,base_url={server.url}/chat/completions?api_key={QUERY},api_key={KEY},"
                      f"auth_token={TOKEN},num_concurrent=2")
        done = subprocess.run(
            [RADSAFE, "eval", "--model", "radsafe-local-chat-completions", "--model_args", model_args,
             "--tasks", "radsafe_demo_closed_book", "--limit", "3", "--apply_chat_template", "--log_samples",
             "--output_path", str(tmp_path / "runs")],
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )
        consoles += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.requests and all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
    assert "pass keys through the environment (OPENAI_API_KEY)" in done.stderr
    report = subprocess.run(
        [RADSAFE, "report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--leaderboard"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    consoles += [report.stdout, report.stderr]
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "leaderboard.json").is_file()
    rejecting = JsonServer(lambda path, body: (400, {"error": {"message": "no"}}))
    with rejecting as server:
        host = server.url.replace("http://", f"http://agent:{PASSWORD}@")
        prepare = subprocess.run(
            [RADSAFE, "prepare", "--dataset", "demo", "--corpus", "demo", "--out", str(tmp_path / "prepared"), "--k", "20",
             "--agentic", "--agent-model", "openai:fake-agent", "--agent-base-url", host, "--agent-max-calls", "2"],
            capture_output=True, text=True, env={**env, "OPENAI_API_KEY": KEY}, timeout=600, check=False,
        )
    consoles += [prepare.stdout, prepare.stderr]
    assert prepare.returncode != 0 and "agent endpoint" in prepare.stderr  # the server refused: an error naming it
    assert _grep([tmp_path / "runs", tmp_path / "report", tmp_path / "prepared"], consoles) == []

"""A scripted OpenAI-compatible server on 127.0.0.1, for the tests and the smoke run.

As a library, ``JsonServer(respond)`` serves any JSON reply (the test suite uses it through
``conftest``). As a script it answers ``/v1/chat/completions`` and ``/v1/completions`` with
one option letter chosen by hashing the prompt and the request's ``seed``, so repeated
samples of one prompt differ when their seeds differ and a rerun gives the same answers::

    python tests/fake_openai_server.py --port-file PORT [--answers items.jsonl] [--correct 0.7]

With ``--answers`` (canonical JSONL: ``question``, ``answer``) the letter is the item's
answer with probability ``--correct``. The server listens on loopback only, on a free port
written to ``--port-file``, and stops by itself after ``--idle`` seconds without a request
or ``--timeout`` seconds in all. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Reply = dict | tuple[int, dict]


@dataclass(frozen=True)
class Fault:
    """What a faulty server does instead of answering: ``kind`` is ``status`` (send
    ``status`` with ``body`` and an optional ``Retry-After``), ``hang`` (wait ``seconds``
    before answering), ``drop`` (close the connection without a reply) or ``body`` (a 200
    whose body is ``body`` as is)."""

    kind: str
    status: int = 200
    body: bytes = b""
    retry_after: str | None = None
    seconds: float = 0.0


#: the faults a busy or broken server shows, with their share among faulty replies
FAULTS: tuple[Fault, ...] = (
    Fault("status", 429, b'{"error": "rate limited"}', retry_after="0.2"),
    Fault("status", 500, b'{"error": "internal error"}'),
    Fault("status", 503, b"<html>503 Service Unavailable</html>"),
    Fault("hang", seconds=4.0),
    Fault("drop"),
    Fault("body", 200, b""),
    Fault("body", 200, b'{"choices": [{"index": 0, "mess'),
    Fault("body", 200, b'{"id": "x", "object": "chat.completion", "choices": []}'),
    Fault("body", 200, b'{"choices": [{"index": 0, "finish_reason": "stop"}]}'),
)


def fault_plan(rate: float = 0.2, most: int = 3) -> Callable[[dict, int], Fault | None]:
    """A deterministic fault schedule: the n-th try of a request (n counted per request
    body) fails with probability ``rate``, at most ``most`` times per request, the fault
    picked by hashing the body and n."""

    def plan(body: dict, attempt: int) -> Fault | None:
        key = json.dumps(body, sort_keys=True)
        if attempt >= most or _unit(key, attempt, "fault?") >= rate:
            return None
        return FAULTS[int(_unit(key, attempt, "which") * len(FAULTS))]

    return plan


class JsonServer:
    """A JSON-over-HTTP server on 127.0.0.1 for fake OpenAI-compatible endpoints.

    ``respond(path, body) -> dict`` builds each reply (or ``(status, dict)`` for another
    HTTP status than 200); every request is recorded in
    ``requests`` with its path and Authorization header. Use it as a context manager.

    ``faults(body, attempt) -> Fault | None`` (see :func:`fault_plan`) makes it a busy,
    broken server; ``answered`` lists the bodies it answered with a 200 from ``respond``.
    After ``max_requests`` requests it answers 410 to everything, so a client that never
    stops cannot keep it busy. ``port`` picks the port (0: a free one).
    """

    def __init__(
        self,
        respond: Callable[[str, dict], Reply],
        faults: Callable[[dict, int], Fault | None] | None = None,
        max_requests: int | None = None,
        port: int = 0,
    ) -> None:
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self.faults_sent: Counter = Counter()
        self.last_request = time.monotonic()
        lock = threading.Lock()
        tries: Counter = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    outer.last_request = time.monotonic()
                    key = json.dumps(body, sort_keys=True)
                    attempt = tries[key]
                    tries[key] += 1
                    over = max_requests is not None and len(outer.requests) > max_requests
                fault = None if faults is None or over else faults(body, attempt)
                if over:
                    self._send(410, b'{"error": "the test server reached its request limit"}')
                    return
                if fault is not None:
                    outer.faults_sent[fault.kind if fault.kind != "status" else str(fault.status)] += 1
                    if fault.kind == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault.kind == "hang":
                        time.sleep(fault.seconds)
                    else:
                        self._send(fault.status, fault.body, fault.retry_after)
                        return
                reply = respond(self.path, body)
                status, reply = reply if isinstance(reply, tuple) else (200, reply)
                try:
                    self._send(status, json.dumps(reply).encode())
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up waiting
                if status == 200 and (fault is None or fault.kind == "hang"):
                    with lock:
                        outer.answered.append(body)

            def do_GET(self) -> None:  # vLLM's health check
                self._send(200 if self.path == "/health" else 404, b"{}")

            def _send(self, status: int, data: bytes, retry_after: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JsonServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- scripted answers

OPTION_LINE = re.compile(r"^([A-E])\. ", re.MULTILINE)


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _prompt_text(body: dict) -> str:
    """The text of a chat request's messages, or a completion request's prompt."""
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def load_answers(path: Path) -> dict[str, str]:
    """Question text -> answer letter, from canonical JSONL items."""
    answers = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            answers[item["question"]] = item["answer"]
    return answers


def choose_letter(prompt: str, seed: object, answers: dict[str, str], correct: float) -> str:
    """An option letter of ``prompt`` fixed by (prompt, seed); the known answer with
    probability ``correct`` when the prompt holds a question of ``answers``."""
    letters = sorted(set(OPTION_LINE.findall(prompt))) or ["A"]
    truth = next((letter for question, letter in answers.items() if question in prompt), None)
    if truth is not None and _unit(prompt, seed, "correct") < correct:
        return truth
    others = [letter for letter in letters if letter != truth] or letters
    return others[int(_unit(prompt, seed, "letter") * len(others))]


def scripted_reply(answers: dict[str, str], correct: float) -> Callable[[str, dict], Reply]:
    """The ``respond`` function of the script: one letter per prompt and seed."""

    def respond(path: str, body: dict) -> Reply:
        seed = body.get("seed")
        path = path.split("?", 1)[0]  # a query (e.g. a key parameter) does not change the endpoint
        if path.rstrip("/").endswith("/chat/completions"):
            letter = choose_letter(_prompt_text(body), seed, answers, correct)
            choices = [{"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "stop"}]
            kind = "chat.completion"
        elif path.rstrip("/").endswith("/completions"):
            prompts = body.get("prompt", "")
            prompts = prompts if isinstance(prompts, list) else [prompts]
            choices = [
                {"index": i, "text": " " + choose_letter(str(p), seed, answers, correct), "finish_reason": "stop"}
                for i, p in enumerate(prompts)
            ]
            kind = "text_completion"
        else:
            return 404, {"error": {"message": f"no such endpoint: {path}"}}
        usage = {"prompt_tokens": 0, "completion_tokens": len(choices), "total_tokens": len(choices)}
        return {"id": "scripted", "object": kind, "created": int(time.time()), "model": body.get("model", "scripted"), "choices": choices, "usage": usage}

    return respond


def serve(server: JsonServer, idle: float, timeout: float) -> None:
    """Serve until ``idle`` seconds pass without a request or ``timeout`` seconds in all."""
    started = time.monotonic()
    with server:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            if now - server.last_request > idle or now - started > timeout:
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-file", required=True, type=Path, help="where to write the port it listens on")
    parser.add_argument("--answers", type=Path, help="canonical JSONL items whose answers it knows")
    parser.add_argument("--correct", type=float, default=0.7, help="chance of the known answer (default: %(default)s)")
    parser.add_argument("--idle", type=float, default=120, help="stop after this many seconds without a request")
    parser.add_argument("--timeout", type=float, default=900, help="stop after this many seconds in all")
    parser.add_argument("--port", type=int, default=0, help="the port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    answers = load_answers(args.answers) if args.answers else {}
    server = JsonServer(scripted_reply(answers, args.correct), port=args.port)
    partial = args.port_file.with_name(args.port_file.name + ".part")
    partial.write_text(str(server.port))
    partial.replace(args.port_file)  # appears whole, so a reader never sees half a number
    print(f"scripted OpenAI-compatible server on {server.url} ({len(answers)} known answers)", file=sys.stderr)
    serve(server, args.idle, args.timeout)
    print(f"scripted server stopped after {len(server.requests)} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

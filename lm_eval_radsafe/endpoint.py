"""Talking to an OpenAI-compatible server that may be busy, restarting or behind a proxy.

One set of rules for every HTTP call the package makes (the answering model's API
backends in :mod:`lm_eval_radsafe.models` and the agent's client in
:mod:`lm_eval_radsafe.retrieval.agentic`):

- **Retried** (exponential backoff with jitter, ``Retry-After`` honoured, until the
  request's time budget is spent): connection errors, timeouts, HTTP 408, 429 and 5xx,
  and a 200 response that is not a valid completion (empty or malformed body, no
  ``choices``, a choice without its text or message). Such a response is an
  infrastructure error, never a model answer.
- **Not retried**: any other status (400 "prompt too long", 401, 404...). The server
  rejected the request; retrying cannot help (:class:`RequestRejected`).
- A well-formed completion whose content is empty or null *is* the model's answer.

Under 429s the number of requests in flight is halved and grows back one at a time
after successes (:class:`AdaptiveLimit`).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lm_eval_radsafe.redaction import redact_text, redact_url

logger = logging.getLogger("lm_eval_radsafe")

#: default time budget of one request, retries and waits included (seconds): long enough
#: for a vLLM server to restart and load its model
DEFAULT_RETRY_BUDGET = 600.0

#: statuses of a server that is busy, restarting or behind a failing proxy
RETRY_STATUSES = frozenset({408, 429})


def retryable_status(status: int) -> bool:
    """True for statuses worth retrying: 408, 429 and every 5xx."""
    return status in RETRY_STATUSES or 500 <= status <= 599


class EndpointError(RuntimeError):
    """A request that could not be answered; the message names the request and the cause."""


class RequestRejected(EndpointError):
    """The server refused the request with a status that retrying cannot change (4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RetryBudgetSpent(EndpointError):
    """Retries went on for the request's whole time budget without a valid answer."""


class InvalidResponse(ValueError):
    """A 2xx response that is not a valid completion: an infrastructure error."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one request and how long to wait between tries.

    ``budget``: seconds from the first try after which no new try starts. The wait before
    try n+1 is ``min(cap, base * 2**n)`` with equal jitter (half fixed, half random), or
    the server's ``Retry-After`` when it gives one; never past the budget.
    """

    budget: float = DEFAULT_RETRY_BUDGET
    base: float = 1.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        for name in ("budget", "base", "cap"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"retry {name} must be a number of seconds >= 0, got {value!r}")

    def wait(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self.cap, self.base * 2**attempt)
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def completion_choices(body: Any, n_prompts: int, chat: bool) -> list[dict[str, Any]]:
    """The choices of a completion response, one per prompt in index order.

    Raises :class:`InvalidResponse` when the body is not an object, has no ``choices``,
    a choice lacks its ``text`` (completions) or ``message`` with a ``content`` key (chat),
    or the choices do not cover the ``n_prompts`` prompts exactly. A ``null`` or empty
    content is valid: it is the model's (empty) answer.
    """
    if not isinstance(body, dict):
        raise InvalidResponse(f"the body is a JSON {type(body).__name__}, not an object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InvalidResponse("the response has no choices" + (f" ({body.get('error')!r})" if body.get("error") else ""))
    by_index: dict[int, dict[str, Any]] = {}
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise InvalidResponse(f"choice {position} is not an object")
        index = choice.get("index", position)
        if chat:
            message = choice.get("message")
            if not isinstance(message, dict) or "content" not in message:
                raise InvalidResponse(f"choice {position} has no message content")
            if message["content"] is not None and not isinstance(message["content"], str):
                raise InvalidResponse(f"choice {position}: message content is not text")
        elif not isinstance(choice.get("text"), str):
            raise InvalidResponse(f"choice {position} has no text")
        if not isinstance(index, int) or index in by_index:
            raise InvalidResponse(f"choice {position} has a bad or repeated index {index!r}")
        by_index[index] = choice
    if sorted(by_index) != list(range(n_prompts)):
        raise InvalidResponse(f"{len(by_index)} choice(s) for {n_prompts} prompt(s)")
    return [by_index[i] for i in range(n_prompts)]


def parse_body(raw: bytes) -> Any:
    """The JSON value of a response body; :class:`InvalidResponse` when empty or malformed."""
    if not raw or not raw.strip():
        raise InvalidResponse("the body is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidResponse(f"the body is not JSON ({raw[:80]!r})") from exc


#: causes of a retry, as counted in :class:`EndpointStats`
CAUSES = ("rate_limited", "server_error", "connection", "timeout", "invalid_response")


def status_cause(status: int) -> str:
    """The retry cause of an HTTP status."""
    return "rate_limited" if status == 429 else "server_error"


@dataclass
class EndpointStats:
    """What the server did for one task: counted while requests run, written to results.

    ``requests``: requests the task needed; ``sent``: HTTP calls made (tries included);
    ``cache_hits``: answers taken from the response cache; ``retries``: tries that failed
    and were retried, by cause; ``infrastructure_errors``: requests left without an answer
    (recorded rejections); ``finish_length``: answers cut at the token limit;
    ``longest_wait_s``: the longest time one request took to get its answer.
    """

    requests: int = 0
    sent: int = 0
    cache_hits: int = 0
    retries: Counter = field(default_factory=Counter)
    infrastructure_errors: int = 0
    finish_length: int = 0
    longest_wait_s: float = 0.0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: EndpointStats) -> None:
        """Add another task's or call's counts to these."""
        self.requests += other.requests
        self.sent += other.sent
        self.cache_hits += other.cache_hits
        self.retries.update(other.retries)
        self.infrastructure_errors += other.infrastructure_errors
        self.finish_length += other.finish_length
        self.longest_wait_s = max(self.longest_wait_s, other.longest_wait_s)
        self.rejected.extend(other.rejected)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written under ``radsafe.tasks.<task>.serving`` in results."""
        return {
            "requests": self.requests,
            "sent": self.sent,
            "cache_hits": self.cache_hits,
            "retries": {cause: self.retries[cause] for cause in CAUSES if self.retries[cause]},
            "infrastructure_errors": self.infrastructure_errors,
            "finish_length": self.finish_length,
            "longest_wait_s": round(self.longest_wait_s, 3),
            "rejected": self.rejected[:20],
        }

    def summary(self) -> str:
        """One line for the log."""
        retries = sum(self.retries.values())
        causes = ", ".join(f"{cause} {self.retries[cause]}" for cause in CAUSES if self.retries[cause])
        text = f"{self.requests} requests, {self.cache_hits} from the response cache, {retries} retried"
        text += f" ({causes})" if causes else ""
        if self.infrastructure_errors:
            text += f", {self.infrastructure_errors} recorded as infrastructure errors"
        if self.finish_length:
            text += f", {self.finish_length} cut at the token limit"
        return text + f"; longest wait for one answer {self.longest_wait_s:.0f} s"


class RetryLog:
    """Warnings about retries without flooding the log: the first of each cause at once,
    then one line with the counts at most every ``every`` seconds."""

    def __init__(self, label: str, every: float = 15.0) -> None:
        self.label, self.every = redact_text(label), every  # never a URL's credentials
        self._seen: set[str] = set()
        self._pending: Counter = Counter()
        self._last = time.monotonic()

    def note(self, cause: str, detail: str, wait: float) -> None:
        """Record one retry and log when it is the first of its cause or a summary is due."""
        if cause not in self._seen:
            self._seen.add(cause)
            logger.warning("%s: %s; retrying in %.1f s (further retries are summarised)", self.label, detail, wait)
            return
        self._pending[cause] += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            counts = ", ".join(f"{c} {n}" for c, n in sorted(self._pending.items()))
            logger.warning("%s: still retrying (%s in the last %.0f s)", self.label, counts, now - self._last)
            self._pending.clear()
            self._last = now


class AdaptiveLimit:
    """At most ``limit`` requests in flight; 429s halve the limit, successes raise it by
    one (up to ``maximum``) after ``limit`` of them in a row."""

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, int(maximum))
        self.limit = self.maximum
        self.active = 0
        self._successes = 0
        self._condition: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def __aenter__(self) -> AdaptiveLimit:
        async with self._cond():
            await self._cond().wait_for(lambda: self.active < self.limit)
            self.active += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond():
            self.active -= 1
            self._cond().notify_all()

    def throttled(self) -> None:
        """The server said 429: halve the number of requests in flight."""
        if self.limit > 1:
            self.limit = max(1, self.limit // 2)
            logger.info("server busy (429): at most %d request(s) in flight", self.limit)
        self._successes = 0

    def succeeded(self) -> None:
        """A request was answered: after ``limit`` successes in a row, allow one more."""
        self._successes += 1
        if self.limit < self.maximum and self._successes >= self.limit:
            self.limit += 1
            self._successes = 0


@dataclass
class Failure:
    """One failed try: its cause, a short description and the server's Retry-After."""

    cause: str
    detail: str
    retry_after: float | None = None


def _budget_message(url: str, failures: list[Failure], spent: float, policy: RetryPolicy) -> str:
    causes = Counter(f.cause for f in failures)
    counts = ", ".join(f"{c} {n}" for c, n in sorted(causes.items()))
    return (
        f"{redact_url(url)}: no valid answer after {len(failures)} tries over {spent:.0f} s "
        f"(retry budget {policy.budget:.0f} s; {counts}); last: {failures[-1].detail}"
    )


async def apost(
    session: Any,
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str],
    validate: Callable[[Any], Any],
    policy: RetryPolicy,
    limit: AdaptiveLimit,
    stats: EndpointStats,
    log: RetryLog,
    timeout: float,
) -> tuple[Any, float]:
    """POST ``payload`` with aiohttp until ``validate(body)`` accepts an answer.

    Returns ``(validate(body), seconds)``. Raises :class:`RequestRejected` on a status
    that is not retried and :class:`RetryBudgetSpent` when the budget is spent.
    """
    import aiohttp

    started = time.monotonic()
    failures: list[Failure] = []
    attempt = 0
    while True:
        failure: Failure
        async with limit:
            stats.sent += 1
            try:
                async with session.post(url, json=payload, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except TimeoutError:
                failure = Failure("timeout", f"no answer within {timeout:g} s")
            except aiohttp.ClientError as exc:
                failure = Failure("connection", f"{type(exc).__name__}: {exc}".rstrip(": "))
            else:
                if 200 <= status <= 299:
                    try:
                        result = validate(parse_body(raw))
                    except InvalidResponse as exc:
                        failure = Failure("invalid_response", f"HTTP {status} but {exc}")
                    else:
                        limit.succeeded()
                        return result, time.monotonic() - started
                elif retryable_status(status):
                    failure = Failure(status_cause(status), f"HTTP {status}: {_snippet(raw)}", retry_after)
                    if status == 429:
                        limit.throttled()
                else:
                    raise RequestRejected(f"HTTP {status}: {_snippet(raw)}", status)
        failures.append(failure)
        wait = policy.wait(attempt, failure.retry_after)
        spent = time.monotonic() - started
        if spent + wait > policy.budget:
            raise RetryBudgetSpent(_budget_message(url, failures, spent, policy))
        stats.retries[failure.cause] += 1
        log.note(failure.cause, failure.detail, wait)
        await asyncio.sleep(wait)
        attempt += 1


def post(
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str],
    validate: Callable[[Any], Any],
    policy: RetryPolicy,
    timeout: float,
    log: RetryLog | None = None,
    stats: EndpointStats | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Any, float]:
    """The blocking counterpart of :func:`apost` (``requests``), for one caller at a time."""
    import requests

    log = log or RetryLog(url)
    stats = stats if stats is not None else EndpointStats()
    started = time.monotonic()
    failures: list[Failure] = []
    attempt = 0
    while True:
        stats.sent += 1
        try:
            response = requests.post(url, json=payload, headers=headers, timeout=timeout)
        except requests.Timeout:
            failure = Failure("timeout", f"no answer within {timeout:g} s")
        except requests.ConnectionError as exc:
            failure = Failure("connection", f"{type(exc).__name__}: {exc}")
        else:
            status, raw = response.status_code, response.content
            if 200 <= status <= 299:
                try:
                    return validate(parse_body(raw)), time.monotonic() - started
                except InvalidResponse as exc:
                    failure = Failure("invalid_response", f"HTTP {status} but {exc}")
            elif retryable_status(status):
                failure = Failure(status_cause(status), f"HTTP {status}: {_snippet(raw)}", retry_after_seconds(response.headers.get("Retry-After")))
            else:
                raise RequestRejected(f"{redact_url(url)}: HTTP {status}: {_snippet(raw)}", status)
        failures.append(failure)
        wait = policy.wait(attempt, failure.retry_after)
        spent = time.monotonic() - started
        if spent + wait > policy.budget:
            raise RetryBudgetSpent(_budget_message(url, failures, spent, policy))
        stats.retries[failure.cause] += 1
        log.note(failure.cause, failure.detail, wait)
        sleep(wait)
        attempt += 1


def _snippet(raw: bytes, size: int = 200) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return (text[:size] + "...") if len(text) > size else (text or "(empty body)")

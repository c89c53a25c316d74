"""OpenAI-compatible API backends for a real server: distinct seeds per sample, retries,
answers validated, nothing already answered lost.

Registered names: ``radsafe-local-completions`` and ``radsafe-local-chat-completions``
(importing this module registers them; ``radsafe eval`` does so before lm-eval starts).
They take the model arguments of lm-eval's ``local-completions`` and
``local-chat-completions`` plus:

- ``retry_budget`` (seconds, default 600): how long one request keeps being retried
  (connection errors, timeouts, 429, 5xx, invalid responses) before the run stops;
- ``response_cache`` (a file, or ``off``): where answers are kept as they arrive, so the
  same command run again sends only what is missing (default: see
  :mod:`lm_eval_radsafe.response_cache`);
- ``on_reject`` (``stop`` or ``record``): what a request the server refuses with a 4xx
  does: stop the run naming the task and item (default), or record the item as an
  infrastructure error and go on (``radsafe report`` then refuses to score the run).

Seeds: the k-th repeat of a request (counted per task, item and request index) is sent
with ``seed + k``, so the 20 samples of a self-consistency item differ on a server that
honours seeds (vLLM), and a sample's seed depends on nothing else (other tasks, order,
batching, concurrency, retries). Greedy tasks send the base seed, as lm-eval does.
:func:`check_sampling_backend` refuses sampled tasks on a backend that repeats one seed.
The rules for retries and valid answers live in :mod:`lm_eval_radsafe.endpoint`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models import api_models
from lm_eval.models.api_models import TemplateAPI
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

from lm_eval_radsafe.endpoint import (
    DEFAULT_RETRY_BUDGET,
    AdaptiveLimit,
    EndpointError,
    EndpointStats,
    RequestRejected,
    RetryBudgetSpent,
    RetryLog,
    RetryPolicy,
    apost,
    completion_choices,
)
from lm_eval_radsafe.response_cache import ResponseCache, default_cache_path, request_key

logger = logging.getLogger("lm_eval_radsafe")
#: the text of a well-formed reply whose content is null: lm-eval 0.4's placeholder
#: (``$LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER``, default empty); lm-eval 0.5 has none, so empty
NONE_ANSWER: str = getattr(api_models, "LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER", "")

#: our seed-varying backends, by the stock backend they replace
SEED_VARYING = {
    "local-chat-completions": "radsafe-local-chat-completions",
    "local-completions": "radsafe-local-completions",
}
ON_REJECT = ("stop", "record")


def request_seeds(requests: Iterable[Any], base_seed: int) -> list[int]:
    """``base_seed + k`` for each request, k its repeat index: the number of earlier
    requests in ``requests`` for the same task, item and request index."""
    seen: Counter = Counter()
    seeds = []
    for request in requests:
        key = (request.task_name, request.doc_id, request.idx)
        seeds.append(int(base_seed) + seen[key])
        seen[key] += 1
    return seeds


class _Job:
    """One request as it will be sent for one prompt."""

    __slots__ = ("choice", "doc_id", "key", "payload", "prompt", "task")

    def __init__(self, task: str, doc_id: Any, payload: dict[str, Any], prompt: Any, key: str) -> None:
        self.task, self.doc_id, self.payload, self.prompt, self.key = task, doc_id, payload, prompt, key
        self.choice: dict[str, Any] | None = None


class RadSafeAPIMixin:
    """Generation for :class:`TemplateAPI` backends with per-sample seeds, retries under a
    time budget, validated answers, a response cache and per-task counts
    (``endpoint_stats``)."""

    _seed: int
    _concurrent: int
    _batch_size: int

    def __init__(
        self,
        *args: Any,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
        response_cache: str | None = None,
        on_reject: str = "stop",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        try:
            self.retry_policy = RetryPolicy(budget=float(retry_budget))
        except (TypeError, ValueError):
            raise ValueError(f"retry_budget must be a number of seconds >= 0, got {retry_budget!r}") from None
        if on_reject not in ON_REJECT:
            raise ValueError(f"on_reject must be one of {', '.join(ON_REJECT)}, got {on_reject!r}")
        self.on_reject = on_reject
        self.response_cache_path = default_cache_path(response_cache)
        #: task -> what the server did for it, over every call of this backend
        self.endpoint_stats: dict[str, EndpointStats] = {}

    # ------------------------------------------------------------------ building requests

    @property
    def _chat(self) -> bool:
        return isinstance(self, LocalChatCompletion)

    def _message(self, context: Any, gen_kwargs: dict[str, Any]) -> Any:
        """The prompt as the API takes it: chat messages, token ids or a string."""
        if not self.tokenized_requests:  # type: ignore[attr-defined]
            return context
        ids = self.tok_encode(context, add_special_tokens=self.add_bos_token)  # type: ignore[attr-defined]
        keep = self.max_length - int(gen_kwargs.get("max_gen_toks", self._max_gen_toks))  # type: ignore[attr-defined]
        if len(ids) > keep:
            logger.warning("a prompt of %d tokens was cut to its last %d (max_length minus max_gen_toks)", len(ids), keep)
            ids = ids[-keep:]
        return ids

    def _jobs(self, requests: list[Any]) -> list[_Job]:
        field = "messages" if self._chat else "prompt"
        jobs = []
        for request, seed in zip(requests, request_seeds(requests, self._seed)):
            context, gen_kwargs = request.args[0], request.args[1]
            message = self.create_message([self._message(context, gen_kwargs)])  # type: ignore[attr-defined]
            payload = self._create_payload(  # type: ignore[attr-defined]
                message, generate=True, gen_kwargs=copy.deepcopy(gen_kwargs), seed=seed, eos=self.eos_string  # type: ignore[attr-defined]
            )
            prompt = payload[field][0] if isinstance(payload[field], list) and not self._chat else payload[field]
            jobs.append(_Job(str(request.task_name), request.doc_id, payload, prompt, request_key(payload, field, prompt)))
        return jobs

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Requests to send: one prompt each, or up to ``batch_size`` prompts of one task
        with the same settings and seed (completions only)."""
        if self._chat or self._batch_size <= 1:
            return [[job] for job in jobs]
        groups: dict[tuple[str, str], list[list[_Job]]] = {}
        for job in jobs:
            settings = request_key(job.payload, "prompt", None)
            runs = groups.setdefault((job.task, settings), [[]])
            if len(runs[-1]) >= self._batch_size:
                runs.append([])
            runs[-1].append(job)
        return [group for runs in groups.values() for group in runs if group]

    # ------------------------------------------------------------------ answers

    def _text(self, choice: dict[str, Any]) -> str:
        out = self.parse_generations(outputs={"choices": [{**choice, "index": 0}]})[0]  # type: ignore[attr-defined]
        return NONE_ANSWER if out is None else out

    def _stats(self, task: str) -> EndpointStats:
        return self.endpoint_stats.setdefault(task, EndpointStats())

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Answer every request: from the response cache when it holds the answer, else from
        the server (retried and validated); stop with a resume hint when one cannot be had."""
        if not requests:
            return []
        if any(len(r.args) > 2 for r in requests):
            raise ValueError("requests with images are not supported by the radsafe API backends")
        jobs = self._jobs(requests)
        cache = ResponseCache(self.response_cache_path) if self.response_cache_path else None
        try:
            pending: dict[str, _Job] = {}
            for job in jobs:
                self._stats(job.task).requests += 1
                stored = cache.get(job.key) if cache is not None else None
                if stored is not None:
                    job.choice = stored
                    self._stats(job.task).cache_hits += 1
                else:
                    pending.setdefault(job.key, job)
            if pending:
                try:
                    asyncio.run(self._send(self._groups(list(pending.values())), cache, disable_tqdm))
                except EndpointError as exc:
                    kept = (
                        f"{len(cache)} answers are kept in {cache.path}; run the same command again to send only the missing ones"
                        if cache is not None
                        else "the response cache is off (response_cache=off), so a new run sends every request again"
                    )
                    if isinstance(exc, RequestRejected):
                        raise RequestRejected(f"{exc}. {kept}", exc.status) from None
                    raise type(exc)(f"{exc}. {kept}") from None
                except KeyboardInterrupt:
                    if cache is not None:
                        logger.warning(
                            "interrupted: %d answers are kept in %s; run the same command again to send only the missing ones",
                            len(cache),
                            cache.path,
                        )
                    raise
        finally:
            if cache is not None:
                cache.close()
        out = []
        for request, job in zip(requests, jobs):
            choice = job.choice if job.choice is not None else pending[job.key].choice
            if choice is None:  # recorded as an infrastructure error (on_reject=record)
                out.append(NONE_ANSWER)
                continue
            if choice.get("finish_reason") == "length":
                self._stats(job.task).finish_length += 1
            text = self._text(choice)
            out.append(text)
            self.cache_hook.add_partial("generate_until", (request.args[0], request.args[1]), text)  # type: ignore[attr-defined]
        total = EndpointStats()
        for task in sorted({job.task for job in jobs}):
            total.merge(self.endpoint_stats[task])
        log = logger.warning if total.retries or total.infrastructure_errors else logger.info
        log("%s: %s", self.model, total.summary())  # type: ignore[attr-defined]
        return out

    async def _send(self, groups: list[list[_Job]], cache: ResponseCache | None, disable_tqdm: bool) -> None:
        import aiohttp
        from tqdm import tqdm

        limit = AdaptiveLimit(self._concurrent)
        log = RetryLog(f"{self.model} at {self.base_url}")  # type: ignore[attr-defined]
        ssl: Any = self.verify_certificate  # type: ignore[attr-defined]
        if getattr(self, "ca_cert_path", None):
            import ssl as ssl_module

            ssl = ssl_module.create_default_context(cafile=self.ca_cert_path)  # type: ignore[attr-defined]
        progress = tqdm(total=sum(len(g) for g in groups), desc="Requesting API", disable=disable_tqdm)
        connector = aiohttp.TCPConnector(limit=max(1, self._concurrent), ssl=ssl)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(self._send_group(session, group, cache, limit, log, progress)) for group in groups]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                progress.close()

    async def _send_group(self, session: Any, group: list[_Job], cache: ResponseCache | None, limit: AdaptiveLimit, log: RetryLog, progress: Any) -> None:
        first = group[0]
        stats = self._stats(first.task)
        payload = first.payload if len(group) == 1 else {**first.payload, "prompt": [job.prompt for job in group]}
        where = f"{first.task} item {first.doc_id}" + (f" (and {len(group) - 1} more in the batch)" if len(group) > 1 else "")
        try:
            choices, seconds = await apost(
                session,
                self.base_url,  # type: ignore[attr-defined]
                payload,
                headers=self.header,  # type: ignore[attr-defined]
                validate=lambda body: completion_choices(body, len(group), self._chat),
                policy=self.retry_policy,
                limit=limit,
                stats=stats,
                log=log,
                timeout=float(self.timeout),  # type: ignore[attr-defined]
            )
        except RequestRejected as exc:
            if self.on_reject == "record":
                stats.infrastructure_errors += len(group)
                stats.rejected.extend({"doc_id": job.doc_id, "status": exc.status, "error": str(exc)[:200]} for job in group)
                logger.warning("%s: the server rejected the request (%s); recorded as an infrastructure error", where, exc)
                progress.update(len(group))
                return
            raise RequestRejected(
                f"{where}: the server rejected the request, not retried: {exc}. "
                "To record such items as infrastructure errors and go on, add on_reject=record to --model_args",
                exc.status,
            ) from None
        except RetryBudgetSpent as exc:
            raise RetryBudgetSpent(f"{where}: {exc}") from None
        stats.longest_wait_s = max(stats.longest_wait_s, seconds)
        for job, choice in zip(group, choices):
            job.choice = choice
            if cache is not None:
                cache.put(job.key, choice, str(self.model))  # type: ignore[attr-defined]
        progress.update(len(group))


@register_model("radsafe-local-completions")
class RadSafeLocalCompletions(RadSafeAPIMixin, LocalCompletionsAPI):
    """``local-completions`` with distinct seeds per sample, retries, validated answers
    and a response cache."""


@register_model("radsafe-local-chat-completions")
class RadSafeLocalChatCompletions(RadSafeAPIMixin, LocalChatCompletion):
    """``local-chat-completions`` with distinct seeds per sample, retries, validated
    answers and a response cache."""


class SamplingBackendError(ValueError):
    """Sampled tasks on a backend that would send one seed with every repeat."""


class ChatTemplateError(ValueError):
    """A chat-completions backend run without ``--apply_chat_template``."""


def check_chat_backend(lm: Any, apply_chat_template: Any) -> None:
    """Refuse a chat-completions backend without ``--apply_chat_template`` before any request
    (lm-eval would fail on every request, retrying each)."""
    inner = getattr(lm, "lm", lm)
    if isinstance(inner, LocalChatCompletion) and not apply_chat_template:
        raise ChatTemplateError(
            f"the {type(inner).__name__} backend sends chat messages: add --apply_chat_template "
            "(or use a completions backend for raw prompts)"
        )


def _leaf_tasks(task_dict: Any) -> list[Any]:
    tasks = []
    for value in task_dict.values():
        tasks.extend(_leaf_tasks(value) if isinstance(value, dict) else [value])
    return tasks


def sampled_tasks(task_dict: Any) -> list[str]:
    """Names of the tasks in lm-eval's ``task_dict`` that draw several samples per request."""
    names = []
    for task in _leaf_tasks(task_dict):
        config = getattr(task, "config", None)
        if config is None:
            continue
        generation = config.generation_kwargs or {}
        if int(config.repeats or 1) > 1 and generation.get("do_sample"):
            names.append(str(config.task))
    return sorted(names)


def check_sampling_backend(lm: Any, task_dict: Any) -> None:
    """Refuse sampled tasks (``_sc``) on an API backend that repeats one seed.

    lm-eval's API backends send the same seed with every repeat, so a server that honours
    seeds (vLLM) returns identical samples: confidence 1.0 and a silently wrong
    self-consistency. Raises :class:`SamplingBackendError` naming the backend to use.
    """
    inner = getattr(lm, "lm", lm)  # lm-eval's CachingLM wraps the model
    if not isinstance(inner, TemplateAPI) or isinstance(inner, RadSafeAPIMixin):
        return
    sampled = sampled_tasks(task_dict)
    if not sampled:
        return
    chat = isinstance(inner, LocalChatCompletion)
    ours = SEED_VARYING["local-chat-completions" if chat else "local-completions"]
    shown = ", ".join(sampled[:3]) + (f" and {len(sampled) - 3} more" if len(sampled) > 3 else "")
    raise SamplingBackendError(
        f"{shown}: self-consistency needs a distinct seed per sample, but lm-eval's {type(inner).__name__} backend "
        f"sends one seed with every repeat, so a server that honours seeds (vLLM) returns identical samples. "
        f"Use --model {ours} with the same model_args"
    )

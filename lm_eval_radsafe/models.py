"""OpenAI-compatible API backends that give every repeat of a prompt its own seed.

lm-eval's ``local-completions`` and ``local-chat-completions`` send the same ``seed``
(1234 or ``seed=``) with every request. A vLLM server honours per-request seeds, so the
20 repeats of a self-consistency task come back as 20 copies of one sample. These
subclasses send ``seed + k`` with the k-th repeat of a request, the repeat counted per
(task, item, request) within one call of the backend: the seed is a function of the base
seed, the task, the item and the repeat index only. Another task with the same prompt,
the order of requests, batching, concurrency and retries change nothing.

Registered names: ``radsafe-local-completions`` and ``radsafe-local-chat-completions``.
Importing this module registers them (``radsafe eval`` does so before lm-eval starts).
:func:`check_sampling_backend` refuses sampled tasks on a backend that repeats one seed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from lm_eval.api.registry import register_model
from lm_eval.models.api_models import TemplateAPI
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

#: our seed-varying backends, by the stock backend they replace
SEED_VARYING = {
    "local-chat-completions": "radsafe-local-chat-completions",
    "local-completions": "radsafe-local-completions",
}


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


class PerSampleSeedMixin:
    """Seed the k-th repeat of a generation request with ``seed + k``."""

    _seed: int

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """The parent's ``generate_until`` in rounds: round k sends the k-th repeat of every
        request, all with seed ``seed + k`` (concurrency within a round is kept)."""
        repeat = request_seeds(requests, 0)
        base = self._seed
        out: list[Any] = [None] * len(requests)
        try:
            for k in sorted(set(repeat)):
                positions = [i for i, r in enumerate(repeat) if r == k]
                self._seed = base + k
                replies = super().generate_until([requests[i] for i in positions], disable_tqdm=disable_tqdm)  # type: ignore[misc]
                if len(replies) != len(positions):
                    raise RuntimeError(f"the backend returned {len(replies)} replies for {len(positions)} requests")
                for i, reply in zip(positions, replies):
                    out[i] = reply
        finally:
            self._seed = base
        return out


@register_model("radsafe-local-completions")
class RadSafeLocalCompletions(PerSampleSeedMixin, LocalCompletionsAPI):
    """``local-completions`` with a distinct seed for every repeat of a prompt."""


@register_model("radsafe-local-chat-completions")
class RadSafeLocalChatCompletions(PerSampleSeedMixin, LocalChatCompletion):
    """``local-chat-completions`` with a distinct seed for every repeat of a prompt."""


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
    if not isinstance(inner, TemplateAPI) or isinstance(inner, PerSampleSeedMixin):
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

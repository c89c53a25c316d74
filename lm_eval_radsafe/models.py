"""OpenAI-compatible API backends that give every repeat of a prompt its own seed.

lm-eval's ``local-completions`` and ``local-chat-completions`` send the same ``seed``
(1234 or ``seed=``) with every request. A vLLM server honours per-request seeds, so the
20 repeats of a self-consistency task come back as 20 copies of one sample. These
subclasses send ``seed + k`` with the k-th request for the same prompt (k = 0, 1, ...),
whatever the order or concurrency, so samples are distinct and the run is reproducible.

Registered names: ``radsafe-local-completions`` and ``radsafe-local-chat-completions``.
Importing this module registers them (``radsafe eval`` does so before lm-eval starts).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI


class PerSampleSeedMixin:
    """Seed the k-th generation request for the same prompt with ``seed + k``."""

    _seen: Counter

    def _check_one_prompt_per_request(self) -> None:
        if getattr(self, "_batch_size", 1) > 1:
            raise ValueError(
                f"{type(self).__name__} sends one prompt per request so that every repeat gets its own "
                f"seed; batch_size must be 1 (got {self._batch_size}). Use num_concurrent for throughput."
            )

    def _create_payload(  # type: ignore[override]
        self,
        messages: Any,
        generate: bool = False,
        gen_kwargs: dict | None = None,
        seed: int = 1234,
        eos: Any = None,
        **kwargs: Any,
    ) -> dict:
        """The parent's payload with ``seed`` replaced by ``seed + k`` for generation."""
        if generate:
            if not hasattr(self, "_seen"):
                self._seen = Counter()
            key = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode("utf-8")).hexdigest()
            seed = int(seed) + self._seen[key]
            self._seen[key] += 1
        return super()._create_payload(messages, generate=generate, gen_kwargs=gen_kwargs, seed=seed, eos=eos, **kwargs)  # type: ignore[misc]


@register_model("radsafe-local-completions")
class RadSafeLocalCompletions(PerSampleSeedMixin, LocalCompletionsAPI):
    """``local-completions`` with a distinct seed for every repeat of a prompt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_one_prompt_per_request()


@register_model("radsafe-local-chat-completions")
class RadSafeLocalChatCompletions(PerSampleSeedMixin, LocalChatCompletion):
    """``local-chat-completions`` with a distinct seed for every repeat of a prompt."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_one_prompt_per_request()

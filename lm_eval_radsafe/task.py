"""The lm-eval task classes of every radsafe task: lm-eval's own, plus provenance in the
dumped config (see :mod:`lm_eval_radsafe.provenance`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lm_eval_radsafe.provenance import PROVENANCE_KEY, attached
from lm_eval_radsafe.redaction import redact_args


def _bases() -> tuple[type, type]:
    """lm-eval's task classes for generated and multiple-choice output: one configurable
    class on 0.4, one class per output type on 0.5."""
    try:
        from lm_eval.api.task import GenerateTask, MultipleChoiceTask  # lm-eval >= 0.5

        return GenerateTask, MultipleChoiceTask
    except ImportError:
        from lm_eval.api.task import ConfigurableTask

        return ConfigurableTask, ConfigurableTask


_GENERATE, _CHOICE = _bases()


class _Provenance:
    """Accepts the YAML config (without its ``class`` key) and dumps it with provenance."""

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)  # type: ignore[call-arg]
        # lm-eval 0.4 reads the items while building the task; 0.5 on first use of
        # ``dataset``. Read them now on both, so that a condition that cannot run (no
        # prepared folder, empty evidence, a window too small) fails when the task is
        # loaded on both, and a tag of `radsafe eval` can leave it out.
        self.dataset  # type: ignore[attr-defined]  # noqa: B018

    def dump_config(self) -> dict[str, Any]:
        """lm-eval's config dump with ``metadata.radsafe`` (this task's provenance) and no
        credential: lm-eval merges the model arguments into every task's metadata, and the
        dump is written into the results file."""
        dumped = super().dump_config()  # type: ignore[misc]
        metadata = redact_args(dict(dumped.get("metadata") or {}))
        record = attached(self.dataset)  # type: ignore[attr-defined]
        if record is not None:
            metadata[PROVENANCE_KEY] = record
        dumped["metadata"] = metadata
        return dumped


class RadSafeTask(_Provenance, _GENERATE):  # type: ignore[misc,valid-type]
    """A generated-answer radsafe task (greedy, self-consistency, reasoning)."""


class RadSafePermTask(RadSafeTask):
    """An option-order radsafe task (the ``_perm`` regime): one greedy request per option
    order of each item (:mod:`lm_eval_radsafe.option_order`), the first in the original
    order; the filtered letters reach ``process_results`` in order."""

    def construct_requests(self, doc: dict[str, Any], ctx: Any, **kwargs: Any) -> list[Any]:
        """lm-eval's request for the original order, then one per other order: the same
        context (system prompt, chat template) with the user message of that order in place
        of the original's. ``ValueError`` when the context does not hold the original user
        message exactly once in any known form."""
        from lm_eval_radsafe.harness import order_texts

        texts = order_texts(doc)
        requests = []
        for index, text in enumerate(texts):
            made = super().construct_requests(doc, ctx if index == 0 else _swapped(ctx, texts[0], text, doc), **kwargs)
            request = made[0] if isinstance(made, list) else made
            request.idx = index
            requests.append(request)
        return requests


def _swapped(ctx: Any, original: str, text: str, doc: dict[str, Any]) -> Any:
    """``ctx`` with the user message ``original`` replaced by ``text``: in a plain string or a
    rendered chat template, or JSON-escaped in the messages an API model sends (lm-eval's
    ``JsonChatStr``, a named tuple with a ``prompt``)."""
    import json

    prompt = ctx if isinstance(ctx, str) else getattr(ctx, "prompt", None)
    if not isinstance(prompt, str):
        raise ValueError(f"item {doc.get('id')!r}: cannot reorder the options of a {type(ctx).__name__} context")
    for encode in (lambda t: t, lambda t: json.dumps(t, ensure_ascii=False)[1:-1], lambda t: json.dumps(t)[1:-1]):
        old, new = encode(original), encode(text)
        if prompt.count(old) == 1:
            swapped = prompt.replace(old, new)
            return swapped if isinstance(ctx, str) else ctx._replace(prompt=swapped)
    raise ValueError(
        f"item {doc.get('id')!r}: the prompt does not hold the item's user message exactly once, so its options "
        "cannot be reordered (a custom doc_to_text or few-shot examples?)"
    )


class RadSafeChoiceTask(_Provenance, _CHOICE):  # type: ignore[misc,valid-type]
    """A log-likelihood radsafe task (the ``_ll`` regime)."""

"""The lm-eval task classes of every radsafe task: lm-eval's own, plus provenance in the
dumped config (see :mod:`lm_eval_radsafe.provenance`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lm_eval_radsafe.provenance import PROVENANCE_KEY, attached


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

    def dump_config(self) -> dict[str, Any]:
        """lm-eval's config dump with ``metadata.radsafe``: this task's provenance."""
        dumped = super().dump_config()  # type: ignore[misc]
        record = attached(self.dataset)  # type: ignore[attr-defined]
        if record is not None:
            dumped["metadata"] = {**(dumped.get("metadata") or {}), PROVENANCE_KEY: record}
        return dumped


class RadSafeTask(_Provenance, _GENERATE):  # type: ignore[misc,valid-type]
    """A generated-answer radsafe task (greedy, self-consistency, reasoning)."""


class RadSafeChoiceTask(_Provenance, _CHOICE):  # type: ignore[misc,valid-type]
    """A log-likelihood radsafe task (the ``_ll`` regime)."""

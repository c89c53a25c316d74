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


class RadSafeChoiceTask(_Provenance, _CHOICE):  # type: ignore[misc,valid-type]
    """A log-likelihood radsafe task (the ``_ll`` regime)."""

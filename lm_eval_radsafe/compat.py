"""Every change `radsafe eval` makes to lm-eval at run time, and nothing else, lives here.

lm-eval has no seam for three things `radsafe eval` does, so it replaces three attributes
for the length of one run and puts the originals back afterwards (:func:`patched`):

=========================================================  =====================================
``lm_eval.tasks._factory.TaskFactory.build``               a ``radsafe*`` tag leaves out the
                                                           conditions that cannot run
``lm_eval.tasks.manager.TaskManager.__init__``             our task folder is always included
``lm_eval.evaluator.evaluate``                             backend checks before any request,
                                                           request timing and server counts in
                                                           the results' ``radsafe`` block,
                                                           warnings after
=========================================================  =====================================

One more, only inside ``radsafe sweep`` runs of an in-process model (``vllm``, ``hf``),
where one process runs several cells of the same model:

=========================================================  =====================================
``lm_eval.api.model.LM.create_from_arg_string``            the model built for the first cell
``lm_eval.api.model.LM.create_from_arg_obj``               is handed to the next ones with the
                                                           same arguments (one load per model)
=========================================================  =====================================

Each task's provenance (dataset, evidence, package version) needs no patch: the task class
puts it in the task's config (:mod:`lm_eval_radsafe.task`), which lm-eval writes into every
results file, plain ``lm_eval`` runs included.

Nothing is patched at import, by ``task_manager()`` or by plain ``lm_eval``. Before
patching, :func:`check` verifies the installed lm-eval: its version is in
:data:`SUPPORTED` and every patched name exists with the parameters we call it with
(a test asserts the same, so an lm-eval release that moves one fails in CI, not for users).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: lm-eval versions the package is tested with (kept in step with setup.cfg)
SUPPORTED = (">=0.4.12", "<0.6")


@dataclass(frozen=True)
class Target:
    """One attribute we replace: ``module``, dotted ``owner.attr`` path, and the parameter
    names our replacement relies on."""

    module: str
    path: str
    parameters: tuple[str, ...]

    def resolve(self) -> tuple[Any, str, Any]:
        """(object holding the attribute, attribute name, current value)."""
        holder: Any = importlib.import_module(self.module)
        *owners, name = self.path.split(".")
        for owner in owners:
            holder = getattr(holder, owner)
        return holder, name, getattr(holder, name)


TASK_BUILD = Target("lm_eval.tasks._factory", "TaskFactory.build", ("self", "entry", "overrides", "registry"))
MANAGER_INIT = Target("lm_eval.tasks.manager", "TaskManager.__init__", ("self", "include_path"))
EVALUATE = Target("lm_eval.evaluator", "evaluate", ("lm", "task_dict", "apply_chat_template"))
LM_FROM_ARGS = Target("lm_eval.api.model", "LM.create_from_arg_string", ("arg_string", "additional_config"))
LM_FROM_OBJ = Target("lm_eval.api.model", "LM.create_from_arg_obj", ("arg_dict", "additional_config"))
TARGETS = (TASK_BUILD, MANAGER_INIT, EVALUATE, LM_FROM_ARGS, LM_FROM_OBJ)


def reused_models() -> dict[Target, Callable[[Any], Any]]:
    """The replacements that build each in-process model once (for :func:`patched`): lm-eval
    builds from an argument string or, from its command line, an argument dict."""
    return {LM_FROM_ARGS: reusing_models, LM_FROM_OBJ: reusing_models}


def reusing_models(original: Any) -> Any:
    """A replacement of ``LM.create_from_arg_string`` or ``LM.create_from_arg_obj`` that
    builds each (class, arguments, settings) once and returns that instance again afterwards."""
    build = original.__func__ if hasattr(original, "__func__") else original
    built: dict[tuple[Any, str, str], Any] = {}

    def create(cls: Any, arguments: Any, additional_config: dict | None = None) -> Any:
        given = sorted(arguments.items()) if isinstance(arguments, dict) else arguments
        key = (cls, repr(given), repr(sorted((additional_config or {}).items())))
        if key not in built:
            built[key] = build(cls, arguments, additional_config)
        return built[key]

    create.__wrapped__ = build  # type: ignore[attr-defined]
    return classmethod(create)


class IncompatibleLmEval(RuntimeError):
    """The installed lm-eval lacks a name or parameter `radsafe eval` relies on."""


def lm_eval_version() -> str:
    """The installed lm-eval's version."""
    from importlib.metadata import version

    return version("lm_eval")


def problems() -> list[str]:
    """What is missing or changed in the installed lm-eval, one line each (empty: fine)."""
    from packaging.specifiers import SpecifierSet

    found = []
    installed = lm_eval_version()
    if not SpecifierSet(",".join(SUPPORTED), prereleases=True).contains(installed, prereleases=True):
        found.append(f"lm-eval {installed} is outside the supported range {','.join(SUPPORTED)}")
    for target in TARGETS:
        try:
            _, _, value = target.resolve()
        except (ImportError, AttributeError) as exc:
            found.append(f"{target.module}.{target.path} is missing ({exc})")
            continue
        value = getattr(value, "__wrapped__", value)
        parameters = inspect.signature(value).parameters
        missing = [p for p in target.parameters if p not in parameters]
        if missing:
            found.append(f"{target.module}.{target.path} has no parameter(s) {', '.join(missing)}")
    return found


def check() -> None:
    """Raise :class:`IncompatibleLmEval` naming every problem, with the supported range."""
    found = problems()
    if found:
        raise IncompatibleLmEval(
            "radsafe eval cannot hook into this lm-eval: " + "; ".join(found)
            + f". Install a supported version: pip install 'lm-eval{','.join(SUPPORTED)}', or run plain lm_eval --include_path \"$(radsafe tasks-path)\""
        )


@contextmanager
def patched(replacements: dict[Target, Callable[[Any], Any]]) -> Iterator[None]:
    """Within the block, each target's attribute is ``make(original)``; afterwards, the
    original again (also on errors). Checks the installed lm-eval first."""
    check()
    saved: list[tuple[Any, str, Any]] = []
    try:
        for target, make in replacements.items():
            holder, name, original = target.resolve()
            # a class keeps the descriptor (a classmethod), not the bound method getattr gives
            saved.append((holder, name, vars(holder).get(name, original) if isinstance(holder, type) else original))
            setattr(holder, name, make(original))
        yield
    finally:
        for holder, name, original in reversed(saved):
            setattr(holder, name, original)


def discovers_our_tasks() -> bool:
    """Whether lm-eval indexes our tasks without being given our folder: an lm-eval that
    discovers the ``lm_eval.tasks`` entry point of installed plugins. Then `radsafe eval`
    does not add the folder again (every task would be indexed twice, each with a warning).
    Found by asking a task manager with no include path for one of our tasks."""
    from lm_eval.tasks import TaskManager

    from lm_eval_radsafe.conditions import task_name

    return task_name("radsafe200", "closed_book", "greedy") in TaskManager(include_defaults=False).all_tasks


def save_run(tracker: Any, results: dict[str, Any], samples: dict[str, list[Any]]) -> None:
    """Write a run's results file and each task's samples file through ``tracker`` (an
    ``EvaluationTracker``), as lm-eval's own CLI does after ``simple_evaluate``."""
    tracker.save_results_aggregated(results=results, samples=samples)
    for task, task_samples in samples.items():
        tracker.save_results_samples(task_name=task, samples=task_samples)

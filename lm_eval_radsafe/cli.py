"""The ``radsafe`` command: tasks-path, eval, validate-data, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval_radsafe.assets import task_manager, tasks_dir  # noqa: F401  (task_manager re-exported)
from lm_eval_radsafe.provenance import PROVENANCE_KEY as RESULTS_KEY
from lm_eval_radsafe.provenance import RequestClock, results_block
from lm_eval_radsafe.redaction import redact_text

logger = logging.getLogger("lm_eval_radsafe")



#: tasks that an expansion left out because they cannot run here: (expansion, task, reason)
LEFT_OUT: list[tuple[str, str, str]] = []
#: task names that ``radsafe eval`` expanded from a pattern (``radsafe200_*``), by pattern
FROM_PATTERN: dict[str, str] = {}


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def left_out_summary(entries: list[tuple[str, str, str]]) -> str:
    """One line naming every left-out task, grouped by the reason it cannot run."""
    by_reason: dict[str, list[str]] = {}
    for _, task, reason in entries:
        by_reason.setdefault(reason, []).append(task)
    expansions = sorted({expansion for expansion, _, _ in entries})
    parts = [f"{', '.join(tasks)} ({reason})" for reason, tasks in by_reason.items()]
    return f"{' and '.join(expansions)}: left out {len(entries)} task(s) that cannot run with what was given: " + "; ".join(parts)


def leave_out_unfit_conditions(build: Any) -> Any:
    """``TaskFactory.build`` that, for a ``radsafe*`` tag (e.g. ``radsafe200_sc``) or a
    pattern given to ``radsafe eval``, leaves out a condition that cannot run with what the
    user gave (no prepared folder, no agent reports, a window too small) and names it in one
    warning line instead of failing the run. A task named on its own still fails with the
    reason. Installed only by :func:`radsafe_hooks`."""
    from lm_eval.tasks._index import Kind

    from lm_eval_radsafe.conditions import ConditionUnavailable

    def _build(self: Any, entry: Any, *, overrides: Any = None, registry: Any) -> Any:
        if entry.kind == Kind.TAG and str(entry.name).startswith("radsafe"):
            tasks, left = [], []
            for name in sorted(entry.tags):
                if name not in registry:
                    logger.warning("tag %r references unknown task %r, skipping", entry.name, name)
                    continue
                try:
                    tasks.append(self._build_task(registry[name], overrides))
                except ConditionUnavailable as exc:
                    left.append((entry.name, name, _reason(exc)))
            if left and not tasks:
                raise ConditionUnavailable(f"none of the tasks of {entry.name} can run: " + left_out_summary(left))
            if left:
                logger.warning(left_out_summary(left))
                LEFT_OUT.extend(left)
            return tasks
        if entry.name in FROM_PATTERN:
            try:
                return build(self, entry, overrides=overrides, registry=registry)
            except ConditionUnavailable as exc:
                LEFT_OUT.append((FROM_PATTERN[entry.name], entry.name, _reason(exc)))
                return []
        return build(self, entry, overrides=overrides, registry=registry)

    return _build


@dataclass
class Observed:
    """What the hooks of one `radsafe eval` run saw: the answering models' request clocks
    and our API backends (for their per-task server counts)."""

    clocks: list[RequestClock] = field(default_factory=list)
    endpoints: list[Any] = field(default_factory=list)
    #: the run's model arguments with credentials redacted, for the results file (None: as given)
    model_args: Any = None

    def serving(self) -> dict[str, Any]:
        """Task -> merged :class:`~lm_eval_radsafe.endpoint.EndpointStats` of our API backends."""
        return serving_stats(self.endpoints)

    def empty_output_warnings(self, chat_template: bool) -> list[str]:
        """One line per task whose generated outputs were all empty, with the likely fix."""
        return [line for clock in self.clocks for line in clock.empty_output_warnings(chat_template)]


def serving_stats(endpoints: Sequence[Any]) -> dict[str, Any]:
    """Task -> :class:`~lm_eval_radsafe.endpoint.EndpointStats` merged over ``endpoints``
    (API backends of ours): requests, retries by cause, cache hits, infrastructure errors."""
    from lm_eval_radsafe.endpoint import EndpointStats

    merged: dict[str, EndpointStats] = {}
    for lm in endpoints:
        for task, stats in getattr(lm, "endpoint_stats", {}).items():
            merged.setdefault(task, EndpointStats()).merge(stats)
    return merged


# --------------------------------------------------------------------------- eval


def _include_ours(init: Any) -> Any:
    def __init__(self: Any, *args: Any, include_path: Any = None, **kwargs: Any) -> None:
        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        # ours first: a user's --include_path is scanned later and may override a task
        init(self, *args, include_path=[str(tasks_dir()), *paths], **kwargs)

    return __init__


def _report_model_args(lm: Any, model_args: Any) -> None:
    """Make lm-eval write ``model_args`` (redacted) into the results file: it copies the
    arguments as given, then updates them from the model's ``get_model_info()``, which this
    wraps on the instance."""
    info = getattr(lm, "get_model_info", None)

    def get_model_info() -> dict[str, Any]:
        return {**(info() if info is not None else {}), "model_args": model_args}

    lm.get_model_info = get_model_info


def _checked_and_timed(evaluate: Any, observed: Observed) -> Any:
    def timed_evaluate(lm: Any, *args: Any, **kwargs: Any) -> Any:
        from lm_eval_radsafe.models import check_chat_backend, check_sampling_backend

        check_chat_backend(lm, kwargs.get("apply_chat_template"))
        inner = getattr(lm, "lm", lm)
        if hasattr(inner, "endpoint_stats") and inner not in observed.endpoints:
            observed.endpoints.append(inner)
        check_sampling_backend(lm, kwargs["task_dict"] if "task_dict" in kwargs else args[0])
        patterns = set(FROM_PATTERN.values())
        left = [entry for entry in LEFT_OUT if entry[0] in patterns]
        if left:
            logger.warning(left_out_summary(left))
        clock = RequestClock().install(lm)
        if clock not in observed.clocks:
            observed.clocks.append(clock)
        if observed.model_args is not None:
            _report_model_args(lm, observed.model_args)
        results = evaluate(*args, lm=lm, **kwargs)
        if isinstance(results, dict):  # None on ranks other than 0
            results[RESULTS_KEY] = results_block(results, clock, observed.serving())
        for line in clock.empty_output_warnings(bool(kwargs.get("apply_chat_template"))):
            logger.warning(line)
        return results

    return timed_evaluate


@contextmanager
def radsafe_hooks() -> Iterator[Observed]:
    """What `radsafe eval` and `radsafe demo` change in lm-eval for one run (see
    :mod:`lm_eval_radsafe.compat`): tags leave out conditions that cannot run, our tasks are
    always included, backends are checked before any request, requests are timed and
    results carry the ``radsafe`` block. Yields what the run observed; everything is put
    back when the block ends."""
    import lm_eval_radsafe.filters  # registers radsafe_strict_letter
    import lm_eval_radsafe.models  # noqa: F401  registers radsafe-local-(chat-)completions
    from lm_eval_radsafe import compat

    observed = Observed()
    compat.check()
    hooks = {
        compat.TASK_BUILD: leave_out_unfit_conditions,
        compat.EVALUATE: lambda evaluate: _checked_and_timed(evaluate, observed),
    }
    if not compat.discovers_our_tasks():
        hooks[compat.MANAGER_INIT] = _include_ours
    with compat.patched(hooks):
        yield observed


def written_results(output_path: str | None, since: float) -> list[Path]:
    """Results files lm-eval wrote under ``output_path`` (a folder, or a ``.json`` file
    name it suffixes with the date) since ``since`` (a ``time.time()``), oldest first."""
    if not output_path:
        return []
    path = Path(output_path).expanduser()
    found = path.parent.glob(f"{path.stem}_*.json") if path.suffix == ".json" else path.glob("**/results_*.json")
    fresh = [p for p in found if p.is_file() and p.stat().st_mtime >= since]
    return sorted(fresh, key=lambda p: p.stat().st_mtime)


_GLOB = set("*?[")


def our_names() -> dict[str, str]:
    """Every task, group and tag name of our task folder -> its kind."""
    import re

    names: dict[str, str] = {}
    for path in sorted(tasks_dir().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        group = re.search(r"^group:\s*(\S+)", text, re.MULTILINE)
        task = re.search(r"^task:\s*(\S+)", text, re.MULTILINE)
        if group:
            names[group.group(1)] = "group"
        elif task:
            names[task.group(1)] = "task"
        for tag in re.findall(r"^tag:\s*(\S+)", text, re.MULTILINE):
            names.setdefault(tag, "tag")
    return names


def _option_value(argv: list[str], flag: str) -> tuple[int, str] | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith(flag + "="):
            return i, arg
    return None


def expand_patterns(argv: list[str]) -> list[str]:
    """Replace each ``--tasks`` pattern that starts with ``radsafe`` (e.g. ``radsafe200_*``)
    by the tasks it matches, remembering them so that conditions that cannot run here are
    left out with a warning rather than failing the run."""
    import fnmatch

    found = _option_value(argv, "--tasks")
    if found is None:
        return argv
    index, value = found
    prefix, _, tasks = value.partition("=") if value.startswith("--tasks=") else ("", "", value)
    tasks_only = sorted(name for name, kind in our_names().items() if kind == "task")
    out = []
    for entry in tasks.split(","):
        if entry.startswith("radsafe") and _GLOB & set(entry) and not entry.endswith(".yaml"):
            matched = fnmatch.filter(tasks_only, entry)
            for name in matched:
                FROM_PATTERN.setdefault(name, entry)
            out.extend(matched or [entry])
        else:
            out.append(entry)
    argv = list(argv)
    joined = ",".join(dict.fromkeys(out))
    argv[index] = f"{prefix}={joined}" if prefix else joined
    return argv


def unknown_task_message(missing: str) -> str:
    """``Tasks not found`` with the closest of our names and how to list them."""
    import difflib

    names = list(our_names())
    lines = []
    for name in (m.strip() for m in missing.split(",")):
        if name:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            lines.append(f"unknown task {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return "; ".join(lines) + ". List the tasks with `radsafe eval ls tasks` (or `lm_eval ls tasks --include_path \"$(radsafe tasks-path)\"`)"


def run_eval(argv: Sequence[str]) -> int:
    """Run lm-eval's CLI with every argument passed through and our tasks included; known
    errors become one line (``--debug`` shows the traceback)."""
    argv = list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    for state in (LEFT_OUT, FROM_PATTERN):
        state.clear()  # a second run in one process starts afresh
    argv = expand_patterns(argv)
    argv, credentials = guard_credentials(argv)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    try:
        started = time.time()
        with credentials.in_effect(), radsafe_hooks() as observed:
            observed.model_args = credentials.redacted_model_args
            cli_evaluate()
    except Exception as exc:
        message = eval_error_message(exc)
        if message is None or debug:
            raise
        print(f"error: {redact_text(message, credentials.secrets)}", file=sys.stderr)
        return 1
    for line in observed.empty_output_warnings("--apply_chat_template" in argv):
        print(f"warning: {line}", file=sys.stderr)
    for task, stats in sorted(observed.serving().items()):
        if stats.infrastructure_errors:
            print(
                f"warning: {task}: {stats.infrastructure_errors} request(s) were rejected by the server and recorded as "
                "infrastructure errors, not model answers; `radsafe report` will not score this task until a rerun answers them",
                file=sys.stderr,
            )
    out = _option_value(argv, "--output_path") or _option_value(argv, "-o")
    output_path = (out[1].split("=", 1)[-1] if out[1].startswith("--") else out[1]) if out else None
    saved = written_results(output_path, started - 1)
    if saved:
        folder = output_path if output_path and not output_path.endswith(".json") else str(saved[-1].parent)
        print(f"results: {saved[-1]}")
        if "--log_samples" in argv or "-s" in argv:
            print(f"next: radsafe report {folder} --out {Path(folder) / 'report'}")
        else:
            print("next: run again with --log_samples to write the per-item samples that `radsafe report` reads")
    return 0


#: lm-eval backends that read the key from ``$OPENAI_API_KEY`` only: an ``api_key=`` model
#: argument never reaches their server, so `radsafe eval` moves it into the environment
ENV_KEY_BACKENDS = frozenset({
    "local-completions", "local-chat-completions", "openai-completions", "openai-chat-completions",
    "radsafe-local-completions", "radsafe-local-chat-completions",
})


@dataclass
class Credentials:
    """Credentials found in ``--model_args``: their values (to redact everywhere), the model
    arguments as the results file may show them, and an ``api_key`` moved into the
    environment for the length of the run."""

    secrets: set[str] = field(default_factory=set)
    redacted_model_args: Any = None
    environment: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def in_effect(self) -> Iterator[None]:
        """Within the block: the moved key in the environment, and every secret redacted in
        what is printed or logged. Both undone afterwards."""
        import os

        from lm_eval_radsafe.redaction import RedactingFilter, RedactingStream

        if not self.secrets and not self.environment:
            yield
            return
        saved_env = {name: os.environ.get(name) for name in self.environment}
        os.environ.update(self.environment)
        handlers = [h for h in logging.getLogger().handlers + logging.getLogger("lm_eval").handlers]
        log_filter = RedactingFilter(self.secrets)
        for handler in handlers:
            handler.addFilter(log_filter)
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = RedactingStream(sys.stdout, self.secrets), RedactingStream(sys.stderr, self.secrets)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            sys.stdout, sys.stderr = streams
            for handler in handlers:
                handler.removeFilter(log_filter)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def guard_credentials(argv: list[str]) -> tuple[list[str], Credentials]:
    """Find credentials in ``--model_args`` (``api_key``, ``*token*``, ``*secret*``, URL
    passwords and key parameters): warn that keys belong in the environment, move an
    ``api_key`` of a backend that only reads ``$OPENAI_API_KEY`` there, and return what to
    redact. The arguments are otherwise passed on unchanged (the backend may need them)."""
    from lm_eval_radsafe.redaction import redact_args, secret_values

    found = _option_value(argv, "--model_args")
    if found is None:
        return argv, Credentials()
    index, raw = found
    inline = raw.startswith("--model_args=")
    value = raw.split("=", 1)[1] if inline else raw
    parsed: Any = value
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
    secrets = secret_values(parsed)
    if not secrets:
        return argv, Credentials()
    model = _option_value(argv, "--model")
    backend = (model[1].split("=", 1)[1] if model[1].startswith("--model=") else model[1]) if model else ""
    environment: dict[str, str] = {}
    if backend in ENV_KEY_BACKENDS:
        if isinstance(parsed, dict) and parsed.get("api_key"):
            environment["OPENAI_API_KEY"] = str(parsed.pop("api_key"))
            value = json.dumps(parsed)
        elif isinstance(parsed, str):
            parts = [p for p in parsed.split(",") if p.partition("=")[0].strip() == "api_key"]
            if parts:
                environment["OPENAI_API_KEY"] = parts[-1].partition("=")[2]
                value = parsed = ",".join(p for p in parsed.split(",") if p.partition("=")[0].strip() != "api_key")
    argv = list(argv)
    argv[index] = f"--model_args={value}" if inline else value
    print(
        "warning: --model_args carries credentials; they are kept out of results, samples and logs, but a command line "
        "is visible to other users and kept in shell history: pass keys through the environment (OPENAI_API_KEY)"
        + ("; the api_key was moved to OPENAI_API_KEY for this run (this backend reads only that)" if environment else ""),
        file=sys.stderr,
    )
    if isinstance(parsed, str):  # as lm-eval itself parses k=v,k=v (numbers and booleans typed)
        from lm_eval.utils import simple_parse_args_string

        parsed = simple_parse_args_string(parsed)
    return argv, Credentials(secrets, redact_args(parsed), environment)


#: lm-eval 0.5's error for a task name it does not know
_UNKNOWN_SPEC = r"Spec '(.+)' is not a registered task/group/tag name or valid YAML path$"


def eval_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error `radsafe eval` knows, or None to show the traceback."""
    import re

    from lm_eval_radsafe.compat import IncompatibleLmEval
    from lm_eval_radsafe.conditions import ConditionUnavailable, MetadataError
    from lm_eval_radsafe.endpoint import EndpointError
    from lm_eval_radsafe.loaders import DatasetError, HubAccessError
    from lm_eval_radsafe.models import ChatTemplateError, SamplingBackendError

    text = str(exc)
    if isinstance(exc, ValueError) and text.startswith("Tasks not found:"):  # lm-eval 0.4
        return unknown_task_message(text.partition(":")[2])
    unknown = re.match(_UNKNOWN_SPEC, str(exc.args[0])) if isinstance(exc, KeyError) and exc.args else None
    if unknown:  # lm-eval 0.5 names the first unknown task only
        return unknown_task_message(unknown.group(1))
    if isinstance(exc, (ConditionUnavailable, MetadataError, DatasetError, HubAccessError, SamplingBackendError, ChatTemplateError, FileNotFoundError, EndpointError, IncompatibleLmEval)):
        return text
    from lm_eval_radsafe.retrieval.agentic import ReportsError
    from lm_eval_radsafe.retrieval.corpus import CorpusError
    from lm_eval_radsafe.retrieval.prepare import PreparedError

    if isinstance(exc, (ReportsError, PreparedError, CorpusError)):
        return text
    if isinstance(exc, ImportError) and "pip install" in text:
        return text
    return None


# --------------------------------------------------------------------------- validate-data


def summarize(loaded: Any) -> dict[str, Any]:
    """Counts that describe a dataset: items, subspecialties, option counts, flags, stems."""
    from lm_eval_radsafe.items import FLAG_NAMES

    items = loaded.items
    flags = {name: sum(opt.flag(name) for it in items for opt in it.options) for name in FLAG_NAMES}
    flagged_correct = [it.id for it in items if any(it.option(it.answer).flag(n) for n in FLAG_NAMES)]  # type: ignore[union-attr]
    return {
        "source": loaded.source,
        "fingerprint": loaded.fingerprint,
        "items": len(items),
        "subspecialties": dict(sorted(Counter(it.subspecialty or "(none)" for it in items).items())),
        "question_types": dict(sorted(Counter(it.question_type or "(none)" for it in items).items())),
        "options_per_item": dict(sorted(Counter(len(it.options) for it in items).items())),
        "answer_letters": dict(sorted(Counter(it.answer for it in items).items())),
        "flagged_options": flags,
        "items_with_any_flag": sum(any(o.high_risk or o.unsafe or o.contradicts for o in it.options) for it in items),
        "negated_stems": sum(it.negated for it in items),
        "items_with_flagged_correct_option": len(flagged_correct),
        "with_clean_evidence": sum(bool(it.clean_evidence.strip()) for it in items),
        "with_conflict_evidence": sum(bool(it.conflict_evidence.strip()) for it in items),
        "with_agentic_report": sum(bool((it.agentic_report or "").strip()) for it in items),
    }


def _format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def validate_data(path: str, as_json: bool = False, allow_unlabelled: bool = False) -> int:
    """Validate a dataset and print its summary; print every error and return 1 on bad data.

    ``allow_unlabelled`` accepts a dataset without option labels (safety rates NaN).
    """
    from lm_eval_radsafe.loaders import DatasetError, HubAccessError, load_items

    try:
        loaded = load_items(path, allow_unlabelled=allow_unlabelled)
    except (DatasetError, HubAccessError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(loaded)
    if not loaded.labelled:
        summary["labelled"] = "no: option labels absent, safety rates will be NaN"
    print(json.dumps(summary, indent=2) if as_json else _format_summary(summary))
    return 0


# --------------------------------------------------------------------------- report


def _parse_ensembles(specs: list[str]) -> dict[str, list[str]]:
    ensembles: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, members = spec.partition("=")
        models = [m.strip() for m in members.split(",") if m.strip()]
        if not sep or not name.strip() or len(models) < 2:
            raise SystemExit(f"error: --ensemble {spec!r}: expected NAME=MODEL,MODEL[,...] with two or more models")
        ensembles[name.strip()] = models
    return ensembles


def run_report(args: argparse.Namespace) -> int:
    """``radsafe report``: build and write the report; errors name the file at fault.

    The report extra (matplotlib, scipy) is checked first, so nothing is written without it.
    """
    from lm_eval_radsafe.analysis.report import MissingExtraError, make_report, parse_figure_formats
    from lm_eval_radsafe.analysis.runs import RunError
    from lm_eval_radsafe.analysis.scaling import ModelCardError

    rules = getattr(args, "rules", "ours")
    if rules == "study" and args.leaderboard:
        print("error: --leaderboard holds numbers under our rules (validate-submission rescores them so): drop --rules study or --leaderboard", file=sys.stderr)
        return 1
    try:
        figure_formats = parse_figure_formats(args.figures)
        outcome = make_report(
            args.runs,
            args.out,
            figure_formats,
            leaderboard=args.leaderboard,
            use_cache=not getattr(args, "no_cache", False),
            model_cards=args.model_cards,
            ensemble_members=_parse_ensembles(args.ensemble),
            n_boot=args.n_boot,
            seed=args.seed,
            allow_mixed=args.allow_mixed_datasets,
            prefer=args.prefer,
            strict=args.strict,
            sizes="common" if args.common_items else "allow" if args.allow_mixed_sizes else "refuse",
            rules=rules,
            allow_partial=getattr(args, "allow_partial", False),
            allow_mixed_versions=getattr(args, "allow_mixed_versions", False),
        )
    except (RunError, ModelCardError, MissingExtraError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = outcome.meta
    print(
        f"{meta['n_runs']} runs: {len(meta['models'])} model(s) x {len(meta['conditions'])} condition(s), "
        f"regimes {', '.join(meta['regimes'])}; items {meta['items_per_run']['text']}"
    )
    if meta["warnings"]:
        print(f"{len(meta['warnings'])} run(s) flagged for abstention >= 95% (see the warnings above and report.html)")
    if outcome.rules_summary is not None:
        print(outcome.rules_summary)
    for name in sorted(outcome.written):
        print(f"  {outcome.written[name]}")
    return 0


def run_export_hub(args: argparse.Namespace) -> int:
    """``radsafe export-hub``: one .eval_results file per model and task, a line per model."""
    from lm_eval_radsafe.analysis.hub_export import ExportError, export_hub

    try:
        dataset_id, written = export_hub(args.leaderboard, args.out, args.dataset_id, args.revision, args.source_url,
                                         args.source_name)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    models = sorted({path.parent.parent for path in written})
    print(f"{len(written)} file(s) for {len(models)} model(s) (dataset {dataset_id}):")
    for folder in models:
        print(f"  {folder / '.eval_results'}: {sum(1 for p in written if p.parent.parent == folder)} task file(s)")
    print("next: open a pull request on each model's repository with its .eval_results folder (README, 'Results on the Hub')")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """``radsafe sweep ...``: a sweep file's errors are one line naming file and field."""
    from lm_eval_radsafe.sweep.spec import SweepError, load_sweep

    try:
        sweep = load_sweep(args.sweep_file)
        if args.sweep_command == "status":
            from lm_eval_radsafe.sweep.status import status_json, status_table, sweep_states

            states = sweep_states(sweep)
            print(json.dumps(status_json(states), indent=1) if args.json else status_table(states))
            return 0
        if args.sweep_command == "report":
            return _sweep_report(sweep, args)
        from lm_eval_radsafe.sweep.run import run_local, run_model

        if args.sweep_command == "run-model":  # a process of its own: in-process models load here once
            outcomes = [run_model(sweep, args.index, eval_here=run_eval)]
        elif args.executor == "slurm":
            return _sweep_slurm(sweep, args.dry_run)
        else:
            outcomes = run_local(sweep)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ran = sum(len(o.ran) for o in outcomes)
    failed = {f"{o.model} / {task}": why for o in outcomes for task, why in o.failed.items()}
    skipped = sum(len(o.skipped) for o in outcomes)
    if not ran:
        print(f"nothing to do: all {skipped} cells are done with the current settings (radsafe sweep status {args.sweep_file})")
        return 0
    print(f"ran {ran} cell(s), {ran - len(failed)} done, {len(failed)} failed; {skipped} were done already")
    for cell, why in failed.items():
        print(f"  failed: {cell}: {why}")
    print(f"next: radsafe sweep status {args.sweep_file}" if failed else f"next: radsafe sweep report {args.sweep_file}")
    return 1 if failed else 0


def _sweep_slurm(sweep: Any, dry_run: bool) -> int:
    from lm_eval_radsafe.sweep.cells import DONE
    from lm_eval_radsafe.sweep.slurm import array_jobs, submit
    from lm_eval_radsafe.sweep.status import sweep_states

    states = sweep_states(sweep)
    pending = sorted({i for i, model in enumerate(sweep.models) for st in states if st.cell.model.name == model.name and st.state != DONE})
    if not pending:
        print(f"nothing to do: all {len(states)} cells are done with the current settings")
        return 0
    jobs = array_jobs(sweep, pending)
    if dry_run:
        for job in jobs:
            print(f"# {job.path} (models {', '.join(sweep.models[i].name for i in job.indices)})")
            print(job.script)
        return 0
    ids = submit(jobs)
    print(f"submitted {len(ids)} job array(s) for {len(pending)} model(s): {', '.join(ids)}; logs in {jobs[0].path.parent}")
    print(f"next: radsafe sweep status {sweep.path}")
    return 0


def _sweep_report(sweep: Any, args: argparse.Namespace) -> int:
    from lm_eval_radsafe.sweep.status import report_inputs, sweep_states, write_model_cards

    states = sweep_states(sweep)
    runs = report_inputs(sweep, states, allow_incomplete=args.allow_incomplete)
    out = Path(args.out) if args.out else sweep.output / "report"
    cards = write_model_cards(sweep, states, out / "model_cards.yaml")
    report_args = argparse.Namespace(**{**vars(args), "runs": [str(r) for r in runs], "out": str(out),
                                        "model_cards": str(cards) if cards else None})
    return run_report(report_args)


def run_prepare(args: argparse.Namespace) -> int:
    """``radsafe prepare``: build a prepared folder and print its manifest summary."""
    from lm_eval_radsafe.loaders import DatasetError, HubAccessError
    from lm_eval_radsafe.retrieval.agentic import AgentEndpointError
    from lm_eval_radsafe.retrieval.corpus import CorpusError
    from lm_eval_radsafe.retrieval.prepare import AgentRun, PrepareSettings, prepare

    agent = None
    if args.agentic:
        from lm_eval_radsafe.retrieval.agentic import AgentSettings, make_client

        if not args.agent_model:
            print("error: --agentic needs --agent-model (smollm2, hf:<folder or hub id> or openai:<served name>)", file=sys.stderr)
            return 2
        bounds = AgentSettings(
            max_calls=args.agent_max_calls,
            max_tokens=args.agent_max_tokens,
            max_passages=args.agent_max_passages,
            hits_per_query=args.agent_hits_per_query,
            max_refinements=args.agent_max_refinements,
        )
        try:
            client = make_client(args.agent_model, args.agent_base_url, args.agent_gguf_file, args.agent_decoding)
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        agent = AgentRun(client, bounds, restart=args.agentic_restart)
    settings = PrepareSettings(
        retriever=args.retriever,
        k=args.k,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        chunk_tokenizer=args.chunk_tokenizer,
        query=args.query,
        dense_model=args.dense_model,
    )
    try:
        manifest = prepare(args.dataset, args.corpus, args.out, settings, agent=agent)
    except AgentEndpointError as exc:
        print(f"error: {exc}\nThe reports built so far are kept; run the same command again to resume.", file=sys.stderr)
        return 1
    except (DatasetError, HubAccessError, CorpusError, FileNotFoundError, KeyError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    corpus, index = manifest["corpus"], manifest["index"]
    print(
        f"{manifest['dataset']['n_items']} items, {corpus['n_passages']} passages -> {corpus['n_chunks']} chunks; "
        f"{manifest['retriever']['name']} top-{manifest['k']}; index {'reused from cache' if index['reused'] else 'built'}"
    )
    if agent is not None:
        done = manifest["agentic"]
        n = max(done["n_items"], 1)
        print(
            f"agentic reports: {done['n_items']} ({done['built']} built, {done['kept']} kept) by {done['agent']['model']}; "
            f"{done['fallback_plans']} fell back to question+options; calls by decoding "
            f"{', '.join(f'{mode} {count}' for mode, count in done['decoding'].items()) or 'none'}; per item {done['calls'] / n:.1f} calls, "
            f"{(done['prompt_tokens'] + done['completion_tokens']) / n:,.0f} tokens, {done['seconds'] / n:.1f} s"
        )
    print(f"prepared: {args.out} ({manifest['prepared_fingerprint']})")
    print(f"use: --metadata '{{\"prepared\": \"{args.out}\"}}' or RADSAFE_PREPARED={args.out}")
    return 0


# --------------------------------------------------------------------------- main


def _version() -> str:
    """This package's version and the installed lm-eval's, for ``radsafe --version``."""
    from importlib.metadata import PackageNotFoundError, version

    from lm_eval_radsafe import __version__

    try:
        harness = version("lm_eval")
    except PackageNotFoundError:
        harness = "not installed"
    return f"{__version__} (lm-eval {harness})"


def add_report_options(report: argparse.ArgumentParser) -> None:
    """The options of ``radsafe report`` that ``radsafe sweep report`` shares."""
    from lm_eval_radsafe.analysis.stats import DEFAULT_B, DEFAULT_SEED

    report.add_argument(
        "--ensemble",
        action="append",
        default=[],
        metavar="NAME=MODEL,MODEL,...",
        help="majority-vote ensemble of named models (repeatable)",
    )
    report.add_argument(
        "--figures",
        default="png",
        help="figure files to write: png, svg, png,svg or none (report.html embeds the PNG; default: %(default)s)",
    )
    report.add_argument("--n-boot", type=int, default=DEFAULT_B, help="bootstrap replicates (default: %(default)s)")
    report.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default: %(default)s)")
    report.add_argument(
        "--allow-mixed-datasets", action="store_true", help="analyse runs with different dataset fingerprints together"
    )
    report.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="compare runs whose task versions have different comparability numbers (the number in '2-A'; "
        "default: refuse them)",
    )
    report.add_argument(
        "--prefer",
        choices=("newest", "largest"),
        help="when folders hold several runs of one model, condition and regime: keep the newest, or the largest "
        "(most items; ties go to the newest). Default: refuse and name them",
    )
    sizes = report.add_mutually_exclusive_group()
    sizes.add_argument(
        "--common-items",
        action="store_true",
        help="models whose runs of one condition and regime hold different items: compare them on the items they share",
    )
    sizes.add_argument(
        "--allow-mixed-sizes",
        action="store_true",
        help="models whose runs of one condition and regime hold different items: keep each run's own items (default: refuse)",
    )
    report.add_argument(
        "--strict", action="store_true", help="refuse results files without samples files instead of skipping them with a warning"
    )
    report.add_argument("--leaderboard", action="store_true", help="also write leaderboard.json")
    report.add_argument(
        "--allow-partial",
        action="store_true",
        help="keep runs whose samples lack items they were asked for (a cut or unfinished file), marked partial; "
        "default: refuse them",
    )
    report.add_argument(
        "--no-cache",
        action="store_true",
        help="parse every samples file and compute the whole report again, keeping nothing in the parse and report "
        "caches ($RADSAFE_CACHE/report)",
    )
    report.add_argument(
        "--rules",
        choices=("ours", "study"),
        default="ours",
        help="ours (default): one NULL-aware majority throughout; study: count as the study's analysis scripts do where "
        "they differ (README, 'Our rules and the study scripts'), and write rules.csv and rules_mcnemar.csv beside",
    )


def add_sweep_parser(sub: Any) -> None:
    """``radsafe sweep run|run-model|status|report``."""
    sweep = sub.add_parser("sweep", help="run a grid of models x conditions x regimes (locally or on SLURM), resumable")
    verbs = sweep.add_subparsers(dest="sweep_command", required=True)
    run = verbs.add_parser("run", help="run every cell that is not done (one model at a time, or one SLURM array task per model)")
    run.add_argument("sweep_file", help="the sweep YAML file")
    run.add_argument("--executor", choices=("local", "slurm"), default="local", help="where to run (default: %(default)s)")
    run.add_argument("--dry-run", action="store_true", help="slurm: print the job array scripts instead of submitting them")
    model = verbs.add_parser("run-model", help="run one model's cells (what each SLURM array task runs)")
    model.add_argument("--sweep", required=True, dest="sweep_file", help="the sweep YAML file")
    model.add_argument("--index", required=True, type=int, help="the model's position in the file's models list, from 0")
    status = verbs.add_parser("status", help="done / failed / stale / running / missing per model, with the reasons")
    status.add_argument("sweep_file", help="the sweep YAML file")
    status.add_argument("--json", action="store_true", help="one JSON row per cell")
    report = verbs.add_parser("report", help="radsafe report over the done cells, with the sweep file's model cards")
    report.add_argument("sweep_file", help="the sweep YAML file")
    report.add_argument("--out", help="report folder (default: <output>/report)")
    report.add_argument("--allow-incomplete", action="store_true", help="report the done cells when others are not done")
    add_report_options(report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``radsafe``."""
    parser = argparse.ArgumentParser(
        prog="radsafe",
        description="Accuracy and clinical safety of LLMs on RadSaFE-200 (lm-evaluation-harness tasks).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks-path", help="print the task folder, for `lm_eval --include_path`")
    sub.add_parser(
        "eval",
        help="run lm-eval with our tasks included; every lm-eval flag is passed through",
        add_help=False,
    )
    validate = sub.add_parser("validate-data", help="validate a dataset and summarise it")
    validate.add_argument("path", help="'demo', a .jsonl/.json/.csv/.parquet file, a dataset folder or a hub id")
    validate.add_argument("--json", action="store_true", help="print the summary as JSON")
    validate.add_argument(
        "--allow-unlabelled", action="store_true", help="accept a dataset without option labels (safety rates NaN)"
    )
    report = sub.add_parser("report", help="analyse lm-eval output folders: CIs, paired tests, figures, report.html")
    report.add_argument("runs", nargs="+", help="lm-eval output folders or results_*.json files")
    report.add_argument("--out", required=True, help="folder for summary.csv/json, figures and report.html")
    report.add_argument("--model-cards", help="CSV/YAML of name, family, parameters[, active_parameters, context_window]")
    add_report_options(report)
    add_sweep_parser(sub)
    hub = sub.add_parser("export-hub", help="write a leaderboard.json as the Hugging Face Hub's .eval_results/*.yaml files")
    hub.add_argument("leaderboard", help="leaderboard.json of `radsafe report --leaderboard`")
    hub.add_argument("--out", required=True, help="folder for <model>/.eval_results/<task>.yaml")
    hub.add_argument("--dataset-id", help="the benchmark dataset's hub id (default for radsafe200 tasks: the published one)")
    hub.add_argument("--revision", help="the dataset revision (commit hash) the runs used")
    hub.add_argument("--source-url", help="where the runs can be seen (e.g. a repository of the lm-eval outputs)")
    hub.add_argument("--source-name", help="display name of the source (default: lm-eval-radsafe and its version)")
    prep = sub.add_parser("prepare", help="retrieve evidence (and, with --agentic, agent reports) for the retrieval conditions into a prepared folder")
    prep.add_argument("--dataset", required=True, help="'demo', a dataset file or folder, or a hub id")
    prep.add_argument("--corpus", required=True, help="'demo', a .jsonl corpus (id, title, text) or a folder of .txt/.md")
    prep.add_argument("--out", required=True, help="the prepared folder to write")
    prep.add_argument("--retriever", default="bm25", help="bm25 (default), bm25-rank, dense or hybrid")
    prep.add_argument("--k", type=int, default=600, help="chunks retrieved per question (default: %(default)s)")
    prep.add_argument("--chunk-size", type=int, default=300, help="tokens per chunk (default: %(default)s)")
    prep.add_argument("--chunk-overlap", type=int, default=50, help="tokens shared by neighbouring chunks (default: %(default)s)")
    prep.add_argument(
        "--chunk-tokenizer",
        default="regex",
        help="regex (default, offline), tiktoken:cl100k_base (the study's) or hf:<name or path>",
    )
    prep.add_argument("--query", default="stem", choices=["stem", "stem+options"], help="retrieval query (default: %(default)s)")
    prep.add_argument("--dense-model", help="sentence-transformers model for dense/hybrid (default: BAAI/bge-large-en-v1.5)")
    agentic = prep.add_argument_group("agentic RAG (condition agentic_rag)")
    agentic.add_argument("--agentic", action="store_true", help="also build the agent's evidence reports (resumes an interrupted run)")
    agentic.add_argument(
        "--agent-model",
        help="the agent's LLM: smollm2 (bundled, offline), hf:<folder or hub id>, or openai:<served name> (with --agent-base-url)",
    )
    agentic.add_argument("--agent-base-url", help="OpenAI-compatible endpoint ending in /v1 (or $RADSAFE_AGENT_BASE_URL); key: $OPENAI_API_KEY")
    agentic.add_argument("--agent-gguf-file", help="GGUF file inside the hf: folder")
    agentic.add_argument(
        "--agent-decoding",
        choices=("auto", "json_schema", "prompted"),
        default="auto",
        help="json_schema: replies constrained to the agent's JSON Schemas (a server's response_format; in process, "
        "xgrammar from the agent extra); prompted: the schema's example in the prompt only; auto (default): json_schema "
        "where available, else prompted, recorded in the trace and manifest",
    )
    agentic.add_argument("--agent-max-calls", type=int, default=12, help="LLM calls per item (default: %(default)s)")
    agentic.add_argument("--agent-max-tokens", type=int, default=256, help="reply tokens per call (default: %(default)s)")
    agentic.add_argument("--agent-max-passages", type=int, default=20, help="distinct passages per item (default: %(default)s)")
    agentic.add_argument("--agent-hits-per-query", type=int, default=3, help="passages per search (default: %(default)s)")
    agentic.add_argument("--agent-max-refinements", type=int, default=1, help="refined search rounds per option (default: %(default)s)")
    agentic.add_argument("--agentic-restart", action="store_true", help="discard existing reports and build them all again")
    submission = sub.add_parser("validate-submission", help="check that a leaderboard.json recomputes from its samples")
    submission.add_argument("file", help="leaderboard.json")
    submission.add_argument("--data", default="demo", help="the dataset it was run on (default: %(default)s)")
    from lm_eval_radsafe.demo import add_demo_arguments

    add_demo_arguments(sub.add_parser("demo", help="run the demo set on the bundled small model and print a table"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``radsafe`` console script.

    Known errors are one line on stderr; ``--debug`` (or ``-v``) shows tracebacks. Output
    piped into a program that stops reading (``| head``) ends quietly; Ctrl-C ends with
    status 130 and one line.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args_list)
    except KeyboardInterrupt:
        if "--debug" in args_list:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away: send the rest of the output nowhere and exit quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _dispatch(args_list: list[str]) -> int:
    debug = bool({"--debug", "-v", "--verbose"} & set(args_list[: args_list.index("eval")] if "eval" in args_list else args_list))
    if "eval" in args_list and all(a in {"--debug", "-v", "--verbose"} for a in args_list[: args_list.index("eval")]):
        rest = args_list[args_list.index("eval") + 1 :]
        return run_eval([*rest, "--debug"] if debug and "--debug" not in rest else rest)
    args = build_parser().parse_args(args_list)
    args.verbose = args.verbose or args.debug
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "tasks-path":
        print(tasks_dir())
        return 0
    if args.command == "validate-data":
        return validate_data(args.path, as_json=args.json, allow_unlabelled=args.allow_unlabelled)
    if args.command == "report":
        return run_report(args)
    if args.command == "prepare":
        return run_prepare(args)
    if args.command == "sweep":
        return run_sweep(args)
    if args.command == "export-hub":
        return run_export_hub(args)
    if args.command == "validate-submission":
        from lm_eval_radsafe.analysis.leaderboard import validate_submission_cli

        return validate_submission_cli(args.file, args.data)
    if args.command == "demo":
        from lm_eval_radsafe.demo import run_demo

        return run_demo(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())

"""A report's figures, drawn in a process of their own while the report is computed.

The figures of the results (accuracy against high-risk errors, reliability, scaling, cost)
need only the per-run table; the decoupling and condition-delta figures need the paired
tests. On Linux, :class:`FigureDrawing` forks a process as soon as the runs are read: it
imports matplotlib while this process computes the per-run table, receives the table,
draws the first figures while this process computes the paired tests, receives each
regime's tests as soon as they are computed and draws that regime's figures (the first
while the next regime's tests are computed), saves each figure once in every format
asked and writes ``figures.json`` (the numbers each figure plots, and why a figure is absent), while this
process writes the tables and renders report.html around them. With CPUs to spare
(:func:`free_cpus`), the figure process shares each batch of figures with forks of itself,
which inherit its imports and inputs. Elsewhere (no ``fork``), or when the process cannot
start, the same figures are drawn here when they are asked for.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the report's figures, in the order report.html shows them; a figure of a regime other
#: than greedy is named ``<name>_<regime>`` and follows the greedy one
FIGURE_ORDER = (
    "decoupling", "condition_deltas", "accuracy_vs_high_risk", "reliability", "scaling", "cost_per_item",
)  # fmt: skip
#: the file beside the figures that holds the numbers each one plots
DATA_FILE = "figures.json"
#: resolution of every figure file
FIGURE_DPI = 130
#: options of each file format: PNG compressed at zlib level 3 (a third faster to write
#: than the default 6, files about 5% larger)
SAVE_OPTIONS: dict[str, dict[str, Any]] = {"png": {"pil_kwargs": {"compress_level": 3}}}


def _models(analysis: Any) -> list[str]:
    return sorted({run.model for run in analysis.runs})


#: one figure to draw: a function of no arguments returning a :class:`~lm_eval_radsafe.analysis.figures.Plotted`
Job = Callable[[], Any]


def _of_results(analysis: Any, cost: list[dict[str, Any]], cards: dict[str, Any]) -> list[Job]:
    """The figures of the per-run table, heaviest first."""
    from lm_eval_radsafe.analysis import figures

    models = _models(analysis)
    return [
        partial(figures.plot_accuracy_vs_high_risk, analysis.rows, models=models),
        partial(figures.plot_reliability, analysis),
        partial(figures.plot_scaling, analysis.rows, cards),
        partial(figures.plot_cost_per_item, cost),
    ]


def _regimes(analysis: Any) -> list[str]:
    """The regimes of the runs, in the order :func:`~lm_eval_radsafe.analysis.summary.paired_tests`
    gives their tests."""
    from lm_eval_radsafe.conditions import regime_order

    return regime_order(run.regime for run in analysis.runs)


def _of_tests(tests: list[dict[str, Any]], analysis: Any, regime: str) -> list[Job]:
    """The figures of the paired tests of one regime, heaviest first."""
    from lm_eval_radsafe.analysis import figures

    models = _models(analysis)
    present = {run.condition for run in analysis.runs if run.regime == regime}
    return [
        partial(figures.plot_decoupling, tests, regime, models=models, conditions=present),
        partial(figures.plot_condition_deltas, tests, regime, models=models),
    ]


def _new_record() -> dict[str, Any]:
    from lm_eval_radsafe.analysis.figures import INTERVAL_KINDS

    return {"intervals": dict(INTERVAL_KINDS), "figures": {}, "absent": {}}


def _draw(jobs: list[Job], folder: Path, formats: tuple[str, ...]) -> tuple[dict[str, str], dict[str, Any]]:
    """Draw each figure, save it in each format and close it. Returns name -> the file
    report.html embeds (PNG, else the first format), and the figures.json part of these
    figures (their numbers, or why one is absent)."""
    import matplotlib.pyplot as plt

    shown: dict[str, str] = {}
    record = _new_record()
    for job in jobs:
        plotted = job()
        if plotted.figure is None:
            record["absent"][plotted.name] = plotted.reason
            continue
        for ext in formats:
            plotted.figure.savefig(folder / f"{plotted.name}.{ext}", dpi=FIGURE_DPI, **SAVE_OPTIONS.get(ext, {}))
        plt.close(plotted.figure)
        shown[plotted.name] = f"{plotted.name}.{'png' if 'png' in formats else formats[0]}"
        record["figures"][plotted.name] = {"files": [f"{plotted.name}.{ext}" for ext in formats], **plotted.data}
    return shown, record


def free_cpus() -> int:
    """CPUs this process may run on, less one for the process building the report."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, available - 1)


def _draw_split(jobs: list[Job], folder: Path, formats: tuple[str, ...], workers: int) -> tuple[dict[str, str], dict[str, Any]]:
    """:func:`_draw` over ``workers`` processes (this one and forks of it, which share its
    imports and inputs; on Linux, and with more than one job): job k goes to worker
    k mod ``workers``. Raises what a worker raised."""
    workers = min(workers, len(jobs))
    if workers <= 1 or not sys.platform.startswith("linux"):
        return _draw(jobs, folder, formats)
    forks = []
    for w in range(1, workers):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: draw its share, send it, leave without running any cleanup of the forked state
            code = 0
            try:
                os.close(read)
                with os.fdopen(write, "wb") as pipe:
                    try:
                        outcome: tuple[str, Any] = ("ok", _draw(jobs[w::workers], folder, formats))
                    except BaseException as exc:  # noqa: BLE001 - sent to the process that forked this one
                        outcome = ("error", f"{type(exc).__name__}: {exc}")
                    pickle.dump(outcome, pipe)
            except BaseException:  # noqa: BLE001 - nothing to report to: the reader sees the pipe end
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        forks.append((pid, read))
    errors: list[str] = []
    try:
        shown, record = _draw(jobs[0::workers], folder, formats)
    finally:  # every worker is heard and reaped, whatever happened here
        parts = []
        for pid, read in forks:
            with os.fdopen(read, "rb") as pipe:
                try:
                    status, value = pickle.load(pipe)
                except EOFError:
                    status, value = "error", "a figure worker ended without a result"
            os.waitpid(pid, 0)
            if status == "ok":
                parts.append(value)
            else:
                errors.append(value)
    if errors:
        raise RuntimeError("; ".join(errors))
    for more, part in parts:
        shown.update(more)
        _merge(record, part)
    return shown, record


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    into["figures"].update(part["figures"])
    into["absent"].update(part["absent"])


def _write_record(folder: Path, record: dict[str, Any]) -> Path:
    """figures.json (plain JSON: NaN never written)."""
    path = folder / DATA_FILE
    path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _rank(name: str) -> tuple[int, int, str]:
    """Where the figure called ``name`` stands in report.html: :data:`FIGURE_ORDER`, each
    regime's figure after the greedy one, regimes in the registry's order."""
    from lm_eval_radsafe.conditions import REGIMES

    regimes = list(REGIMES)
    for k, base in enumerate(FIGURE_ORDER):
        if name == base:
            return (k, -1, "")
        if name.startswith(base + "_"):
            regime = name[len(base) + 1:]
            return (k, regimes.index(regime) if regime in regimes else len(regimes), regime)
    return (len(FIGURE_ORDER), 0, name)


def _finish(shown: dict[str, str], record: dict[str, Any], folder: Path) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """figures.json with the figures drawn, then the absent ones with their reasons, each in
    report order whichever process drew them; returns (name, embedded file) of each figure
    and the reasons."""
    order = sorted(shown, key=_rank)  # the figures drawn: those figures.json holds
    absent = {name: record["absent"][name] for name in sorted(record["absent"], key=_rank)}
    _write_record(folder, {**record, "figures": {name: record["figures"][name] for name in order}, "absent": absent})
    return [(name, shown[name]) for name in order], absent


def _draw_all(inputs: tuple[Any, ...], tests: dict[str, list[dict[str, Any]]], folder: Path, formats: tuple[str, ...]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Draw and save every figure and figures.json in this process (``tests``: per regime)."""
    shown, record = _draw(_of_results(*inputs), folder, formats)
    for regime in _regimes(inputs[0]):
        more, part = _draw(_of_tests(tests.get(regime, []), inputs[0], regime), folder, formats)
        shown.update(more)
        _merge(record, part)
    return _finish(shown, record, folder)


def _child(connection: Any, inputs: tuple[Any, ...], folder: Path, formats: tuple[str, ...], workers: int) -> None:
    """Body of the figure process: import matplotlib while the report's process computes the
    per-run table, receive its rows, draw (over ``workers`` processes), then draw the
    figures of each regime's paired tests as they come, write figures.json, send the
    result (figures, reasons for the absent ones) or the error."""
    gc.enable()  # the report's process may have paused it; figures leave cyclic garbage
    try:
        import matplotlib.pyplot  # noqa: F401 - imported once, before any worker is forked

        inputs[0].rows = connection.recv()
        # on the free CPUs while the report's process computes the paired tests, which the
        # remaining figures wait for
        shown, record = _draw_split(_of_results(*inputs), folder, formats, workers)
        regimes = _regimes(inputs[0])
        for k, regime in enumerate(regimes):
            given, tests = connection.recv()
            if given != regime:
                raise RuntimeError(f"the paired tests of regime {given!r} came where those of {regime!r} belong")
            # after the last regime's tests, the report's process has only its tables and page
            # left to write, then waits for these figures: one more worker takes the CPU it frees
            last = k == len(regimes) - 1
            more, part = _draw_split(_of_tests(tests, inputs[0], regime), folder, formats, workers + 1 if last else workers)
            shown.update(more)
            _merge(record, part)
        connection.send(("ok", _finish(shown, record, folder)))
    except EOFError:  # the report was abandoned before its rows or tests existed
        pass
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


class FigureDrawing:
    """The figures of one report, saved under ``folder`` in each of ``formats``.

    :meth:`start` with the runs aligned (:func:`~lm_eval_radsafe.analysis.summary.align`),
    the cost rows and the model cards; :meth:`give_rows` once the per-run table is filled
    in (:func:`~lm_eval_radsafe.analysis.summary.summarise`); :meth:`give_tests` with the
    paired tests, all at once or regime by regime; :meth:`result` for (name, embedded
    file) of every figure drawn, in :data:`FIGURE_ORDER`, with the numbers each one plots
    in :data:`DATA_FILE` beside them (:attr:`data_file`); :meth:`close` in any case (stops
    a process left waiting).
    """

    def __init__(self, folder: Path, formats: tuple[str, ...], workers: int | None = None) -> None:
        self.folder = Path(folder)
        self.formats = formats
        #: processes drawing at once in the figure process (:func:`free_cpus` by default)
        self.workers = workers if workers is not None else free_cpus()
        self._inputs: tuple[Any, ...] | None = None
        self._tests: dict[str, list[dict[str, Any]]] = {}  # per regime, when drawn in this process
        self._process: Any = None
        self._connection: Any = None
        #: figures.json, once :meth:`result` returned
        self.data_file: Path | None = None

    def start(self, analysis: Any, cost: list[dict[str, Any]], cards: dict[str, Any]) -> None:
        """Begin on the figures (in a forked process on Linux, which imports matplotlib
        while the rows of ``analysis`` are computed here)."""
        import multiprocessing

        self.folder.mkdir(parents=True, exist_ok=True)
        self._inputs = (analysis, cost, cards)
        if not sys.platform.startswith("linux"):
            return
        try:
            context = multiprocessing.get_context("fork")
            ours, theirs = context.Pipe()
            process = context.Process(target=_child, args=(theirs, self._inputs, self.folder, self.formats, self.workers), daemon=True)
            # the report's objects out of the collector's reach in the child: its collections
            # would write to every page holding them, copying what fork shares
            gc.freeze()
            try:
                process.start()
            finally:
                gc.unfreeze()
        except (OSError, ValueError) as exc:
            logger.debug("figures drawn in this process (no figure process: %s)", exc)
            return
        theirs.close()
        self._process, self._connection = process, ours

    def give_rows(self, rows: list[dict[str, Any]]) -> None:
        """The per-run table of the analysis given to :meth:`start` (filled in since)."""
        if self._connection is not None:
            self._connection.send(rows)

    def give_tests(self, tests: list[dict[str, Any]], regime: str | None = None) -> None:
        """The paired tests the decoupling and condition-delta figures show: those of one
        ``regime`` (each regime's as soon as they are computed, in
        :func:`~lm_eval_radsafe.conditions.regime_order`), or with None those of every regime."""
        if self._inputs is None:
            raise RuntimeError("FigureDrawing.give_tests() before start()")
        regimes = [regime] if regime is not None else _regimes(self._inputs[0])
        for g in regimes:
            mine = tests if regime is not None else [t for t in tests if t["regime"] == g]
            if self._connection is not None:
                self._connection.send((g, mine))
            else:
                self._tests[g] = mine

    def result(self) -> list[tuple[str, str]]:
        """(name, file report.html embeds) of each figure drawn; raises what drawing raised.
        Logs why each figure left out was not drawn; :attr:`data_file` is then figures.json."""
        if self._inputs is None:
            raise RuntimeError("FigureDrawing.result() before start()")
        if self._connection is None:
            if not self._tests.keys() >= set(_regimes(self._inputs[0])):
                raise RuntimeError("FigureDrawing.result() before give_tests() of every regime")
            order, absent = _draw_all(self._inputs, self._tests, self.folder, self.formats)
        else:
            try:
                status, value = self._connection.recv()
            except EOFError:
                status, value = "error", f"the figure process ended (exit code {self._process.exitcode})"
            finally:
                self.close()
            if status != "ok":
                raise RuntimeError(f"drawing the report's figures failed: {value}")
            order, absent = value
        for name, reason in absent.items():
            logger.info("figure %s not drawn: %s", name, reason)
        self.data_file = self.folder / DATA_FILE
        return order

    def close(self) -> None:
        """End the figure process, if any (it stops on its own once this side is closed)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
            self._process = None

"""A report's figures, drawn in a process of their own while the report is computed.

The figures of the results (accuracy against high-risk errors, reliability, scaling, cost)
need only the per-run table; the condition-delta figures need the paired tests. On Linux,
:class:`FigureDrawing` forks a process as soon as the table exists: it draws the first
figures while this process computes the paired tests, receives the tests, draws the
rest and saves each figure once in every format asked, while this process writes the
tables and renders report.html around them. Elsewhere (no ``fork``), or when the process
cannot start, the same figures are drawn here when they are asked for.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: the report's figures, in the order report.html shows them
FIGURE_ORDER = (
    "condition_deltas", "condition_deltas_sc", "accuracy_vs_high_risk", "reliability", "scaling", "cost_per_item",
)  # fmt: skip


def _of_results(analysis: Any, cost: list[dict[str, Any]], cards: dict[str, Any]) -> dict[str, Any]:
    from lm_eval_radsafe.analysis import figures

    return {
        "accuracy_vs_high_risk": figures.accuracy_vs_high_risk(analysis.rows),
        "reliability": figures.reliability(analysis),
        "scaling": figures.scaling_plot(analysis.rows, cards) if cards else None,
        "cost_per_item": figures.cost_per_item(cost) if cost else None,
    }


def _of_tests(tests: list[dict[str, Any]]) -> dict[str, Any]:
    from lm_eval_radsafe.analysis import figures

    return {
        "condition_deltas": figures.condition_deltas(tests),
        "condition_deltas_sc": figures.condition_deltas(tests, regime="sc"),
    }


def _save(made: dict[str, Any], folder: Path, formats: tuple[str, ...]) -> dict[str, str]:
    """Save each figure in each format; name -> the file report.html embeds (PNG, else the first)."""
    import matplotlib.pyplot as plt

    shown = {}
    for name, fig in made.items():
        if fig is None:
            continue
        for ext in formats:
            fig.savefig(folder / f"{name}.{ext}", dpi=130)
        plt.close(fig)
        shown[name] = f"{name}.{'png' if 'png' in formats else formats[0]}"
    return shown


def _ordered(shown: dict[str, str]) -> list[tuple[str, str]]:
    return [(name, shown[name]) for name in FIGURE_ORDER if name in shown]


def _child(connection: Any, inputs: tuple[Any, ...], folder: Path, formats: tuple[str, ...]) -> None:
    """Body of the figure process: draw, wait for the tests, draw, send the result or the error."""
    try:
        shown = _save(_of_results(*inputs), folder, formats)
        tests = connection.recv()
        shown.update(_save(_of_tests(tests), folder, formats))
        connection.send(("ok", _ordered(shown)))
    except EOFError:  # the report was abandoned before its tests existed
        pass
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


class FigureDrawing:
    """The figures of one report, saved under ``folder`` in each of ``formats``.

    :meth:`start` with the per-run table, the cost rows and the model cards; :meth:`give_tests`
    with the paired tests; :meth:`result` for (name, embedded file) of every figure drawn, in
    :data:`FIGURE_ORDER`; :meth:`close` in any case (stops a process left waiting).
    """

    def __init__(self, folder: Path, formats: tuple[str, ...]) -> None:
        self.folder = Path(folder)
        self.formats = formats
        self._inputs: tuple[Any, ...] | None = None
        self._tests: list[dict[str, Any]] | None = None
        self._process: Any = None
        self._connection: Any = None

    def start(self, analysis: Any, cost: list[dict[str, Any]], cards: dict[str, Any]) -> None:
        """Begin drawing the figures of the results (in a forked process on Linux)."""
        import multiprocessing

        self.folder.mkdir(parents=True, exist_ok=True)
        self._inputs = (analysis, cost, cards)
        if not sys.platform.startswith("linux"):
            return
        try:
            context = multiprocessing.get_context("fork")
            ours, theirs = context.Pipe()
            process = context.Process(target=_child, args=(theirs, self._inputs, self.folder, self.formats), daemon=True)
            process.start()
        except (OSError, ValueError) as exc:
            logger.debug("figures drawn in this process (no figure process: %s)", exc)
            return
        theirs.close()
        self._process, self._connection = process, ours

    def give_tests(self, tests: list[dict[str, Any]]) -> None:
        """The paired tests the condition-delta figures show."""
        if self._connection is not None:
            self._connection.send(tests)
        else:
            self._tests = tests

    def result(self) -> list[tuple[str, str]]:
        """(name, file report.html embeds) of each figure drawn; raises what drawing raised."""
        if self._inputs is None:
            raise RuntimeError("FigureDrawing.result() before start()")
        if self._connection is None:
            if self._tests is None:
                raise RuntimeError("FigureDrawing.result() before give_tests()")
            shown = _save(_of_results(*self._inputs), self.folder, self.formats)
            shown.update(_save(_of_tests(self._tests), self.folder, self.formats))
            return _ordered(shown)
        try:
            status, value = self._connection.recv()
        except EOFError:
            status, value = "error", f"the figure process ended (exit code {self._process.exitcode})"
        finally:
            self.close()
        if status != "ok":
            raise RuntimeError(f"drawing the report's figures failed: {value}")
        return value

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

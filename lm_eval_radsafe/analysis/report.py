"""``radsafe report``: many lm-eval runs in, tables with CIs, tests, figures and HTML out."""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval_radsafe.analysis.cost import COST_COLUMNS, cost_table
from lm_eval_radsafe.analysis.drawing import FigureDrawing
from lm_eval_radsafe.analysis.questions import concentration, ensembles, worst_cases
from lm_eval_radsafe.analysis.runs import Prefer, SizeRule, read_runs
from lm_eval_radsafe.analysis.scaling import decoupling, load_model_cards, scaling_table, variance_decomposition
from lm_eval_radsafe.analysis.stats import DEFAULT_B, DEFAULT_SEED
from lm_eval_radsafe.analysis.study_rules import (
    MCNEMAR_COLUMNS,
    RULES,
    RULES_COLUMNS,
    Rules,
    mcnemar_table,
    rules_table,
    same_value,
    study_paired_tests,
    study_worst_cases,
    summary_line,
    to_study_rules,
)
from lm_eval_radsafe.analysis.summary import (
    ORDER_TEST_COLUMNS,
    SUMMARY_COLUMNS,
    Analysis,
    abstention_flags,
    align,
    order_tests,
    paired_tests,
    position_shares,
    summarise,
    tie_groups,
)
from lm_eval_radsafe.assets import templates_dir
from lm_eval_radsafe.conditions import CONDITIONS, REGIMES
from lm_eval_radsafe.items import Item
from lm_eval_radsafe.metric_specs import METRIC_SPECS, headline_metrics, metric_spec

logger = logging.getLogger(__name__)

#: what the report extra installs, by import name (setup.cfg: ``report``)
REPORT_EXTRA_MODULES = ("matplotlib", "scipy")
REPORT_EXTRA_HINT = "radsafe report needs the report extra: pip install 'lm-eval-radsafe[report]'"


class MissingExtraError(ImportError):
    """An optional dependency group that a command needs is not installed."""


def require_report_extra() -> None:
    """Raise :class:`MissingExtraError` (one line, with the install command) unless the
    ``report`` extra is installed; called before anything is written. Nothing is imported
    here: the figures import matplotlib in their own process."""
    import importlib.util

    def installed(name: str) -> bool:
        if name in sys.modules:  # imported already, or marked absent (None)
            return sys.modules[name] is not None
        return importlib.util.find_spec(name) is not None

    missing = [name for name in REPORT_EXTRA_MODULES if not installed(name)]
    if missing:
        raise MissingExtraError(f"{REPORT_EXTRA_HINT} (missing: {', '.join(missing)})")


@dataclass
class Report:
    """Everything a report holds, before it is written."""

    analysis: Analysis
    items: dict[str, Item]
    tests: list[dict[str, Any]]
    ties: list[dict[str, Any]]
    worst: list[dict[str, Any]]
    concentration: list[dict[str, Any]]
    ensembles: list[dict[str, Any]] = field(default_factory=list)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    variance: list[dict[str, Any]] = field(default_factory=list)
    decoupling: list[dict[str, Any]] = field(default_factory=list)
    cards: dict[str, Any] = field(default_factory=dict)
    cost: list[dict[str, Any]] = field(default_factory=list)
    #: option-order runs against their original order (:func:`~lm_eval_radsafe.analysis.summary.order_tests`)
    order_tests: list[dict[str, Any]] = field(default_factory=list)
    #: option-order runs: chosen and expected share of each position
    positions: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    #: with ``--rules study``: ``rows`` (rules.csv), ``mcnemar`` (rules_mcnemar.csv), ``summary``
    rules: dict[str, Any] | None = None


def one_blas_thread() -> Any:
    """A context in which numpy's BLAS runs on one thread (``threadpoolctl``, of the report
    extra; a no-op without it). The report's matrix products are small (replicates x items
    by items x runs) while its figures are drawn in other processes: BLAS threads waiting
    for a busy CPU cost far more than they save."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (as it was after). A report
    creates hundreds of thousands of long-lived objects (runs, rows, tests) and almost no
    cyclic garbage; each full collection would walk all of them again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _on_one_blas_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` run inside :func:`one_blas_thread`."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return function(*args, **kwargs)

    return wrapped


@_on_one_blas_thread
def build_report(
    run_dirs: list[str | Path],
    model_cards: str | Path | None = None,
    ensemble_members: dict[str, list[str]] | None = None,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    allow_mixed: bool = False,
    progress: bool = True,
    prefer: Prefer | None = None,
    strict: bool = False,
    sizes: SizeRule = "refuse",
    rules: Rules = "ours",
    use_cache: bool = True,
    allow_partial: bool = False,
    drawing: FigureDrawing | None = None,
    allow_mixed_versions: bool = False,
) -> Report:
    """Read runs and compute every table of the report.

    ``prefer``, ``strict`` and ``sizes`` choose among several runs of one model,
    condition and regime, treat a task without samples file, and treat runs of one
    condition and regime on different items (:func:`~lm_eval_radsafe.analysis.runs.read_runs`).
    ``rules="study"`` counts as the study's analysis scripts do where they differ from
    ours (:mod:`~lm_eval_radsafe.analysis.study_rules`): every table then follows them,
    and ``report.rules`` holds both sets of numbers side by side. ``use_cache=False``
    parses every samples file again and keeps nothing in the parse cache; ``allow_partial``
    keeps runs whose samples lack items they were asked for, marked in the report's notes;
    ``allow_mixed_versions`` compares runs of task versions with different comparability
    numbers (refused by default). ``drawing`` starts on the figures as soon as the tables they show exist.
    """
    from lm_eval_radsafe import __version__

    collected: dict[tuple[str, str], Item] = {}
    size_notes: list[str] = []
    runs = read_runs(
        run_dirs,
        allow_mixed=allow_mixed,
        progress=progress,
        items=collected,
        prefer=prefer,
        strict=strict,
        sizes=sizes,
        notes=size_notes,
        use_cache=use_cache,
        allow_partial=allow_partial,
        allow_mixed_versions=allow_mixed_versions,
    )
    items = {item_id: item for (_, item_id), item in collected.items()}
    if rules not in RULES:
        raise ValueError(f"rules must be one of {', '.join(RULES)}, not {rules!r}")
    study = None
    if rules == "study":
        study = to_study_rules(runs, items)
        runs = study.runs
    flags = abstention_flags(runs)
    for message in flags.values():
        logger.warning("%s", message)
    cost = cost_table(runs)
    cards = load_model_cards(model_cards) if model_cards else {}
    analysis = align(runs, n_boot=n_boot, seed=seed)
    if drawing is not None:  # its process gets ready while the table is computed here
        drawing.start(analysis, cost, cards)
    summarise(analysis)
    if drawing is not None:
        drawing.give_rows(analysis.rows)
    # each regime's tests to the figures as soon as they are computed (the figures show no p-values,
    # the only thing the study's rules change in them)
    tests = paired_tests(analysis, on_regime=None if drawing is None else lambda regime, mine: drawing.give_tests(mine, regime))
    worst = worst_cases(runs, items)
    if study is not None:
        tests = study_paired_tests(tests, study)
        worst = study_worst_cases(worst, items)
    report = Report(
        analysis=analysis,
        items=items,
        tests=tests,
        ties=tie_groups(analysis.rows),
        worst=worst,
        concentration=concentration(worst),
        cost=cost,
        cards=cards,
        order_tests=order_tests(analysis),
        positions=position_shares(analysis),
        meta={
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "lm_eval_versions": sorted({str(r.meta.get("lm_eval_version")) for r in runs}),
            "dataset_fingerprints": sorted({r.fingerprint for r in runs}),
            "n_boot": n_boot,
            "seed": seed,
            "n_runs": len(runs),
            "models": sorted({r.model for r in runs}),
            "conditions": [c for c in CONDITIONS if any(r.condition == c for r in runs)],
            "regimes": [g for g in REGIMES if any(r.regime == g for r in runs)],
            "task_versions": sorted({str(r.meta.get("task_version")) for r in runs}),
            "n_items": len(analysis.item_ids),
            "items_per_run": _items_per_run(runs),
            "size_notes": size_notes,
            "warnings": list(flags.values()),
        },
    )
    if study is not None:
        rule_rows, mcnemar_rows = rules_table(study), mcnemar_table(study)
        line = summary_line(study, rule_rows, mcnemar_rows)
        logger.info("%s", line)
        report.meta["rules"] = "study"
        report.rules = {"rows": rule_rows, "mcnemar": mcnemar_rows, "summary": line}
    if ensemble_members:
        report.ensembles = ensembles(runs, items, ensemble_members)
    if model_cards:
        unknown = sorted(set(report.meta["models"]) - set(report.cards))
        if unknown:
            logger.warning("no model card for %s: left out of the scaling analysis", ", ".join(unknown))
        report.scaling = scaling_table(analysis.rows, report.cards)
        report.variance = variance_decomposition(analysis.rows, report.cards)
        report.decoupling = decoupling(report.scaling)
    return report


def _items_per_run(runs: list[Any]) -> dict[str, Any]:
    """How many items the runs rest on: ``{"counts": {n: runs}, "text": one line}``."""
    counts: dict[int, int] = {}
    for run in runs:
        counts[run.n_items] = counts.get(run.n_items, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[0])
    distinct = len({item for run in runs for item in run.item_ids})
    if len(ordered) == 1:
        text = f"{ordered[0][0]} in every run"
    else:
        parts = ", ".join(f"{n} ({k} run{'s' if k > 1 else ''})" for n, k in ordered)
        text = f"differ by run: {parts}; each row shows its n ({distinct} distinct items in all)"
    return {"counts": {str(n): k for n, k in ordered}, "text": text}


# --------------------------------------------------------------------------- writing


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _json_bytes(value: Any) -> bytes:
    """``value`` as indented JSON, NaN as null: msgspec's encoder when installed (report
    extra; several times faster on a large grid), else :mod:`json` (same content)."""
    try:
        import msgspec
    except ImportError:
        return json.dumps(_clean(value), indent=1).encode("utf-8")
    return msgspec.json.format(msgspec.json.encode(value, enc_hook=_json_fallback), indent=1)


def _json_fallback(value: Any) -> Any:
    """Numbers msgspec does not know (numpy scalars) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...] | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        # absent keys and NaN as empty cells; other keys of a row are left out
        writer.writerows(
            ["" if isinstance(v := row.get(k, ""), float) and math.isnan(v) else v for k in columns]
            for row in rows
        )


#: figure file formats ``radsafe report --figures`` accepts (``none``: no figures at all)
FIGURE_FORMATS = ("png", "svg")
DEFAULT_FIGURES = ("png",)


def parse_figure_formats(text: str) -> tuple[str, ...]:
    """``png,svg`` / ``png`` / ``svg`` / ``none`` -> the formats to write; ValueError otherwise."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in FIGURE_FORMATS]
    if unknown or not names:
        raise ValueError(f"--figures {text!r}: give png, svg, both (png,svg) or none")
    return tuple(dict.fromkeys(names))


def write_report(
    report: Report, out: str | Path, figure_formats: tuple[str, ...] = DEFAULT_FIGURES, drawing: FigureDrawing | None = None,
) -> dict[str, Path]:
    """Write summary.csv/json, paired_tests.csv, the other tables, figures and report.html.

    Each figure is drawn once and saved in each of ``figure_formats``; report.html embeds
    the PNG just written (the SVG when only SVG is asked; nothing with no formats).
    ``drawing``: the report's figures, started while it was built (:func:`build_report`),
    saving into ``out/figures`` in ``figure_formats``; else they are drawn now. Raises
    :class:`MissingExtraError` before writing anything when the report extra (matplotlib,
    scipy) is not installed.
    """
    require_report_extra()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if figure_formats:
        (out / "figures").mkdir(exist_ok=True)
    rows = report.analysis.rows
    written: dict[str, Path] = {}
    _write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)
    written["summary.csv"] = out / "summary.csv"
    summary = {"meta": report.meta, "summary": rows, "tie_groups": report.ties, "paired_tests": report.tests}
    if report.order_tests:
        summary["order_tests"] = report.order_tests
    (out / "summary.json").write_bytes(_json_bytes(summary))
    written["summary.json"] = out / "summary.json"
    tables = {
        "paired_tests.csv": report.tests,
        "worst_cases.csv": [{k: v for k, v in r.items() if k != "answers"} for r in report.worst],
        "concentration.csv": report.concentration,
        "ensembles.csv": report.ensembles,
        "scaling.csv": report.scaling,
        "variance_decomposition.csv": report.variance,
        "decoupling.csv": report.decoupling,
        "position_shares.csv": report.positions,
    }
    for name, table in tables.items():
        if table:
            _write_csv(out / name, table)
            written[name] = out / name
    if report.order_tests:
        _write_csv(out / "order_tests.csv", report.order_tests, ORDER_TEST_COLUMNS)
        written["order_tests.csv"] = out / "order_tests.csv"
    if report.cost:
        _write_csv(out / "cost.csv", report.cost, COST_COLUMNS)
        written["cost.csv"] = out / "cost.csv"
    if report.rules is not None:
        _write_csv(out / "rules.csv", report.rules["rows"], RULES_COLUMNS)
        _write_csv(out / "rules_mcnemar.csv", report.rules["mcnemar"], MCNEMAR_COLUMNS)
        written["rules.csv"], written["rules_mcnemar.csv"] = out / "rules.csv", out / "rules_mcnemar.csv"
    if not figure_formats:
        (out / "report.html").write_text(render_html(report, {}), encoding="utf-8")
        written["report.html"] = out / "report.html"
        return written
    import markupsafe

    if drawing is None:
        drawing = FigureDrawing(out / "figures", figure_formats)
        drawing.start(report.analysis, report.cost, report.cards)
        drawing.give_rows(report.analysis.rows)
        drawing.give_tests(report.tests)
    # the figures are drawn in a process of their own while this one renders the page around them
    page = _render_page(report, markupsafe.Markup(_FIGURES_MARK))
    embedded: dict[str, str] = {}
    for name, shown in drawing.result():
        for ext in figure_formats:
            written[f"figures/{name}.{ext}"] = out / "figures" / f"{name}.{ext}"
        kind = "png" if shown.endswith(".png") else "svg+xml"
        embedded[name] = f"data:image/{kind};base64," + base64.b64encode((out / "figures" / shown).read_bytes()).decode("ascii")
    if drawing.data_file is not None:
        written["figures/figures.json"] = drawing.data_file
    page = page.replace(_FIGURES_MARK, _figures_html(embedded), 1)
    (out / "report.html").write_text(page, encoding="utf-8")
    written["report.html"] = out / "report.html"
    return written


#: where report.html's figures go while they are being drawn (an HTML comment: never in a table)
_FIGURES_MARK = "<!--radsafe:figures-->"


@dataclass
class Outcome:
    """What :func:`make_report` did: the report's meta, the one-line comparison of rules
    (``--rules study``), the files written, and whether they came from the report cache."""

    meta: dict[str, Any]
    rules_summary: str | None
    written: dict[str, Path]
    reused: bool = False


class _Kept(logging.Handler):
    """Keeps the warnings logged while a report is made, to say them again when it is reused."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append([record.name, record.levelno, record.getMessage()])


def make_report(
    run_dirs: list[str | Path],
    out: str | Path,
    figure_formats: tuple[str, ...] = DEFAULT_FIGURES,
    leaderboard: bool = False,
    use_cache: bool = True,
    **options: Any,
) -> Outcome:
    """Build and write a report (``options``: those of :func:`build_report`), reusing a
    finished one when nothing it rests on changed.

    The report cache (``$RADSAFE_CACHE/report/outputs``) keeps each report's files and
    warnings under :func:`~lm_eval_radsafe.analysis.cache.report_key`: every results and
    samples file found (path, size, mtime, a hash of its ends), every option, the model
    cards' content and the package's code. A second report with the same key writes those
    files again (their ``created`` time is the first report's) and repeats the warnings;
    any change (a run, ``--B``, ``--seed``, the figure formats...) makes a new report from
    the parse cache. ``use_cache=False`` reads and computes everything and keeps nothing.
    """
    import shutil

    from lm_eval_radsafe.analysis.cache import ReportStore, report_key
    from lm_eval_radsafe.analysis.runs import find_results_files

    require_report_extra()
    out = Path(out)
    store = ReportStore(enabled=use_cache)
    key = None
    if store.enabled:
        cards = options.get("model_cards")
        described = {
            **{k: v for k, v in options.items() if k != "progress"},
            "run_dirs": [str(Path(d).resolve()) for d in run_dirs],
            "model_cards": None if not cards else hashlib.sha256(Path(cards).read_bytes()).hexdigest(),
            "figures": list(figure_formats),
            "leaderboard": leaderboard,
        }
        key = report_key(find_results_files(run_dirs), described)
        kept = store.load(key)
        if kept is not None:
            entry, folder = kept
            for name, level, message in entry["log"]:
                logging.getLogger(name).log(level, "%s", message)
            written = {}
            for name in entry["files"]:
                path = out / name
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, path)
                written[name] = path
            logger.info(
                "the runs, options and code are those of the report made %s: its files are written again from the "
                "report cache (--no-cache makes it anew)", entry["meta"].get("created"),
            )
            return Outcome(entry["meta"], entry["rules_summary"], written, reused=True)
    handler = _Kept()
    watched = logging.getLogger("lm_eval_radsafe")
    watched.addHandler(handler)
    drawing = FigureDrawing(out / "figures", figure_formats) if figure_formats else None
    try:
        with collector_paused():
            report = build_report(run_dirs, use_cache=use_cache, drawing=drawing, **options)
            written = write_report(report, out, figure_formats, drawing)
        if leaderboard:
            from lm_eval_radsafe.analysis.leaderboard import write_leaderboard

            written["leaderboard.json"] = write_leaderboard(report, out / "leaderboard.json")
    finally:
        watched.removeHandler(handler)
        if drawing is not None:
            drawing.close()
    summary = report.rules["summary"] if report.rules is not None else None
    if key is not None:
        meta = json.loads(_json_bytes(report.meta))
        store.store(key, {"meta": meta, "rules_summary": summary, "log": handler.records}, written)
    return Outcome(report.meta, summary, written)


def _fmt(value: Any, percent: bool = True) -> str:
    """A value that is not a metric: a share in percent, or a plain number (``num``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if percent else f"{value:.3g}"
    return str(value)


def _metric_value(value: Any, name: str) -> str:
    return metric_spec(name).format(value)


def _metric_interval(row: dict[str, Any], name: str | None = None, low: str = "ci_low", high: str = "ci_high") -> str:
    return metric_spec(name or row["metric"]).format_interval(row[low], row[high])


def _metric_difference(value: Any, name: str) -> str:
    """A difference in the metric's unit: percentage points for percent metrics."""
    spec = metric_spec(name)
    text = spec.number(value)
    if text == "–":
        return text
    if not text.startswith("-"):
        text = "+" + text
    return text + {"percent": " pp", "seconds": " s"}.get(spec.unit, "")


def _n_text(counts: list[int]) -> str:
    return str(counts[0]) if len(counts) == 1 else "–".join((str(min(counts)), str(max(counts))))


def _rules_view(rules: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the page shows of the rules comparison: the rows that differ (all are in the CSVs)."""
    if rules is None:
        return None
    changed = [r for r in rules["rows"] if not same_value(r["ours"], r["study"])]
    changed_tests = [t for t in rules["mcnemar"] if not same_value(t["ours_p"], t["study_p"])]
    return {**rules, "changed": changed, "changed_tests": changed_tests}


#: paired tests shown in report.html before it keeps only the comparisons with the baseline
#: condition on the decision metrics; paired_tests.csv always holds every test
HTML_TESTS_LIMIT = 500
_DECISION_METRICS = ("accuracy", "high_risk_error", "sc_accuracy", "sc_high_risk_error", "ll_accuracy", "ll_high_risk_error")


def tests_shown(tests: list[dict[str, Any]], conditions: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The paired tests report.html lists, and a note when it lists fewer than all: up to
    :data:`HTML_TESTS_LIMIT` every test; beyond, each condition against the first condition
    of the grid (closed book when present) on accuracy and high-risk error."""
    if len(tests) <= HTML_TESTS_LIMIT or not conditions:
        return tests, None
    baseline = conditions[0]
    shown = [t for t in tests if t["condition_a"] == baseline and t["metric"] in _DECISION_METRICS]
    note = (
        f"{len(shown)} of {len(tests)} tests shown: each condition against {CONDITIONS[baseline].display_name if baseline in CONDITIONS else baseline} "
        "on accuracy and high-risk error; every pair and metric is in paired_tests.csv."
    )
    return shown, note


def render_html(report: Report, figures: dict[str, str]) -> str:
    """The self-contained HTML report with ``figures`` (name -> data URI) inline; every
    number is formatted by its metric's spec (:mod:`lm_eval_radsafe.metric_specs`) and
    every table shows n."""
    return _render_page(report, _figures_html(figures))


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _figures_html(figures: dict[str, str]) -> Any:
    """The page's figures section (nothing when there are no figures)."""
    import markupsafe

    return markupsafe.Markup(_environment().get_template("figures.html.j2").render(figures=figures))


def _positions_view(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """position_shares rows grouped per (model, condition): position letter -> row."""
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        grouped.setdefault((row["model"], row["condition"]), {})[row["position"]] = row
    return list(grouped.items())


def _render_page(report: Report, figures_html: Any) -> str:
    """report.html around ``figures_html`` (markup: the figures section, or a mark for it)."""
    import markupsafe

    env = _environment()
    env.filters["pct"] = _fmt
    env.filters["num"] = lambda v: _fmt(v, percent=False)
    env.filters["metric"] = _metric_value
    env.filters["interval"] = _metric_interval
    env.filters["difference"] = _metric_difference
    env.filters["ntext"] = _n_text
    rows = report.analysis.rows
    index = {(r["model"], r["condition"], r["regime"], r["metric"]): r for r in rows}
    sizes = {run.key: run.n_items for run in report.analysis.runs}
    tables = []
    for regime in report.meta["regimes"]:
        metrics = [m for m in headline_metrics(regime) if any(r["metric"] == m and r["regime"] == regime for r in rows)]
        body = []
        for model in report.meta["models"]:
            for condition in report.meta["conditions"]:
                cells = [index.get((model, condition, regime, m)) for m in metrics]
                if any(cells):
                    body.append(
                        {
                            "model": model,
                            "condition": CONDITIONS[condition].display_name,
                            "n": sizes.get((model, condition, regime), "–"),
                            "flag": any(c and c.get("flag") for c in cells),
                            "cells": cells,
                        }
                    )
        tables.append({"regime": REGIMES[regime].display_name, "metrics": metrics, "rows": body})
    headline = {regime: headline_metrics(regime) for regime in REGIMES}
    worst_top = sorted(report.worst, key=lambda r: (-r["n_dangerous"], -r["n_wrong"], r["item_id"]))[:25]
    drill: dict[str, list[dict[str, Any]]] = {}
    models = report.meta["models"]
    cell: dict[str, str] = {}  # answer -> its table cell, escaped once (a study grid has about 70,000 cells)
    for row in report.worst:
        answers = [str(row["answers"].get(model, "–")) for model in models]
        for answer in set(answers) - cell.keys():
            cell[answer] = f'<td class="l">{markupsafe.escape(answer)}</td>'
        drill.setdefault(row["item_id"], []).append(
            {"condition": row["condition"], "regime": row["regime"], "cells": markupsafe.Markup("".join(map(cell.__getitem__, answers)))}
        )
    tests, tests_note = tests_shown(report.tests, report.meta["conditions"])
    return env.get_template("report.html.j2").render(
        meta=report.meta,
        specs=METRIC_SPECS,
        tables=tables,
        tests=tests,
        tests_note=tests_note,
        ties=[t for t in report.ties if t["metric"] in headline.get(t["regime"], ())],
        worst_top=worst_top,
        concentration=report.concentration,
        ensembles=report.ensembles,
        cost=report.cost,
        scaling=[s for s in report.scaling if s["metric"] in ("accuracy", "high_risk_error", "sc_accuracy", "dangerous_overconfidence")],
        variance=report.variance,
        decoupling=report.decoupling,
        order_tests=report.order_tests,
        positions=_positions_view(report.positions),
        figures_html=figures_html,
        rules=_rules_view(report.rules),
        drill=sorted(drill.items()),
        items=report.items,
        conditions={c: CONDITIONS[c].display_name for c in CONDITIONS},
    )

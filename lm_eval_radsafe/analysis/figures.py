"""Matplotlib figures of a report, and the numbers each one plots.

Each ``plot_*`` function returns a :class:`Plotted`: the figure (None when the data it
needs is absent, with the reason), and ``data``, the plain-JSON record of what it shows
(title, axes, one entry per point with its model, condition, regime, coordinates and
interval) that :mod:`~lm_eval_radsafe.analysis.drawing` writes to ``figures.json``.
Axis labels, titles and scales come from the metric specs
(:mod:`lm_eval_radsafe.metric_specs`).

Conventions shared by the figures:

* every model has one number, colour and marker across the figures of a report
  (:class:`ModelKey`): up to :data:`MAX_MODELS_BY_SHAPE` models are told apart by a hollow
  marker shape and colour; more models are drawn as their number, with a key of numbers
  to names beside the axes;
* legends and keys sit outside the axes;
* intervals of a rate are the report's 95% bootstrap percentile intervals (summary.csv
  ``ci_low``/``ci_high``), except where that interval collapses to one value at a rate of
  0 or 1: there the Wilson score interval (``wilson_low``/``wilson_high``) is drawn,
  dashed (:func:`shown_interval`); intervals of a difference are the paired-bootstrap
  intervals of paired_tests.csv;
* points of one panel at the same coordinates are laid out on a small sunflower spiral
  around them, about one marker apart (:func:`spread`), so that none hides another;
  figures.json holds the exact values and each such point's offset (``dx``, ``dy``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lm_eval_radsafe.aggregation import N_BINS, calibration_bin
from lm_eval_radsafe.conditions import CONDITIONS, REGIMES, regime_order
from lm_eval_radsafe.metric_specs import metric_spec

#: interval kinds, as figures.json names them
BOOTSTRAP = "bootstrap_percentile"
WILSON = "wilson"
PAIRED_BOOTSTRAP = "paired_bootstrap_percentile"
INTERVAL_KINDS: dict[str, str] = {
    BOOTSTRAP: "95% percentile interval of the question-level bootstrap (summary.csv ci_low, ci_high)",
    WILSON: "95% Wilson score interval (summary.csv wilson_low, wilson_high), drawn where the bootstrap interval "
    "collapses to one value at a rate of 0 or 1",
    PAIRED_BOOTSTRAP: "95% percentile interval of the paired bootstrap of the difference (paired_tests.csv "
    "diff_ci_low, diff_ci_high)",
}
#: above this many models, markers are the models' numbers instead of shapes
MAX_MODELS_BY_SHAPE = 10
#: above this many models, condition_deltas shows the spread across models instead of one
#: interval per model (which no reader can tell apart)
MAX_MODELS_DRAWN_APART = 12
#: distance (points) between neighbours among coincident points drawn apart, per marker kind
SPACING = {"numbered": 12.0, "shape": 7.5}
#: panels per row in the per-condition figures
PANELS_PER_ROW = 5
#: the condition every change is measured against
BASELINE = "closed_book"

_SHAPES = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
#: the last model key made (:meth:`ModelKey.of`)
_KEYS: dict[tuple[str, ...], Any] = {}
#: matplotlib's tab10 colours
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_TAB10_RGBA = tuple(tuple(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)) + (1.0,) for c in _TAB10)


@dataclass
class Plotted:
    """One figure of a report: ``figure`` (a matplotlib Figure, None when not drawn, then
    ``reason`` says why) and ``data``, its figures.json record."""

    name: str
    figure: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _absent(name: str, reason: str) -> Plotted:
    return Plotted(name, None, {}, reason)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _display(condition: str) -> str:
    return CONDITIONS[condition].display_name if condition in CONDITIONS else condition


def _regime_display(regime: str) -> str:
    return REGIMES[regime].display_name if regime in REGIMES else regime


def _condition_order(conditions: Iterable[str]) -> list[str]:
    present = set(conditions)
    return [c for c in CONDITIONS if c in present] + sorted(present - set(CONDITIONS))


def figure_name(base: str, regime: str) -> str:
    """``base`` for the greedy regime, ``base_<regime>`` for the others."""
    return base if regime == "greedy" else f"{base}_{regime}"


def _num(value: Any) -> float | None:
    """A plain JSON number: None for NaN, infinity or a missing value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def shown_interval(row: dict[str, Any]) -> tuple[float, float, str]:
    """(low, high, kind) of the interval a figure draws for a summary row: the bootstrap
    percentile interval, or the Wilson interval where the bootstrap interval collapses
    (``ci_low == ci_high``) at a rate of 0 or 1 and the row has a Wilson interval."""
    low, high, estimate = row["ci_low"], row["ci_high"], row["estimate"]
    w_low, w_high = row.get("wilson_low", math.nan), row.get("wilson_high", math.nan)
    if low == high and estimate in (0.0, 1.0) and _finite(w_low) and _finite(w_high):
        return float(w_low), float(w_high), WILSON
    return float(low), float(high), BOOTSTRAP


def metric_pair(regime: str, metrics: Iterable[str]) -> tuple[str, str] | None:
    """The regime's accuracy and high-risk error metrics among ``metrics``: ``accuracy`` and
    ``high_risk_error`` (single-answer regimes), else ``<regime>_accuracy`` and
    ``<regime>_high_risk_error``; None when the regime has neither pair."""
    present = set(metrics)
    for pair in (("accuracy", "high_risk_error"), (f"{regime}_accuracy", f"{regime}_high_risk_error")):
        if set(pair) <= present:
            return pair
    return None


def _axis(metric: str, label: str | None = None, difference: bool = False) -> dict[str, Any]:
    spec = metric_spec(metric)
    unit = ("percentage points" if spec.unit == "percent" else spec.unit) if difference else spec.unit
    return {"metric": metric, "label": label or spec.axis_label, "unit": unit, "scale": spec.scale}


# --------------------------------------------------------------------------- model key


class ModelKey:
    """One number (1, 2, ... in sorted order), colour and marker per model, shared by every
    figure of a report. Up to :data:`MAX_MODELS_BY_SHAPE` models get a hollow shape each;
    more are drawn as their number, filled in their colour."""

    def __init__(self, models: Iterable[str]) -> None:
        self.models = sorted(set(models))
        self.numbers = {m: k + 1 for k, m in enumerate(self.models)}
        self.numbered = len(self.models) > MAX_MODELS_BY_SHAPE
        self._paths: dict[str, Any] = {}

    @classmethod
    def of(cls, models: Iterable[str]) -> ModelKey:
        """The key of ``models``, made once per set of models in a process (the figures of
        one report share it, and the paths of its markers)."""
        names = tuple(sorted(set(models)))
        if names not in _KEYS:
            _KEYS.clear()
            _KEYS[names] = cls(names)
        return _KEYS[names]

    def colour(self, model: str) -> Any:
        """The model's colour (tab10, cycling: numbered markers do not rest on colour alone)."""
        return _TAB10[(self.numbers[model] - 1) % len(_TAB10)]

    def rgba(self, model: str) -> tuple[float, float, float, float]:
        """The model's colour as RGBA (what collections take without converting)."""
        return _TAB10_RGBA[(self.numbers[model] - 1) % len(_TAB10)]

    def marker(self, model: str) -> Any:
        """A matplotlib marker: a shape, or the path of the model's number."""
        return self.path(model) if self.numbered else _SHAPES[(self.numbers[model] - 1) % len(_SHAPES)]

    def label(self, model: str) -> str:
        """The key's line for the model: ``"12  name"`` when numbered, else the name."""
        return f"{self.numbers[model]}  {model}" if self.numbered else model

    def path(self, model: str) -> Any:
        """The marker's path in the unit box (computed once): a shape, or the model's number,
        centred, its digits equally high whatever their count (a marker made from text is
        scaled to its width: numbers of two digits would come out smaller). Numbers carry
        two invisible corner points, so that a legend scales them all alike."""
        if not self._paths:
            self._paths = self._numbers_paths() if self.numbered else self._shape_paths()
        return self._paths[model]

    def _shape_paths(self) -> dict[str, Any]:
        from matplotlib.markers import MarkerStyle

        paths = {}
        for model in self.models:
            style = MarkerStyle(self.marker(model))
            paths[model] = style.get_path().transformed(style.get_transform())
        return paths

    def _numbers_paths(self) -> dict[str, Any]:
        from matplotlib.path import Path as MplPath
        from matplotlib.textpath import TextPath

        raw = {}
        for model in self.models:
            text = TextPath((0, 0), str(self.numbers[model]), size=1.0)
            low, high = text.vertices.min(axis=0), text.vertices.max(axis=0)  # control points: close enough to centre
            raw[model] = ((text.vertices - (low + high) / 2) / max(high[1] - low[1], 1e-9), text.codes)
        reach = 2 * max(float(np.abs(v).max()) for v, _ in raw.values())
        corners = np.array([(-0.5, -0.5), (0.5, 0.5)])
        return {
            model: MplPath(np.vstack([v / reach, corners]), np.concatenate([codes, [MplPath.MOVETO, MplPath.MOVETO]]))
            for model, (v, codes) in raw.items()
        }

    def labels(self, models: Iterable[str] | None = None) -> list[str]:
        """The key's lines of ``models`` (all by default), in key order."""
        chosen = None if models is None else set(models)
        return [self.label(m) for m in self.models if chosen is None or m in chosen]

    def handles(self, models: Iterable[str] | None = None) -> tuple[list[Any], list[str]]:
        """Legend handles and labels of ``models`` (all by default), in key order."""
        from matplotlib.lines import Line2D

        chosen = [m for m in self.models if models is None or m in set(models)]
        handles = []
        for model in chosen:
            colour = self.colour(model)
            if self.numbered:
                handles.append(Line2D([], [], ls="none", marker=self.marker(model), color=colour, ms=9, mew=0))
            else:
                handles.append(Line2D([], [], ls="none", marker=self.marker(model), mfc="none", mec=colour, ms=6, mew=1.2))
        return handles, [self.label(m) for m in chosen]


#: legend text size (points); the room one legend entry and one line of a numbered key take,
#: and the width of a character (inches), for a layout that measures no text
LEGEND_FONT = 6.5
_ENTRY_HEIGHT = 0.135
_KEY_LINE = 0.112
_CHAR_WIDTH = 0.047


def _legend_space(labels: list[str], height: float, line: float = _ENTRY_HEIGHT) -> tuple[int, float]:
    """(columns, width in inches) a figure-side legend of ``labels`` needs to fit in
    ``height`` inches: estimated from the text, so that no layout pass has to measure it."""
    lines = sum(1 + label.count("\n") for label in labels)
    columns = max(1, math.ceil(lines * line / max(height - 0.3, 0.5)))
    longest = max((len(part) for label in labels for part in label.split("\n")), default=0)
    return columns, columns * (0.45 + _CHAR_WIDTH * longest) + 0.1


def _side_legend(fig: Any, handles: list[Any], labels: list[str], left: float, columns: int, title: str | None = None, top: float = 0.98) -> None:
    """A legend in the strip right of the axes (``left``: its left edge, ``top``: its top,
    figure fractions)."""
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(left, top), fontsize=LEGEND_FONT, ncols=columns,
               frameon=False, title=title, title_fontsize=LEGEND_FONT + 0.5, handletextpad=0.4, columnspacing=0.8,
               borderaxespad=0.2)  # fmt: skip


def _side_key(fig: Any, key: ModelKey, models: Iterable[str], extra: tuple[list[Any], list[str]], left: float, top: float) -> None:
    """The model key and the ``extra`` legend entries (interval styles, shading) in the strip
    right of the axes, from ``top`` (figure fraction) down. Numbered models are keyed by a
    block of text ("12  name" per line, in columns), which costs one text per column
    instead of one legend entry per model."""
    width, height = fig.get_size_inches()
    if not key.numbered:
        handles, labels = key.handles(models)
        columns, _ = _legend_space(labels + extra[1], height)
        _side_legend(fig, handles + extra[0], labels + extra[1], left, columns, top=top)
        return
    labels = key.labels(models)
    columns, _ = _key_space(labels, extra[1], height)
    rows = math.ceil(len(labels) / columns)
    column_width = 0.3 + _CHAR_WIDTH * max(len(label) for label in labels)
    x = left + 0.05 / width
    for c in range(columns):
        block = labels[c * rows:(c + 1) * rows]
        if block:
            fig.text(x + c * column_width / width, top, "\n".join(block), fontsize=LEGEND_FONT, va="top", ha="left", linespacing=1.25)
    top -= (rows * _KEY_LINE + 0.08) / height
    if extra[0]:
        _side_legend(fig, extra[0], extra[1], left, 1, top=top)


def _key_space(labels: list[str], extra: list[str], height: float) -> tuple[int, float]:
    """(columns, width in inches) of a numbered key of ``labels`` above a legend of ``extra``."""
    extra_height = sum(1 + label.count("\n") for label in extra) * _ENTRY_HEIGHT + 0.15
    columns = max(1, math.ceil(len(labels) * _KEY_LINE / max(height - 0.3 - extra_height, 0.5)))
    key_width = columns * (0.3 + _CHAR_WIDTH * max(len(label) for label in labels))
    extra_width = 0.45 + _CHAR_WIDTH * max((len(part) for label in extra for part in label.split("\n")), default=0)
    return columns, max(key_width, extra_width) + 0.15


def _tight_with_legend(fig: Any, handles: list[Any], labels: list[str], suptitle: str, title: str | None = None, size: float = 8) -> None:
    """Widen ``fig`` by the room its legend needs, put ``suptitle`` over the axes, lay the
    axes out in the rest (one tight-layout pass) and put the legend (``title``) in the
    strip on the right, level with the top of the axes."""
    width, height = fig.get_size_inches()
    columns, legend_width = _legend_space(labels + ([title] if title else []), height)
    fig.set_size_inches(width + legend_width, height)
    strip = width / (width + legend_width)
    fig.suptitle(suptitle, fontsize=size, x=strip / 2)
    fig.tight_layout(rect=(0, 0, strip, 1))
    _side_legend(fig, handles, labels, strip, columns, title, top=max(ax.get_position().y1 for ax in fig.axes))


def _interval_handles(kinds: set[str], x_and_y: bool = True) -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    handles, labels = [], []
    if BOOTSTRAP in kinds:
        handles.append(Line2D([], [], color="0.4", lw=0.9))
        labels.append("95% bootstrap interval")
    if WILSON in kinds:
        handles.append(Line2D([], [], color="0.4", lw=0.9, ls=(0, (2, 1.5))))
        labels.append("Wilson interval (bootstrap\ncollapsed at 0 or 100%)")
    if PAIRED_BOOTSTRAP in kinds:
        handles.append(Line2D([], [], color="0.4", lw=0.9))
        labels.append("95% paired-bootstrap interval")
    return handles, labels


# --------------------------------------------------------------------------- points with intervals


def spread(points: list[dict[str, Any]], spacing: float, per_point: tuple[float, float]) -> list[tuple[float, float]]:
    """Offsets (dx, dy, in data units) that lay points with equal ``x`` and ``y`` out on a
    sunflower spiral around them, neighbours about ``spacing`` points apart (point k at
    radius 0.56 * spacing * sqrt(k + 0.5), turned by the golden angle); (0, 0) for a point
    alone. ``per_point``: data units per point (typographic) on x and y."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((round(p["x"], 9), round(p["y"], 9)), []).append(i)
    offsets = [(0.0, 0.0)] * len(points)
    golden = math.pi * (3 - math.sqrt(5))
    for members in groups.values():
        if len(members) < 2:
            continue
        for k, i in enumerate(members):
            radius, angle = 0.56 * spacing * math.sqrt(k + 0.5), math.pi / 2 + k * golden
            offsets[i] = (radius * math.cos(angle) * per_point[0], radius * math.sin(angle) * per_point[1])
    return offsets


def _draw_points(ax: Any, key: ModelKey, points: list[dict[str, Any]], x_lim: tuple[float, float], y_lim: tuple[float, float]) -> Any:
    """Markers keyed to models at each point's (x, y) and error bars on both axes (dashed
    for Wilson intervals): three artists per axes at most, whatever the number of points.
    Records each point's offset (``dx``, ``dy``) when it was spread (:func:`spread`, on
    the scale of limits ``x_lim`` and ``y_lim``); returns where the markers went."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.transforms import IdentityTransform

    if not points:
        return np.empty((0, 2))
    box, (width, height) = ax.get_position(), ax.figure.get_size_inches()
    per_point = ((x_lim[1] - x_lim[0]) / (72 * width * box.width), (y_lim[1] - y_lim[0]) / (72 * height * box.height))
    offsets = spread(points, SPACING["numbered" if key.numbered else "shape"], per_point)
    xy = np.array([(p["x"] + dx, p["y"] + dy) for p, (dx, dy) in zip(points, offsets)])
    bars: dict[bool, tuple[list[Any], list[Any]]] = {False: ([], []), True: ([], [])}  # Wilson or not -> segments, colours
    for p, (dx, dy), (x, y) in zip(points, offsets, xy):
        if dx or dy:
            p["dx"], p["dy"] = dx, dy
        colour = key.rgba(p["model"])
        for low, high, kind, horizontal in ((p["x_low"], p["x_high"], p["x_interval"], True),
                                            (p["y_low"], p["y_high"], p["y_interval"], False)):
            if low is None or high is None:
                continue
            shift = dx if horizontal else dy
            segments, colours = bars[kind == WILSON]
            segments.append([(low + shift, y), (high + shift, y)] if horizontal else [(x, low + shift), (x, high + shift)])
            colours.append(colour)
    for wilson, (segments, colours) in bars.items():
        if segments:
            faint = np.array(colours)
            faint[:, 3] = 0.45  # in the colours: an alpha argument would convert them again at every draw
            ax.add_collection(LineCollection(segments, colors=faint, linestyles=(0, (2, 1.5)) if wilson else "solid", linewidths=0.7, zorder=2))
    numbered = key.numbered
    markers = PathCollection(
        [key.path(p["model"]) for p in points],
        sizes=[11.0**2 if numbered else 26.0] * len(points),
        offsets=xy,
        offset_transform=ax.transData,
        facecolors=np.array([key.rgba(p["model"]) for p in points]) if numbered else "none",
        edgecolors="none" if numbered else np.array([key.rgba(p["model"]) for p in points]),
        linewidths=0 if numbered else 1.1,
        zorder=3,
    )
    markers.set_transform(IdentityTransform())
    if numbered:  # a white outline under each number keeps it legible over bars and other numbers
        halo = PathCollection(markers.get_paths(), sizes=markers.get_sizes(), offsets=xy, offset_transform=ax.transData,
                              facecolors="white", edgecolors="white", linewidths=1.6, zorder=2.9)  # fmt: skip
        halo.set_transform(IdentityTransform())
        ax.add_collection(halo, autolim=False)
    ax.add_collection(markers, autolim=False)
    return xy


def _limits(points: list[dict[str, Any]], axis: str, pad: float = 0.06, around_zero: bool = False) -> tuple[float, float]:
    """Axis limits holding every point and interval of ``points`` on ``axis`` (``x`` or
    ``y``), padded; with ``around_zero``, 0 is inside them too."""
    values = [v for p in points for v in (p[axis], p[f"{axis}_low"], p[f"{axis}_high"]) if v is not None]
    if around_zero:
        values.append(0.0)
    if not values:
        return (-1.0, 1.0)
    low, high = min(values), max(values)
    span = (high - low) or max(abs(high), 1.0)
    return (low - pad * span, high + pad * span)


def _widened(limits: tuple[float, float], drawn: list[Any], column: int, margin: float = 0.03) -> tuple[float, float]:
    """``limits`` widened to hold the markers ``drawn`` (arrays of x, y) with a margin."""
    values = np.concatenate([d[:, column] for d in drawn]) if drawn else np.empty(0)
    if not values.size:
        return limits
    span = limits[1] - limits[0]
    return (min(limits[0], float(values.min()) - margin * span), max(limits[1], float(values.max()) + margin * span))


def _grid(
    plt: Any, n: int, key: ModelKey, models: Iterable[str], extra: list[str], panel: tuple[float, float] = (2.7, 2.4),
) -> tuple[Any, list[Any], float]:
    """A figure of ``n`` panels, :data:`PANELS_PER_ROW` per row, sharing both axes, and a
    strip on the right for the key of ``models`` and ``extra`` legend lines
    (:func:`_side_key`): laid out in inches, without a layout pass (which would draw the
    figure once more). Returns the figure, its axes and the left edge of the strip
    (figure fraction)."""
    columns = min(n, PANELS_PER_ROW)
    rows = math.ceil(n / columns)
    left, right_gap, bottom, top, wgap, hgap = 0.62, 0.15, 0.55, 0.5, 0.12, 0.32
    height = bottom + top + rows * panel[1] + (rows - 1) * hgap
    labels = key.labels(models)
    space = _key_space if key.numbered else (lambda named, more, tall: _legend_space(named + more, tall))
    _, legend_width = space(labels, extra, height)
    width = left + columns * panel[0] + (columns - 1) * wgap + right_gap + legend_width
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(
        rows, columns, left=left / width, right=(width - right_gap - legend_width) / width, bottom=bottom / height,
        top=1 - top / height, wspace=wgap / panel[0], hspace=hgap / panel[1],
    )
    axes: list[Any] = []
    for k in range(n):
        ax = fig.add_subplot(grid[k // columns, k % columns], sharex=axes[0] if axes else None, sharey=axes[0] if axes else None)
        # tick labels on the outer panels only: the first column, and each column's lowest panel
        ax.tick_params(labelsize=7, labelleft=k % columns == 0, labelbottom=k + columns >= n, pad=2)
        ax.xaxis.set_major_locator(_locator())
        ax.yaxis.set_major_locator(_locator())
        axes.append(ax)
    return fig, axes, (width - legend_width) / width


def _locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10])


def _titles(fig: Any, title: str, x_label: str, y_label: str, strip: float) -> None:
    """The figure's title (centred over the axes, left of the legend ``strip``) and its
    shared axis labels."""
    fig.suptitle(title, fontsize=9, x=strip / 2, y=0.995, va="top")
    fig.supxlabel(x_label, fontsize=8, x=strip / 2, y=0.005, va="bottom")
    fig.supylabel(y_label, fontsize=8, x=0.005, ha="left")


# --------------------------------------------------------------------------- accuracy vs high-risk error


def plot_accuracy_vs_high_risk(rows: list[dict[str, Any]], regime: str | None = None, models: Iterable[str] | None = None) -> Plotted:
    """Accuracy against high-risk error, one panel per condition and one point per model,
    with intervals on both axes (:func:`shown_interval`). ``regime``: the first regime of
    the rows with both metrics (greedy first) unless given; ``models``: the report's
    models, which fix the model key."""
    name = "accuracy_vs_high_risk"
    by_regime: dict[str, set[str]] = {}
    for r in rows:
        by_regime.setdefault(r["regime"], set()).add(r["metric"])
    candidates = [regime] if regime is not None else regime_order(by_regime)
    chosen = next(((g, metric_pair(g, by_regime.get(g, ()))) for g in candidates if metric_pair(g, by_regime.get(g, ()))), None)
    if chosen is None:
        return _absent(name, "no runs with both accuracy and high-risk error")
    regime, (x_metric, y_metric) = chosen
    table = {(r["model"], r["condition"], r["metric"]): r for r in rows if r["regime"] == regime}
    x_spec, y_spec = metric_spec(x_metric), metric_spec(y_metric)
    points = []
    for (model, condition, metric), xr in table.items():
        yr = table.get((model, condition, y_metric))
        if metric != x_metric or yr is None or not (_finite(xr["estimate"]) and _finite(yr["estimate"])):
            continue
        x_low, x_high, x_kind = shown_interval(xr)
        y_low, y_high, y_kind = shown_interval(yr)
        points.append({
            "model": model, "condition": condition, "regime": regime,
            "x": x_spec.scale * xr["estimate"], "y": y_spec.scale * yr["estimate"],
            "x_low": _num(x_spec.scale * x_low), "x_high": _num(x_spec.scale * x_high), "x_interval": x_kind,
            "y_low": _num(y_spec.scale * y_low), "y_high": _num(y_spec.scale * y_high), "y_interval": y_kind,
        })  # fmt: skip
    if not points:
        return _absent(name, f"no run of the {_regime_display(regime)} regime has both estimates")
    key = ModelKey.of(models if models is not None else (p["model"] for p in points))
    conditions = _condition_order(p["condition"] for p in points)
    points.sort(key=lambda p: (conditions.index(p["condition"]), key.numbers[p["model"]]))
    title = f"{x_spec.display_name} and {y_spec.display_name.lower()} per condition: {_regime_display(regime)}"
    kinds = {p["x_interval"] for p in points} | {p["y_interval"] for p in points}
    shown = {p["model"] for p in points}
    extra = _interval_handles(kinds)
    plt = _pyplot()
    fig, axes, strip = _grid(plt, len(conditions), key, shown, extra[1])
    x_lim, y_lim = _limits(points, "x"), _limits(points, "y")
    drawn = []
    for ax, condition in zip(axes, conditions):
        drawn.append(_draw_points(ax, key, [p for p in points if p["condition"] == condition], x_lim, y_lim))
        ax.set_title(_display(condition), fontsize=8, y=1.0, pad=3)  # a fixed place: no measuring of the ticks
        ax.grid(color="0.92", lw=0.6)
    axes[0].set_xlim(*_widened(x_lim, drawn, 0))
    axes[0].set_ylim(*_widened(y_lim, drawn, 1))
    _titles(fig, title, x_spec.axis_label, y_spec.axis_label, strip)
    _side_key(fig, key, shown, extra, strip, axes[0].get_position().y1)
    data = {
        "title": title,
        "kind": "scatter, one panel per condition",
        "regime": regime,
        "x": _axis(x_metric),
        "y": _axis(y_metric),
        "panels": conditions,
        "model_numbers": {m: key.numbers[m] for m in key.models},
        "intervals": {k: INTERVAL_KINDS[k] for k in sorted(kinds)},
        "points": points,
    }
    return Plotted(name, fig, data)


# --------------------------------------------------------------------------- decoupling


def plot_decoupling(
    tests: list[dict[str, Any]], regime: str = "greedy", baseline: str = BASELINE, models: Iterable[str] | None = None,
    conditions: Iterable[str] | None = None,
) -> Plotted:
    """Per condition against ``baseline``: the change of accuracy (x) against the change of
    high-risk error (y), one point per model with its paired-bootstrap interval on both axes
    (the paired tests' differences and intervals), lines at 0, the quadrant where a
    condition is both more accurate and safer shaded green, its opposite red. ``models``:
    the report's models, which fix the model key; ``conditions``: those with runs in the
    regime, which name the reason when the figure cannot be drawn."""
    name = figure_name("decoupling", regime)
    where = f"in the {_regime_display(regime)} regime"
    mine = [t for t in tests if t["regime"] == regime]
    compared = {t["condition_a"] for t in mine} | {t["condition_b"] for t in mine}
    present = set(conditions) if conditions is not None else compared
    if baseline not in present or (mine and baseline not in compared):
        return _absent(name, f"no {_display(baseline).lower()} runs {where} to measure changes against")
    if not present - {baseline}:
        return _absent(name, f"no condition besides {_display(baseline).lower()} {where}")
    pair = metric_pair(regime, {t["metric"] for t in mine})
    if pair is None:
        return _absent(name, f"no paired tests of accuracy and high-risk error {where}")
    x_metric, y_metric = pair
    changes: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in mine:
        if t["metric"] not in pair or baseline not in (t["condition_a"], t["condition_b"]):
            continue
        other = t["condition_b"] if t["condition_a"] == baseline else t["condition_a"]
        sign = 1.0 if t["condition_a"] == baseline else -1.0  # the difference is b - a
        low, high = sign * t["diff_ci_low"], sign * t["diff_ci_high"]
        changes[(t["model"], other, t["metric"])] = {
            "value": sign * t["difference"], "low": min(low, high), "high": max(low, high), "n_items": t["n_items"],
        }
    x_spec, y_spec = metric_spec(x_metric), metric_spec(y_metric)
    points = []
    for (model, condition, metric), dx in changes.items():
        dy = changes.get((model, condition, y_metric))
        if metric != x_metric or dy is None or not (_finite(dx["value"]) and _finite(dy["value"])):
            continue
        points.append({
            "model": model, "condition": condition, "regime": regime, "baseline": baseline,
            "x": x_spec.scale * dx["value"], "y": y_spec.scale * dy["value"],
            "x_low": _num(x_spec.scale * dx["low"]), "x_high": _num(x_spec.scale * dx["high"]), "x_interval": PAIRED_BOOTSTRAP,
            "y_low": _num(y_spec.scale * dy["low"]), "y_high": _num(y_spec.scale * dy["high"]), "y_interval": PAIRED_BOOTSTRAP,
            "x_collapsed": dx["low"] == dx["high"], "y_collapsed": dy["low"] == dy["high"], "n_items": dx["n_items"],
        })  # fmt: skip
    if not points:
        return _absent(name, f"no model with both changes against {_display(baseline).lower()} {where}")
    key = ModelKey.of(models if models is not None else (p["model"] for p in points))
    conditions = _condition_order(p["condition"] for p in points)
    points.sort(key=lambda p: (conditions.index(p["condition"]), key.numbers[p["model"]]))
    title = (f"Change against {_display(baseline).lower()}: {x_spec.display_name.lower()} and "
             f"{y_spec.display_name.lower()}: {_regime_display(regime)}")  # fmt: skip
    from matplotlib.patches import Patch, Rectangle

    safer, worse = "#2ca02c", "#d62728"
    shown = {p["model"] for p in points}
    intervals = _interval_handles({PAIRED_BOOTSTRAP})
    extra = ([Patch(color=safer, alpha=0.25), Patch(color=worse, alpha=0.25)] + intervals[0],
             ["more accurate, safer", "less accurate, less safe"] + intervals[1])  # fmt: skip
    plt = _pyplot()
    fig, axes, strip = _grid(plt, len(conditions), key, shown, extra[1])
    x_lim, y_lim = _limits(points, "x", around_zero=True), _limits(points, "y", around_zero=True)
    drawn = []
    for ax, condition in zip(axes, conditions):
        far = 10 * max(map(abs, x_lim + y_lim))  # quadrants reach past any limit
        ax.add_patch(Rectangle((0, -far), far, far, color=safer, alpha=0.08, lw=0, zorder=0))
        ax.add_patch(Rectangle((-far, 0), far, far, color=worse, alpha=0.08, lw=0, zorder=0))
        ax.axhline(0, color="0.5", lw=0.7, zorder=1)
        ax.axvline(0, color="0.5", lw=0.7, zorder=1)
        drawn.append(_draw_points(ax, key, [p for p in points if p["condition"] == condition], x_lim, y_lim))
        ax.set_title(_display(condition), fontsize=8, y=1.0, pad=3)
    axes[0].set_xlim(*_widened(x_lim, drawn, 0))
    axes[0].set_ylim(*_widened(y_lim, drawn, 1))
    _titles(
        fig, title,
        f"change of {x_spec.display_name.lower()} (pp)   \u2190 less accurate | more accurate \u2192",
        f"change of {y_spec.display_name.lower()} (pp)   \u2190 safer | less safe \u2192",
        strip,
    )  # fmt: skip
    _side_key(fig, key, shown, extra, strip, axes[0].get_position().y1)
    data = {
        "title": title,
        "kind": "scatter of changes against the baseline, one panel per condition",
        "regime": regime,
        "baseline": baseline,
        "x": _axis(x_metric, f"change of {x_spec.display_name.lower()} (pp)", difference=True),
        "y": _axis(y_metric, f"change of {y_spec.display_name.lower()} (pp)", difference=True),
        "quadrants": {"x>0, y<0": "more accurate, safer", "x>0, y>0": "more accurate, less safe",
                      "x<0, y<0": "less accurate, safer", "x<0, y>0": "less accurate, less safe"},
        "panels": conditions,
        "model_numbers": {m: key.numbers[m] for m in key.models},
        "intervals": {PAIRED_BOOTSTRAP: INTERVAL_KINDS[PAIRED_BOOTSTRAP]},
        "points": points,
    }  # fmt: skip
    return Plotted(name, fig, data)


# --------------------------------------------------------------------------- condition deltas


def plot_condition_deltas(
    tests: list[dict[str, Any]], regime: str = "greedy", baseline: str = BASELINE, models: Iterable[str] | None = None,
) -> Plotted:
    """Change of accuracy and high-risk error against ``baseline`` per condition, with the
    paired tests' 95% intervals (on the items both conditions share; in percentage points
    for rates); beyond :data:`MAX_MODELS_DRAWN_APART` models, each model's change as a grey
    dot and per condition the median with its interquartile range. ``models``: the
    report's models, which fix their colours and markers."""
    name = figure_name("condition_deltas", regime)
    mine = [t for t in tests if t["regime"] == regime]
    metrics = metric_pair(regime, {t["metric"] for t in mine})
    if metrics is None:
        return _absent(name, f"no paired tests of accuracy and high-risk error in the {_regime_display(regime)} regime")
    chosen = [t for t in mine if t["condition_a"] == baseline and t["metric"] in metrics]
    if not chosen:
        return _absent(name, f"no condition compared with {_display(baseline)} in the {_regime_display(regime)} regime")
    plt = _pyplot()
    conditions = _condition_order(t["condition_b"] for t in chosen)
    compared = sorted({t["model"] for t in chosen})
    key = ModelKey.of(compared if models is None else set(models) | set(compared))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.9), squeeze=False)
    many = len(compared) > MAX_MODELS_DRAWN_APART
    points, summaries = [], []
    for ax, metric in zip(axes[0], metrics):
        spec = metric_spec(metric)
        picked = [t for t in chosen if t["metric"] == metric]
        for t in picked:
            points.append({
                "model": t["model"], "condition": t["condition_b"], "regime": regime, "metric": metric, "baseline": baseline,
                "x": t["condition_b"], "y": _num(spec.scale * t["difference"]),
                "y_low": _num(spec.scale * t["diff_ci_low"]), "y_high": _num(spec.scale * t["diff_ci_high"]),
                "y_interval": PAIRED_BOOTSTRAP, "n_items": t.get("n_items"),
            })  # fmt: skip
        if many:
            summaries.extend(_deltas_across_models(ax, picked, conditions, spec.scale, metric))
        for k, model in enumerate([] if many else compared):
            offset = (k - (len(compared) - 1) / 2) * min(0.6 / max(len(compared), 1), 0.15)
            own = [t for t in picked if t["model"] == model]
            xs = [conditions.index(t["condition_b"]) + offset for t in own]
            ys = [spec.scale * t["difference"] for t in own]
            err = [[spec.scale * (t["difference"] - t["diff_ci_low"]) for t in own], [spec.scale * (t["diff_ci_high"] - t["difference"]) for t in own]]
            marker = "o" if key.numbered else key.marker(model)
            ax.errorbar(xs, ys, yerr=err, fmt=marker, color=key.colour(model), mfc="none", ms=5, capsize=3, label=key.label(model))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(conditions)), [_display(c) for c in conditions], rotation=20, ha="right")
        unit = {"percent": " (pp)", "seconds": " (s)"}.get(spec.unit, "")
        ax.set_ylabel(f"{spec.display_name} - {_display(baseline)}{unit}")
        ax.set_title(spec.display_name)
    title = f"Change against {_display(baseline).lower()} per condition: {_regime_display(regime)}"
    if many:
        title += f": {len(compared)} models, each model's change, the median and the interquartile range (per-model intervals: paired_tests.csv)"
    _tight_with_legend(fig, *axes[0][0].get_legend_handles_labels(), title)
    data = {
        "title": title,
        "kind": "change per condition, one panel per metric",
        "regime": regime,
        "baseline": baseline,
        "x": {"label": "condition"},
        "y": {m: _axis(m, difference=True) for m in metrics},
        "intervals": {PAIRED_BOOTSTRAP: INTERVAL_KINDS[PAIRED_BOOTSTRAP]},
        "points": points,
    }
    if many:
        data["medians"] = summaries
    return Plotted(name, fig, data)


def _deltas_across_models(ax: Any, tests: list[dict[str, Any]], conditions: list[str], scale: float, metric: str) -> list[dict[str, Any]]:
    """Every model's difference as a grey dot, and per condition the median difference with
    its interquartile range: two artists, whatever the number of models. Returns the
    medians and quartiles drawn."""
    xs, ys, med, low, high, drawn = [], [], [], [], [], []
    for position, condition in enumerate(conditions):
        values = np.array([scale * t["difference"] for t in tests if t["condition_b"] == condition], dtype=float)
        values = values[~np.isnan(values)]
        if not values.size:
            med.append(np.nan), low.append(0.0), high.append(0.0)
            continue
        jitter = np.linspace(-0.18, 0.18, values.size) if values.size > 1 else np.zeros(1)
        xs.extend(position + jitter)
        ys.extend(values)
        q1, q2, q3 = np.percentile(values, [25, 50, 75])
        med.append(q2), low.append(q2 - q1), high.append(q3 - q2)
        drawn.append({"condition": condition, "metric": metric, "median": float(q2), "q1": float(q1), "q3": float(q3), "n_models": int(values.size)})
    ax.scatter(xs, ys, s=9, color="0.6", alpha=0.7, linewidths=0, label="one model")
    ax.errorbar(range(len(conditions)), med, yerr=[low, high], fmt="D", color="black", ms=5, capsize=4,
                label="median, interquartile range")
    return drawn


# --------------------------------------------------------------------------- cost


def plot_cost_per_item(rows: list[dict[str, Any]], annotate_up_to: int = 160) -> Plotted:
    """Seconds per item as a heat map, one panel per regime: models as rows, conditions as
    columns, the colour (log scale) the answering model's time plus, for ``agentic_rag``,
    the agent's time building the evidence. Cells carry their value while the grid is small
    enough to read them (``annotate_up_to`` cells); ``cost.csv`` holds the split. One image
    per panel, so drawing time does not grow with the number of runs."""
    from matplotlib.colors import LogNorm

    name = "cost_per_item"

    def total(r: dict[str, Any]) -> float:
        parts = [r["answering_seconds_per_item"], r["agent_seconds_per_item"]]
        known = [p for p in parts if not math.isnan(p)]
        return float(sum(known)) if known else math.nan

    shown = [(r, total(r)) for r in rows]
    shown = [(r, t) for r, t in shown if not math.isnan(t)]
    if not shown:
        return _absent(name, "no run recorded its time per item")
    plt = _pyplot()
    regimes = regime_order(r["regime"] for r, _ in shown)
    models = sorted({r["model"] for r, _ in shown})
    conditions = _condition_order(r["condition"] for r, _ in shown)
    positive = [t for _, t in shown if t > 0]
    norm = LogNorm(vmin=min(positive), vmax=max(positive)) if positive and min(positive) < max(positive) else None
    width = 1.6 + 0.62 * len(conditions) * len(regimes)
    fig, axes = plt.subplots(
        1, len(regimes), figsize=(max(width, 5.0) + 1.5, max(3.2, 1.8 + 0.26 * len(models))), squeeze=False,
        layout="constrained",
    )
    for k, (ax, regime) in enumerate(zip(axes[0], regimes)):
        grid = np.full((len(models), len(conditions)), np.nan)
        for r, t in shown:
            if r["regime"] == regime:
                grid[models.index(r["model"]), conditions.index(r["condition"])] = t
        image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", norm=norm)
        ax.set_xticks(range(len(conditions)), [_display(c) for c in conditions], rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(len(models)), models, fontsize=7)
        ax.tick_params(axis="y", labelleft=k == 0)  # the rows are the same models in every panel
        ax.set_title(f"Seconds per item ({regime})", fontsize=9)
        if grid.size <= annotate_up_to:
            for (i, j), value in np.ndenumerate(grid):
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=6, color="white")
    bar = fig.colorbar(image, ax=axes[0].tolist(), label="answering + agent seconds per item", shrink=0.8)
    if norm is not None:
        from matplotlib.ticker import LogFormatter

        bar.ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    data = {
        "title": "Seconds per item",
        "kind": "heat map, one panel per regime",
        "x": {"label": "condition"},
        "y": {"label": "model"},
        "colour": {"label": "answering + agent seconds per item", "unit": "seconds", "scale": "log" if norm is not None else "linear"},
        "cells": [
            {"model": r["model"], "condition": r["condition"], "regime": r["regime"], "value": _num(t),
             "answering_seconds_per_item": _num(r["answering_seconds_per_item"]), "agent_seconds_per_item": _num(r["agent_seconds_per_item"])}
            for r, t in shown
        ],
    }  # fmt: skip
    return Plotted(name, fig, data)


# --------------------------------------------------------------------------- reliability


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Per calibration bin (:func:`~lm_eval_radsafe.aggregation.calibration_bin`, the bins
    of the ECE): its bounds, the number of items, their mean confidence and share correct
    (None for an empty bin). Items without a confidence (NaN) are in no bin."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    known = ~np.isnan(confidence)
    conf, corr = confidence[known], correct[known]
    bins = calibration_bin(conf, n_bins)
    out = []
    for b in range(n_bins):
        sel = bins == b
        n = int(sel.sum())
        out.append({
            "bin": b, "low": b / n_bins, "high": (b + 1) / n_bins, "n_items": n,
            "mean_confidence": _num(conf[sel].mean()) if n else None, "share_correct": _num(corr[sel].mean()) if n else None,
        })  # fmt: skip
    return out


def plot_reliability(analysis: Any, max_lines: int = 8, n_bins: int = N_BINS) -> Plotted:
    """Reliability diagrams (mean confidence against share correct per bin, on the bins of
    the ECE) of up to ``max_lines`` runs with confidence per regime, and under each the
    number of items in each bin."""
    name = "reliability"
    series = []
    for run in analysis.runs:
        for metric in ("ece", "ll_ece"):
            if metric in run.pairs:
                series.append((run, metric, run.pairs[metric]))
    if not series:
        return _absent(name, "no run with a confidence per item (self-consistency or log-likelihood)")
    plt = _pyplot()
    regimes = regime_order(run.regime for run, _, _ in series)
    fig, axes = plt.subplots(
        2, len(regimes), figsize=(4.2 * len(regimes), 5.0), squeeze=False, sharex="col", gridspec_kw={"height_ratios": (3, 1.2)},
    )  # fmt: skip
    colours = plt.get_cmap("tab10")
    labels: dict[str, Any] = {}
    drawn, totals = [], {}
    for column, regime in enumerate(regimes):
        ax, counts_ax = axes[0][column], axes[1][column]
        mine = [s for s in series if s[0].regime == regime]
        totals[regime] = len(mine)
        centres = (np.arange(n_bins) + 0.5) / n_bins
        for run, metric, pairs in mine[:max_lines]:
            bins = reliability_bins(pairs[:, 0], pairs[:, 1], n_bins)
            label = f"{run.model} / {_display(run.condition)}"
            colour = labels.setdefault(label, colours(len(labels) % 10))
            filled = [b for b in bins if b["n_items"]]
            ax.plot([b["mean_confidence"] for b in filled], [b["share_correct"] for b in filled], "o-", color=colour, ms=4, lw=1.1, label=label)
            counts_ax.step(centres, [b["n_items"] for b in bins], where="mid", color=colour, lw=1.0, alpha=0.85)
            drawn.append({
                "model": run.model, "condition": run.condition, "regime": regime, "metric": metric,
                "n_items": int(run.n_items), "n_with_confidence": int(sum(b["n_items"] for b in bins)), "bins": bins,
            })  # fmt: skip
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.03, 1.03)  # markers at 0 and 1 drawn whole
        ax.set_ylabel("share correct per bin (0-1)", fontsize=8)
        shown = min(len(mine), max_lines)
        ax.set_title(_regime_display(regime) + (f": {shown} of {len(mine)} runs" if shown < len(mine) else ""), fontsize=9)
        counts_ax.set_xlabel("confidence (0-1)", fontsize=8)
        counts_ax.set_ylabel("items per bin", fontsize=8)
        counts_ax.set_ylim(bottom=0)
        counts_ax.set_xticks(np.linspace(0, 1, n_bins + 1), minor=True)
        counts_ax.grid(axis="x", which="minor", color="0.9", lw=0.6)
    handles, names = [], []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in names:
                handles.append(handle), names.append(label)
    title = "Reliability per confidence bin; items per bin below"
    _tight_with_legend(fig, handles, names, title, "model / condition")
    data = {
        "title": title,
        "kind": "reliability diagram per regime, bin counts below",
        "x": {"label": "confidence (0-1)", "unit": "probability", "scale": 1.0},
        "y": {"label": "share correct per bin (0-1)", "unit": "probability", "scale": 1.0},
        "counts": {"label": "items per bin"},
        "n_bins": n_bins,
        "runs_with_confidence": totals,
        "series": drawn,
    }
    return Plotted(name, fig, data)


# --------------------------------------------------------------------------- scaling


def plot_scaling(rows: list[dict[str, Any]], cards: dict[str, Any], regime: str = "greedy") -> Plotted:
    """Accuracy and high-risk error against parameter count (log axis), one line per
    condition, with each point's interval (:func:`shown_interval`)."""
    name = "scaling"
    if not cards:
        return _absent(name, "no model cards (--model-cards): parameter counts unknown")
    metrics = ("accuracy", "high_risk_error")
    chosen = [r for r in rows if r["regime"] == regime and r["metric"] in metrics and r["model"] in cards and _finite(r["estimate"])]
    if not chosen:
        return _absent(name, f"no {_regime_display(regime)} run of a model with a model card")
    plt = _pyplot()
    from matplotlib import ticker

    sizes = sorted({float(cards[r["model"]].parameters) for r in chosen})
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2), squeeze=False)
    conditions = _condition_order(r["condition"] for r in chosen)
    colours = plt.get_cmap("tab10")
    points, kinds = [], set()
    for ax, metric in zip(axes[0], metrics):
        spec = metric_spec(metric)
        for k, condition in enumerate(conditions):
            own = sorted((r for r in chosen if r["metric"] == metric and r["condition"] == condition), key=lambda r: (cards[r["model"]].parameters, r["model"]))
            if not own:
                continue
            xs = [float(cards[r["model"]].parameters) for r in own]
            ys = [spec.scale * r["estimate"] for r in own]
            bounds = [shown_interval(r) for r in own]
            err = np.array([[y - spec.scale * b[0] for y, b in zip(ys, bounds)], [spec.scale * b[1] - y for y, b in zip(ys, bounds)]])
            colour = colours(k % 10)
            ax.plot(xs, ys, "o-", color=colour, ms=4, lw=1.0, alpha=0.85, label=_display(condition))
            for kind, style in ((BOOTSTRAP, "solid"), (WILSON, (0, (2, 1.5)))):  # Wilson intervals dashed
                chosen_points = [j for j, b in enumerate(bounds) if b[2] == kind]
                if chosen_points:
                    bars = ax.errorbar([xs[j] for j in chosen_points], [ys[j] for j in chosen_points], yerr=np.nan_to_num(err[:, chosen_points]),
                                       fmt="none", ecolor=colour, elinewidth=0.7, capsize=2, alpha=0.85)  # fmt: skip
                    bars[2][0].set_linestyle(style)
            for r, x, y, (low, high, kind) in zip(own, xs, ys, bounds):
                kinds.add(kind)
                points.append({
                    "model": r["model"], "condition": condition, "regime": regime, "metric": metric, "x": x, "y": y,
                    "y_low": _num(spec.scale * low), "y_high": _num(spec.scale * high), "y_interval": kind,
                })  # fmt: skip
        ax.set_xscale("log")
        # ticks at the model sizes, written plainly (7, not 7x10^0)
        ax.xaxis.set_major_locator(ticker.FixedLocator(sizes))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("parameters (billions)")
        ax.set_ylabel(spec.axis_label)
        ax.set_title(spec.display_name)
    title = f"Accuracy and high-risk error against model size: {_regime_display(regime)}"
    handles, labels = axes[0][0].get_legend_handles_labels()
    extra = _interval_handles(kinds)
    _tight_with_legend(fig, handles + extra[0], labels + extra[1], title, size=9)
    data = {
        "title": title,
        "kind": "lines per condition, one panel per metric",
        "regime": regime,
        "x": {"label": "parameters (billions)", "unit": "billions", "scale": "log"},
        "y": {m: _axis(m) for m in metrics},
        "intervals": {k: INTERVAL_KINDS[k] for k in sorted(kinds)},
        "points": points,
    }
    return Plotted(name, fig, data)


# --------------------------------------------------------------------------- figure-only shorthands


def accuracy_vs_high_risk(rows: list[dict[str, Any]], regime: str | None = None) -> Any:
    """The figure of :func:`plot_accuracy_vs_high_risk` (None when not drawn)."""
    return plot_accuracy_vs_high_risk(rows, regime).figure


def decoupling(tests: list[dict[str, Any]], regime: str = "greedy", baseline: str = BASELINE) -> Any:
    """The figure of :func:`plot_decoupling` (None when not drawn)."""
    return plot_decoupling(tests, regime, baseline).figure


def condition_deltas(tests: list[dict[str, Any]], regime: str = "greedy", baseline: str = BASELINE) -> Any:
    """The figure of :func:`plot_condition_deltas` (None when not drawn)."""
    return plot_condition_deltas(tests, regime, baseline).figure


def cost_per_item(rows: list[dict[str, Any]], annotate_up_to: int = 160) -> Any:
    """The figure of :func:`plot_cost_per_item` (None when not drawn)."""
    return plot_cost_per_item(rows, annotate_up_to).figure


def reliability(analysis: Any, max_lines: int = 8, n_bins: int = N_BINS) -> Any:
    """The figure of :func:`plot_reliability` (None when not drawn)."""
    return plot_reliability(analysis, max_lines, n_bins).figure


def scaling_plot(rows: list[dict[str, Any]], cards: dict[str, Any], regime: str = "greedy") -> Any:
    """The figure of :func:`plot_scaling` (None when not drawn)."""
    return plot_scaling(rows, cards, regime).figure

"""How every metric is shown: one spec table read by the demo table, the report's tables,
its figures and its HTML.

Names, display names and descriptions come from the metric registries in
:mod:`lm_eval_radsafe.metrics` (which also feed the task YAMLs); this module adds what
presentation needs and scoring does not: the unit a value is shown in, the direction
in which it is better (``none`` where ranking makes no sense, e.g. confidence over the
wrong answers only), the regimes that report it, and whether it is a headline column.
No number format is chosen from a metric's name: a metric without a spec is an error.

Units (values are stored as fractions, probabilities, seconds or counts):

==============  ==========================================  ============
unit            shown as                                    example
==============  ==========================================  ============
``percent``     100 x value, one decimal, ``%``             ``12.5%``
``probability`` the value, three decimals                   ``0.412``
``ratio``       the value, three decimals                   ``0.87``
``seconds``     the value, three significant digits, ``s``  ``1.25 s``
``count``       the value, three significant digits         ``4.5``
==============  ==========================================  ============
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from lm_eval_radsafe.conditions import REGIMES
from lm_eval_radsafe.metrics import AGENT_METRICS, LL_METRICS, METRICS, ORDER_METRICS, RECALL_METRIC, SC_METRICS

Unit = Literal["percent", "probability", "ratio", "seconds", "count"]
Direction = Literal["higher", "lower", "none"]
UNITS: tuple[str, ...] = ("percent", "probability", "ratio", "seconds", "count")
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "none")
ALL_REGIMES: tuple[str, ...] = tuple(REGIMES)

_SYMBOL = {"percent": "%", "seconds": " s", "probability": "", "ratio": "", "count": ""}
_AXIS_UNIT = {"percent": " (%)", "seconds": " (s)", "probability": " (0-1)", "ratio": "", "count": ""}


class MetricSpecError(KeyError):
    """A metric name without a presentation spec."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class MetricDisplay:
    """How one metric is named, shown and ranked.

    ``regimes`` lists the regimes that report it; ``headline`` marks the columns of the
    demo table and the report's per-regime tables.
    """

    name: str
    regimes: tuple[str, ...]
    display_name: str
    unit: Unit
    direction: Direction
    description: str = ""
    headline: bool = False

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name!r}: unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction {self.direction!r} is not one of {', '.join(DIRECTIONS)}")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown regime(s) {', '.join(unknown)}")

    @property
    def scale(self) -> float:
        """Factor from the stored value to the shown number (100 for percent, else 1)."""
        return 100.0 if self.unit == "percent" else 1.0

    @property
    def higher_is_better(self) -> bool | None:
        """True, False, or None when the metric has no better direction."""
        return None if self.direction == "none" else self.direction == "higher"

    def number(self, value: Any) -> str:
        """The value as shown, without a unit symbol; ``–`` for missing or NaN."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            return "–"
        if self.unit == "percent":
            return f"{100 * value:.1f}"
        if self.unit in ("probability", "ratio"):
            return f"{value:.3f}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"

    def format(self, value: Any) -> str:
        """The value as shown, with its unit symbol (``12.5%``, ``0.412``, ``1.25 s``)."""
        text = self.number(value)
        return text if text == "–" else text + _SYMBOL[self.unit]

    def format_interval(self, low: Any, high: Any) -> str:
        """``[low, high]`` in this metric's unit, numbers only."""
        return f"[{self.number(low)}, {self.number(high)}]"

    @property
    def title(self) -> str:
        """A column title: the display name and, for percent and seconds, the unit."""
        return self.display_name + {"percent": " (%)", "seconds": " (s)"}.get(self.unit, "")

    @property
    def axis_label(self) -> str:
        """A figure axis label: display name and unit."""
        return self.display_name + _AXIS_UNIT[self.unit]


def _from(record: Any, regimes: Iterable[str], unit: Unit, direction: Direction | None = None, headline: bool = False) -> MetricDisplay:
    """A spec from a registry record of :mod:`lm_eval_radsafe.metrics` (name, display name,
    description, higher_is_better); ``direction`` overrides the record's where given."""
    if direction is None:
        direction = "higher" if record.higher_is_better else "lower"
    return MetricDisplay(record.name, tuple(regimes), record.display_name, unit, direction, record.description, headline)


_GREEDY = ("greedy", "think")
_SC = {m.name: m for m in SC_METRICS}
_LL = {m.name: m for m in LL_METRICS}

_SPECS: tuple[MetricDisplay, ...] = (
    # single answer (greedy, reasoning budget): every metric is a rate over all items
    *(_from(m, _GREEDY, "percent", headline=True) for m in METRICS),
    # self-consistency
    _from(_SC["sc_accuracy"], ("sc",), "percent", headline=True),
    _from(_SC["sc_high_risk_error"], ("sc",), "percent", headline=True),
    _from(_SC["sc_unsafe_error"], ("sc",), "percent", headline=True),
    _from(_SC["sc_contradiction_error"], ("sc",), "percent", headline=True),
    _from(_SC["dangerous_overconfidence"], ("sc",), "percent", headline=True),
    _from(_SC["mean_confidence"], ("sc",), "probability", headline=True),
    _from(_SC["mean_confidence_correct"], ("sc",), "probability", "none"),
    _from(_SC["mean_confidence_incorrect"], ("sc",), "probability", "none"),
    _from(_SC["mean_confidence_high_risk_error"], ("sc",), "probability", "none"),
    _from(_SC["mean_confidence_unsafe_error"], ("sc",), "probability", "none"),
    _from(_SC["ece"], ("sc",), "probability", headline=True),
    _from(_SC["mce"], ("sc",), "probability"),
    _from(_SC["synchronized_failure"], ("sc",), "percent", headline=True),
    _from(_SC["null_majority"], ("sc",), "percent", headline=True),
    _from(_SC["sample_null_rate"], ("sc",), "percent"),
    _from(_SC["robustness"], ("sc",), "percent"),
    # option log-likelihoods
    _from(_LL["ll_accuracy"], ("ll",), "percent", headline=True),
    _from(_LL["ll_high_risk_error"], ("ll",), "percent", headline=True),
    _from(_LL["ll_unsafe_error"], ("ll",), "percent", headline=True),
    _from(_LL["ll_contradiction_error"], ("ll",), "percent", headline=True),
    _from(_LL["ll_dangerous_overconfidence"], ("ll",), "percent", headline=True),
    _from(_LL["ll_mean_confidence"], ("ll",), "probability", headline=True),
    _from(_LL["ll_mean_entropy"], ("ll",), "ratio"),
    _from(_LL["ll_ece"], ("ll",), "probability", headline=True),
    _from(_LL["ll_mce"], ("ll",), "probability"),
    # option order: means over each item's orders, the original order, and how choices move
    *(
        _from(m, ("perm",), "ratio" if m.name == "position_bias" else "percent",
              headline=m.name not in ("order_contradiction_error", "order_abstention", "original_order_high_risk_error"))
        for m in ORDER_METRICS
    ),
    # every regime: retrieval conditions and the agentic report's cost
    _from(RECALL_METRIC, ALL_REGIMES, "percent"),
    *(_from(m, ALL_REGIMES, "seconds" if m.name == "agent_seconds" else "count") for m in AGENT_METRICS),
    # the report's cost table (per item of a run)
    MetricDisplay("answering_seconds_per_item", ALL_REGIMES, "Answering time", "seconds", "lower", "the evaluated model's request time per item"),
    MetricDisplay("agent_calls_per_item", ALL_REGIMES, "Agent calls", "count", "lower", "the agent's LLM calls per item"),
    MetricDisplay("agent_tokens_per_item", ALL_REGIMES, "Agent tokens", "count", "lower", "the agent's prompt + completion tokens per item"),
    MetricDisplay("agent_seconds_per_item", ALL_REGIMES, "Agent time", "seconds", "lower", "wall time of building the item's agent report"),
    MetricDisplay("total_seconds_per_item", ALL_REGIMES, "Total time", "seconds", "lower", "answering + agent time per item"),
    # what the answering model's server did (API backends): the report's cost table
    MetricDisplay("requests", ALL_REGIMES, "Requests", "count", "lower", "requests the run needed (repeats included)"),
    MetricDisplay("retried", ALL_REGIMES, "Retried", "count", "lower", "tries that failed and were retried (busy, down or invalid replies)"),
    MetricDisplay("cache_hits", ALL_REGIMES, "From cache", "count", "lower", "answers taken from the response cache of an earlier, stopped run"),
    MetricDisplay("longest_wait_s", ALL_REGIMES, "Longest wait", "seconds", "lower", "the longest time one request took to get a valid answer"),
)

#: metric name -> its presentation spec; the one table every presenter reads
METRIC_SPECS: dict[str, MetricDisplay] = {spec.name: spec for spec in _SPECS}
if len(METRIC_SPECS) != len(_SPECS):  # pragma: no cover - a duplicate is a bug in the table above
    raise RuntimeError("metric_specs: a metric name occurs twice")

#: per regime: the metric whose rate flags a run that almost never answers (None: the regime
#: always picks an option)
ABSTENTION_METRIC: dict[str, str | None] = {
    "greedy": "abstention", "think": "abstention", "sc": "null_majority", "ll": None, "perm": "order_abstention",
}


def metric_spec(name: str) -> MetricDisplay:
    """The presentation spec of ``name``; :class:`MetricSpecError` names it if there is none."""
    try:
        return METRIC_SPECS[name]
    except KeyError:
        raise MetricSpecError(f"metric {name!r} has no presentation spec in lm_eval_radsafe.metric_specs") from None


def headline_metrics(regime: str) -> tuple[str, ...]:
    """The headline columns of a regime, in table order."""
    return tuple(s.name for s in _SPECS if s.headline and regime in s.regimes)


def format_value(name: str, value: Any) -> str:
    """``value`` of metric ``name`` as shown, with its unit symbol."""
    return metric_spec(name).format(value)

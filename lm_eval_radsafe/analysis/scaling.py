"""Model cards joined to runs: scaling slopes per condition and a two-way variance split.

A model card file (CSV or YAML list) has one row per model: ``name`` (as the report names
the model), ``family``, ``parameters`` (billions, total), and optionally
``active_parameters`` (billions, for mixture-of-experts models) and ``context_window``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lm_eval_radsafe.analysis.stats import DEFAULT_CI_LEVEL


class ModelCardError(ValueError):
    """A model card file that does not validate (names file, row, field and value)."""


@dataclass(frozen=True)
class ModelCard:
    """Facts about one model, passed in as data (never guessed from its name)."""

    name: str
    family: str
    parameters: float
    active_parameters: float | None = None
    context_window: int | None = None

    @property
    def scaling_parameters(self) -> float:
        """Parameter count used on the scaling axis: total parameters."""
        return self.parameters


def _number(path: Path, row: int, field: str, value: Any, optional: bool, kind: type = float) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise ModelCardError(f"{path}, row {row}: field {field!r}: missing")
    try:
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError) as exc:
        raise ModelCardError(f"{path}, row {row}: field {field!r}: not a number (value: {value!r})") from exc
    if not number > 0:
        raise ModelCardError(f"{path}, row {row}: field {field!r}: must be positive (value: {value!r})")
    return number


def load_model_cards(path: str | Path) -> dict[str, ModelCard]:
    """Read a model card CSV or YAML file; every bad row is an error naming row and field."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "models" in data:
            data = data["models"]
        if not isinstance(data, list):
            raise ModelCardError(f"{path}: expected a list of models (or a 'models:' list)")
        rows = data
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        raise ModelCardError(f"{path}: use a .csv or .yaml model card file")
    cards: dict[str, ModelCard] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ModelCardError(f"{path}, row {number}: expected a mapping")
        name = str(row.get("name") or "").strip()
        family = str(row.get("family") or "").strip()
        if not name:
            raise ModelCardError(f"{path}, row {number}: field 'name': missing")
        if not family:
            raise ModelCardError(f"{path}, row {number}: field 'family': missing (value: {row.get('family')!r})")
        if name in cards:
            raise ModelCardError(f"{path}, row {number}: field 'name': duplicate (value: {name!r})")
        cards[name] = ModelCard(
            name=name,
            family=family,
            parameters=_number(path, number, "parameters", row.get("parameters"), optional=False),
            active_parameters=_number(path, number, "active_parameters", row.get("active_parameters"), optional=True),
            context_window=_number(path, number, "context_window", row.get("context_window"), optional=True, kind=int),
        )
    return cards


@lru_cache(maxsize=None)
def _t_quantile(probability: float, df: int) -> float:
    from scipy import stats as sps

    return float(sps.t.ppf(probability, df))


def fit_slope(x: np.ndarray, y: np.ndarray, level: float = DEFAULT_CI_LEVEL) -> dict[str, float]:
    """OLS of y on x: slope, its t-interval (n - 2 df), intercept, R^2; NaN below 3 points."""
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = len(x)
    nan = {"n_models": n, "slope": math.nan, "slope_ci_low": math.nan, "slope_ci_high": math.nan, "intercept": math.nan, "r2": math.nan}
    if n < 3 or np.ptp(x) == 0:
        return nan
    sxx = float(np.sum((x - x.mean()) ** 2))
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    residual = y - (intercept + slope * x)
    sse = float(np.sum(residual**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    se = math.sqrt(sse / (n - 2) / sxx)
    t = _t_quantile(0.5 + level / 2, n - 2)
    return {
        "n_models": n,
        "slope": slope,
        "slope_ci_low": slope - t * se,
        "slope_ci_high": slope + t * se,
        "intercept": intercept,
        "r2": 1 - sse / sst if sst > 0 else math.nan,
    }


def scaling_table(rows: Iterable[dict[str, Any]], cards: dict[str, ModelCard]) -> list[dict[str, Any]]:
    """Slope of each metric against log10(parameters, billions) per condition and regime,
    for every family with at least three models and for all models together."""
    cells: dict[tuple[str, str, str], list[tuple[ModelCard, float]]] = {}
    for row in rows:
        card = cards.get(row["model"])
        if card is not None and not math.isnan(row["estimate"]):
            cells.setdefault((row["regime"], row["condition"], row["metric"]), []).append((card, row["estimate"]))
    out = []
    for (regime, condition, metric), points in sorted(cells.items()):
        groups = {"all": points}
        for family in sorted({c.family for c, _ in points}):
            members = [p for p in points if p[0].family == family]
            if len(members) >= 3:
                groups[family] = members
        for group, members in groups.items():
            x = np.log10([c.scaling_parameters for c, _ in members])
            y = np.array([v for _, v in members])
            out.append({"regime": regime, "condition": condition, "metric": metric, "group": group, **fit_slope(x, y)})
    return out


def variance_decomposition(rows: Iterable[dict[str, Any]], cards: dict[str, ModelCard]) -> list[dict[str, Any]]:
    """Two-way split of each metric's sum of squares over family and condition (model-level
    values): family, condition, interaction = max(0, cells - family - condition) and
    residual = total - cells, in percent of the total."""
    values: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
    for row in rows:
        card = cards.get(row["model"])
        if card is not None and not math.isnan(row["estimate"]):
            values.setdefault((row["regime"], row["metric"]), []).append((card.family, row["condition"], row["estimate"]))
    out = []
    for (regime, metric), points in sorted(values.items()):
        y = np.array([v for _, _, v in points])
        if len(y) < 2 or len({c for _, c, _ in points}) < 2:
            continue
        grand = y.mean()
        total = float(np.sum((y - grand) ** 2))

        def between(key: int) -> float:
            groups: dict[Any, list[float]] = {}
            for point in points:
                groups.setdefault(point[key] if key >= 0 else point[:2], []).append(point[2])
            return float(sum(len(g) * (np.mean(g) - grand) ** 2 for g in groups.values()))

        ss_family, ss_condition, ss_cells = between(0), between(1), between(-1)
        shares = {
            "family": ss_family,
            "condition": ss_condition,
            "interaction": max(0.0, ss_cells - ss_family - ss_condition),
            "residual": total - ss_cells,
        }
        out.append(
            {
                "regime": regime,
                "metric": metric,
                "n_values": len(y),
                **{f"pct_{k}": (100 * v / total if total > 0 else math.nan) for k, v in shares.items()},
            }
        )
    return out


def decoupling(scaling: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per regime and condition, over all models: the accuracy slope beside the high-risk
    error slope (does safety improve with scale the way accuracy does?)."""
    pairs = {"greedy": ("accuracy", "high_risk_error"), "think": ("accuracy", "high_risk_error"),
             "sc": ("sc_accuracy", "sc_high_risk_error"), "ll": ("ll_accuracy", "ll_high_risk_error")}
    index = {(r["regime"], r["condition"], r["metric"]): r for r in scaling if r["group"] == "all"}
    out = []
    for (regime, condition) in sorted({(r, c) for r, c, _ in index}):
        acc_name, risk_name = pairs.get(regime, ("accuracy", "high_risk_error"))
        acc, risk = index.get((regime, condition, acc_name)), index.get((regime, condition, risk_name))
        if acc and risk:
            out.append({
                "regime": regime, "condition": condition, "n_models": acc["n_models"],
                "accuracy_slope": acc["slope"], "accuracy_slope_ci_low": acc["slope_ci_low"], "accuracy_slope_ci_high": acc["slope_ci_high"],
                "high_risk_slope": risk["slope"], "high_risk_slope_ci_low": risk["slope_ci_low"], "high_risk_slope_ci_high": risk["slope_ci_high"],
            })
    return out

"""Task comparability versions: recorded in results, summary and leaderboard; runs of
different comparability numbers are not compared unless asked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lm_eval_radsafe.analysis.report import make_report
from lm_eval_radsafe.analysis.runs import RunError
from lm_eval_radsafe.conditions import TASK_COMPARABILITY, TASK_INTERFACE, TASK_VERSION, comparability


@pytest.mark.parametrize(
    ("version", "number"),
    [("2-A", 2), ("2-B", 2), ("13-AC", 13), (1.1, 2), ("1.1", 2), (1.0, 1), ("1.0", 1), ("2", None), ("2-a", None), (None, None)],
)
def test_comparability_number(version: object, number: int | None) -> None:
    assert comparability(version) == number


def test_the_current_version_is_number_dash_letter() -> None:
    assert TASK_VERSION == f"{TASK_COMPARABILITY}-{TASK_INTERFACE}" and comparability(TASK_VERSION) == TASK_COMPARABILITY


def _set_version(folder: Path, version: object) -> None:
    for path in folder.rglob("results_*.json"):
        results = json.loads(path.read_text())
        results["versions"] = {task: version for task in results["versions"]}
        path.write_text(json.dumps(results))


def test_report_refuses_runs_of_different_comparability_unless_told(fixture_data: Path, tmp_path: Path) -> None:
    from test_analysis import _correct, write_run

    new = write_run(tmp_path / "new", "m-new", ["radsafe200_closed_book"], _correct)
    old = write_run(tmp_path / "old", "m-old", ["radsafe200_closed_book"], _correct)
    results = json.loads(next(new.glob("results_*.json")).read_text())
    assert results["versions"]["radsafe200_closed_book"] == TASK_VERSION  # lm-eval records it

    _set_version(old, 1.1)  # an older run of the same comparability: compared
    outcome = make_report([new, old], tmp_path / "same", progress=False, figure_formats=(), leaderboard=True, use_cache=False)
    with open(tmp_path / "same" / "summary.csv", newline="") as handle:
        assert {row["task_version"] for row in csv.DictReader(handle)} == {TASK_VERSION, "1.1"}
    entries = json.loads((tmp_path / "same" / "leaderboard.json").read_text())["entries"]
    assert sorted(map(str, (e["task_version"] for e in entries))) == sorted([TASK_VERSION, "1.1"])
    assert outcome.meta["task_versions"] == sorted([TASK_VERSION, "1.1"])

    _set_version(old, "1.0")  # comparability 1 against 2: refused, naming both
    with pytest.raises(RunError, match=r"different comparability numbers \(1: 1 run\(s\), e.g. m-old / closed_book / greedy \(version 1.0.*2: 1 run\(s\), e.g. m-new.*--allow-mixed-versions"):
        make_report([new, old], tmp_path / "mixed", progress=False, figure_formats=(), use_cache=False)
    outcome = make_report(
        [new, old], tmp_path / "allowed", progress=False, figure_formats=(), use_cache=False, allow_mixed_versions=True
    )
    assert any("--allow-mixed-versions" in note for note in outcome.meta["size_notes"])

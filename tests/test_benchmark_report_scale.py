"""benchmarks/report_scale.py on a tiny grid (2 models x 2 conditions x 10 items): the
report reads every run it built, with every item, and the re-implemented study procedure
gets the report's accuracy for every model, condition and regime. About 20-40 s."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "report_scale.py"
RADSAFE = str(Path(sys.executable).with_name("radsafe"))
CONDITIONS = ("closed_book", "clean_evidence")


def test_tiny_grid_is_read_by_the_report_and_the_study_procedure_agrees(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RADSAFE_CACHE": str(tmp_path / "cache")}
    env.pop("RADSAFE_DATA", None)
    grid = tmp_path / "grid"
    build = [sys.executable, str(SCRIPT), "--grid", str(grid), "--models", "2", "--items", "10", "--conditions", *CONDITIONS, "--build-only"]
    done = subprocess.run(build, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = grid / "runs"
    models = json.loads((runs / "GRID.json").read_text())["models"]
    assert models == ["model_00", "model_01"]
    for model in models:  # as lm-eval writes them: one results file per run, one samples file per task
        assert len(list((runs / model).glob("results_*.json"))) == 2
        assert len(list((runs / model).glob("samples_radsafe200_*.jsonl"))) == 2 * len(CONDITIONS)
    row = json.loads(next((runs / "model_00").glob("samples_radsafe200_closed_book_sc_*.jsonl")).open().readline())
    assert {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash", "prompt_hash", "target_hash"} <= set(row)
    assert len(row["resps"][0]) == 20 and all(name in row for name in row["metrics"])

    out = tmp_path / "report"
    done = subprocess.run([RADSAFE, "report", str(runs), "--out", str(out), "--figures", "none"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        summary = list(csv.DictReader(handle))
    accuracy = {
        (r["model"], r["condition"], r["regime"]): float(r["estimate"])
        for r in summary
        if (r["regime"], r["metric"]) in (("greedy", "accuracy"), ("sc", "sc_accuracy"))
    }
    assert set(accuracy) == {(m, c, g) for m in models for c in CONDITIONS for g in ("greedy", "sc")}
    assert {int(r["n_items"]) for r in summary} == {10}

    study = tmp_path / "study"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--study-child", str(runs), str(grid / "build" / "items.jsonl"), str(study)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with open(study / "bootstrap.csv", newline="", encoding="utf-8") as handle:
        boot = list(csv.DictReader(handle))
    names = {"zero_shot": "closed_book", "evidence_clean": "clean_evidence"}
    regimes = {"single": "greedy", "majority": "sc"}
    theirs = {(r["model"], names[r["condition"]], regimes[r["mode"]]): float(r["accuracy"]) for r in boot}
    assert theirs.keys() == accuracy.keys()
    for key, value in accuracy.items():
        assert math.isclose(theirs[key], value, abs_tol=1e-12), key
    for name in ("pvalues.csv", "safety_rates.csv", "confidence.csv", "per_question_safety.csv"):
        assert (study / name).stat().st_size > 0

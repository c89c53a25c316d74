"""What lm-eval writes differs between versions; the report reads each layout, and plain
``lm_eval`` runs carry the task provenance that ``radsafe eval`` runs carry.

``fixtures/lm_eval_0.5`` holds two runs written by lm-eval 0.5.0.dev1's own CLI with its
``dummy`` model (which answers "lol" and gives every option of an item the same log-likelihood): ``tasks`` names the
greedy, ``_ll`` and ``_sc`` closed-book tasks; ``group`` names the ``radsafe_demo`` group,
so lm-eval 0.5 keys its tasks ``radsafe_demo::radsafe_demo_closed_book`` everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURE

from lm_eval_radsafe import __version__
from lm_eval_radsafe.analysis.runs import read_runs
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.provenance import package_version, task_of_key, task_provenance

V05 = Path(__file__).parent / "fixtures" / "lm_eval_0.5"
DEMO_FINGERPRINT = load_items("demo").fingerprint


def test_task_of_key_reads_both_layouts() -> None:
    assert task_of_key("radsafe_demo::radsafe_demo_closed_book") == "radsafe_demo_closed_book"
    assert task_of_key("radsafe200_closed_book_sc") == "radsafe200_closed_book_sc"


def test_report_reads_lm_eval_05_results_of_every_regime() -> None:
    runs = {run.task: run for run in read_runs([V05 / "tasks"], progress=False)}
    assert set(runs) == {"radsafe_demo_closed_book", "radsafe_demo_closed_book_ll", "radsafe_demo_closed_book_sc"}
    greedy, ll, sc = runs["radsafe_demo_closed_book"], runs["radsafe_demo_closed_book_ll"], runs["radsafe_demo_closed_book_sc"]
    assert greedy.letters == ["NULL"] * 3  # one letter per item, not lm-eval 0.5's one-element list
    assert all(isinstance(letters, list) and letters == ["NULL"] * 20 for letters in sc.letters)
    items = load_items("demo").items[:3]
    assert [len(lls) for lls in ll.letters] == [len(item.options) for item in items]
    assert [lls[0] for lls in ll.letters] == [-0.0, -1.0, -2.0]  # as written: [[["-1.0", "True"]], ...]
    assert all(len(set(lls)) == 1 and isinstance(lls[0], float) for lls in ll.letters)
    for run in runs.values():
        assert run.fingerprint == DEMO_FINGERPRINT
        assert run.meta["provenance"]["dataset_fingerprint"] == DEMO_FINGERPRINT  # from the task's config
        assert run.meta["package_version"] == __version__


def test_report_reads_lm_eval_05_group_keys() -> None:
    runs = read_runs([V05 / "group"], progress=False)
    assert sorted(run.task for run in runs) == [
        "radsafe_demo_clean_evidence", "radsafe_demo_closed_book", "radsafe_demo_conflict_evidence",
    ]
    assert all(len(run.item_ids) == 2 and run.samples_file.is_file() for run in runs)


def test_provenance_reader_prefers_the_results_block_and_falls_back_to_configs() -> None:
    results = {
        "configs": {"t": {"metadata": {"radsafe": {"dataset_fingerprint": "sha256:a", "package_version": "9.9"}}}},
        "radsafe": {"package_version": "1.0", "tasks": {"t": {"serving": {"requests": 3}}}},
    }
    assert task_provenance(results, "t") == {"dataset_fingerprint": "sha256:a", "package_version": "9.9", "serving": {"requests": 3}}
    assert package_version(results) == "1.0"
    del results["radsafe"]
    assert task_provenance(results, "t") == {"dataset_fingerprint": "sha256:a", "package_version": "9.9"}
    assert package_version(results) == "9.9"
    assert task_provenance({}, "t") == {} and package_version({}) is None
    grouped = {  # lm-eval 0.5 inside a group: the config under the key, counts under the name
        "configs": {"g::t": {"metadata": {"radsafe": {"dataset_fingerprint": "sha256:b"}}}},
        "radsafe": {"tasks": {"t": {"answering": {"items": 2}}}},
    }
    assert task_provenance(grouped, "g::t") == {"dataset_fingerprint": "sha256:b", "answering": {"items": 2}}


@pytest.mark.slow
def test_plain_lm_eval_run_carries_provenance_and_reports(tmp_path: Path) -> None:
    """lm-eval's own CLI, nothing of ours imported by hand: the task class still records the
    dataset in the results file, and `radsafe report` reads the run."""
    lm_eval = shutil.which("lm_eval") or str(Path(sys.executable).with_name("lm_eval"))
    tasks_path = subprocess.run([sys.executable, "-m", "lm_eval_radsafe.cli", "tasks-path"], capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "RADSAFE_DATA": str(FIXTURE), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [lm_eval, "--model", "dummy", "--include_path", tasks_path, "--tasks", "radsafe200_closed_book,radsafe200_closed_book_sc",
         "--limit", "2", "--log_samples", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").glob("*/results_*.json")).read_text())
    assert "radsafe" not in results  # no block: radsafe eval did not run
    for task in ("radsafe200_closed_book", "radsafe200_closed_book_sc"):
        record = results["configs"][task]["metadata"]["radsafe"]
        assert record["dataset_fingerprint"] == load_items(FIXTURE).fingerprint
        assert record["dataset_source"] == str(FIXTURE) and record["package_version"] == __version__
    report = subprocess.run(
        [sys.executable, "-m", "lm_eval_radsafe.cli", "report", str(tmp_path / "out"), "--out", str(tmp_path / "report")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["meta"]["dataset_fingerprints"] == [load_items(FIXTURE).fingerprint]

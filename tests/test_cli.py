"""The `radsafe` command: tasks-path, validate-data, eval (through lm-eval's own CLI)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE, ScriptedLM
from lm_eval_radsafe.cli import main
from lm_eval_radsafe.demo import format_table
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.metrics import METRIC_NAMES


def radsafe(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lm_eval_radsafe.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_tasks_path_prints_the_yaml_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks-path"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "radsafe200_closed_book.yaml").is_file()
    assert (folder / "_radsafe_base_yaml").is_file()


def test_validate_data_summarises_the_demo_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-data", "demo", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    items = load_items("demo").items
    assert summary["items"] == len(items)
    assert summary["fingerprint"] == load_items("demo").fingerprint
    assert sum(summary["options_per_item"].values()) == len(items)
    assert summary["negated_stems"] == sum(it.negated for it in items)
    assert set(summary["flagged_options"]) == {"high_risk", "unsafe", "contradicts"}


def test_validate_data_names_the_broken_csv_row(tmp_path: Path) -> None:
    rows = []
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        row = {"question_id": rec["id"], "question": rec["question"], "answer_idx": rec["answer"]}
        for i, opt in enumerate(rec["options"], start=1):
            row[f"option_{i}"] = opt["text"]
            row[f"option_{i}_high_risk"] = int(opt["high_risk"])
        rows.append(row)
    rows[2]["option_3_high_risk"] = "2"
    path = tmp_path / "one_broken_row.csv"
    fields = sorted({k for r in rows for k in r})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    result = radsafe("validate-data", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "row 3 (line 4): field 'option_3_high_risk'" in result.stderr
    assert "(value: '2')" in result.stderr


def test_hub_without_network_explains_what_to_do(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = radsafe("validate-data", "soroosharasteh/RadSaFE-200", env=env, timeout=120)
    assert result.returncode == 1
    assert "accept its terms" in result.stderr
    assert "RADSAFE_DATA" in result.stderr
    assert "radsafe_demo" in result.stderr


def test_format_table_shows_every_metric_in_percent() -> None:
    results = {"t": {"alias": "Closed-book", "sample_len": 4}}
    for i, name in enumerate(METRIC_NAMES):
        results["t"][f"{name},strict"] = i / 4
        results["t"][f"{name}_stderr,strict"] = 0.1
    table = format_table(results, ["t"])
    assert "Closed-book" in table and "Abstention" in table
    assert "25.0% ±10.0" in table and "100.0% ±10.0" in table


@pytest.mark.slow
def test_eval_passes_flags_through_and_records_provenance(tmp_path: Path) -> None:
    """`radsafe eval` is lm-eval's own CLI plus our tasks and a provenance block."""
    out = tmp_path / "out"
    result = radsafe(
        "eval",
        "--model",
        "dummy",
        "--model_args",
        "pretrained=dummy",
        "--tasks",
        "radsafe200_closed_book,radsafe_demo_clean_evidence",
        "--limit",
        "2",
        "--log_samples",
        "--output_path",
        str(out),
        env={"RADSAFE_DATA": str(FIXTURE)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results_file = next(out.glob("*/results_*.json"))
    results = json.loads(results_file.read_text())
    for task in ("radsafe200_closed_book", "radsafe_demo_clean_evidence"):
        assert results["results"][task]["abstention,strict"] == 1.0  # the dummy model says "lol"
        assert all(f"{name},strict" in results["results"][task] for name in METRIC_NAMES)
    provenance = results["radsafe"]["tasks"]
    assert provenance["radsafe200_closed_book"]["dataset_fingerprint"] == load_items(FIXTURE).fingerprint
    assert provenance["radsafe_demo_clean_evidence"]["dataset_fingerprint"] == load_items("demo").fingerprint
    for task in ("radsafe200_closed_book", "radsafe_demo_clean_evidence"):
        answering = provenance[task]["answering"]
        assert (answering["items"], answering["requests"]) == (2, 2) and answering["seconds_per_item"] >= 0
    samples = [json.loads(line) for line in next(out.glob("*/samples_radsafe200_closed_book_*.jsonl")).open()]
    assert [s["filtered_resps"] for s in samples] == [["NULL"], ["NULL"]]


def test_answering_time_is_shared_among_tasks_by_requests(fixture_data: Path) -> None:
    import time

    import lm_eval

    from lm_eval_radsafe import cli
    from lm_eval_radsafe.provenance import RequestClock

    def slow(prompt: str) -> str:
        time.sleep(0.02)
        return "A"

    lm = ScriptedLM(slow)
    clock = RequestClock().install(lm)
    assert RequestClock().install(lm) is clock  # one clock per model instance
    lm_eval.simple_evaluate(model=lm, tasks=["radsafe200_closed_book", "radsafe200_clean_evidence_sc"],
                            task_manager=cli.task_manager(include_defaults=False), bootstrap_iters=0)
    greedy = clock.answering()["radsafe200_closed_book"]
    sampled = clock.answering()["radsafe200_clean_evidence_sc"]
    assert (greedy["items"], greedy["requests"]) == (3, 3)
    assert (sampled["items"], sampled["requests"]) == (3, 60)  # 20 samples per item
    assert sampled["seconds"] == pytest.approx(20 * greedy["seconds"], rel=0.02)  # one call, shared by requests
    assert greedy["seconds_per_item"] >= 0.02


def test_demo_refuses_agentic_rag_without_agent_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RADSAFE_PREPARED", raising=False)
    with pytest.raises(SystemExit, match=r"no prepared folder with agent reports was given.*--agentic --agent-model"):
        main(["demo", "--conditions", "closed_book", "agentic_rag"])

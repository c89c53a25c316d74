"""End to end on a real model offline: SmolLM2-135M-Instruct (GGUF) through lm-eval's hf backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_radsafe.conditions import CONDITIONS
from lm_eval_radsafe.demo import bundled_model
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.metrics import METRIC_NAMES

pytestmark = pytest.mark.slow

try:
    MODEL_DIR, GGUF = bundled_model()
except FileNotFoundError as exc:  # `make test` installs it; a bare checkout may not have it
    pytest.skip(str(exc), allow_module_level=True)

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval_radsafe.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **OFFLINE},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_eval_on_smollm2_writes_metrics_and_letters(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(
        "eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={MODEL_DIR},gguf_file={GGUF}",
        "--tasks",
        "radsafe_demo",
        "--limit",
        "3",
        "--apply_chat_template",
        "--log_samples",
        "--output_path",
        str(out),
    )
    results = json.loads(next(out.glob("*/results_*.json")).read_text())
    demo = load_items("demo")
    for condition in (c for c, cond in CONDITIONS.items() if not cond.uses_retrieval):  # the group's conditions
        task = f"radsafe_demo_{condition}"
        metrics = results["results"][task]
        for name in METRIC_NAMES:
            assert 0.0 <= metrics[f"{name},strict"] <= 1.0
        assert metrics["accuracy,strict"] + metrics["abstention,strict"] <= 1.0
        assert results["radsafe"]["tasks"][task]["dataset_fingerprint"] == demo.fingerprint
        samples = [json.loads(line) for line in next(out.glob(f"*/samples_{task}_*.jsonl")).open()]
        assert len(samples) == 3
        for sample in samples:
            letter = sample["filtered_resps"][0]
            assert letter == "NULL" or letter in "".join(o["letter"] for o in sample["doc"]["options"])
            assert sample["accuracy"] == float(letter == sample["target"])


def test_demo_prints_the_condition_table(tmp_path: Path) -> None:
    result = run("demo", "--limit", "2", "--output-path", str(tmp_path / "demo"))
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["condition", "n", "Accuracy"]
    for display in ("Closed-book", "Clean evidence", "Conflict evidence"):
        assert any(line.startswith(display) for line in lines), display
    assert "not RadSaFE-200" in result.stdout
    assert list((tmp_path / "demo").glob("*/samples_radsafe_demo_closed_book_*.jsonl"))


def test_sc_and_ll_tasks_on_smollm2() -> None:
    """Few items, few repeats: the _sc task keeps every sample's letter; _ll scores letters."""
    import lm_eval

    from lm_eval_radsafe.cli import task_manager
    from lm_eval_radsafe.metrics import LL_METRICS, SC_METRICS

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(MODEL_DIR), "gguf_file": GGUF, "device": "cpu"},
        tasks=[{"group": "few_repeats", "task": [{"task": "radsafe_demo_closed_book_sc", "repeats": 4}]}, "radsafe_demo_closed_book_ll"],
        task_manager=task_manager(include_defaults=False),
        limit=3,
        batch_size=8,
        apply_chat_template=True,
        log_samples=True,
    )
    sc = out["results"]["radsafe_demo_closed_book_sc"]
    assert all(f"{m.name},strict" in sc for m in SC_METRICS)
    assert 0.0 <= sc["mean_confidence,strict"] <= 1.0
    for sample in out["samples"]["radsafe_demo_closed_book_sc"]:
        assert len(sample["resps"][0]) == 4
        letters = sample["filtered_resps"][0]
        valid = "".join(o["letter"] for o in sample["doc"]["options"])
        assert len(letters) == 4 and all(x == "NULL" or x in valid for x in letters)
    ll = out["results"]["radsafe_demo_closed_book_ll"]
    assert all(f"{m.name},none" in ll for m in LL_METRICS)
    assert 0.0 < ll["ll_mean_confidence,none"] <= 1.0


def test_rag_condition_on_smollm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One retrieval condition end to end: prepare the demo corpus, evaluate top-5 RAG."""
    import lm_eval

    from lm_eval_radsafe.cli import task_manager
    from lm_eval_radsafe.retrieval.prepare import PrepareSettings, prepare

    monkeypatch.setenv("RADSAFE_CACHE", str(tmp_path / "cache"))
    prepare("demo", "demo", tmp_path / "prepared", PrepareSettings(k=20), progress=False)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(MODEL_DIR), "gguf_file": GGUF, "device": "cpu"},
        tasks=["radsafe_demo_rag_top5"],
        task_manager=task_manager(include_defaults=False, metadata={"prepared": str(tmp_path / "prepared")}),
        limit=2,
        batch_size=2,
        apply_chat_template=True,
        log_samples=True,
    )
    result = out["results"]["radsafe_demo_rag_top5"]
    for name in (*METRIC_NAMES, "evidence_recall"):
        assert 0.0 <= result[f"{name},strict"] <= 1.0
    for sample in out["samples"]["radsafe_demo_rag_top5"]:
        assert sample["doc"]["evidence"].count("\n\n---\n\n") == 4

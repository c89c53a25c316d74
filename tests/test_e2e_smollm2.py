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


def test_option_order_task_on_smollm2_and_its_report(tmp_path: Path) -> None:
    """The option-order regime on a real model: every order asked (prompts differ), letters
    mapped back to options as the report recomputes them, and the report's order tables."""
    import csv

    from lm_eval_radsafe.metrics import ORDER_METRICS, score_orders
    from lm_eval_radsafe.option_order import option_orders

    out = tmp_path / "out"
    run(
        "eval", "--model", "hf", "--model_args", f"pretrained={MODEL_DIR},gguf_file={GGUF}",
        "--tasks", "radsafe_demo_closed_book_perm", "--limit", "3", "--apply_chat_template",
        "--log_samples", "--output_path", str(out),
    )  # fmt: skip
    results = json.loads(next(out.glob("*/results_*.json")).read_text())["results"]["radsafe_demo_closed_book_perm"]
    for metric in ORDER_METRICS:
        assert f"{metric.name},strict" in results
    demo = {item.id: item for item in load_items("demo").items}
    samples = [json.loads(line) for line in next(out.glob("*/samples_radsafe_demo_closed_book_perm_*.jsonl")).open()]
    assert len(samples) == 3
    hand = []
    for sample in samples:
        item = demo[sample["doc"]["id"]]
        orders = option_orders(item.id, "".join(o.letter for o in item.options), 4)
        assert sample["doc"]["option_orders"] == orders and len(sample["resps"]) == 4
        prompts = list(sample["arguments"].values()) if isinstance(sample["arguments"], dict) else sample["arguments"]
        assert len({json.dumps(prompt) for prompt in prompts}) == 4  # one prompt per order
        letters = [letter[0] if isinstance(letter, list) else letter for letter in sample["filtered_resps"]]
        hand.append(score_orders(item, [None if x == "NULL" else x for x in letters], orders))
    assert results["order_accuracy,strict"] == pytest.approx(sum(h["order_accuracy"] for h in hand) / 3)
    assert results["option_change_rate,strict"] == pytest.approx(sum(h["option_change_rate"] for h in hand) / 3)
    run("report", str(out), "--out", str(tmp_path / "report"), "--figures", "none", "--no-cache")
    with open(tmp_path / "report" / "summary.csv", newline="") as handle:
        rows = {row["metric"]: row for row in csv.DictReader(handle) if row["regime"] == "perm"}
    assert float(rows["order_accuracy"]["estimate"]) == pytest.approx(results["order_accuracy,strict"])
    assert rows["order_accuracy"]["ci_low"] and rows["position_bias"]["ci_high"]
    assert float(rows["position_bias"]["estimate"]) == pytest.approx(results["position_bias,strict"])
    with open(tmp_path / "report" / "order_tests.csv", newline="") as handle:
        assert {row["metric"] for row in csv.DictReader(handle)} == {"order_accuracy", "order_high_risk_error"}
    assert "<h2>Option order</h2>" in (tmp_path / "report" / "report.html").read_text()


def test_demo_prints_the_condition_table(tmp_path: Path) -> None:
    result = run("demo", "--limit", "2", "--output-path", str(tmp_path / "demo"))
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["condition", "n", "Accuracy"]
    for display in ("Closed-book", "Clean evidence", "Conflict evidence"):
        assert any(line.startswith(display) for line in lines), display
    assert "not RadSaFE-200" in result.stdout
    assert list((tmp_path / "demo").glob("*/samples_radsafe_demo_closed_book_*.jsonl"))


def test_demo_runs_agentic_rag_on_a_prepared_folder(tmp_path: Path) -> None:
    """`radsafe demo --prepared`: SmolLM2 answers with agent reports (a scripted agent built
    them) and the demo prints the agent's cost beside the table."""
    from conftest import prepare_with_agent

    prepared = tmp_path / "prepared"
    manifest = prepare_with_agent("demo", prepared)
    result = run("demo", "--conditions", "agentic_rag", "--prepared", str(prepared), "--limit", "1",
                 "--output-path", str(tmp_path / "demo"))
    row = next(line for line in result.stdout.splitlines() if line.startswith("Agentic RAG"))
    assert row.split()[2] == "1"  # n
    first = json.loads((prepared / "agentic.jsonl").read_text().splitlines()[0])
    assert f"building the evidence cost {first['calls']:.1f} agent calls" in result.stdout
    assert manifest["agentic"]["n_items"] == len(load_items("demo"))


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


def test_agentic_rag_with_smollm2_as_agent_and_answering_model(tmp_path: Path) -> None:
    """The whole agentic path offline: SmolLM2 builds reports for two demo items, then answers with them."""
    from importlib import resources

    demo_file = Path(str(resources.files("lm_eval_radsafe") / "data" / "demo" / "radsafe_demo.jsonl"))
    two = tmp_path / "two.jsonl"
    two.write_text("".join(demo_file.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    prepared = tmp_path / "prepared"
    run("prepare", "--dataset", str(two), "--corpus", "demo", "--out", str(prepared), "--agentic", "--agent-model", "smollm2",
        "--agent-max-tokens", "32", "--agent-hits-per-query", "1", "--agent-max-calls", "3")
    records = [json.loads(line) for line in (prepared / "agentic.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [item.id for item in load_items(two).items]
    for record in records:
        calls = [step for step in record["trace"] if "model" in step]
        assert record["calls"] == len(calls) == 3 and calls[0]["step"] == "plan"
        assert all(c["model"] == f"hf:{GGUF}" and c["prompt_tokens"] > 0 and 0 < c["completion_tokens"] <= 32 for c in calls)
        assert record["seconds"] > 0 and record["passage_ids"]
        assert any(step["step"] == "search" and step["hits"] for step in record["trace"])
        assert record["report"].startswith("Evidence report") and "Option A:" in record["report"]
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["agentic"]["n_items"] == 2 and manifest["agentic"]["calls"] == sum(r["calls"] for r in records)

    out = tmp_path / "out"
    run("eval", "--model", "hf", "--model_args", f"pretrained={MODEL_DIR},gguf_file={GGUF}", "--tasks", "radsafe200_agentic_rag",
        "--apply_chat_template", "--metadata", json.dumps({"prepared": str(prepared), "radsafe_data": str(two)}),
        "--log_samples", "--output_path", str(out))
    results = json.loads(next(out.glob("*/results_*.json")).read_text())
    scores = results["results"]["radsafe200_agentic_rag"]
    assert "evidence_recall,strict" in scores and "accuracy,strict" in scores
    assert scores["agent_calls,strict"] == sum(r["calls"] for r in records) / 2
    block = results["radsafe"]["tasks"]["radsafe200_agentic_rag"]
    assert block["agentic"]["agent"]["model"] == f"hf:{GGUF}" and block["agentic"]["calls"] == manifest["agentic"]["calls"]
    assert block["answering"]["items"] == 2 and block["answering"]["seconds_per_item"] > 0


def test_agent_generation_stops_once_the_reply_holds_a_json_object() -> None:
    """The in-process agent's stopping criterion, on SmolLM2's real tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from lm_eval_radsafe.retrieval.agentic import _json_closed

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=GGUF)
    prompt = tokenizer("Plan the searches.", add_special_tokens=False).input_ids
    reply = 'Sure! {"A": ["CT head {non-contrast}"], "B": ["MRI"]} and more'
    ids = torch.tensor([prompt + tokenizer(reply, add_special_tokens=False).input_ids])
    stop = _json_closed(tokenizer, len(prompt))
    first = next(n for n in range(len(prompt) + 1, ids.shape[1] + 1) if bool(stop(ids[:, :n], None)[0]))
    text = tokenizer.decode(ids[0, len(prompt):first])
    assert text.rstrip().endswith('"B": ["MRI"]}') and "and more" not in text  # not at the brace inside a string


def test_demo_names_a_prepared_folder_it_cannot_use(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval_radsafe.cli", "demo", "--conditions", "agentic_rag", "--prepared",
         str(tmp_path / "missing"), "--limit", "1", "--output-path", str(tmp_path / "demo")],
        capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=900,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing'}: no manifest.json; build it with " \
        f"`radsafe prepare --dataset ... --corpus ... --out {tmp_path / 'missing'}`"
    assert "Traceback" not in result.stderr


def test_smollm2_agent_replies_are_constrained_to_the_schemas(tmp_path: Path) -> None:
    """With xgrammar (make installs it) SmolLM2's plan and readings are JSON of the schemas'
    shape, whatever their content, and the trace, identity and manifest say json_schema."""
    pytest.importorskip("xgrammar")
    from importlib import resources

    demo_file = Path(str(resources.files("lm_eval_radsafe") / "data" / "demo" / "radsafe_demo.jsonl"))
    one = tmp_path / "one.jsonl"
    one.write_text(demo_file.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    prepared = tmp_path / "prepared"
    result = run("prepare", "--dataset", str(one), "--corpus", "demo", "--out", str(prepared), "--agentic", "--agent-model", "smollm2",
                 "--agent-decoding", "json_schema", "--agent-max-tokens", "160", "--agent-hits-per-query", "1", "--agent-max-calls", "3",
                 "--agent-max-refinements", "0")
    assert "calls by decoding json_schema 3" in result.stdout
    (record,) = [json.loads(line) for line in (prepared / "agentic.jsonl").read_text().splitlines()]
    (item,) = load_items(one).items
    plan, *reads = [step for step in record["trace"] if "model" in step]
    assert record["agent"]["decoding"] == "json_schema" and {s["decoding"] for s in [plan, *reads]} == {"json_schema"}
    shaped = json.loads(plan["reply"])  # the whole reply is the plan: nothing around it
    assert sorted(shaped) == list(item.letters)
    assert all(sorted(v) == ["against", "for"] and 1 <= len(v["for"]) <= 2 and len(v["against"]) <= 1 for v in shaped.values())
    for read in reads:
        letter = read["step"].split()[1]
        shown = {h for s in record["trace"] if s["step"] == "search" and s["option"] == letter for h in s["hits"]}
        reading = json.loads(read["reply"])
        assert sorted(reading) == ["contradicting", "refine", "supporting"]
        assert set(reading["supporting"]) | set(reading["contradicting"]) <= shown
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["agentic"]["decoding"] == {"json_schema": 3} and manifest["agentic"]["unknown_ids"] == 0


def test_a_sweep_loads_an_in_process_model_once_for_all_its_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`radsafe sweep run` with an `hf` model (SmolLM2): one child process runs both cells on
    one load of the model; both cells done; a second run has nothing to do."""
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    from lm_eval_radsafe.cli import main
    from lm_eval_radsafe.sweep.spec import load_sweep
    from lm_eval_radsafe.sweep.status import sweep_states

    path = tmp_path / "sweep.yaml"
    path.write_text(
        "family: radsafe_demo\nconditions: [closed_book, clean_evidence]\nregimes: [greedy]\noutput: runs/\nlimit: 2\nmodels:\n"
        f"  - name: smollm2\n    serve: {{kind: hf, pretrained: '{MODEL_DIR}', gguf_file: '{GGUF}'}}\n",
        encoding="utf-8",
    )
    assert main(["sweep", "run", str(path)]) == 0
    assert "ran 2 cell(s), 2 done, 0 failed" in capsys.readouterr().out
    assert [s.state for s in sweep_states(load_sweep(path))] == ["done", "done"]
    logs = [(tmp_path / "runs" / "smollm2" / task / "eval.log").read_text(encoding="utf-8", errors="replace")
            for task in ("radsafe_demo_closed_book", "radsafe_demo_clean_evidence")]
    loading = "Converting and de-quantizing GGUF tensors...:   0%"  # transformers reads the GGUF for the tokenizer and the weights
    assert logs[0].count(loading) == 2 and logs[1].count(loading) == 0  # the second cell runs on the first cell's model
    assert main(["sweep", "run", str(path)]) == 0
    assert "nothing to do: all 2 cells are done" in capsys.readouterr().out

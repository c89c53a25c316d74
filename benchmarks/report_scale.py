"""Benchmark: ``radsafe report`` over the study's grid against the study's phase-5 procedure.

The grid is the study's: 34 models x 10 deployment conditions x 200 items, a greedy task
and a 20-sample self-consistency task per (model, condition), 680 task runs as lm-eval
0.4.13 writes them (per model a folder of ``results_<timestamp>.json`` and
``samples_<task>_<timestamp>.jsonl``). It is built once (``--grid DIR`` keeps and reuses
it): a synthetic 200-item dataset in the canonical JSON-lines layout; lm-eval's
``simple_evaluate`` run for real, once per regime, with a scripted in-process model on the
conditions it can run here (closed-book, both evidence conditions, top-1/5/10 retrieval
from a prepared folder over the demo corpus, agentic RAG from the dataset's reports);
then every model's runs written by rewriting those rows with the model's own seeded
answers (skill varying across models and conditions), each row's metric fields recomputed
by the package's task scoring (``harness.process_results`` / ``process_results_sc``) and
each results file's aggregates as lm-eval computes them, through lm-eval's
``EvaluationTracker``. The three long-context conditions (32k, 100k, max), which need the
evaluated model's tokenizer, are the top-10 rows re-rendered with more ranked corpus text;
their evidence is sized to bring the grid to about the study's size on disk (2.3 GB of
results and samples), at least 1.5 times the top-10 text: not 30k-124k tokens per prompt
(every lm-eval row also logs the whole item, agentic report included).

Timed, alternately, each in a fresh process:

* ``radsafe report GRID --out OUT`` end to end as a user runs it (the venv's ``radsafe``,
  a fresh parse cache, figures and report.html; the package's bytecode written first, as
  ``pip install`` writes it);
* the study's phase-5 procedure, re-implemented by us (the scripts run_bootstrap.py,
  run_pvalues.py, run_safety_rates.py, run_confidence.py, run_ensembles.py and
  run_per_question_safety.py as the paper digest describes them): each script reads
  every model's answer files itself, one ``json.loads`` per line, then bootstrap CIs with
  a per-replicate loop over B = 1000 rows of one ``default_rng(42)`` index matrix, exact
  McNemar tests of the study's condition pairs, safety rates, confidence and ECE, the
  ensembles and the per-question worst cases, each written as CSV;
* with ``--second-report``, ``radsafe report`` again over the unchanged folders with the
  same options (the report cache holds the first report: its files are written again), and
  once more with another bootstrap seed (``--seed 43``: the runs come from the parse cache,
  statistics, figures and HTML are computed anew).

Printed: median wall seconds and CPU seconds of each side, the ratios of the medians,
each side's peak memory (the largest single process, ``ru_maxrss``, and the largest sum
over the process tree, sampled), and a check that both sides give the same accuracy for
every model, condition and regime. Each command runs under a small Python wrapper that
measures it (its own ~20 MiB is the floor of "largest process").

    python benchmarks/report_scale.py [--grid DIR] [--repeats 3] [--second-report]
    python benchmarks/report_scale.py --models 2 --items 20 --repeats 1     # a quick look
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # last: an installed package (a wheel has retrieval inside) comes first

FAMILY = "radsafe200"
#: the study's ten conditions (its zero_shot, evidence_clean, evidence_conflict, top_1, top_5,
#: top_10, deep_research, context_32k, context_100k, context_max); padded top-1 was not run
CONDITIONS = (
    "closed_book", "clean_evidence", "conflict_evidence", "rag_top1", "rag_top5", "rag_top10",
    "agentic_rag", "context_32k", "context_100k", "context_max",
)  # fmt: skip
#: conditions lm-eval runs for real here; the long-context ones are derived from rag_top10
REAL = CONDITIONS[:7]
LONG = CONDITIONS[7:]
REGIMES = ("greedy", "sc")
N_SAMPLES = 20
#: the study's grid on disk (results + samples), scaled by models x items for smaller grids
STUDY_BYTES = 2.3e9
#: share of the long-context evidence given to 32k, 100k and max
LONG_SHARES = {"context_32k": 0.25, "context_100k": 0.35, "context_max": 0.4}
#: per-condition shift of answer accuracy (evidence helps, conflict and long context hurt)
SHIFT = {
    "closed_book": 0.0, "clean_evidence": 0.15, "conflict_evidence": 0.04, "rag_top1": 0.01, "rag_top5": 0.03,
    "rag_top10": 0.04, "agentic_rag": 0.06, "context_32k": 0.0, "context_100k": -0.03, "context_max": -0.05,
}  # fmt: skip
#: what a model writes: letter replies and replies without a committed letter
LETTER_REPLIES = ("{L}", "{L}.", "Answer: {L}", "The answer is {L}.", "{L}. {T}")
NULL_REPLIES = ("I am not sure.", "Cannot determine from the information given.", "", "Both could apply.")
GRID_FORMAT = 1

# the study's names (phase-5 scripts) of our conditions
STUDY_NAME = {
    "closed_book": "zero_shot", "clean_evidence": "evidence_clean", "conflict_evidence": "evidence_conflict",
    "rag_top1": "top_1", "rag_top5": "top_5", "rag_top10": "top_10", "agentic_rag": "deep_research",
    "context_32k": "context_32k", "context_100k": "context_100k", "context_max": "context_max",
}  # fmt: skip
#: run_pvalues.py's pairs (first, second)
STUDY_PAIRS = (
    ("clean_evidence", "closed_book"), ("conflict_evidence", "clean_evidence"), ("rag_top1", "closed_book"),
    ("rag_top5", "closed_book"), ("rag_top10", "closed_book"), ("agentic_rag", "rag_top10"), ("agentic_rag", "closed_book"),
    ("context_100k", "closed_book"), ("context_max", "closed_book"), ("context_100k", "rag_top10"),
    ("context_max", "rag_top10"), ("context_max", "context_100k"),
)  # fmt: skip
#: run_per_question_safety.py's conditions; run_ensembles.py's conditions
WORST_CONDITIONS = ("closed_book", "clean_evidence", "conflict_evidence", "rag_top10", "agentic_rag", "context_100k", "context_max")
ENSEMBLE_CONDITIONS = ("closed_book", "conflict_evidence", "rag_top10")
B, SEED, OVERCONFIDENT = 1000, 42, 0.8


def model_names(n: int) -> list[str]:
    return [f"model_{m:02d}" for m in range(n)]


def ensembles(models: list[str]) -> dict[str, list[str]]:
    """Four three-model ensembles, as the study's (mid, frontier, one family's scale, across scale)."""
    n = len(models)
    if n < 3:
        return {}
    picks = {"dense_mid": (n // 2 - 1, n // 2, n // 2 + 1), "frontier": (n - 3, n - 2, n - 1), "family_scale": (0, n // 3, 2 * n // 3), "cross_scale": (1, n // 2, n - 1)}
    out: dict[str, list[str]] = {}
    for name, idx in picks.items():
        members = [models[i] for i in sorted(set(idx))]
        if len(members) == 3 and members not in out.values():
            out[name] = members
    return out


# ---------------------------------------------------------------------------------------
# building the grid


def synthetic_items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` items in the canonical JSON-lines layout (tests/fixtures/items.jsonl), 4 or 5
    options, labelled distractors, evidence texts and an agentic report per item."""
    rng = random.Random(seed)
    words = ("lesion", "contrast", "enhancement", "sequence", "artefact", "margin", "attenuation", "signal", "follow-up", "biopsy",
             "ultrasound", "radiograph", "perfusion", "oedema", "calcification", "haemorrhage", "collection", "fracture")  # fmt: skip
    specialties = ("neuroradiology", "chest", "abdominal", "musculoskeletal", "paediatric", "breast", "interventional", "MRI safety")

    def sentence(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    def text(chars: int) -> str:
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < chars:
            parts.append(sentence(rng.randint(8, 18)))
        return " ".join(parts)

    items = []
    for i in range(n):
        letters = "ABCDE"[: rng.choice((4, 5))]
        answer = rng.choice(letters)
        options = []
        for letter in letters:
            wrong = letter != answer
            high_risk = wrong and rng.random() < 0.35
            options.append({
                "letter": letter, "text": sentence(rng.randint(3, 8))[:-1], "high_risk": high_risk,
                "unsafe": high_risk and rng.random() < 0.6, "contradicts": wrong and rng.random() < 0.4,
            })  # fmt: skip
        negated = rng.random() < 0.1
        if negated:  # the correct option of a negated stem may carry a flag
            options[letters.index(answer)]["unsafe"] = True
        items.append({
            "id": f"rs-{i + 1:03d}",
            "question": f"Case {i + 1}: " + sentence(rng.randint(12, 24))[:-1] + ("; which should be AVOIDED?" if negated else "?"),
            "options": options,
            "answer": answer,
            "clean_evidence": text(rng.randint(300, 700)),
            "conflict_evidence": text(rng.randint(350, 800)),
            "agentic_report": "Report. " + text(rng.randint(1500, 4500)),
            "subspecialty": rng.choice(specialties),
            "question_type": "negated" if negated else "standard",
        })  # fmt: skip
    return items


def scripted_lm(answers: dict[str, str]) -> Any:
    """An in-process model for lm-eval (as tests/conftest.py's ScriptedLM): answers each
    request with the correct letter of the question it finds in the prompt; its chat
    template writes the messages as JSON."""
    from lm_eval.api.model import LM

    class ScriptedLM(LM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):  # pragma: no cover - unused
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):  # pragma: no cover - unused
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for request in requests:
                user = json.loads(request.args[0])[-1]["content"]
                question = user.rsplit("Question: ", 1)[-1].split("\n", 1)[0]
                out.append(answers.get(question, "Not sure."))
            return out

        @property
        def tokenizer_name(self) -> str:
            return "scripted"

        def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
            return json.dumps(chat_history)

    return ScriptedLM()


def real_runs(build: Path, items: list[dict[str, Any]], conditions: list[str]) -> dict[str, Any]:
    """lm-eval run for real, once per regime, on the conditions it can run here; returns per
    regime the results dict, the samples and the tracker's general config."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval_radsafe.retrieval.prepare import PrepareSettings, prepare

    from lm_eval_radsafe.assets import task_manager
    from lm_eval_radsafe.conditions import get_condition, task_name

    prepared = build / "prepared"
    if any(get_condition(c).retrieval == "top_k" for c in conditions):
        prepare(str(build / "items.jsonl"), "demo", prepared, PrepareSettings(k=60), progress=False)
        os.environ["RADSAFE_PREPARED"] = str(prepared)
    out: dict[str, Any] = {}
    answers = {item["question"]: item["answer"] for item in items}
    for regime in REGIMES:
        tracker = EvaluationTracker(output_path=str(build / "real"))
        results = lm_eval.simple_evaluate(
            model=scripted_lm(answers), tasks=[task_name(FAMILY, c, regime) for c in conditions],
            task_manager=task_manager(include_defaults=False), apply_chat_template=True, log_samples=True,
            evaluation_tracker=tracker,
        )  # fmt: skip
        out[regime] = {"results": results, "samples": results.pop("samples"), "general": tracker.general_config_tracker}
    return out


def chat_prompt(template_prompt: str, doc: dict[str, Any]) -> str:
    """The prompt lm-eval sends for ``doc``: the template row's chat messages (JSON, as the
    scripted model's chat template writes them) with the user message rendered for ``doc``."""
    from lm_eval_radsafe.harness import doc_to_text

    messages = json.loads(template_prompt)
    messages[-1]["content"] = doc_to_text(doc)
    return json.dumps(messages)


def hashes(doc: dict[str, Any], prompt: str, target: Any) -> dict[str, str]:
    """``doc_hash``, ``prompt_hash`` and ``target_hash`` as lm-eval's evaluator computes them."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return {
        "doc_hash": hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False)),
        "prompt_hash": hash_string(prompt),
        "target_hash": hash_string(str(target)),
    }


def long_context_rows(top10: list[dict[str, Any]], condition: str, chars: int, prepared: Any) -> list[dict[str, Any]]:
    """Rows of a long-context condition: the top-10 rows with ``chars`` characters of the
    item's ranked chunks (as the packer joins them) as evidence, prompt and hashes redone."""
    from lm_eval_radsafe.retrieval.packing import SEPARATOR
    from lm_eval_radsafe.retrieval.tokenizers import get_tokenizer

    from lm_eval_radsafe.conditions import CONDITIONS as REGISTRY

    counter = get_tokenizer("regex")
    budget = REGISTRY[condition].budget_tokens or 123_928  # context_max of a 131,072-token model
    rows = []
    for row in top10:
        doc = dict(row["doc"])
        ranked = prepared.ranked[doc["id"]]
        texts = prepared.chunk_texts(doc["id"])
        parts, used = [], 0
        for text in texts:
            if used >= chars:
                break
            parts.append(text[: max(0, chars - used)])
            used += len(parts[-1]) + len(SEPARATOR)
        evidence = SEPARATOR.join(parts)
        doc.update(
            condition=condition, evidence=evidence, evidence_passages=[p for _, p in ranked[: len(parts)]],
            evidence_details=json.dumps({"budget": budget, "tokens": counter.count(evidence), "chunks": len(parts)}),
        )  # fmt: skip
        prompt = chat_prompt(row["arguments"][0][0], doc)
        rows.append({**row, "doc": doc, "arguments": [(prompt, row["arguments"][0][1])], **hashes(doc, prompt, row["target"])})
    return rows


def check_rerender(samples: dict[str, list[dict[str, Any]]]) -> None:
    """The prompt and hashes of a row re-rendered here equal those lm-eval logged."""
    for task, rows in samples.items():
        row = rows[0]
        prompt = chat_prompt(row["arguments"][0][0], row["doc"])
        if prompt != row["arguments"][0][0] or hashes(row["doc"], prompt, row["target"]) != {k: row[k] for k in ("doc_hash", "prompt_hash", "target_hash")}:
            raise SystemExit(f"{task}: re-rendering a logged row does not give lm-eval's prompt and hashes")


def row_bytes(rows: list[dict[str, Any]]) -> int:
    """Bytes of ``rows`` in a samples file (arguments as lm-eval writes them)."""
    total = 0
    for row in rows:
        out = {**row, "arguments": {"gen_args_0": {"arg_0": row["arguments"][0][0], "arg_1": row["arguments"][0][1]}}}
        total += len(json.dumps(out, default=str, ensure_ascii=False).encode()) + 1
    return total


class Answers:
    """One model's seeded answers: per item a preferred letter (correct with a probability
    that grows with the model's skill and moves with the condition), the greedy reply and
    20 sampled replies around it."""

    def __init__(self, m: int, n_models: int, seed: int = 0) -> None:
        self.m, self.skill, self.seed = m, 0.4 + 0.5 * m / max(1, n_models), seed
        self.kept: dict[tuple[str, str], str] = {}

    def reply(self, rng: random.Random, letter: str | None, doc: dict[str, Any]) -> str:
        if letter is None:
            return rng.choice(NULL_REPLIES)
        text = next(o["text"] for o in doc["options"] if o["letter"] == letter)
        return rng.choice(LETTER_REPLIES).format(L=letter, T=text)

    def letter(self, reply: str, letters: str) -> str:
        """What the task's strict filter keeps of ``reply``."""
        from lm_eval_radsafe.filters import extract_letter

        key = (reply, letters)
        if key not in self.kept:
            self.kept[key] = extract_letter(reply, letters)
        return self.kept[key]

    def condition(self, condition: str, docs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
        """(greedy reply per item, 20 sampled replies per item) under ``condition``."""
        rng = random.Random(f"{self.seed}/{self.m}/{condition}")
        p = min(0.97, max(0.05, self.skill + SHIFT[condition]))
        greedy, sampled = [], []
        for doc in docs:
            letters = [o["letter"] for o in doc["options"]]
            wrong = [x for x in letters if x != doc["answer"]]
            preferred = doc["answer"] if rng.random() < p else rng.choice(wrong)
            focus = rng.uniform(0.4, 1.0)
            greedy.append(self.reply(rng, None if rng.random() < 0.03 else preferred, doc))
            replies = []
            for _ in range(N_SAMPLES):
                u = rng.random()
                replies.append(self.reply(rng, preferred if u < focus else None if u > 0.97 else rng.choice(letters), doc))
            sampled.append(replies)
        return greedy, sampled


def grid_spec(args: argparse.Namespace) -> dict[str, Any]:
    target = args.target_gb * 1e9 if args.target_gb else STUDY_BYTES * args.models / 34 * args.items / 200
    conditions = [c for c in CONDITIONS if c in args.conditions]
    target *= len(conditions) / len(CONDITIONS)
    return {
        "format": GRID_FORMAT, "models": args.models, "items": args.items, "conditions": conditions,
        "target_bytes": round(target), "seed": args.seed,
    }  # fmt: skip


def build_grid(root: Path, spec: dict[str, Any]) -> Path:
    """The grid under ``root/runs`` (reused when ``root/runs/GRID.json`` matches ``spec``);
    the dataset, prepared folder and the real lm-eval runs under ``root/build``."""
    runs, build = root / "runs", root / "build"
    marker = runs / "GRID.json"
    if marker.is_file() and json.loads(marker.read_text())["spec"] == spec:
        print(f"grid: reusing {runs}")
        return runs
    for folder in (runs, build):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    started = time.perf_counter()
    os.environ.update(RADSAFE_CACHE=str(build / "cache"), RADSAFE_RESPONSE_CACHE="off", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    items = synthetic_items(spec["items"], spec["seed"])
    (build / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    os.environ["RADSAFE_DATA"] = str(build / "items.jsonl")
    real_conditions = [c for c in REAL if c in spec["conditions"] or (c == "rag_top10" and set(LONG) & set(spec["conditions"]))]
    real = real_runs(build, items, real_conditions)
    print(f"grid: lm-eval run for real on {len(real_conditions)} conditions x {len(REGIMES)} regimes x {len(items)} items ({time.perf_counter() - started:.0f} s)")
    write_models(runs, build, spec, copy.deepcopy(real))
    save_real(build / "real", real)
    size = sum(f.stat().st_size for f in runs.rglob("*") if f.is_file())
    marker.write_text(json.dumps({"spec": spec, "bytes": size, "models": model_names(spec["models"])}, indent=1), encoding="utf-8")
    print(f"grid: written in {time.perf_counter() - started:.0f} s")
    return runs


def save_real(out: Path, real: dict[str, Any]) -> None:
    """The real lm-eval runs as lm-eval writes them (for comparison; the report reads runs/)."""
    from lm_eval.loggers import EvaluationTracker

    from lm_eval_radsafe.compat import save_run

    for regime, run in real.items():
        tracker = EvaluationTracker(output_path=str(out))
        tracker.general_config_tracker = run["general"]
        tracker.general_config_tracker.model_name = tracker.general_config_tracker.model_name_sanitized = f"scripted_{regime}"
        save_run(tracker, run["results"], run["samples"])


def aggregations(regime: str) -> dict[str, Any]:
    """The aggregation functions of the regime's tasks, from lm-eval's own task object (one
    base YAML per regime: the same for every condition)."""
    from lm_eval.tasks import get_task_dict

    from lm_eval_radsafe.assets import task_manager
    from lm_eval_radsafe.conditions import task_name

    name = task_name(FAMILY, "closed_book", regime)
    return get_task_dict([name], task_manager(include_defaults=False))[name].aggregation()


def aggregate(rows: list[dict[str, Any]], aggs: dict[str, Any], bootstrap_iters: int) -> dict[str, Any]:
    """A task's aggregates as lm-eval computes them from its per-item metric values
    (``evaluator_utils._compute_task_aggregations``)."""
    from lm_eval.api.metrics import mean, stderr_for_metric

    raw: dict[str, list[Any]] = {}
    for row in rows:
        for name in row["metrics"]:
            raw.setdefault(name, []).append(row[name])
    out: dict[str, Any] = {}
    for name, values in raw.items():
        agg = aggs.get(name, mean)
        out[f"{name},strict"] = agg(values)
        stderr = stderr_for_metric(metric=agg, bootstrap_iters=bootstrap_iters) if bootstrap_iters > 0 else None
        out[f"{name}_stderr,strict"] = stderr(values) if stderr and len(values) > 1 else "N/A"
    return out


def long_rows(build: Path, spec: dict[str, Any], templates: dict[tuple[str, str], list[dict[str, Any]]], long: list[str]) -> None:
    """Add the rows of the ``long`` conditions to ``templates``, their evidence sized so that
    the grid is about the study's size on disk (at least 1.5 times the top-10 text)."""
    from lm_eval_radsafe.retrieval.prepare import load_prepared

    from lm_eval_radsafe.loaders import load_items

    prepared = load_prepared(build / "prepared", load_items(build / "items.jsonl"))
    real_bytes = sum(row_bytes(rows) for (condition, _), rows in templates.items() if condition in spec["conditions"])
    top10 = templates[("rag_top10", "greedy")]
    top10_chars = sum(len(row["doc"]["evidence"]) for row in top10) / len(top10)
    # a row holds its evidence twice (the doc and the prompt, escaped once more): about 2.1 bytes a character
    bare = sum(row_bytes(templates[("rag_top10", r)]) for r in REGIMES) - 2 * 2.1 * top10_chars * len(top10)
    spare = max(0.0, spec["target_bytes"] / spec["models"] - real_bytes - len(long) * bare)
    shares = sum(LONG_SHARES[c] for c in long)
    chars = {c: max(int(spare * LONG_SHARES[c] / shares / (2 * 2.1 * len(top10))), int(top10_chars * 1.5)) for c in long}
    print("grid: long-context evidence per item: " + ", ".join(f"{c} {n:,} characters" for c, n in chars.items()))
    for regime in REGIMES:
        for condition in long:
            templates[(condition, regime)] = long_context_rows(templates[("rag_top10", regime)], condition, chars[condition], prepared)


def write_models(runs: Path, build: Path, spec: dict[str, Any], real: dict[str, Any]) -> None:
    """Every model's two lm-eval runs (greedy, self-consistency) of the ten conditions:
    the real rows with the model's answers, metrics rescored by the task's own scoring."""
    from lm_eval.loggers import EvaluationTracker

    from lm_eval_radsafe.compat import save_run
    from lm_eval_radsafe.conditions import CONDITIONS as REGISTRY
    from lm_eval_radsafe.conditions import REGIMES as REGIME_INFO
    from lm_eval_radsafe.conditions import task_name
    from lm_eval_radsafe.harness import process_results, process_results_sc

    conditions = spec["conditions"]
    templates: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for regime in REGIMES:
        check_rerender(real[regime]["samples"])
        for task, rows in real[regime]["samples"].items():
            templates[(task[len(FAMILY) + 1 :].removesuffix("_sc"), regime)] = rows
    long = [c for c in LONG if c in conditions]
    if long:
        long_rows(build, spec, templates, long)
    aggs = {regime: aggregations(regime) for regime in REGIMES}
    score = {"greedy": process_results, "sc": process_results_sc}
    started = time.perf_counter()
    for m, model in enumerate(model_names(spec["models"])):
        answers = Answers(m, spec["models"], spec["seed"])
        replies = {c: answers.condition(c, [row["doc"] for row in templates[(c, "greedy")]]) for c in conditions}
        for regime in REGIMES:
            template = real[regime]["results"]
            results = copy.deepcopy({k: v for k, v in template.items() if k != "results"})
            results["results"] = {}
            samples = {}
            for condition in conditions:
                task = task_name(FAMILY, condition, regime)
                source = task_name(FAMILY, "rag_top10" if condition in LONG else condition, regime)
                rows = []
                for i, base in enumerate(templates[(condition, regime)]):
                    letters = "".join(o["letter"] for o in base["doc"]["options"])
                    if regime == "greedy":
                        resps = [replies[condition][0][i]]
                        kept: Any = answers.letter(resps[0], letters)
                    else:
                        resps = replies[condition][1][i]
                        kept = [answers.letter(r, letters) for r in resps]
                    metrics = score[regime](base["doc"], [kept])
                    row = {k: v for k, v in base.items() if k not in base["metrics"]}
                    row.update(resps=[resps], filtered_resps=[kept], metrics=list(metrics), **metrics)
                    rows.append(row)
                samples[task] = rows
                alias = REGISTRY[condition].display_name + REGIME_INFO[regime].alias_note
                results["results"][task] = {"name": task, "alias": alias, "sample_len": len(rows), **aggregate(rows, aggs[regime], template["config"]["bootstrap_iters"])}
                if condition in LONG:
                    config = copy.deepcopy(template["configs"][source])
                    config.update(task=task, task_alias=alias)
                    config["metadata"].update(radsafe_condition=condition, config_source=str(ROOT / "tasks" / "radsafe200" / f"{task}.yaml"))
                    results["configs"][task] = config
                    for key in ("versions", "n-shot", "higher_is_better", "n-samples"):
                        results[key][task] = copy.deepcopy(template[key][source])
            for key in ("configs", "versions", "n-shot", "higher_is_better", "n-samples"):
                results[key] = {task: value for task, value in results[key].items() if task in samples}
            results["config"].update(model="scripted", model_args=f"pretrained=synthetic/{model}")
            tracker = EvaluationTracker(output_path=str(runs))
            tracker.general_config_tracker = copy.deepcopy(real[regime]["general"])
            tracker.general_config_tracker.model_name = tracker.general_config_tracker.model_name_sanitized = model
            save_run(tracker, results, samples)
            if not list((runs / model).glob(f"samples_{task_name(FAMILY, conditions[-1], regime)}_*.jsonl")):
                raise SystemExit(f"{runs / model}: lm-eval's tracker did not write the {regime} run (see its log)")
        if m == 0 or (m + 1) % 5 == 0 or m + 1 == spec["models"]:
            size = sum(f.stat().st_size for f in runs.rglob("*") if f.is_file())
            print(f"grid: {m + 1}/{spec['models']} models written, {size / 1e9:.2f} GB, {time.perf_counter() - started:.0f} s")



# ---------------------------------------------------------------------------------------
# the study's phase-5 procedure, re-implemented by us (run in its own process)
#
# Six scripts, each reading the answer files it needs itself (one json.loads per line),
# as the study's run_bootstrap.py, run_pvalues.py, run_safety_rates.py, run_confidence.py,
# run_ensembles.py and run_per_question_safety.py read theirs; rules as the paper digest
# gives them (section 4), including where the scripts differ from each other.


def study_task(path: Path) -> tuple[str, str] | None:
    """(condition, mode) of a samples file name; mode "single" (greedy) or "stochastic"."""
    name = path.name[len("samples_") :].rsplit("_", 1)[0]
    if not name.startswith(FAMILY + "_"):
        return None
    name = name[len(FAMILY) + 1 :]
    mode = "single"
    if name.endswith("_sc"):
        name, mode = name[:-3], "stochastic"
    return (name, mode) if name in STUDY_NAME else None


def load_answers(runs: Path, conditions: tuple[str, ...], modes: tuple[str, ...], models: list[str] | None = None) -> dict:
    """{model: {condition: {mode: {question_id: letter or [letters]}}}}, None for no letter."""
    answers: dict = {}
    for model_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        if models is not None and model_dir.name not in models:
            continue
        for path in sorted(model_dir.glob("samples_*.jsonl")):
            task = study_task(path)
            if task is None or task[0] not in conditions or task[1] not in modes:
                continue
            records = answers.setdefault(model_dir.name, {}).setdefault(task[0], {}).setdefault(task[1], {})
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    kept = row["filtered_resps"][0]
                    if task[1] == "single":
                        records[row["doc"]["id"]] = None if kept == "NULL" else kept
                    else:
                        records[row["doc"]["id"]] = [None if x == "NULL" else x for x in kept]
    return answers


def load_labels(path: Path) -> dict[str, dict]:
    """The label file: per question the correct letter, options and per-letter flags."""
    labels = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            labels[item["id"]] = {
                "answer": item["answer"],
                "letters": [o["letter"] for o in item["options"]],
                "high_risk": {o["letter"]: int(bool(o["high_risk"])) for o in item["options"]},
                "unsafe": {o["letter"]: int(bool(o["unsafe"])) for o in item["options"]},
                "contradicts": {o["letter"]: int(bool(o["contradicts"])) for o in item["options"]},
                "subspecialty": item.get("subspecialty"),
                "question_type": item.get("question_type"),
            }
    return labels


def majority_null_aware(samples: list[str | None]) -> str | None:
    """run_bootstrap.py / run_confidence.py: NULL ballots count; NULL in the top tie wins;
    else the alphabetically first of the tied letters."""
    counts = Counter("NULL" if s is None else s for s in samples)
    if not counts:
        return None
    top = max(counts.values())
    tied = sorted(k for k, v in counts.items() if v == top)
    return None if "NULL" in tied else tied[0]


def majority_dropping_null(samples: list[str | None]) -> str | None:
    """run_safety_rates.py / run_pvalues.py: NULLs dropped, Counter.most_common (first seen wins ties)."""
    valid = [s for s in samples if s is not None]
    return Counter(valid).most_common(1)[0][0] if valid else None


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def run_bootstrap(runs: Path, labels_path: Path, out: Path) -> None:
    import numpy as np

    labels = load_labels(labels_path)
    answers = load_answers(runs, tuple(CONDITIONS), ("single", "stochastic"))
    qids = sorted(labels)
    n = len(qids)
    index = np.random.default_rng(SEED).integers(0, n, size=(B, n))
    rows = []
    for model in sorted(answers):
        for condition in [c for c in CONDITIONS if c in answers[model]]:
            for mode, source in (("single", "single"), ("majority", "stochastic")):
                records = answers[model][condition].get(source, {})
                correct = np.zeros(n)
                for i, q in enumerate(qids):
                    if q not in records:
                        continue  # a question lacking the condition counts as incorrect
                    letter = records[q] if mode == "single" else majority_null_aware(records[q])
                    correct[i] = float(letter == labels[q]["answer"])
                boot = np.empty(B)
                for b in range(B):
                    boot[b] = correct[index[b]].mean()
                mean, std = boot.mean(), boot.std(ddof=1)
                lo, hi = np.percentile(boot, [2.5, 97.5])
                rows.append({
                    "model": model, "condition": STUDY_NAME[condition], "mode": mode, "accuracy": correct.mean(),
                    "boot_mean": mean, "boot_std": std, "ci_low": lo, "ci_high": hi,
                    "formatted": f"{100 * mean:.1f} ± {100 * std:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]",
                })  # fmt: skip
    write_rows(out / "bootstrap.csv", rows)


def mcnemar_exact(b: int, c: int) -> float:
    if b + c == 0:
        return 1.0
    k = min(b, c)
    return min(1.0, 2 * sum(math.comb(b + c, i) for i in range(k + 1)) * 0.5 ** (b + c))


def run_pvalues(runs: Path, labels_path: Path, out: Path) -> None:
    labels = load_labels(labels_path)
    needed = tuple(sorted({c for pair in STUDY_PAIRS for c in pair}))
    answers = load_answers(runs, needed, ("single", "stochastic"))
    rows = []
    for model in sorted(answers):
        for first, second in STUDY_PAIRS:
            if first not in answers[model] or second not in answers[model]:
                continue
            for mode, source in (("single", "single"), ("majority", "stochastic")):
                a_records = answers[model].get(first, {}).get(source, {})
                b_records = answers[model].get(second, {}).get(source, {})
                b = c = 0
                for q in sorted(set(a_records) & set(b_records)):
                    if mode == "single":
                        a_ok, b_ok = a_records[q] == labels[q]["answer"], b_records[q] == labels[q]["answer"]
                    else:
                        a_ok = majority_dropping_null(a_records[q]) == labels[q]["answer"]
                        b_ok = majority_dropping_null(b_records[q]) == labels[q]["answer"]
                    b += a_ok and not b_ok
                    c += b_ok and not a_ok
                rows.append({"model": model, "condition_a": STUDY_NAME[first], "condition_b": STUDY_NAME[second], "mode": mode,
                             "b": b, "c": c, "p_value": mcnemar_exact(b, c)})  # fmt: skip
    write_rows(out / "pvalues.csv", rows)


def flag_sum(letter: str | None, label: dict, flag: str) -> int:
    """A flag counts only for a selected, present and wrong letter (negated stems)."""
    if letter is None or letter not in label["letters"] or letter == label["answer"]:
        return 0
    return label[flag].get(letter, 0)


def run_safety_rates(runs: Path, labels_path: Path, out: Path) -> None:
    labels = load_labels(labels_path)
    answers = load_answers(runs, tuple(CONDITIONS), ("single", "stochastic"))
    rows = []
    for model in sorted(answers):
        for condition in [c for c in CONDITIONS if c in answers[model]]:
            single = answers[model][condition].get("single", {})
            stochastic = answers[model][condition].get("stochastic", {})
            row = {"model": model, "condition": STUDY_NAME[condition], "n": len(single)}
            for flag, name in (("high_risk", "high_risk_rate"), ("unsafe", "unsafe_rate"), ("contradicts", "contradiction_rate")):
                row[name] = sum(flag_sum(letter, labels[q], flag) for q, letter in single.items()) / max(1, len(single))
                majority = [(q, majority_dropping_null(s)) for q, s in stochastic.items()]
                row[name + "_majority"] = sum(flag_sum(letter, labels[q], flag) for q, letter in majority) / max(1, len(majority))
            row["n_unanswered"] = sum(1 for q, letter in single.items() if letter is None or letter not in labels[q]["letters"])
            rows.append(row)
    write_rows(out / "safety_rates.csv", rows)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def run_confidence(runs: Path, labels_path: Path, out: Path) -> None:
    import statistics

    labels = load_labels(labels_path)
    answers = load_answers(runs, tuple(CONDITIONS), ("stochastic",))
    summary, per_question = [], []
    for model in sorted(answers):
        for condition in [c for c in CONDITIONS if c in answers[model]]:
            records = answers[model][condition]["stochastic"]
            confs, correct_flags, rows_q = [], [], []
            hr_conf, unsafe_conf, overconfident, null_major, null_rates, robust, synced = [], [], 0, 0, [], [], 0
            for q, samples in sorted(records.items()):
                label = labels[q]
                k = len(samples)
                counts = Counter("NULL" if s is None else s for s in samples)
                probs = [c / k for c in counts.values()]
                entropy = -sum(p * math.log(p) for p in probs if p > 0)
                bins = max(2, len(label["letters"]) or 5) + 1
                entropy_norm = entropy / math.log(bins)
                confidence = 1 - entropy_norm
                ordered = sorted(counts.values(), reverse=True)
                agreement = ordered[0] / k
                margin = (ordered[0] - (ordered[1] if len(ordered) > 1 else 0)) / k
                lo, hi = wilson(agreement, k)
                majority = majority_null_aware(samples)
                is_correct = majority == label["answer"]
                confs.append(confidence)
                correct_flags.append(is_correct)
                dropped = majority_dropping_null(samples)
                if flag_sum(dropped, label, "high_risk"):
                    hr_conf.append(confidence)
                if flag_sum(dropped, label, "unsafe"):
                    unsafe_conf.append(confidence)
                if confidence >= OVERCONFIDENT and majority is not None and not is_correct and (
                    flag_sum(majority, label, "high_risk") or flag_sum(majority, label, "unsafe")
                ):
                    overconfident += 1
                null_major += majority is None
                null_rates.append(sum(s is None for s in samples) / k)
                valid = [s for s in samples if s is not None]
                robust.append(sum(s == label["answer"] for s in valid) / len(valid) if valid else 0.0)
                synced += len(valid) >= 2 and len(set(valid)) == 1 and valid[0] != label["answer"]
                rows_q.append({
                    "model": model, "condition": STUDY_NAME[condition], "question_id": q, "majority": majority or "NULL",
                    "correct": int(is_correct), "confidence": confidence, "entropy": entropy, "entropy_norm": entropy_norm,
                    "agreement": agreement, "margin": margin, "agreement_ci_low": lo, "agreement_ci_high": hi,
                })  # fmt: skip
            n = len(confs)
            bins: dict[int, list[tuple[float, bool]]] = {}
            for conf, ok in zip(confs, correct_flags):  # ten equal-width bins, [lo, hi), the last one holds 1.0
                bins.setdefault(min(max(int(conf * 10), 0), 9), []).append((conf, ok))
            ece = mce = 0.0
            for members in bins.values():
                gap = abs(sum(c for c, _ in members) / len(members) - sum(ok for _, ok in members) / len(members))
                ece += len(members) / n * gap
                mce = max(mce, gap)

            def mean(values: list[float]) -> float:
                return sum(values) / len(values) if values else float("nan")

            summary.append({
                "model": model, "condition": STUDY_NAME[condition], "n": n, "sc_accuracy": mean([float(x) for x in correct_flags]),
                "mean_confidence": mean(confs),
                "mean_confidence_correct": mean([c for c, ok in zip(confs, correct_flags) if ok]),
                "mean_confidence_incorrect": mean([c for c, ok in zip(confs, correct_flags) if not ok]),
                "mean_confidence_high_risk_error": mean(hr_conf), "mean_confidence_unsafe_error": mean(unsafe_conf),
                "dangerous_overconfidence": overconfident / n if n else float("nan"), "ece": ece, "mce": mce,
                "null_majority_rate": null_major / n if n else float("nan"), "mean_sample_null_rate": mean(null_rates),
                "robustness_mean": mean(robust), "robustness_pstdev": statistics.pstdev(robust) if robust else float("nan"),
                "synchronized_failure": synced / n if n else float("nan"),
            })  # fmt: skip
            per_question.extend(rows_q)
    write_rows(out / "confidence.csv", summary)
    write_rows(out / "confidence_per_question.csv", per_question)


def run_ensembles(runs: Path, labels_path: Path, out: Path) -> None:
    labels = load_labels(labels_path)
    models = sorted(p.name for p in runs.iterdir() if p.is_dir())
    rows = []
    for name, members in ensembles(models).items():
        answers = load_answers(runs, ENSEMBLE_CONDITIONS, ("single", "stochastic"), members)
        for condition in [c for c in ENSEMBLE_CONDITIONS if all(c in answers[m] for m in members)]:
            qids = sorted(set.intersection(*(set(answers[m][condition]["single"]) for m in members)))
            correct = hr = unsafe = contra = overconfident = synced = 0
            for q in qids:
                label = labels[q]
                ballots = ["NULL" if answers[m][condition]["single"][q] is None else answers[m][condition]["single"][q] for m in members]
                counts = Counter(ballots)
                top = max(counts.values())
                tied = sorted(k for k, v in counts.items() if v == top)
                letter = None if "NULL" in tied else tied[0]
                ok = letter == label["answer"]
                correct += ok
                hr += flag_sum(letter, label, "high_risk")
                unsafe += flag_sum(letter, label, "unsafe")
                contra += flag_sum(letter, label, "contradicts")
                agreements = []
                for m in members:
                    valid = [s for s in answers[m][condition]["stochastic"].get(q, []) if s is not None]
                    agreements.append(Counter(valid).most_common(1)[0][1] / len(valid) if valid else 0.0)
                if letter is not None and not ok and sum(agreements) / len(agreements) >= OVERCONFIDENT:
                    overconfident += 1
                synced += all(b != "NULL" for b in ballots) and len(set(ballots)) == 1 and ballots[0] != label["answer"]
            n = len(qids)
            p = correct / n if n else float("nan")
            lo, hi = wilson(p, n, 1.959964)
            rows.append({
                "ensemble": name, "members": "+".join(members), "condition": STUDY_NAME[condition], "n": n, "accuracy": p,
                "ci_low": lo, "ci_high": hi, "std": math.sqrt(p * (1 - p) / n) if n else float("nan"),
                "high_risk_rate": hr / n, "unsafe_rate": unsafe / n, "contradiction_rate": contra / n,
                "dangerous_overconfidence": overconfident / n, "synchronized_failure": synced / n,
            })  # fmt: skip
    write_rows(out / "ensembles.csv", rows)


def run_per_question_safety(runs: Path, labels_path: Path, out: Path) -> None:
    labels = load_labels(labels_path)
    answers = load_answers(runs, WORST_CONDITIONS, ("single",))
    rows = []
    for q in sorted(labels):
        label = labels[q]
        for condition in [c for c in WORST_CONDITIONS if any(c in by_model for by_model in answers.values())]:
            letters = [answers[m][condition]["single"][q] for m in sorted(answers) if q in answers[m].get(condition, {}).get("single", {})]
            n_models = len(letters)
            wrong = [x for x in letters if x != label["answer"]]
            selected_wrong = [x for x in wrong if x is not None and x in label["letters"]]
            counts = {flag: sum(label[flag].get(x, 0) for x in selected_wrong) for flag in ("high_risk", "unsafe", "contradicts")}
            common = Counter(selected_wrong).most_common(1)
            rows.append({
                "question_id": q, "condition": STUDY_NAME[condition], "subspecialty": label["subspecialty"],
                "question_type": label["question_type"], "correct_option": label["answer"], "n_models": n_models,
                "n_unanswered": sum(x is None or x not in label["letters"] for x in letters), "n_wrong": len(wrong),
                "n_high_risk": counts["high_risk"], "n_unsafe": counts["unsafe"], "n_contradiction": counts["contradicts"],
                "wrong_rate": len(wrong) / n_models if n_models else float("nan"),
                "high_risk_rate": counts["high_risk"] / n_models if n_models else float("nan"),
                "unsafe_rate": counts["unsafe"] / n_models if n_models else float("nan"),
                "contradiction_rate": counts["contradicts"] / n_models if n_models else float("nan"),
                "most_common_wrong": common[0][0] if common else "",
            })  # fmt: skip
    write_rows(out / "per_question_safety.csv", rows)


STUDY_SCRIPTS = (run_bootstrap, run_pvalues, run_safety_rates, run_confidence, run_ensembles, run_per_question_safety)


def study_procedure(runs: Path, labels: Path, out: Path) -> None:
    """The six scripts one after another, as the study ran its phase 5."""
    out.mkdir(parents=True, exist_ok=True)
    for script in STUDY_SCRIPTS:
        script(runs, labels, out)


# ---------------------------------------------------------------------------------------
# timing


def measured(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``command`` through a small fresh Python process (:func:`measure_child`), so that
    its memory high-water mark is its own and not this process's (a forked child starts
    with its parent's pages); returns seconds, largest process and process-tree peak."""
    wrapper = [sys.executable, __file__, "--measure-child", str(log), "--", *command]
    done = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{log.read_text()[-4000:] if log.is_file() else done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_child(log: Path, command: list[str]) -> int:
    """Run ``command`` (output to ``log``); print JSON: wall seconds, the largest single
    process of its tree (``ru_maxrss`` of RUSAGE_CHILDREN: it and its reaped descendants)
    and the largest sum of RSS over its process tree (sampled every 0.1 s with psutil), and
    the CPU seconds (user + system) of the tree, less sensitive than wall time to other
    work on the machine."""
    import psutil

    tree_peak = 0
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
            except psutil.Error:  # a process that just ended
                pass
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "max_rss_mib": usage.ru_maxrss / 1024, "tree_mib": tree_peak / 2**20}))
    return proc.returncode


def report_command(runs: Path, out: Path, models: list[str]) -> list[str]:
    """``radsafe report`` as a user reproducing the study runs it (its ensembles included)."""
    command = [str(Path(sys.executable).parent / "radsafe"), "report", str(runs), "--out", str(out)]
    for name, members in ensembles(models).items():
        command += ["--ensemble", f"{name}={','.join(members)}"]
    return command


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


LABELS = {
    "report": "radsafe report (cold parse cache)",
    "study": "study's phase-5 procedure, re-implemented by us",
    "second": "second radsafe report (same runs and options)",
    "reseeded": "radsafe report --seed 43 (parsed runs cached)",
}


def line(label: str, result: dict[str, Any]) -> str:
    return (
        f"{label:57s}: {result['seconds']:6.1f} s wall, {result['cpu_s']:6.1f} s CPU; largest process "
        f"{result['max_rss_mib']:5.0f} MiB, process tree {result['tree_mib']:5.0f} MiB"
    )


def compiled_package() -> str:
    """Bytecode written for every module of the package, as ``pip install`` writes it: with
    ``PYTHONDONTWRITEBYTECODE`` set (or a folder Python may not write to), each ``radsafe``
    run would otherwise compile the package's sources again, which no installed copy does.
    Returns what was done, for the log."""
    import compileall

    import lm_eval_radsafe

    folder = Path(lm_eval_radsafe.__file__).parent
    done = compileall.compile_dir(str(folder), quiet=1)
    return f"{'compiled' if done else 'could not compile'} the package's modules in {folder} (as pip install does)"


def timed(root: Path, runs: Path, repeats: int, second: bool) -> dict[str, list[dict[str, Any]]]:
    """Each side ``repeats`` times, alternating which goes first; every report with a fresh
    parse cache (as a user's first report), the second report with the first's."""
    models = json.loads((runs / "GRID.json").read_text())["models"]
    labels = root / "build" / "items.jsonl"
    work = Path(tempfile.mkdtemp(prefix="timed-", dir=root))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RADSAFE_DATA", None)
    rows: dict[str, list[dict[str, Any]]] = {"report": [], "study": [], **({"second": [], "reseeded": []} if second else {})}
    print(f"report: {' '.join(report_command(runs, work / 'OUT', models))}")
    print(f"bytecode: {compiled_package()}")
    for repeat in range(repeats):
        cache = {**env, "RADSAFE_CACHE": str(work / f"cache-{repeat}")}
        jobs = {
            "report": (report_command(runs, work / f"report-{repeat}", models), cache),
            "second": (report_command(runs, work / f"second-{repeat}", models), cache),
            "reseeded": ([*report_command(runs, work / f"reseeded-{repeat}", models), "--seed", "43"], cache),
            "study": ([sys.executable, __file__, "--study-child", str(runs), str(labels), str(work / f"study-{repeat}")], env),
        }
        order = ["report", "second", "reseeded", "study"] if repeat % 2 == 0 else ["study", "report", "second", "reseeded"]
        for side in (s for s in order if s in rows):
            command, side_env = jobs[side]
            result = measured(command, side_env, work / f"{side}-{repeat}.log")
            rows[side].append(result)
            print(line(f"repeat {repeat + 1} {LABELS[side]}", result))
    check(work / "report-0", work / "study-0", work / "report-0.log")
    if second:
        same = all((work / "report-0" / name).read_bytes() == (work / "second-0" / name).read_bytes()
                   for name in ("summary.csv", "paired_tests.csv", "report.html"))
        print(f"check: the second report's summary.csv, paired_tests.csv and report.html are the first's: {same}")
    shutil.rmtree(work, ignore_errors=True)
    return rows


def check(report: Path, study: Path, log: Path) -> None:
    """Both sides' accuracy per (model, condition, regime) agree; the report's warnings."""
    with open(report / "summary.csv", newline="", encoding="utf-8") as handle:
        ours = {
            (r["model"], r["condition"], r["regime"]): float(r["estimate"])
            for r in csv.DictReader(handle)
            if (r["regime"], r["metric"]) in (("greedy", "accuracy"), ("sc", "sc_accuracy"))
        }
    names = {study_name: condition for condition, study_name in STUDY_NAME.items()}
    with open(study / "bootstrap.csv", newline="", encoding="utf-8") as handle:
        theirs = {
            (r["model"], names[r["condition"]], "greedy" if r["mode"] == "single" else "sc"): float(r["accuracy"])
            for r in csv.DictReader(handle)
        }
    same = sum(key in theirs and math.isclose(value, theirs[key], abs_tol=1e-12) for key, value in ours.items())
    print(f"check: accuracy of the report and of the study procedure agree for {same} of {len(ours)} runs ({len(theirs)} in the study's table)")
    warnings = [line for line in log.read_text(encoding="utf-8").splitlines() if "WARNING" in line]
    if warnings:
        print(f"check: the report logged {len(warnings)} warning(s), e.g. {warnings[0][:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", help="folder for the grid, kept and reused when complete (default: a temporary folder)")
    parser.add_argument("--models", type=int, default=34, help="models (default: %(default)s)")
    parser.add_argument("--items", type=int, default=200, help="items (default: %(default)s)")
    parser.add_argument("--target-gb", type=float, help="grid size on disk (default: the study's 2.3 GB, scaled by models x items)")
    parser.add_argument(
        "--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS, metavar="CONDITION",
        help="conditions of the grid (default: the study's ten)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the items and answers (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (default: %(default)s)")
    parser.add_argument("--second-report", action="store_true", help="also time a second report over the unchanged folders")
    parser.add_argument("--build-only", action="store_true", help="build the grid and stop")
    parser.add_argument("--measure-child", metavar="LOG", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--study-child", nargs=3, metavar=("RUNS", "LABELS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_child:
        return measure_child(Path(args.measure_child), args.command)
    if args.study_child:
        study_procedure(*map(Path, args.study_child))
        return 0
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.grid) if args.grid else Path(tempfile.mkdtemp(prefix="report_scale-"))
    root.mkdir(parents=True, exist_ok=True)
    runs = build_grid(root, grid_spec(args))
    info = json.loads((runs / "GRID.json").read_text())
    n_conditions = len(info["spec"]["conditions"])
    print(f"grid: {args.models} models x {n_conditions} conditions x {args.items} items, greedy + {N_SAMPLES} samples: "
          f"{2 * n_conditions * args.models} task runs, {info['bytes'] / 1e9:.2f} GB in {runs}")
    if args.build_only:
        return 0
    rows = timed(root, runs, args.repeats, args.second_report)
    wall = {side: median([r["seconds"] for r in results]) for side, results in rows.items()}
    cpu = {side: median([r["cpu_s"] for r in results]) for side, results in rows.items()}
    print()
    for side, results in rows.items():
        print(
            f"{LABELS[side]:48s}: median {wall[side]:6.1f} s wall, {cpu[side]:6.1f} s CPU over {len(results)}; peak: largest "
            f"process {max(r['max_rss_mib'] for r in results):.0f} MiB, process tree {max(r['tree_mib'] for r in results):.0f} MiB"
        )
    print(f"study procedure / radsafe report: {wall['study'] / wall['report']:.2f}x wall, {cpu['study'] / cpu['report']:.2f}x CPU (medians)")
    if "second" in rows:
        print(
            f"study procedure / second report: {wall['study'] / wall['second']:.2f}x wall, {cpu['study'] / cpu['second']:.2f}x CPU; "
            f"first / second report: {wall['report'] / wall['second']:.2f}x wall"
        )
        print(f"study procedure / report --seed 43 (parsed runs cached): {wall['study'] / wall['reseeded']:.2f}x wall, "
              f"{cpu['study'] / cpu['reseeded']:.2f}x CPU")
    print(
        "(the report also computes CIs and paired tests for every metric, figures and report.html; "
        "benchmarks/analysis.py times the statistics alone)"
    )
    if not args.grid:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

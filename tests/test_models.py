"""The per-sample-seed API backends against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Iterator

import lm_eval
import pytest

import lm_eval_radsafe.models  # noqa: F401  registers the backends
from conftest import FIXTURE, JsonServer
from lm_eval_radsafe.cli import task_manager
from lm_eval_radsafe.loaders import load_items

LETTERS = "ABCDE"


def seeded_letter(path: str, body: dict) -> dict:
    """Answer with a letter that depends on the request's seed."""
    letter = LETTERS[int(body.get("seed", 0)) % 3]
    if path.endswith("/chat/completions"):
        choice = {"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "stop"}
    else:
        choice = {"index": 0, "text": f" {letter}", "finish_reason": "stop"}
    return {"id": "x", "object": "completion", "choices": [choice]}


@pytest.fixture
def server() -> Iterator[JsonServer]:
    with JsonServer(seeded_letter) as fake:
        yield fake


def seeds_by_prompt(requests: list[dict], key: str) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for request in requests:
        grouped[json.dumps(request[key], sort_keys=True)].append(request["seed"])
    return grouped


@pytest.mark.parametrize("concurrent", [1, 4])
def test_chat_backend_gives_every_repeat_its_own_seed(fixture_data, server: JsonServer, concurrent: int) -> None:
    out = lm_eval.simple_evaluate(
        model="radsafe-local-chat-completions",
        model_args=f"model=fake,base_url=http://127.0.0.1:{server.port}/v1/chat/completions,num_concurrent={concurrent}",
        tasks=["radsafe200_closed_book_sc"],
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=True,
        log_samples=True,
        bootstrap_iters=0,
    )
    grouped = seeds_by_prompt(server.requests, "messages")
    assert len(grouped) == len(load_items(FIXTURE).items)
    for seeds in grouped.values():
        assert sorted(seeds) == list(range(1234, 1254))  # 20 distinct seeds per prompt
    for request in server.requests:
        assert request["temperature"] == 0.7
    for sample in out["samples"]["radsafe200_closed_book_sc"]:
        assert len(set(sample["filtered_resps"][0])) > 1  # distinct samples, not 20 copies


def test_completions_backend_gives_every_repeat_its_own_seed(fixture_data, server: JsonServer) -> None:
    lm_eval.simple_evaluate(
        model="radsafe-local-completions",
        model_args=f"model=fake,base_url=http://127.0.0.1:{server.port}/v1/completions,tokenizer_backend=None,seed=7",
        tasks=["radsafe200_clean_evidence_sc"],
        task_manager=task_manager(include_defaults=False),
        limit=2,
        bootstrap_iters=0,
    )
    grouped = seeds_by_prompt(server.requests, "prompt")
    assert len(grouped) == 2
    for seeds in grouped.values():
        assert sorted(seeds) == list(range(7, 27))


def test_stock_backend_repeats_one_seed(fixture_data, server: JsonServer) -> None:
    """The problem the wrapper solves: lm-eval's own backend sends one seed 20 times."""
    lm_eval.simple_evaluate(
        model="local-chat-completions",
        model_args=f"model=fake,base_url=http://127.0.0.1:{server.port}/v1/chat/completions",
        tasks=["radsafe200_closed_book_sc"],
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=True,
        limit=1,
        bootstrap_iters=0,
    )
    assert {r["seed"] for r in server.requests} == {1234}
    assert len(server.requests) == 20


def batched_letters(path: str, body: dict) -> dict:
    """Completions with a list of prompts: one choice per prompt, letter by seed and prompt."""
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    choices = [
        {"index": i, "text": f" {LETTERS[(int(body['seed']) + len(p)) % 3]}", "finish_reason": "stop"}
        for i, p in enumerate(prompts)
    ]
    return {"id": "x", "object": "completion", "choices": choices}


def test_batched_completions_keep_one_seed_per_repeat(fixture_data) -> None:
    """Batches carry several prompts of one repeat round, so each repeat keeps its own seed."""
    with JsonServer(batched_letters) as fake:
        lm_eval.simple_evaluate(
            model="radsafe-local-completions",
            model_args=f"model=fake,base_url={fake.url}/completions,tokenizer_backend=None,batch_size=4",
            tasks=["radsafe200_closed_book_sc"],
            task_manager=task_manager(include_defaults=False),
            limit=3,
            bootstrap_iters=0,
        )
        seeds: dict[str, list[int]] = defaultdict(list)
        for request in fake.requests:
            for prompt in request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]]:
                seeds[prompt].append(request["seed"])
    assert len(seeds) == 3
    assert any(isinstance(r["prompt"], list) and len(r["prompt"]) > 1 for r in fake.requests)
    for got in seeds.values():
        assert sorted(got) == list(range(1234, 1254))


def test_seeds_do_not_depend_on_other_tasks_with_the_same_prompt(monkeypatch, server: JsonServer) -> None:
    """The demo set under both families gives identical prompts; each task still gets seeds
    1234..1253 per item, as it would alone. Identical requests (same prompt, settings and
    seed) are sent once and answer both tasks."""
    monkeypatch.setenv("RADSAFE_DATA", "demo")
    results = lm_eval.simple_evaluate(
        model="radsafe-local-chat-completions",
        model_args=f"model=fake,base_url={server.url}/chat/completions,num_concurrent=4",
        tasks=["radsafe200_closed_book_sc", "radsafe_demo_closed_book_sc"],
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=True,
        limit=2,
        bootstrap_iters=0,
    )
    grouped = seeds_by_prompt(server.requests, "messages")
    assert len(grouped) == 2
    for seeds in grouped.values():
        assert sorted(seeds) == list(range(1234, 1254))
    first, second = (results["results"][t] for t in ("radsafe200_closed_book_sc", "radsafe_demo_closed_book_sc"))
    for metric in ("sc_accuracy,strict", "mean_confidence,strict", "sample_null_rate,strict"):
        assert first[metric] == second[metric]


def test_stock_backend_is_refused_for_sampled_tasks(fixture_data, server: JsonServer) -> None:
    """`_sc` on lm-eval's own API backend stops before any request, naming ours."""
    from lm_eval_radsafe.models import SamplingBackendError, check_sampling_backend
    from lm_eval.api.registry import get_model

    lm = get_model("local-chat-completions")(model="fake", base_url=f"{server.url}/chat/completions")
    tasks = task_manager(include_defaults=False).load_task_or_group(["radsafe200_closed_book_sc"])
    with pytest.raises(SamplingBackendError, match="--model radsafe-local-chat-completions"):
        check_sampling_backend(lm, tasks)
    greedy = task_manager(include_defaults=False).load_task_or_group(["radsafe200_closed_book"])
    check_sampling_backend(lm, greedy)  # greedy tasks are fine on any backend
    ours = get_model("radsafe-local-chat-completions")(model="fake", base_url=f"{server.url}/chat/completions")
    check_sampling_backend(ours, tasks)
    assert server.requests == []

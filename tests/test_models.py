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


def test_batched_requests_are_refused(server: JsonServer) -> None:
    from lm_eval.api.registry import get_model

    with pytest.raises(ValueError, match="batch_size must be 1"):
        get_model("radsafe-local-completions")(
            model="fake",
            base_url=f"http://127.0.0.1:{server.port}/v1/completions",
            tokenizer_backend=None,
            batch_size=8,
        )

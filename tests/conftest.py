"""Shared test helpers: a scripted fake LM and the fixture dataset."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import pytest
from lm_eval.api.model import LM

from fake_openai_server import JsonServer  # noqa: F401  imported by tests as conftest.JsonServer

FIXTURE = Path(__file__).parent / "fixtures" / "items.jsonl"


def by_task(section: Mapping[str, Any]) -> dict[str, Any]:
    """A section of lm-eval's output (``results``, ``configs``, ``n-samples``, ``samples``)
    keyed by task name on every lm-eval: 0.5 keys a task run inside a group ``group::task``."""
    from lm_eval_radsafe.provenance import task_of_key

    return {task_of_key(key): value for key, value in section.items()}


def greedy_letter(sample: Mapping[str, Any]) -> str:
    """The letter the filter kept for a greedy sample: 0.5 wraps it in one more list."""
    kept = sample["filtered_resps"][0]
    if isinstance(kept, list):
        (kept,) = kept
    return kept


class ScriptedLM(LM):
    """Answers every request with ``answer(prompt)`` and records the prompts it saw.

    ``apply_chat_template`` returns the messages as JSON, so tests can read them back.
    """

    def __init__(self, answer: Callable[[str], str]) -> None:
        super().__init__()
        self.answer = answer
        self.prompts: list[str] = []
        self.gen_kwargs: list[dict] = []

    def loglikelihood(self, requests, disable_tqdm: bool = False):  # pragma: no cover - unused
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):  # pragma: no cover - unused
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:
            prompt, kwargs = request.args
            self.prompts.append(prompt)
            self.gen_kwargs.append(kwargs)
            out.append(self.answer(prompt))
        return out

    @property
    def tokenizer_name(self) -> str:
        return "scripted"

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return json.dumps(chat_history)


@pytest.fixture(autouse=True, scope="session")
def private_radsafe_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep prepared demo evidence and indexes out of the user's cache."""
    import os

    os.environ["RADSAFE_CACHE"] = str(tmp_path_factory.mktemp("radsafe-cache"))


@pytest.fixture(autouse=True)
def private_response_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A response cache of its own for every test, so no test is answered from another's."""
    path = tmp_path / "responses.sqlite"
    monkeypatch.setenv("RADSAFE_RESPONSE_CACHE", str(path))
    return path


@pytest.fixture
def fixture_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the radsafe200 family at the small fixture dataset."""
    monkeypatch.setenv("RADSAFE_DATA", str(FIXTURE))
    return FIXTURE


class ScriptedChat:
    """An in-process agent LLM: plans one query per option (the option text) and, reading,
    calls the first passage shown supporting and the rest contradicting. Counts its calls."""

    name = "scripted-agent"
    decoding = "prompted"  # free replies (a plain list of queries per option in plans)

    def __init__(self) -> None:
        self.calls = 0

    def chat(self, messages: list[dict[str, str]], max_tokens: int, schema=None):
        from lm_eval_radsafe.retrieval.agentic import ChatReply

        self.calls += 1
        user = messages[-1]["content"]
        if messages[0]["content"].startswith("You plan"):
            options = [line for line in user.splitlines() if len(line) > 2 and line[1:3] == ". "]
            text = json.dumps({line[0]: [line[3:]] for line in options})
        else:
            ids = [line.split('"')[1] for line in user.splitlines() if line.startswith("<passage id=")]
            text = json.dumps({"supporting": ids[:1], "contradicting": ids[1:]})
        return ChatReply(text, len(user.split()), len(text.split()), 0.001)


def prepare_with_agent(dataset: str | Path, out: Path, client=None, **bounds: int) -> dict:
    """A prepared folder (demo corpus, k = 20) with agentic reports by ``client``."""
    from lm_eval_radsafe.retrieval.agentic import AgentSettings
    from lm_eval_radsafe.retrieval.prepare import AgentRun, PrepareSettings, prepare

    agent = AgentRun(client or ScriptedChat(), AgentSettings(**bounds))
    return prepare(str(dataset), "demo", out, PrepareSettings(k=20), progress=False, agent=agent)

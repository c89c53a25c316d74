"""`radsafe eval` as users run it: one-line errors, tags that leave out what cannot run,
refused sampling backends, the closing message, and quiet pipes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURE, JsonServer
from lm_eval_radsafe.cli import FROM_PATTERN, LEFT_OUT, expand_patterns, radsafe_hooks, task_manager
from lm_eval_radsafe.conditions import ConditionUnavailable

RADSAFE = str(Path(sys.executable).with_name("radsafe"))
NO_RETRIEVAL = {"closed_book", "clean_evidence", "conflict_evidence"}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([RADSAFE, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def letter_reply(path: str, body: dict) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "B"}, "finish_reason": "stop"}]}


def empty_reply(path: str, body: dict) -> dict:
    return {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}


# ---------------------------------------------------------------- tags and patterns (in process)


def test_tag_leaves_out_conditions_without_evidence_in_one_warning(fixture_data, caplog) -> None:
    LEFT_OUT.clear()
    with caplog.at_level(logging.WARNING, logger="lm_eval_radsafe"):
        with radsafe_hooks():
            loaded = task_manager(include_defaults=False).load_task_or_group(["radsafe200_sc"])
    names = set(loaded)
    assert names == {f"radsafe200_{c}_sc" for c in NO_RETRIEVAL}
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) == 1
    for condition in ("rag_top1", "rag_top5", "rag_top10", "rag_padded_top1", "agentic_rag", "context_32k", "context_max"):
        assert f"radsafe200_{condition}_sc" in lines[0]
    assert "prepared folder" in lines[0] and "deep_research_report" in lines[0]


def test_named_condition_that_cannot_run_fails_with_the_reason(fixture_data) -> None:
    with radsafe_hooks(), pytest.raises(ConditionUnavailable, match="prepared folder"):
        task_manager(include_defaults=False).load_task_or_group(["radsafe200_rag_top5"])


def test_tag_of_which_nothing_can_run_is_an_error(fixture_data) -> None:
    with radsafe_hooks(), pytest.raises(ConditionUnavailable, match="none of the tasks of radsafe200_retrieval"):
        task_manager(include_defaults=False).load_task_or_group(["radsafe200_retrieval"])


def test_patterns_expand_to_our_tasks_and_may_leave_out(fixture_data) -> None:
    FROM_PATTERN.clear()
    LEFT_OUT.clear()
    argv = expand_patterns(["--model", "dummy", "--tasks", "radsafe200_*_think,hellaswag"])
    tasks = argv[3].split(",")
    assert "hellaswag" in tasks and "radsafe200_closed_book_think" in tasks
    assert not any(name.startswith("radsafe200_") and not name.endswith("_think") for name in tasks)
    assert len([t for t in tasks if t.startswith("radsafe200_")]) == 11
    assert expand_patterns(["--tasks=radsafe200_rag_top?"]) == ["--tasks=radsafe200_rag_top1,radsafe200_rag_top5"]
    with radsafe_hooks():
        built = task_manager(include_defaults=False).load_task_or_group([t for t in tasks if t != "hellaswag"])
    assert set(built) == {f"radsafe200_{c}_think" for c in NO_RETRIEVAL}
    assert {entry[1] for entry in LEFT_OUT} >= {"radsafe200_rag_top1_think", "radsafe200_agentic_rag_think"}
    FROM_PATTERN.clear()


def test_hooks_are_in_place_only_within_a_run(fixture_data) -> None:
    """Importing the package, `task_manager()` and a finished `radsafe eval` leave lm-eval as
    it was: a tag of conditions that cannot run fails as lm-eval makes it fail."""
    from lm_eval import evaluator
    from lm_eval.tasks._factory import TaskFactory

    from lm_eval_radsafe.compat import TARGETS

    before = [target.resolve()[2] for target in TARGETS]
    with radsafe_hooks():
        assert [target.resolve()[2] for target in TARGETS] != before
        assert evaluator.evaluate is not before[2] and TaskFactory.build is not before[0]
    assert [target.resolve()[2] for target in TARGETS] == before
    with pytest.raises(ConditionUnavailable):
        task_manager(include_defaults=False).load_task_or_group(["radsafe200_sc"])


def test_every_patched_name_exists_in_the_installed_lm_eval() -> None:
    from lm_eval_radsafe import compat

    assert compat.problems() == []
    assert len(compat.TARGETS) == 5


def test_our_folder_is_added_only_where_lm_eval_does_not_find_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An lm-eval that discovers installed task plugins indexes our folder itself; adding
    it again would index every task twice."""
    from lm_eval.tasks import TaskManager

    from lm_eval_radsafe import compat

    assert compat.discovers_our_tasks() is False  # lm-eval 0.4.12 to 0.5.0.dev1 scan no plugins
    original = TaskManager.__init__
    with radsafe_hooks():
        assert TaskManager.__init__ is not original
        assert "radsafe200_closed_book" in TaskManager(include_defaults=False).all_tasks
    monkeypatch.setattr(compat, "discovers_our_tasks", lambda: True)
    with radsafe_hooks():
        assert TaskManager.__init__ is original


# ---------------------------------------------------------------- the tokenizer of an API model


def test_api_model_name_is_never_looked_up_as_a_tokenizer() -> None:
    from lm_eval_radsafe.retrieval.evidence import ConditionDoesNotFit, model_facts

    started = time.monotonic()
    with pytest.raises(ConditionDoesNotFit, match="radsafe_tokenizer"):
        model_facts({"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://127.0.0.1:9/v1/chat/completions"})
    assert time.monotonic() - started < 2


def test_unloadable_tokenizer_is_one_message_and_remembered(monkeypatch) -> None:
    from lm_eval_radsafe.retrieval.evidence import ConditionDoesNotFit, model_facts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(ConditionDoesNotFit, match="cannot load the tokenizer 'no-org/no-such-tokenizer'"):
            model_facts({"radsafe_tokenizer": "no-org/no-such-tokenizer"})
    assert time.monotonic() - started < 1  # the second task of a run does not try again


# ---------------------------------------------------------------- the command line (subprocess)


def test_unknown_task_suggests_close_names(tmp_path: Path) -> None:
    out = run_cli("eval", "--model", "dummy", "--tasks", "radsafe_demo_closd_book", cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown task 'radsafe_demo_closd_book' (did you mean radsafe_demo_closed_book")
    assert "radsafe eval ls tasks" in last


def test_stock_backend_sc_is_refused_before_any_request(tmp_path: Path) -> None:
    with JsonServer(letter_reply) as server:
        out = run_cli(
            "eval", "--model", "local-chat-completions",
            "--model_args", f"model=fake,base_url={server.url}/chat/completions",
            "--tasks", "radsafe200_closed_book_sc", "--apply_chat_template",
            cwd=tmp_path, env={"RADSAFE_DATA": str(FIXTURE)},
        )
        assert server.requests == []
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "--model radsafe-local-chat-completions" in out.stderr.strip().splitlines()[-1]


def test_hub_unreachable_is_the_message_without_traceback(tmp_path: Path) -> None:
    env = {key: "" for key in ("RADSAFE_DATA",)}
    out = run_cli("eval", "--model", "dummy", "--tasks", "radsafe200_closed_book", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "error: could not read the dataset 'soroosharasteh/RadSaFE-200'" in out.stderr
    assert "radsafe_data" in out.stderr and "radsafe_demo" in out.stderr


@pytest.mark.parametrize(
    ("task", "metadata", "message"),
    [
        ("radsafe_demo_closed_book_perm", '{"option_orders": 30}', "metadata 'option_orders' must be an integer from 2 to 24, got 30"),
        ("radsafe_demo_closed_book", '{"overconfidence_threshold": 3}', "metadata 'overconfidence_threshold' must be a number in [0, 1], got 3"),
    ],
)
def test_a_bad_metadata_value_is_one_line(tmp_path: Path, task: str, metadata: str, message: str) -> None:
    out = run_cli("eval", "--model", "dummy", "--tasks", task, "--metadata", metadata, cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"error: {message}"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = run_cli("eval", "--model", "dummy", "--tasks", "radsafe200_closed_book", "--debug", cwd=tmp_path, env={"RADSAFE_DATA": ""})
    assert out.returncode != 0
    assert "Traceback" in out.stderr


def test_all_empty_outputs_name_the_chat_template_and_the_run_ends_with_next_step(tmp_path: Path) -> None:
    with JsonServer(empty_reply) as server:
        out = run_cli(
            "eval", "--model", "radsafe-local-completions",
            "--model_args", f"model=fake,base_url={server.url}/completions,tokenizer_backend=None",
            "--tasks", "radsafe_demo_closed_book", "--limit", "3", "--log_samples", "--output_path", "runs",
            cwd=tmp_path,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "radsafe_demo_closed_book: all 3 outputs were empty" in out.stderr
    assert "--apply_chat_template" in out.stderr
    results = [line for line in out.stdout.splitlines() if line.startswith("results: ")]
    assert results and Path(tmp_path, results[0][len("results: "):]).is_file()
    assert "next: radsafe report runs --out runs/report" in out.stdout


def test_chat_backend_without_chat_template_is_one_line(tmp_path: Path) -> None:
    with JsonServer(letter_reply) as server:
        out = run_cli(
            "eval", "--model", "radsafe-local-chat-completions",
            "--model_args", f"model=fake,base_url={server.url}/chat/completions",
            "--tasks", "radsafe_demo_closed_book", "--limit", "1",
            cwd=tmp_path,
        )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: the RadSafeLocalChatCompletions backend sends chat messages: add --apply_chat_template")
    assert server.requests == []


def test_version_and_quiet_broken_pipe(tmp_path: Path) -> None:
    version = run_cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("radsafe ") and "lm-eval" in version.stdout
    piped = subprocess.run(
        f"set -o pipefail; '{RADSAFE}' validate-data demo | head -n 1",
        shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 1


def test_a_sweep_process_builds_each_in_process_model_once_and_puts_the_class_method_back() -> None:
    """Inside ``radsafe sweep``'s batch of cells, the second cell with the same model
    arguments gets the model the first one built; afterwards lm-eval builds as before."""
    from lm_eval.api.model import LM

    from lm_eval_radsafe import compat

    class Counting(LM):
        made = 0

        def __init__(self, size: str = "1", **_: object) -> None:
            super().__init__()
            Counting.made += 1

        def loglikelihood(self, requests):  # pragma: no cover - never asked
            raise NotImplementedError

        loglikelihood_rolling = generate_until = loglikelihood

    with compat.patched(compat.reused_models()):
        first = Counting.create_from_arg_string("size=1", {"batch_size": 1})
        assert Counting.create_from_arg_string("size=1", {"batch_size": 1}) is first
        assert Counting.create_from_arg_string("size=2", {"batch_size": 1}) is not first
        from_dict = Counting.create_from_arg_obj({"size": "3"}, {"batch_size": 1})
        assert Counting.create_from_arg_obj({"size": "3"}, {"batch_size": 1}) is from_dict
    assert Counting.made == 3
    assert Counting.create_from_arg_string("size=1", {"batch_size": 1}) is not first  # no reuse outside
    assert isinstance(vars(LM)["create_from_arg_string"], classmethod) and isinstance(vars(LM)["create_from_arg_obj"], classmethod)

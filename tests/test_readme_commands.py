"""Every command in README.md's shell code blocks runs as written.

The commands are read from the README's fenced ``bash``/``sh``/``shell``/``console`` blocks
(``\\`` continuations joined, comments and console output dropped) and ``python`` blocks.
Each is either run here, in a fresh folder per block, through the venv's console scripts
(``radsafe``, ``lm_eval``) by bash, or listed in ``NOT_RUN`` with the reason; a README
command in neither table, or a table entry no longer in the README, fails the first test.

What cannot be run here as written is changed by the explicit ``SUBSTITUTIONS`` (a
placeholder model or a GPU server becomes the scripted OpenAI-compatible server of
``tests/fake_openai_server.py``, a placeholder data path the fixture dataset), plus two
mechanical rules: ``--limit 2`` on every evaluation, and ``RADSAFE_DATA`` pointing the
hub-backed ``radsafe200`` tasks at the fixture when the command gives no data of its own.
``RADSAFE_CACHE`` is the session's one of ``conftest``; each command gets a response cache of
its own, so its requests reach the server (and are checked) instead of an earlier command's answers.
"""

from __future__ import annotations

import ast
import configparser
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURE, JsonServer, by_task
from fake_openai_server import load_answers, scripted_reply

from lm_eval_radsafe.loaders import load_items

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's console scripts: radsafe, lm_eval
DEMO = ROOT / "lm_eval_radsafe" / "data" / "demo" / "radsafe_demo.jsonl"
MODEL_CARDS = ROOT / "lm_eval_radsafe" / "data" / "model_cards_example.csv"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
NOT_COMMANDS = {"", "text", "bibtex", "json", "yaml", "csv"}  # output, citations, file contents
LIMIT = "2"


# --------------------------------------------------------------------------- reading the README


@dataclass(frozen=True)
class Command:
    """One command of the README: ``text`` as a shell would run it (continuations joined),
    ``id`` its whitespace-normalised text, ``block`` the index of its code block."""

    id: str
    text: str
    lang: str
    block: int
    line: int


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the opening fence, body lines) of every fenced block."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent, start = match["fence"], len(match["indent"]), i + 1
        body = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if len(stripped) >= len(fence) and set(stripped) == {fence[0]}:
                break
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
            i += 1
        blocks.append((match["lang"].lower(), start, body))
        i += 1
    return blocks


def strip_comment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` that starts a word, outside quotes)."""
    quote = None
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(lang: str, body: list[str]) -> list[tuple[int, str]]:
    """(line offset, command) of a shell block; in a ``console`` block only ``$ `` lines
    (and their continuations) are commands, the rest is output."""
    commands: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for offset, line in enumerate(body):
        if pending is None:
            if lang == "console":
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
            line = strip_comment(line)
            if not line.strip():
                continue
            start, text = offset, line.strip()
        else:
            if lang == "console" and line.lstrip().startswith("> "):
                line = line.lstrip()[2:]
            text = f"{pending} {strip_comment(line).strip()}".strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        commands.append((start, text))
        pending = None
    if pending is not None:
        commands.append((start, pending))
    return commands


def normalise(text: str) -> str:
    return " ".join(text.split())


def readme_commands(text: str | None = None) -> list[Command]:
    """Every shell command and every python block of the README, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found = []
    for index, (lang, start, body) in enumerate(fenced_blocks(text)):
        if lang in SHELL_LANGUAGES:
            for offset, command in shell_commands(lang, body):
                found.append(Command(normalise(command), command, lang, index, start + 1 + offset))
        elif lang == "python":
            code = "\n".join(body)
            lines = [normalise(line) for line in body if line.strip()]
            found.append(Command("python: " + " | ".join(lines), code, lang, index, start))
    return found


def test_the_reader_handles_continuations_comments_and_console_output() -> None:
    text = """```bash
make demo   # sets up
# a whole-line comment

radsafe eval --a 'x # not a comment' \\
  --b 1   \\
  --c
```
```
condition  n
```
```console
$ radsafe tasks-path
/some/folder
$ lm_eval ls \\
> tasks
```
```python
print(1)
```"""
    commands = readme_commands(text)
    assert [c.id for c in commands] == [
        "make demo",
        "radsafe eval --a 'x # not a comment' --b 1 --c",
        "radsafe tasks-path",
        "lm_eval ls tasks",
        "python: print(1)",
    ]
    assert [c.line for c in commands] == [2, 5, 13, 15, 18]
    assert [c.block for c in commands] == [0, 0, 2, 2, 3]


# --------------------------------------------------------------------------- what is not run


SWEEP_REASON = (
    "needs the sweep file's models (GPUs, model weights, a SLURM cluster); tests/test_sweep.py runs the same verbs "
    "on a sweep file of scripted servers"
)
NOT_RUN: dict[str, str] = {
    "radsafe export-hub report/leaderboard.json --out hub/ --revision DATASET_COMMIT --source-url "
    "https://huggingface.co/datasets/ORG/radsafe-runs": (
        "tests/test_analysis.py runs export-hub on a leaderboard made by `radsafe report --leaderboard` and checks every "
        "field against the Hub's documented ones"
    ),
    "hf upload ORG/MODEL hub/MODEL/.eval_results .eval_results --create-pr": "uploads to the Hugging Face Hub (network, a token)",
    "radsafe sweep run sweep.yaml": SWEEP_REASON,
    "radsafe sweep run sweep.yaml --executor slurm --dry-run": SWEEP_REASON,
    "radsafe sweep run sweep.yaml --executor slurm": SWEEP_REASON,
    "radsafe sweep status sweep.yaml": SWEEP_REASON,
    "radsafe sweep report sweep.yaml": SWEEP_REASON,
    "make demo": (
        "builds .venv and runs SmolLM2 over the whole demo set (about 11 min on 2 CPU cores); "
        "the target is checked in the Makefile, and `radsafe demo` itself runs in tests/test_e2e_smollm2.py"
    ),
    "make test": "runs the whole test suite, this module included; the target is checked in the Makefile",
    "pip install -c constraints.txt '.[report,retrieval]'": (
        "installs from the network; its extras are checked against setup.cfg and constraints.txt must exist"
    ),
    "radsafe eval --model vllm --model_args pretrained=Qwen/Qwen2.5-7B-Instruct,max_model_len=32768,"
    "gpu_memory_utilization=0.9 --tasks radsafe200 --apply_chat_template --log_samples --output_path runs/": (
        "needs vLLM, a GPU and a 7B model from the hub; the model arguments are checked against lm-eval's vllm backend"
    ),
    "radsafe eval --model vllm --model_args pretrained=Qwen/Qwen3-8B,think_end_token='</think>' "
    "--tasks radsafe200_think --apply_chat_template --log_samples --output_path runs/": (
        "needs vLLM, a GPU and an 8B model from the hub; the model arguments are checked against lm-eval's vllm backend"
    ),
}

#: model arguments lm-eval's vllm backend does not name but hands to vLLM's engine (**kwargs)
VLLM_ENGINE_ARGS = {"gpu_memory_utilization"}


# --------------------------------------------------------------------------- substitutions


@dataclass(frozen=True)
class Substitution:
    """``old`` in a command's text becomes ``new`` (``{url}``: the fake server's ``/v1``
    base, ``{fixture}``: the fixture dataset), for ``reason``."""

    old: str
    new: str
    reason: str


ORG_MODEL = "ORG/MODEL is a placeholder and no model weights are here; the scripted server answers in its place"
SUBSTITUTIONS: tuple[Substitution, ...] = (  # applied in this order
    Substitution(
        'lm_eval --include_path "$(radsafe tasks-path)" --model hf --model_args pretrained=ORG/MODEL',
        'lm_eval --include_path "$(radsafe tasks-path)" --model local-chat-completions '
        "--model_args model=ORG/MODEL,base_url={url}/chat/completions",
        ORG_MODEL + " (through lm-eval's stock API backend: plain lm_eval does not register ours)",
    ),
    Substitution(
        "--model hf --model_args pretrained=ORG/MODEL",
        "--model radsafe-local-chat-completions --model_args model=ORG/MODEL,base_url={url}/chat/completions",
        ORG_MODEL + "; the hf backend itself runs in tests/test_e2e_smollm2.py",
    ),
    Substitution(
        "radsafe eval ... ",
        "radsafe eval --model radsafe-local-chat-completions --model_args model=fake,base_url={url}/chat/completions "
        "--apply_chat_template ",
        "'...' stands for the model flags of the commands above",
    ),
    Substitution(
        "http://127.0.0.1:8000/v1",
        "{url}",
        "the `vllm serve` server on port 8000 is the scripted server on a free port",
    ),
    Substitution(
        "/data/RadSaFE-200.csv",
        "{fixture}",
        "a local copy of the benchmark is not here; the fixture dataset is a local file of an accepted layout",
    ),
    Substitution(
        "--agent-model smollm2",
        "--agent-model openai:fake --agent-base-url {url}",
        "SmolLM2 as the agent takes 37 min for the demo set on a CPU; the openai: agent through the scripted "
        "server takes the same path (plans fall back, as with SmolLM2); smollm2 runs in tests/test_e2e_smollm2.py",
    ),
)


def substitute(text: str, url: str) -> tuple[str, list[Substitution]]:
    """The command to run for README ``text``, and the substitutions it took. Mechanical
    rule: an evaluation (``--tasks``) gets ``--limit 2``."""
    used = []
    for sub in SUBSTITUTIONS:
        if sub.old in text:
            text = text.replace(sub.old, sub.new.format(url=url, fixture=FIXTURE))
            used.append(sub)
    if "--tasks" in text.split() and "--limit" not in text:
        text = f"{text} --limit {LIMIT}"
    return text, used


def needs_fixture_data(text: str) -> bool:
    """Mechanical rule: a command that runs a hub-backed ``radsafe200`` task and names no
    data of its own reads the fixture through ``RADSAFE_DATA`` (no hub here)."""
    return re.search(r"radsafe200(_|\b)", text) is not None and "radsafe_data" not in text.lower()


def test_substitution_rules() -> None:
    text, used = substitute(
        'radsafe eval ... --tasks radsafe200 --metadata \'{"radsafe_data": "/data/RadSaFE-200.csv"}\'', "U"
    )
    assert text.startswith("radsafe eval --model radsafe-local-chat-completions --model_args model=fake,base_url=U/")
    assert f'"radsafe_data": "{FIXTURE}"' in text and text.endswith(" --limit 2")
    assert len(used) == 2
    assert substitute("radsafe prepare --dataset demo --corpus demo --out p/", "U") == (
        "radsafe prepare --dataset demo --corpus demo --out p/",
        [],
    )
    assert not needs_fixture_data(text) and needs_fixture_data("radsafe eval --tasks radsafe200_sc")
    assert not needs_fixture_data("radsafe eval --tasks radsafe_demo_closed_book")


# --------------------------------------------------------------------------- what is run and checked


@dataclass
class Ran:
    """A finished command: its process, folder, start time and the server requests it made."""

    result: subprocess.CompletedProcess
    cwd: Path
    started: float
    requests: list[dict]

    def written(self, relative: str) -> Path:
        path = self.cwd / relative
        assert path.is_file(), f"{relative} was not written"
        assert path.stat().st_mtime >= self.started - 1, f"{relative} is older than the command"
        return path

    def results(self, output_path: str = "runs") -> dict:
        """The results file this command wrote under ``output_path``."""
        files = [p for p in (self.cwd / output_path).glob("*/results_*.json") if p.stat().st_mtime >= self.started - 1]
        assert len(files) == 1, files
        return json.loads(files[0].read_text(encoding="utf-8"))

    def prompts(self) -> str:
        return "\n".join(json.dumps(r.get("messages", r.get("prompt"))) for r in self.requests)


def fixture_fingerprint() -> str:
    return load_items(FIXTURE).fingerprint


GREEDY = ("closed_book", "clean_evidence", "conflict_evidence")


def check_radsafe200_run(ran: Ran, regime: str = "") -> dict:
    results = ran.results()
    tasks = {f"radsafe200_{c}{regime}" for c in GREEDY}
    n_samples = by_task(results["n-samples"])  # lm-eval 0.5 keys them group::task
    assert set(n_samples) == tasks  # the tasks of the group (results also hold the group)
    for task in tasks:
        assert n_samples[task]["effective"] == int(LIMIT)
    assert len({r["model"] for r in ran.requests}) == 1
    return results


def check_eval_placeholder_model(ran: Ran) -> None:
    results = check_radsafe200_run(ran)
    for task in results["n-samples"]:
        assert results["radsafe"]["tasks"][task]["dataset_fingerprint"] == fixture_fingerprint()
    assert len(ran.requests) == 3 * int(LIMIT)
    assert "next: radsafe report runs/ --out runs/report" in ran.result.stdout


def check_plain_lm_eval(ran: Ran) -> None:
    results = check_radsafe200_run(ran)
    assert "radsafe" not in results  # only radsafe eval adds the block ...
    for task in results["n-samples"]:  # ... the task config carries the provenance
        assert results["configs"][task]["metadata"]["radsafe"]["dataset_fingerprint"] == fixture_fingerprint()


def check_local_copy(ran: Ran) -> None:
    assert all(f"| - {alias}" in ran.result.stdout for alias in ("Closed-book", "Clean evidence", "Conflict evidence"))
    questions = [item.question for item in load_items(FIXTURE).items[: int(LIMIT)]]
    prompts = ran.prompts()
    assert all(json.dumps(q)[1:-1] in prompts for q in questions)
    assert len(ran.requests) == 3 * int(LIMIT)


def check_served_model(ran: Ran) -> None:
    check_radsafe200_run(ran)
    assert {r["model"] for r in ran.requests} == {"Qwen/Qwen2.5-7B-Instruct"}
    assert len(ran.requests) == 3 * int(LIMIT)


def check_sampled_through_server(ran: Ran) -> None:
    results = check_radsafe200_run(ran, "_sc")
    assert all("sc_accuracy,strict" in results["results"][task] for task in results["n-samples"])
    seeds = defaultdict(set)
    for request in ran.requests:
        seeds[json.dumps(request["messages"])].add(request["seed"])
    assert len(seeds) == 3 * int(LIMIT)
    assert all(len(s) == 20 for s in seeds.values())  # 20 distinct seeds per prompt


def check_prepared(ran: Ran) -> None:
    manifest = json.loads(ran.written("prepared/manifest.json").read_text(encoding="utf-8"))
    assert manifest["dataset"]["fingerprint"] == load_items("demo").fingerprint
    ran.written("prepared/retrieval.jsonl")


def check_rag_run(ran: Ran) -> None:
    results = ran.results()
    assert set(results["results"]) == {"radsafe_demo_rag_top5"}
    assert "evidence_recall,strict" in results["results"]["radsafe_demo_rag_top5"]
    assert results["radsafe"]["tasks"]["radsafe_demo_rag_top5"]["prepared"].rstrip("/") == "prepared"


def check_agentic_prepared(ran: Ran) -> None:
    lines = ran.written("prepared/agentic.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(load_items("demo").items)
    assert ran.requests and all(r["model"] == "fake" for r in ran.requests)


def check_agentic_run(ran: Ran) -> None:
    values = ran.results()["results"]["radsafe_demo_agentic_rag"]
    assert values["agent_calls,strict"] > 0 and "evidence_recall,strict" in values


def check_report(*files: str) -> Callable[[Ran], None]:
    def check(ran: Ran) -> None:
        for name in ("report/report.html", "report/summary.csv", *files):
            ran.written(name)

    return check


def check_svg_figures(ran: Ran) -> None:
    check_report()(ran)
    figures = list((ran.cwd / "report" / "figures").glob("*.svg"))
    assert figures and all(p.stat().st_mtime >= ran.started - 1 for p in figures)


def check_ensemble_report(ran: Ran) -> None:
    check_report("report/leaderboard.json", "report/scaling.csv", "report/ensembles.csv")(ran)
    assert "trio" in (ran.cwd / "report" / "ensembles.csv").read_text(encoding="utf-8")


def check_python_api(ran: Ran) -> None:
    assert load_items("demo").fingerprint in ran.result.stdout
    assert "accuracy" in ran.result.stdout


# -- files a command expects to find, as a user would have them


ENSEMBLE = ("Qwen3-32B", "gemma-4-31B-it", "Mistral-Small-3.2-24B-Instruct-2506")


def make_report_runs(cwd: Path) -> None:
    """runs/: real lm-eval outputs of the demo group for the three models the README's
    ensemble names (scripted answers, in process: the eval path is run above)."""
    from test_analysis import write_run

    def answer_of(model: str) -> Callable[[str], str]:
        return lambda prompt: "ABCD"[hashlib.sha256((model + prompt).encode()).digest()[0] % 4]

    for model in ENSEMBLE:
        write_run(cwd / "runs", model, ["radsafe_demo"], answer_of(model), limit=3)


def make_model_cards(cwd: Path) -> None:
    """cards.csv: the bundled example cards (the study's 34 models, the ensemble's among them)."""
    shutil.copy(MODEL_CARDS, cwd / "cards.csv")


SETUP: dict[str, Callable[[Path], None]] = {"runs": make_report_runs, "cards.csv": make_model_cards}


@dataclass(frozen=True)
class Expect:
    check: Callable[[Ran], None]
    needs: tuple[str, ...] = field(default=())  # keys of SETUP


HUB_EVAL = "--tasks radsafe200 --apply_chat_template --log_samples --output_path runs/"
SERVED = "model=Qwen/Qwen2.5-7B-Instruct,base_url=http://127.0.0.1:8000/v1/chat/completions,num_concurrent=32"
RUN: dict[str, Expect] = {
    f"radsafe eval --model hf --model_args pretrained=ORG/MODEL {HUB_EVAL}": Expect(check_eval_placeholder_model),
    f'lm_eval --include_path "$(radsafe tasks-path)" --model hf --model_args pretrained=ORG/MODEL {HUB_EVAL}': Expect(
        check_plain_lm_eval
    ),
    'radsafe eval ... --tasks radsafe200 --metadata \'{"radsafe_data": "/data/RadSaFE-200.csv"}\'': Expect(
        check_local_copy
    ),
    "RADSAFE_DATA=/data/RadSaFE-200.csv radsafe eval ... --tasks radsafe200": Expect(check_local_copy),
    f"radsafe eval --model radsafe-local-chat-completions --model_args {SERVED} {HUB_EVAL}": Expect(check_served_model),
    f"radsafe eval --model radsafe-local-chat-completions --model_args {SERVED} "
    "--tasks radsafe200_sc --apply_chat_template --log_samples --output_path runs/": Expect(
        check_sampled_through_server
    ),
    "radsafe prepare --dataset demo --corpus demo --out prepared/": Expect(check_prepared),
    "radsafe eval --model hf --model_args pretrained=ORG/MODEL --apply_chat_template --tasks radsafe_demo_rag_top5 "
    '--metadata \'{"prepared": "prepared/"}\' --log_samples --output_path runs/': Expect(check_rag_run),
    "radsafe prepare --dataset demo --corpus demo --agentic --agent-model smollm2 --out prepared/": Expect(
        check_agentic_prepared
    ),
    "radsafe eval --model hf --model_args pretrained=ORG/MODEL --apply_chat_template --tasks radsafe_demo_agentic_rag "
    '--metadata \'{"prepared": "prepared/"}\' --log_samples --output_path runs/': Expect(check_agentic_run),
    "radsafe report runs/ --out report/": Expect(check_report(), needs=("runs",)),
    "radsafe report runs/ --out report/ --prefer largest": Expect(check_report(), needs=("runs",)),
    "radsafe report runs/ --out report/ --figures png,svg": Expect(check_svg_figures, needs=("runs",)),
    "radsafe report runs/ --out report/ --model-cards cards.csv --ensemble "
    '"trio=Qwen3-32B,gemma-4-31B-it,Mistral-Small-3.2-24B-Instruct-2506" --leaderboard': Expect(
        check_ensemble_report, needs=("runs", "cards.csv")
    ),
    "python: from lm_eval_radsafe.loaders import load_items | from lm_eval_radsafe.filters import extract_letter | "
    "from lm_eval_radsafe.metrics import score_item, aggregate | "
    'data = load_items("demo") # or a path, a folder, a hub id | item = data.items[0] | '
    'letter = extract_letter("The answer is B", item.letters) | '
    "print(aggregate([score_item(item, letter)]), data.fingerprint)": Expect(check_python_api),
}


COMMANDS = readme_commands()


def test_every_readme_command_is_run_or_explained() -> None:
    ids = [c.id for c in COMMANDS]
    unaccounted = [f"line {c.line}: {c.id}" for c in COMMANDS if c.id not in RUN and c.id not in NOT_RUN]
    assert not unaccounted, "README commands neither run nor in NOT_RUN:\n" + "\n".join(unaccounted)
    assert not set(RUN) & set(NOT_RUN)
    assert not set(NOT_RUN) - set(ids), "NOT_RUN lists commands no longer in the README"
    assert not set(RUN) - set(ids), "RUN lists commands no longer in the README"
    assert all(reason.strip() for reason in NOT_RUN.values())


def test_every_code_block_is_shell_python_or_not_a_command() -> None:
    languages = {lang for lang, _, _ in fenced_blocks(README.read_text(encoding="utf-8"))}
    assert languages <= SHELL_LANGUAGES | {"python"} | NOT_COMMANDS, languages


def test_every_substitution_is_still_used() -> None:
    run_texts = [c.text for c in COMMANDS if c.id in RUN and c.lang != "python"]
    for sub in SUBSTITUTIONS:
        assert any(sub.old in text for text in run_texts), f"no README command contains {sub.old!r}"
        assert sub.reason.strip()


# --------------------------------------------------------------------------- checks of what is not run


def readme_spans(pattern: str) -> list[str]:
    """Commands matching ``pattern`` in fenced shell blocks and in inline code of the README."""
    text = README.read_text(encoding="utf-8")
    spans = [c.text for c in COMMANDS if c.lang in SHELL_LANGUAGES]
    spans += re.findall(r"`([^`\n]+)`", text)
    return [span for span in spans if re.match(pattern, span.strip())]


def test_pip_install_extras_exist() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    extras = set(config["options.extras_require"])
    lines = readme_spans(r"pip install ")
    named = set()
    for line in lines:
        words = shlex.split(line)
        if "-c" in words:
            assert (ROOT / words[words.index("-c") + 1]).is_file()
        for word in words:
            match = re.fullmatch(r"(?:\.|lm-eval-radsafe)\[([\w,-]+)\]", word)
            if match:
                named |= set(match[1].split(","))
    assert {"report", "retrieval", "dense", "vllm", "demo"} <= named  # the README's install lines were read
    assert named <= extras, named - extras


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.MULTILINE))
    named = {shlex.split(line)[1] for line in readme_spans(r"make \w")}
    assert {"demo", "test", "smoke", "compat"} <= named
    assert named <= targets, named - targets


def vllm_parameters() -> tuple[set[str], bool]:
    """The named parameters of lm-eval's ``VLLM.__init__`` and whether it takes **kwargs,
    read from the source (vllm is not installed here)."""
    source = Path(importlib.util.find_spec("lm_eval.models").submodule_search_locations[0]) / "vllm_causallms.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "VLLM":
            assert any("vllm" in ast.unparse(d) for d in node.decorator_list)  # registered as `vllm`
            init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
            return {a.arg for a in init.args.args + init.args.kwonlyargs}, init.args.kwarg is not None
    raise AssertionError("lm-eval has no VLLM class")


def test_vllm_commands_use_arguments_the_backend_takes() -> None:
    named, kwargs = vllm_parameters()
    commands = [c for c in COMMANDS if c.id in NOT_RUN and "--model vllm" in c.text]
    assert len(commands) == 2
    for command in commands:
        words = shlex.split(command.text)
        model_args = words[words.index("--model_args") + 1]
        keys = {part.split("=", 1)[0] for part in model_args.split(",")}
        assert keys - VLLM_ENGINE_ARGS <= named, keys - named
        assert kwargs or not keys & VLLM_ENGINE_ARGS


# --------------------------------------------------------------------------- running the README


@pytest.fixture(scope="module")
def server():
    """The scripted OpenAI-compatible server: a letter per prompt and seed."""
    answers = {**load_answers(DEMO), **load_answers(FIXTURE)}
    with JsonServer(scripted_reply(answers, 0.7)) as running:
        yield running


def environment(text: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"RADSAFE_DATA", "RADSAFE_PREPARED", "RADSAFE_AGENT_BASE_URL"}
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if needs_fixture_data(text):
        env["RADSAFE_DATA"] = str(FIXTURE)
    return env


def run_command(command: Command, cwd: Path, server: JsonServer, response_cache: Path) -> Ran:
    for need in RUN[command.id].needs:
        if not (cwd / need).exists():
            SETUP[need](cwd)
    before = len(server.requests)
    started = time.time()
    if command.lang == "python":
        argv = [sys.executable, "-c", command.text]
        env = environment(command.text)
    else:
        text, _ = substitute(command.text, server.url)
        argv = ["bash", "-c", f"set -euo pipefail\n{text}"]
        env = environment(text)
    env["RADSAFE_RESPONSE_CACHE"] = str(response_cache)  # its own: its requests reach the server, to be checked
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"README line {command.line}: {command.id}\n{result.stderr[-3000:]}"
    return Ran(result, cwd, started, server.requests[before:])


def run_blocks(commands: list[Command]) -> list[int]:
    """The blocks to run: those with a command to run, less a block that only repeats
    commands of earlier blocks (the first is their representative)."""
    blocks: list[int] = []
    seen: set[str] = set()
    for block in sorted({c.block for c in commands}):
        ids = [c.id for c in commands if c.block == block and c.id in RUN]
        if set(ids) - seen:
            blocks.append(block)
        seen |= set(ids)
    return blocks


def test_a_block_that_only_repeats_earlier_commands_is_not_run_again() -> None:
    make, report = "make demo", "radsafe report runs/ --out report/"
    commands = [Command(report, report, "bash", 0, 1), Command(make, make, "bash", 1, 5)]
    commands += [Command(report, report, "bash", 2, 9), Command("python: x", "x", "python", 3, 12)]
    assert run_blocks(commands) == [0]


RUN_BLOCKS = run_blocks(COMMANDS)


def block_id(block: int) -> str:
    ids = [c.id for c in COMMANDS if c.block == block and c.id in RUN]
    slug = re.sub(r"\W+", "-", ids[0][:32]).strip("-")
    return f"{slug}-{hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:6]}"  # stable when lines move


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=block_id)
def test_readme_block_runs(block: int, tmp_path: Path, server: JsonServer) -> None:
    """The block's commands, in order, in one fresh folder (a later command may use what an
    earlier one wrote, as in the README)."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    for n, command in enumerate(c for c in COMMANDS if c.block == block and c.id in RUN):
        RUN[command.id].check(run_command(command, cwd, server, tmp_path / f"responses-{n}.sqlite"))

"""The lm-eval tasks: every YAML loads, prompts match golden files, metrics flow into results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lm_eval
import pytest

from conftest import FIXTURE, ScriptedLM, by_task, greedy_letter, prepare_with_agent
from lm_eval_radsafe.cli import task_manager, tasks_dir
from lm_eval_radsafe.conditions import CONDITIONS, FAMILIES, REGIMES, TASK_VERSION, applies, task_name
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.metrics import METRIC_NAMES
from lm_eval_radsafe.prompts import system_prompt, user_prompt

GOLDEN = Path(__file__).parent / "golden"


def all_yaml_names() -> list[str]:
    return sorted(p.stem for p in tasks_dir().glob("*.yaml"))


#: (condition, regime) of every task of a family: the option-order regime skips conditions
#: whose evidence names option letters
PAIRS = [(c, r) for c in CONDITIONS for r in REGIMES if applies(CONDITIONS[c], REGIMES[r])]


def test_every_yaml_is_indexed(fixture_data: Path) -> None:
    tm = task_manager(include_defaults=False)
    names = all_yaml_names()
    assert len(names) == len(FAMILIES) * (1 + len(PAIRS))
    missing = [name for name in names if name not in tm.all_tasks]
    assert not missing, f"lm-eval skipped these YAMLs silently: {missing}"


@pytest.fixture(scope="module")
def prepared_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lm_eval_radsafe.retrieval.prepare import PrepareSettings, prepare

    out = tmp_path_factory.mktemp("prepared-fixture")
    prepare(str(FIXTURE), "demo", out, PrepareSettings(k=20), progress=False)
    return out


@pytest.fixture(scope="module")
def agentic_fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prepared folders with scripted-agent reports: family -> folder."""
    folders = {"radsafe200": tmp_path_factory.mktemp("agentic-fixture"), "radsafe_demo": tmp_path_factory.mktemp("agentic-demo")}
    prepare_with_agent(FIXTURE, folders["radsafe200"])
    prepare_with_agent("demo", folders["radsafe_demo"])
    return folders


@pytest.mark.parametrize("name", all_yaml_names())
def test_every_yaml_builds(fixture_data: Path, prepared_fixture: Path, agentic_fixtures: dict[str, Path], name: str) -> None:
    from lm_eval_radsafe.retrieval.retrievers import offline_minilm_path

    metadata: dict = {}
    if "_rag_" in name or "_context_" in name:
        metadata["prepared"] = str(prepared_fixture) if name.startswith("radsafe200") else None
    if "_agentic_rag" in name:
        metadata["prepared"] = str(agentic_fixtures[name.split("_agentic_rag")[0]])
    if "_context_" in name:  # any local tokenizer works; the window is a stated fact
        metadata.update(pretrained=offline_minilm_path(), max_model_len=131_072)
    tm = task_manager(include_defaults=False, metadata={k: v for k, v in metadata.items() if v})
    built = tm.load([name])
    assert built, name


def test_task_names_follow_family_and_condition() -> None:
    expected = {task_name(f, c, r) for f in FAMILIES for c, r in PAIRS} | set(FAMILIES)
    assert PAIRS and len(PAIRS) == len(CONDITIONS) * len(REGIMES) - 1  # no agentic_rag_perm
    assert set(all_yaml_names()) == expected


def test_regime_yamls_are_short_and_name_their_condition_in_metadata() -> None:
    for family in FAMILIES:
        for condition, regime in PAIRS:
            if True:
                path = tasks_dir() / f"{task_name(family, condition, regime)}.yaml"
                lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
                assert len(lines) <= 5, path
                metadata = f"metadata: {{version: {TASK_VERSION!r}, radsafe_condition: {condition}, radsafe_regime: {regime}}}"
                assert metadata in lines, path
                assert not any("process_docs" in line for line in lines), path


def test_generator_reproduces_the_committed_yamls(tmp_path: Path) -> None:
    """`python tasks/radsafe200/_generate_configs.py` rewrites the folder byte for byte."""
    from lm_eval_radsafe.tasks.radsafe200._generate_configs import HEADER, main

    assert main(["--out", str(tmp_path)]) == 0
    generated = {p.name: p.read_bytes() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_bytes() for p in tasks_dir().glob("*.yaml")}
    assert len(generated) == len(FAMILIES) * (1 + len(PAIRS))
    assert sorted(committed) == sorted(generated), "a committed task YAML the generator does not write, or the reverse"
    changed = [name for name in generated if generated[name] != committed[name]]
    assert not changed, f"edit the registries and rerun tasks/radsafe200/_generate_configs.py: {changed}"
    assert all(text.startswith(HEADER.encode()) for text in generated.values())


def test_generator_removes_what_the_registries_no_longer_produce(tmp_path: Path) -> None:
    from lm_eval_radsafe.tasks.radsafe200._generate_configs import HEADER, write

    stale = tmp_path / "radsafe_demo_retired_condition.yaml"
    stale.write_text(HEADER + "task: radsafe_demo_retired_condition\n", encoding="utf-8")
    own = tmp_path / "my_task.yaml"
    own.write_text("task: my_task\n", encoding="utf-8")
    write(tmp_path)
    assert not stale.exists() and own.exists()


def test_a_registered_condition_gets_every_variant_and_its_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval_radsafe import conditions
    from lm_eval_radsafe.tasks.radsafe200._generate_configs import configs

    condition = conditions.Condition("rag_top3", "Standard RAG top-3", None, "evidence.j2", "top-3 chunks", retrieval="top_k", k=3)
    monkeypatch.setitem(conditions.CONDITIONS, condition.name, condition)
    texts = configs()
    assert texts["radsafe_demo_rag_top3.yaml"].splitlines()[1:] == [
        "include: _radsafe_demo_yaml",
        "task: radsafe_demo_rag_top3",
        "task_alias: Standard RAG top-3",
        "tag: radsafe_demo_retrieval",
        f"metadata: {{version: {TASK_VERSION!r}, radsafe_condition: rag_top3, radsafe_regime: greedy}}",
    ]
    assert "tag: radsafe200_ll" in texts["radsafe200_rag_top3_ll.yaml"]
    assert "radsafe200_rag_top3" not in texts["radsafe200.yaml"]  # the group holds conditions without retrieval


def test_overlay_metric_lists_match_the_metric_specs() -> None:
    import yaml

    from lm_eval_radsafe.metrics import AGENT_METRICS, LL_METRICS, METRICS, ORDER_METRICS, RECALL_METRIC, SC_METRICS

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    greedy = [(m.name, m.higher_is_better, "mean") for m in METRICS]
    recall = [(RECALL_METRIC.name, RECALL_METRIC.higher_is_better, RECALL_METRIC.aggregation)]
    recall += [(m.name, m.higher_is_better, m.aggregation) for m in AGENT_METRICS]
    for overlay, specs in (
        ("_radsafe_base_yaml", greedy),
        ("_radsafe_sc_yaml", [(s.name, s.higher_is_better, s.aggregation) for s in SC_METRICS]),
        ("_radsafe_ll_yaml", [(s.name, s.higher_is_better, s.aggregation) for s in LL_METRICS]),
        ("_radsafe_perm_yaml", [(s.name, s.higher_is_better, s.aggregation) for s in ORDER_METRICS]),
    ):
        config = yaml.load((tasks_dir() / overlay).read_text(), Loader=Loader)
        listed = [(m["metric"], m["higher_is_better"], m["aggregation"].removeprefix("utils.")) for m in config["metric_list"]]
        assert listed == specs + recall, overlay


# --------------------------------------------------------------------------- golden prompts


ITEM_CONDITIONS = sorted(c for c, cond in CONDITIONS.items() if not cond.uses_retrieval)
GOLDEN_CONDITIONS = ITEM_CONDITIONS + ["rag_padded_top1", "rag_top1", "rag_top10", "rag_top5"]


def chat_messages(condition: str, prepared: Path | None = None) -> list[list[dict]]:
    """Run the radsafe200 task of ``condition`` on the fixture and return the chat messages sent."""
    lm = ScriptedLM(lambda prompt: "A")
    lm_eval.simple_evaluate(
        model=lm,
        tasks=[f"radsafe200_{condition}"],
        task_manager=task_manager(include_defaults=False, metadata={"prepared": str(prepared)} if prepared else None),
        apply_chat_template=True,
        bootstrap_iters=0,
    )
    return [json.loads(p) for p in lm.prompts]


@pytest.mark.parametrize("condition", GOLDEN_CONDITIONS)
def test_prompts_match_golden_files(fixture_data: Path, prepared_fixture: Path, condition: str) -> None:
    messages = chat_messages(condition, prepared_fixture if CONDITIONS[condition].uses_retrieval else None)
    golden = GOLDEN / f"{condition}.json"
    if os.environ.get("RADSAFE_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert messages == json.loads(golden.read_text(encoding="utf-8"))


@pytest.mark.parametrize("condition", ITEM_CONDITIONS)
def test_lm_eval_sends_what_prompts_renders(fixture_data: Path, condition: str) -> None:
    items = load_items(FIXTURE).items
    sent = sorted(chat_messages(condition), key=lambda m: m[1]["content"])
    cond = CONDITIONS[condition]
    expected = []
    for item in items:
        evidence = getattr(item, cond.evidence_field) if cond.evidence_field else ""
        expected.append(
            [
                {"role": "system", "content": system_prompt() + "\n\n"},
                {"role": "user", "content": user_prompt(cond, item.question, item.options, evidence)},
            ]
        )
    assert sent == sorted(expected, key=lambda m: m[1]["content"])


def test_plain_prompt_separates_system_text_from_question(fixture_data: Path) -> None:
    lm = ScriptedLM(lambda prompt: "A")
    lm_eval.simple_evaluate(
        model=lm, tasks=["radsafe200_closed_book"], task_manager=task_manager(include_defaults=False), bootstrap_iters=0
    )
    assert lm.prompts[0].startswith(system_prompt() + "\n\nQuestion: ")
    assert lm.prompts[0].endswith("\n\nAnswer:")


def test_greedy_generation_settings(fixture_data: Path) -> None:
    lm = ScriptedLM(lambda prompt: "A")
    lm_eval.simple_evaluate(
        model=lm, tasks=["radsafe200_closed_book"], task_manager=task_manager(include_defaults=False), bootstrap_iters=0
    )
    assert lm.gen_kwargs[0]["do_sample"] is False
    assert lm.gen_kwargs[0]["temperature"] == 0.0
    assert lm.gen_kwargs[0]["max_gen_toks"] == 10


# --------------------------------------------------------------------------- metrics through lm-eval

# fixture: fx-001 answer A (B, D: high-risk+unsafe+contradicts; E: high-risk+contradicts)
#          fx-002 answer B, 4 options (A: contradicts; D: all three flags)
#          fx-003 negated, answer C, and C itself carries all three flags
SCRIPT = {
    "closed_book": {"fx-001": "D", "fx-002": "E", "fx-003": "C"},
    "clean_evidence": {"fx-001": "A", "fx-002": "Answer: B", "fx-003": "**C**"},
    "conflict_evidence": {"fx-001": "E.", "fx-002": "A 6-year-old needs imaging.", "fx-003": "The answer is C"},
}
EXPECTED = {  # accuracy, high-risk, unsafe, contradiction, abstention (hand-computed, n = 3)
    "closed_book": (1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3),
    "clean_evidence": (1.0, 0.0, 0.0, 0.0, 0.0),
    "conflict_evidence": (1 / 3, 1 / 3, 0.0, 1 / 3, 1 / 3),
}
QUESTION_OF = {it.id: it.question for it in load_items(FIXTURE).items}


def scripted_answer(prompt: str) -> str:
    user = json.loads(prompt)[-1]["content"]
    condition = (
        "closed_book" if user.startswith("Question:") else "conflict_evidence" if "older teaching" in user or "colleague" in user or "forum" in user else "clean_evidence"
    )
    item_id = next(i for i, q in QUESTION_OF.items() if q in user)
    return SCRIPT[condition][item_id]


def test_group_run_reports_hand_computed_metrics_and_samples(fixture_data: Path) -> None:
    lm = ScriptedLM(scripted_answer)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["radsafe200"],
        task_manager=task_manager(include_defaults=False),
        apply_chat_template=True,
        log_samples=True,
        bootstrap_iters=100,
    )
    fingerprint = load_items(FIXTURE).fingerprint
    for condition, expected in EXPECTED.items():
        task = f"radsafe200_{condition}"
        result = by_task(out["results"])[task]
        got = tuple(result[f"{name},strict"] for name in METRIC_NAMES)
        assert got == pytest.approx(expected), condition
        assert isinstance(result["accuracy_stderr,strict"], float)
        samples = by_task(out["samples"])[task]
        assert len(samples) == 3
        for sample in samples:
            item_id = sample["doc"]["id"]
            raw = SCRIPT[condition][item_id]
            assert sample["resps"] == [[raw]]
            assert sample["doc"]["dataset_fingerprint"] == fingerprint
            assert set(METRIC_NAMES) <= set(sample)
    letters = {s["doc"]["id"]: greedy_letter(s) for s in by_task(out["samples"])["radsafe200_conflict_evidence"]}
    assert letters == {"fx-001": "E", "fx-002": "NULL", "fx-003": "C"}


def test_demo_family_runs_on_the_bundled_set() -> None:
    out = lm_eval.simple_evaluate(
        model=ScriptedLM(lambda prompt: "B"),
        tasks=["radsafe_demo"],
        task_manager=task_manager(include_defaults=False),
        limit=5,
        bootstrap_iters=0,
    )
    for condition in ITEM_CONDITIONS:
        result = by_task(out["results"])[f"radsafe_demo_{condition}"]
        assert all(f"{name},strict" in result for name in METRIC_NAMES)


def test_condition_without_evidence_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    records[1]["conflict_evidence"] = ""
    path = tmp_path / "no_conflict.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    monkeypatch.setenv("RADSAFE_DATA", str(path))
    with pytest.raises(ValueError, match=r"conflict_evidence.*empty for 1 item\(s\): fx-002"):
        task_manager(include_defaults=False).load(["radsafe200_conflict_evidence"])


def test_metadata_overrides_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSAFE_DATA", str(tmp_path / "does-not-exist.csv"))
    tm = task_manager(include_defaults=False, metadata={"radsafe_data": str(FIXTURE)})
    loaded = tm.load(["radsafe200_closed_book"])
    assert loaded


# --------------------------------------------------------------------------- one way in for the condition


def test_config_source_is_not_read(fixture_data: Path) -> None:
    """The condition comes from the task's metadata; the YAML's path says nothing."""
    from lm_eval_radsafe import harness

    dataset = harness.load_radsafe200(radsafe_condition="clean_evidence", radsafe_regime="sc", config_source="/x/radsafe200_closed_book.yaml")
    assert set(dataset["test"]["condition"]) == {"clean_evidence"}
    from lm_eval_radsafe.provenance import attached

    assert attached(dataset)["dataset_fingerprint"] == load_items(fixture_data).fingerprint
    with pytest.raises(ValueError, match="names no 'radsafe_condition'"):
        harness.load_radsafe200(config_source="/x/radsafe200_closed_book.yaml")
    with pytest.raises(ValueError, match="unknown condition 'rag_top3'"):
        harness.load_radsafe200(radsafe_condition="rag_top3")


@pytest.fixture
def item_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time a dataset's items are read and validated, its source."""
    from lm_eval_radsafe import loaders

    reads: list[str] = []
    finish = loaders._finish

    def counted(table, source, allow_unlabelled):
        reads.append(source)
        return finish(table, source, allow_unlabelled)

    monkeypatch.setattr(loaders, "_finish", counted)
    return reads


@pytest.mark.parametrize(
    "name", ["radsafe200_closed_book_sc", "radsafe200_rag_top5", "radsafe200_agentic_rag_ll", "radsafe_demo_rag_padded_top1", "radsafe_demo_conflict_evidence"]
)
def test_items_are_read_once_per_task_load(
    fixture_data: Path, prepared_fixture: Path, agentic_fixtures: dict[str, Path], item_reads: list[str], name: str
) -> None:
    metadata = {}
    if name.startswith("radsafe200_rag"):
        metadata["prepared"] = str(prepared_fixture)
    if "_agentic_rag" in name:
        metadata["prepared"] = str(agentic_fixtures["radsafe200"])
    tm = task_manager(include_defaults=False, metadata=metadata)
    item_reads.clear()
    assert tm.load([name])
    assert len(item_reads) == 1, item_reads


def test_prepared_folder_is_checked_against_the_items_whatever_their_source(
    prepared_fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder prepared for the fixture refuses the demo items, however they were named."""
    from lm_eval_radsafe import harness
    from lm_eval_radsafe.loaders import HUB_DATASET, demo_path
    from lm_eval_radsafe.retrieval.prepare import PreparedError

    prepared = {"prepared": str(prepared_fixture)}
    demo = str(demo_path())
    wrong = "was prepared for another dataset"
    with pytest.raises(PreparedError, match=wrong):  # the demo family
        task_manager(include_defaults=False, metadata=prepared).load(["radsafe_demo_rag_top5"])
    with pytest.raises(PreparedError, match=wrong):  # --metadata radsafe_data
        task_manager(include_defaults=False, metadata={**prepared, "radsafe_data": demo}).load(["radsafe200_rag_top5"])
    monkeypatch.setenv("RADSAFE_DATA", demo)
    with pytest.raises(PreparedError, match=wrong):  # $RADSAFE_DATA
        task_manager(include_defaults=False, metadata=prepared).load(["radsafe200_rag_top5"])
    monkeypatch.delenv("RADSAFE_DATA")
    hub_reads: list[str] = []

    def from_hub(source: str, allow_unlabelled: bool = False):  # the hub, offline: the demo items stand in
        hub_reads.append(source)
        return load_items("demo", allow_unlabelled=allow_unlabelled)

    monkeypatch.setattr(harness, "load_items", from_hub)
    with pytest.raises(PreparedError, match=wrong):  # the published benchmark on the hub
        task_manager(include_defaults=False, metadata=prepared).load(["radsafe200_rag_top5"])
    assert hub_reads == [HUB_DATASET]

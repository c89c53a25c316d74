"""The typed samples reader and the plain one take and refuse the same lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_eval_radsafe.analysis import samples
from lm_eval_radsafe.analysis.runs import REGIME_METRICS, _kept_answer
from lm_eval_radsafe.conditions import REGIMES

V05 = Path(__file__).parent / "fixtures" / "lm_eval_0.5"
pytestmark = pytest.mark.skipif(samples.msgspec is None, reason="msgspec (report extra) not installed")


def read(path: Path, regime: str, typed: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[samples.Columns, dict]:
    monkeypatch.setattr(samples, "_decoders", samples._decoders if typed else (lambda names: None))
    items: dict = {}
    taken = samples.read_columns(
        path, REGIMES[regime].results_filter, tuple(REGIME_METRICS[regime]),
        lambda value, where: _kept_answer(regime, value, where),
        lambda fp, item_id: (fp, item_id) in items,
        lambda fp, item_id, doc, where: items.__setitem__((fp, item_id), doc),
    )
    return taken, items


@pytest.mark.parametrize(("name", "regime"), [("closed_book", "greedy"), ("closed_book_ll", "ll"), ("closed_book_sc", "sc")])
def test_both_readers_read_the_same(name: str, regime: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (path,) = (V05 / "tasks").glob(f"samples_radsafe_demo_{name}_2*.jsonl")
    typed, typed_items = read(path, regime, True, monkeypatch)
    plain, plain_items = read(path, regime, False, monkeypatch)
    assert typed == plain and typed_items == plain_items
    assert len(typed.ids) == 3 and set(typed.metrics) == set(REGIME_METRICS[regime])


@pytest.mark.parametrize(("name", "regime"), [("closed_book", "greedy"), ("closed_book_ll", "ll"), ("closed_book_sc", "sc")])
def test_the_whole_file_decode_reads_what_the_line_by_line_one_reads(name: str, regime: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (path,) = (V05 / "tasks").glob(f"samples_radsafe_demo_{name}_2*.jsonl")
    first, _ = read(path, regime, True, monkeypatch)  # items unknown: read line by line
    taken = []
    whole = samples._whole_file
    monkeypatch.setattr(samples, "_whole_file", lambda *args: taken.append(whole(*args)) or taken[-1])
    known = lambda fp, item_id: True  # noqa: E731  (every item known: the whole-file decode applies)
    args = (path, REGIMES[regime].results_filter, tuple(REGIME_METRICS[regime]), lambda value, where: _kept_answer(regime, value, where), known)
    again = samples.read_columns(*args, lambda *a: None)
    assert taken and taken[0] is not None and again == first
    monkeypatch.setattr(samples, "_whole_file", lambda *args: None)
    assert samples.read_columns(*args, lambda *a: None) == first


def rows() -> list[dict]:
    (path,) = (V05 / "tasks").glob("samples_radsafe_demo_closed_book_2*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def broken(tmp_path: Path, edit) -> Path:
    lines = rows()
    edit(lines[1])
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda row: row.pop("accuracy"), r"line 2: missing field 'accuracy'"),
        (lambda row: row["doc"].pop("dataset_fingerprint"), r"line 2: missing field 'dataset_fingerprint'"),
        (lambda row: row.__setitem__("doc", None), r"line 2: missing field"),
        (lambda row: row.pop("filtered_resps"), r"line 2: missing field 'filtered_resps'"),
    ],
)
def test_both_readers_refuse_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit, message: str) -> None:
    path = broken(tmp_path, edit)
    for typed in (True, False):
        with pytest.raises(ValueError, match=message):  # SamplesError, or RunError from the kept value
            read(path, "greedy", typed, monkeypatch)


def test_a_line_that_is_not_json_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(rows()[0]) + "\n{not json\n")
    for typed in (True, False):
        with pytest.raises(samples.SamplesError, match=r"samples.jsonl, line 2: not valid JSON"):
            read(path, "greedy", typed, monkeypatch)


def test_an_id_given_as_a_number_reads_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = broken(tmp_path, lambda row: row["doc"].__setitem__("id", 7))
    for typed in (True, False):
        taken, _ = read(path, "greedy", typed, monkeypatch)
        assert taken.ids[1] == "7"

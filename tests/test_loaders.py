"""Items and loaders: every layout maps to the same items; bad rows name file, row, field, value."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lm_eval_radsafe.items import Item, ItemError, Option, fingerprint
from lm_eval_radsafe.loaders import DatasetError, load_items

FIXTURE = Path(__file__).parent / "fixtures" / "items.jsonl"


def canonical_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def flat_record(rec: dict) -> dict:
    """The flat layout: option_{i} texts and option_{i}_{flag} columns, answer_idx."""
    row = {
        "question_id": rec["id"],
        "question": rec["question"],
        "answer_idx": rec["answer"],
        "evidence_clean": rec["clean_evidence"],
        "evidence_conflict": rec["conflict_evidence"],
        "deep_research_report": rec["agentic_report"],
        "subspecialty": rec["subspecialty"],
        "question_type": rec["question_type"],
    }
    for i in range(1, 6):
        opt = rec["options"][i - 1] if i <= len(rec["options"]) else None
        row[f"option_{i}"] = opt["text"] if opt else None
        for flag in ("high_risk", "unsafe", "contradicts"):
            row[f"option_{i}_{flag}"] = int(opt[flag]) if opt else None
    return row


def nested_record(rec: dict) -> dict:
    """The nested layout: question_text, options dict, correct_answer, metadata.*."""
    row = {
        "question_id": rec["id"],
        "question_text": rec["question"],
        "options": {o["letter"]: o["text"] for o in rec["options"]},
        "correct_answer": rec["answer"],
        "metadata": {
            "evidence_clean": rec["clean_evidence"],
            "evidence_conflict": rec["conflict_evidence"],
            "deep_research_report": rec["agentic_report"],
            "subspecialty": rec["subspecialty"],
            "question_type": rec["question_type"],
        },
    }
    for i, opt in enumerate(rec["options"], start=1):
        for flag in ("high_risk", "unsafe", "contradicts"):
            row[f"option_{i}_{flag}"] = opt[flag]
    return row


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def reference() -> tuple[Item, ...]:
    return load_items(FIXTURE).items


def test_canonical_fixture_loads(reference: tuple[Item, ...]) -> None:
    assert [it.id for it in reference] == ["fx-001", "fx-002", "fx-003"]
    negated = reference[2]
    assert negated.negated and negated.option("C").unsafe and negated.answer == "C"
    assert reference[1].letters == "ABCD"


def test_flat_csv_maps_to_the_same_items(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    path = tmp_path / "flat.csv"
    write_csv(path, [flat_record(r) for r in canonical_records()])
    loaded = load_items(path)
    assert loaded.items == reference
    assert loaded.fingerprint == fingerprint(reference)


def test_flat_parquet_and_jsonl_map_to_the_same_items(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [flat_record(r) for r in canonical_records()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "flat.parquet")
    write_jsonl(tmp_path / "flat.jsonl", rows)
    assert load_items(tmp_path / "flat.parquet").items == reference
    assert load_items(tmp_path / "flat.jsonl").items == reference


def test_nested_layout_maps_to_the_same_items(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    rows = [nested_record(r) for r in canonical_records()]
    write_jsonl(tmp_path / "nested.jsonl", rows)
    (tmp_path / "nested.json").write_text(json.dumps(rows), encoding="utf-8")
    assert load_items(tmp_path / "nested.jsonl").items == reference
    assert load_items(tmp_path / "nested.json").items == reference


def test_options_dict_as_string_in_csv(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    rows = []
    for rec in canonical_records():
        row = flat_record(rec)
        for i in range(1, 6):
            row.pop(f"option_{i}")
        row["options"] = repr({o["letter"]: o["text"] for o in rec["options"]})  # Python-literal dict
        rows.append(row)
    write_csv(tmp_path / "dict.csv", rows)
    assert load_items(tmp_path / "dict.csv").items == reference


def test_local_dataset_folder_goes_through_datasets(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    folder = tmp_path / "RadSaFE-200"
    folder.mkdir()
    write_csv(folder / "test.csv", [flat_record(r) for r in canonical_records()])
    loaded = load_items(folder)
    assert loaded.items == reference


def test_fingerprint_ignores_row_order_but_not_labels(reference: tuple[Item, ...]) -> None:
    assert fingerprint(reversed(reference)) == fingerprint(reference)
    changed = list(reference)
    first = changed[0]
    options = (Option(**{**first.options[0].to_dict(), "unsafe": True}),) + first.options[1:]
    changed[0] = Item(**{**first.__dict__, "options": options})
    assert fingerprint(changed) != fingerprint(reference)
    assert fingerprint(reference).startswith("sha256:") and len(fingerprint(reference)) == 71


def test_broken_csv_row_names_file_row_field_and_value(tmp_path: Path) -> None:
    rows = [flat_record(r) for r in canonical_records()]
    rows[1]["answer_idx"] = "F"
    rows[2]["option_2_unsafe"] = "maybe"
    path = tmp_path / "broken.csv"
    write_csv(path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    message = str(info.value)
    assert str(path) in message
    assert "row 2 (line 3): field 'answer': must be one of the item's letters ABCD (value: 'F')" in message
    assert "row 3 (line 4): field 'option_2_unsafe': must be 0/1 or true/false (value: 'maybe')" in message
    assert info.value.problems and len(info.value.problems) == 2  # every bad row, none skipped


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(answer="E"), "field 'answer'"),
        (lambda r: r["options"].pop(), "field 'options'"),
        (lambda r: r["options"][0].update(letter="Z"), "field 'options.letter'"),
        (lambda r: r["options"][1].update(text=""), "field 'options.B.text'"),
        (lambda r: r["options"][1].update(unsafe="yes"), "field 'options.B.unsafe'"),
        (lambda r: r.update(colour="blue"), "field 'colour': unknown key"),
        (lambda r: r.update(question="  "), "field 'question'"),
        (lambda r: r.pop("answer"), "field 'answer': missing"),
    ],
)
def test_canonical_errors(tmp_path: Path, mutate, expected: str) -> None:
    records = canonical_records()
    mutate(records[1])
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, records)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert f"line 2: {expected}" in str(info.value)


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    records = canonical_records()
    records[2]["id"] = records[0]["id"]
    write_jsonl(tmp_path / "dup.jsonl", records)
    with pytest.raises(DatasetError, match=r"line 3: field 'id': duplicate of line 1"):
        load_items(tmp_path / "dup.jsonl")


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(FIXTURE.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"line 4: not valid JSON"):
        load_items(path)


def test_flag_on_a_missing_option_is_an_error(tmp_path: Path) -> None:
    rows = [flat_record(r) for r in canonical_records()]
    rows[1]["option_5_high_risk"] = 1  # item fx-002 has four options
    write_csv(tmp_path / "flag.csv", rows)
    with pytest.raises(DatasetError, match=r"row 2 \(line 3\): field 'option_5_high_risk': set on option E"):
        load_items(tmp_path / "flag.csv")


def test_numeric_answer_index_is_refused_as_ambiguous(tmp_path: Path) -> None:
    rows = [flat_record(r) for r in canonical_records()]
    write_jsonl(tmp_path / "n.jsonl", [{**rows[0], "answer_idx": 1}])
    with pytest.raises(DatasetError, match="numeric index is ambiguous"):
        load_items(tmp_path / "n.jsonl")


@pytest.mark.parametrize("missing", ["./no/such/file.csv", "data/RadSaFE-200.csv", "nothing-here"])
def test_missing_path_is_a_clear_error(missing: str) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_items(missing)


def test_item_record_is_frozen_and_validated() -> None:
    item = load_items(FIXTURE).items[0]
    with pytest.raises(AttributeError):
        item.answer = "B"  # type: ignore[misc]
    with pytest.raises(ItemError, match="field 'options'"):
        Item(id="x", question="q", options=item.options[:3], answer="A")


def test_bundled_demo_set_meets_its_card() -> None:
    items = load_items("demo").items
    assert len(items) >= 60
    assert len({it.subspecialty for it in items}) >= 8
    assert {len(it.options) for it in items} == {4, 5}
    negated_flagged = [
        it for it in items if it.negated and any(it.option(it.answer).flag(f) for f in ("high_risk", "unsafe", "contradicts"))
    ]
    assert len(negated_flagged) >= 6
    assert all(it.clean_evidence.strip() and it.conflict_evidence.strip() for it in items)

"""Items and loaders: every layout maps to the same items; bad rows name file, row, field, value."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lm_eval_radsafe.items import FLAG_NAMES, Item, ItemError, Option, fingerprint
from lm_eval_radsafe.loaders import DatasetError, HubAccessError, load_items, unknown_field

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
    assert "row 3 (line 4): field 'option_2_unsafe': must be 0/1, true/false or empty (value: 'maybe')" in message
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


# --------------------------------------------------------------------------- field names


def flat_rows() -> list[dict]:
    return [flat_record(r) for r in canonical_records()]


def renamed(rows: list[dict], old: str, new: str) -> list[dict]:
    return [{(new if key == old else key): value for key, value in row.items()} for row in rows]


@pytest.mark.parametrize(
    ("old", "new", "closest"),
    [
        ("option_1_high_risk", "option_1_highrisk", "option_1_high_risk"),
        ("option_2_high_risk", "option_2_high_risk_flag", "option_2_high_risk"),
        ("option_1_unsafe", "opt1_unsafe", "option_1_unsafe"),
        ("option_3_contradicts", "Option_3_Contradicts", "option_3_contradicts"),
        ("option_4_contradicts", "option_4_contradiction", "option_4_contradicts"),
        ("option_2_unsafe", "Option2Unsafe", "option_2_unsafe"),
        ("option_5_high_risk", "high_risk_5", "option_5_high_risk"),
        ("answer_idx", "answr_idx", "answer_idx"),
        ("option_2", "opton_2", "option_2"),
    ],
)
def test_misspelt_column_is_an_error_naming_file_column_and_closest_name(
    tmp_path: Path, old: str, new: str, closest: str
) -> None:
    path = tmp_path / "misspelt.csv"
    write_csv(path, renamed(flat_rows(), old, new))
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert str(path) in str(info.value)
    assert f"header: column {new!r}: unknown name that looks like an option, answer or label field; did you mean {closest!r}?" in info.value.problems


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("option_6", "items have 4 or 5 options (option_1..option_5 = A..E); there is no option 6"),
        ("option_6_high_risk", "there is no option 6"),
        ("opt6_unsafe", "there is no option 6"),
        ("option_F", "there is no option F"),
        ("F", "there is no option F"),
        ("option_0", "options are numbered from 1 (option_1 = A), not from 0"),
        ("option_0_unsafe", "numbered from 1"),
    ],
)
def test_a_sixth_or_zeroth_option_column_is_an_error(tmp_path: Path, column: str, reason: str) -> None:
    path = tmp_path / "six.csv"
    write_csv(path, [{**row, column: "0"} for row in flat_rows()])
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert f"{path}: header: column {column!r}: " in str(info.value)
    assert reason in str(info.value)


def test_misspelt_fields_in_json_layouts_name_the_row(tmp_path: Path) -> None:
    flat = renamed(flat_rows(), "option_1_unsafe", "opt1_unsafe")
    write_jsonl(tmp_path / "flat.jsonl", flat)
    with pytest.raises(DatasetError) as info:
        load_items(tmp_path / "flat.jsonl")
    assert "line 1: field 'opt1_unsafe': unknown name" in str(info.value) and "'option_1_unsafe'?" in str(info.value)

    nested = [nested_record(r) for r in canonical_records()]
    nested[1]["metadata"]["option_2_highrisk"] = 1
    write_jsonl(tmp_path / "nested.jsonl", nested)
    with pytest.raises(DatasetError) as info:
        load_items(tmp_path / "nested.jsonl")
    assert "line 2: field 'metadata.option_2_highrisk'" in str(info.value) and "'option_2_high_risk'?" in str(info.value)


def test_repeated_csv_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    write_csv(path, flat_rows())
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(line + ",0" if n else line + ",option_1_unsafe" for n, line in enumerate(lines)) + "\n")
    with pytest.raises(DatasetError, match=r"header: column 'option_1_unsafe': appears 2 times"):
        load_items(path)


EXTRAS = ["explanation", "risk_factors", "source", "year", "Unnamed: 0", "notes", "high_yield", "difficulty", "modality"]


def test_known_and_harmless_extra_columns_are_accepted(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    path = tmp_path / "extras.csv"
    rows = [{**row, **{name: "x" for name in EXTRAS}, "id": row["question_id"], "supporting_passages": ""} for row in flat_rows()]
    write_csv(path, rows)
    assert load_items(path).items == reference


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("option_1_high_risk", False),
        ("option_A", False),
        ("evidence_clean", False),
        ("deep_research_report", False),
        ("supporting_passages", False),
        ("risk_factors", False),
        ("high_yield", False),
        ("safety_notes", False),
        ("explanation", False),
        ("option_a_high_risk", True),
        ("high_risk_options", True),
        ("unsafe", True),
        ("contradictory_5", True),
        ("correct_option", True),
        ("answer_letter", True),
        ("choice_1", True),
        ("flagged", True),
        ("Option1HighRisk", True),
        ("A_unsafe", True),
    ],
)
def test_what_looks_like_a_label_field(name: str, refused: bool) -> None:
    assert (unknown_field(name) is not None) is refused


# --------------------------------------------------------------------------- labels


def without_flags(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith(("_high_risk", "_unsafe", "_contradicts"))} for row in rows]


def test_dataset_without_labels_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.csv"
    write_csv(path, without_flags(flat_rows()))
    with pytest.raises(DatasetError) as info:
        load_items(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: no option labels: ")
    assert "would read 0" in message and "--allow-unlabelled" in message and '"allow_unlabelled": true' in message


@pytest.mark.parametrize("layout", ["flat_no_columns", "flat_empty_cells", "canonical_no_keys"])
def test_allow_unlabelled_marks_every_item(tmp_path: Path, layout: str, reference: tuple[Item, ...]) -> None:
    if layout == "canonical_no_keys":
        records = canonical_records()
        for rec in records:
            rec["options"] = [{"letter": o["letter"], "text": o["text"]} for o in rec["options"]]
        path = tmp_path / "unlabelled.jsonl"
        write_jsonl(path, records)
    else:
        rows = without_flags(flat_rows())
        if layout == "flat_empty_cells":
            rows = [{**row, "option_1_high_risk": None, "option_2_unsafe": " "} for row in rows]
        path = tmp_path / "unlabelled.csv"
        write_csv(path, rows)
    loaded = load_items(path, allow_unlabelled=True)
    assert not loaded.labelled and not any(item.labelled for item in loaded.items)
    assert not any(opt.flag(name) for item in loaded.items for opt in item.options for name in FLAG_NAMES)
    assert [item.id for item in loaded.items] == [item.id for item in reference]
    # an unlabelled set never shares a fingerprint with the same items labelled all-0
    zeros = [Item(**{**item.__dict__, "labelled": True}) for item in loaded.items]
    assert loaded.fingerprint != fingerprint(zeros)


def test_unlabelled_canonical_form_round_trips(tmp_path: Path) -> None:
    rows = without_flags(flat_rows())
    write_csv(tmp_path / "u.csv", rows)
    loaded = load_items(tmp_path / "u.csv", allow_unlabelled=True)
    write_jsonl(tmp_path / "u.jsonl", [item.to_dict() for item in loaded.items])
    again = load_items(tmp_path / "u.jsonl", allow_unlabelled=True)
    assert again.items == loaded.items and again.fingerprint == loaded.fingerprint
    with pytest.raises(DatasetError, match="no option labels"):
        load_items(tmp_path / "u.jsonl")


def test_labelled_items_keep_their_fingerprint(reference: tuple[Item, ...]) -> None:
    assert all("labelled" not in item.to_dict() for item in reference)
    with pytest.raises(ItemError, match=r"field 'options.A.unsafe': set on an item marked unlabelled"):
        Item(**{**reference[0].__dict__, "options": (Option("A", "x", unsafe=True),) + reference[0].options[1:], "labelled": False})


@pytest.mark.parametrize(
    ("suffix", "value", "reason"),
    [
        (".jsonl", float("nan"), "NaN is not a label; use 0/1, true/false or empty (value: nan)"),
        (".csv", "nan", "NaN is not a label; use 0/1, true/false or empty (value: 'nan')"),
        (".csv", "NaN", "NaN is not a label; use 0/1, true/false or empty (value: 'NaN')"),
        (".csv", "yes", "must be 0/1, true/false or empty (value: 'yes')"),
        (".csv", "2", "must be 0/1, true/false or empty (value: '2')"),
        (".csv", "-1", "must be 0/1, true/false or empty (value: '-1')"),
        (".jsonl", 2, "must be 0/1, true/false or empty (value: 2)"),
        (".jsonl", 0.5, "must be 0/1, true/false or empty (value: 0.5)"),
        (".jsonl", "y", "must be 0/1, true/false or empty (value: 'y')"),
    ],
)
def test_flag_value_that_is_not_a_label_is_an_error(tmp_path: Path, suffix: str, value, reason: str) -> None:
    rows = flat_rows()
    rows[1]["option_3_unsafe"] = value
    path = tmp_path / f"flags{suffix}"
    (write_csv if suffix == ".csv" else write_jsonl)(path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    where = "row 2 (line 3)" if suffix == ".csv" else "line 2"
    assert str(info.value) == f"{path}: {where}: field 'option_3_unsafe': {reason}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("1.0", True), (" TRUE ", True), ("true", True), ("0", False), ("0.0", False), ("False", False), ("", False)],
)
def test_accepted_flag_spellings(tmp_path: Path, value: str, expected: bool) -> None:
    rows = flat_rows()
    rows[0]["option_3_unsafe"] = value
    write_csv(tmp_path / "ok.csv", rows)
    assert load_items(tmp_path / "ok.csv").items[0].option("C").unsafe is expected


@pytest.mark.parametrize(("value", "expected"), [(1, True), (1.0, True), (True, True), (0, False), (False, False), (None, False)])
def test_accepted_flag_values_in_json(tmp_path: Path, value, expected: bool) -> None:
    rows = flat_rows()
    rows[0]["option_3_unsafe"] = value
    write_jsonl(tmp_path / "ok.jsonl", rows)
    assert load_items(tmp_path / "ok.jsonl").items[0].option("C").unsafe is expected


# --------------------------------------------------------------------------- row checks


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda r: r.update(answer_idx="B", correct_answer="C"),
            "field 'answer_idx': disagrees with correct_answer = 'C' (value: 'B')",
        ),
        (
            lambda r: r.update(correct_answer="A", answer_idx="a", answer="D"),
            "field 'answer': disagrees with correct_answer = 'A' (value: 'D')",
        ),
        (lambda r: r.update(question_id="FX-001"), "field 'id': differs only in case from 'fx-001' on line 1 (value: 'FX-001')"),
        (lambda r: r.update(question="What\x00 now?"), "field 'question': contains a NUL byte (\\x00) (value: 'What\\x00 now?')"),
        (lambda r: r.update(option_2="Bone\x00scan"), "field 'option_2': contains a NUL byte"),
        (lambda r: r.update(evidence_clean="x\x00"), "field 'evidence_clean': contains a NUL byte"),
        (lambda r: r.update(metadata={"evidence_conflict": "\x00"}), "field 'metadata.evidence_conflict': contains a NUL byte"),
    ],
)
def test_row_errors_name_row_field_and_value(tmp_path: Path, mutate, problem: str) -> None:
    rows = flat_rows()
    rows[1]["correct_answer"] = rows[1]["answer_idx"]
    mutate(rows[1])
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert str(info.value).startswith(f"{path}: line 2: {problem}")


def test_answer_columns_that_agree_are_fine(tmp_path: Path, reference: tuple[Item, ...]) -> None:
    rows = [{**row, "correct_answer": row["answer_idx"].lower()} for row in flat_rows()]
    write_csv(tmp_path / "both.csv", rows)
    assert load_items(tmp_path / "both.csv").items == reference


def test_nul_byte_in_canonical_option_text(tmp_path: Path) -> None:
    records = canonical_records()
    records[2]["options"][1]["text"] = "a\x00"
    write_jsonl(tmp_path / "nul.jsonl", records)
    with pytest.raises(DatasetError, match=r"line 3: field 'options\[1\]\.text': contains a NUL byte"):
        load_items(tmp_path / "nul.jsonl")


def test_every_problem_is_listed(tmp_path: Path) -> None:
    rows = renamed(flat_rows(), "option_1_unsafe", "opt1_unsafe")
    rows[0]["option_2_high_risk"] = "yes"
    rows[2]["question_id"] = rows[1]["question_id"].upper()
    path = tmp_path / "many.csv"
    write_csv(path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert str(info.value).splitlines()[0] == f"3 problems in {path}:"
    assert len(info.value.problems) == 3


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_utf8_bom_is_accepted(tmp_path: Path, suffix: str, reference: tuple[Item, ...]) -> None:
    path = tmp_path / f"bom{suffix}"
    if suffix == ".csv":
        write_csv(path, flat_rows())
    elif suffix == ".jsonl":
        write_jsonl(path, canonical_records())
    else:
        path.write_text(json.dumps(canonical_records()), encoding="utf-8")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_items(path).items == reference


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_latin1_file_names_offset_and_suggests_iconv(tmp_path: Path, suffix: str) -> None:
    records = canonical_records()
    records[1]["question"] = "Which finding suggests a névus?"
    path = tmp_path / f"latin{suffix}"
    if suffix == ".csv":
        write_csv(path, [flat_record(r) for r in records])
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    data = path.read_text(encoding="utf-8").encode("cp1252")
    path.write_bytes(data)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    offset = data.index(b"\xe9")
    line = data[:offset].count(b"\n") + 1
    assert str(info.value) == (
        f"{path}: not UTF-8: byte 0xe9 at byte offset {offset} (line {line}); it looks like latin-1/cp1252; "
        f"convert it with `iconv -f cp1252 -t utf-8 {path} > {path.with_suffix('.utf8' + suffix)}`"
    )


def test_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    write_csv(path, flat_rows())
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    with pytest.raises(DatasetError, match=r"not UTF-8: it starts with a UTF-16 byte-order mark; convert it with `iconv -f utf-16"):
        load_items(path)


def test_dataset_folder_with_latin1_csv_and_misspelt_column(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    write_csv(folder / "test.csv", renamed(flat_rows(), "option_1_high_risk", "option_1_highrisk"))
    with pytest.raises(DatasetError, match=r"header: column 'option_1_highrisk': .* did you mean 'option_1_high_risk'\?"):
        load_items(folder)
    (folder / "test.csv").write_bytes((folder / "test.csv").read_bytes().replace(b"stroke", "strok\xe9".encode("latin-1")))
    with pytest.raises(DatasetError, match=rf"{folder / 'test.csv'}: not UTF-8: byte 0xe9"):
        load_items(folder)


# --------------------------------------------------------------------------- sources


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every hub call."""
    import datasets

    calls: list[str] = []

    def load_dataset(name: str, *args, **kwargs):
        calls.append(name)
        raise ConnectionError("offline in tests")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize(
    "missing",
    ["./no/such/file.csv", "/no/such/folder", "~/no-such-radsafe-folder", "data/RadSaFE-200.csv", "a/b/c", "org/name.jsonl", "data\\x"],
)
def test_missing_local_path_says_so_without_a_hub_call(missing: str, no_hub: list[str]) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_items(missing)
    assert str(info.value) == f"no such file or folder: {missing}"
    assert no_hub == []


def test_misspelt_folder_under_an_existing_folder_is_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hub: list[str]
) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^no such file or folder: data/RadSaFE200$"):
        load_items("data/RadSaFE200")
    assert no_hub == []


def test_bare_unknown_name_lists_what_is_accepted(no_hub: list[str]) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: nothing-here \(give 'demo'.*hub id like"):
        load_items("nothing-here")
    assert no_hub == []


def test_hub_id_goes_to_the_hub_and_says_hf_auth_login(no_hub: list[str]) -> None:
    with pytest.raises(HubAccessError) as info:
        load_items("someorg/RadSaFE-200")
    assert no_hub == ["someorg/RadSaFE-200"]
    assert "`hf auth login`" in str(info.value) and "huggingface-cli" not in str(info.value)


# --------------------------------------------------------------------------- radsafe validate-data


def test_validate_data_on_misspelt_flags_exits_1_with_a_short_message(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "misspelt.csv"
    write_csv(path, renamed(flat_rows(), "option_1_high_risk", "option_1_highrisk"))
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval_radsafe.cli", "validate-data", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"error: {path}: header: column 'option_1_highrisk': unknown name that looks like an option, answer or "
        "label field; did you mean 'option_1_high_risk'?\n"
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "nope" / "x.csv", "error: no such file or folder: {path}\n"),
        (lambda p: write_text(p / "u.csv", "question_id,question,answer_idx,option_1,option_2,option_3,option_4\nq1,Q?,A,a,b,c,d\n"), "error: {path}: no option labels: "),
        (lambda p: write_text(p / "l.csv", "question_id,question\nq1,caf\xe9\n", "latin-1"), "error: {path}: not UTF-8: byte 0xe9 at byte offset 27 (line 2)"),
    ],
)
def test_validate_data_errors_are_one_short_stderr_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, expected: str
) -> None:
    from lm_eval_radsafe.cli import main

    path = make(tmp_path)
    assert main(["validate-data", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(expected.format(path=path))
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_items_marked_unlabelled_in_a_labelled_file_need_the_switch(tmp_path: Path) -> None:
    records = canonical_records()
    records[1]["labelled"] = False
    for option in records[1]["options"]:
        option.update(high_risk=False, unsafe=False, contradicts=False)
    write_jsonl(tmp_path / "mixed.jsonl", records)
    with pytest.raises(DatasetError, match=r'1 item\(s\) are marked "labelled": false; accept NaN safety rates with'):
        load_items(tmp_path / "mixed.jsonl")
    loaded = load_items(tmp_path / "mixed.jsonl", allow_unlabelled=True)
    assert [item.labelled for item in loaded.items] == [True, False, True] and not loaded.labelled


# --------------------------------------------------------------------------- one rule set for every format


def write_json(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows), encoding="utf-8")


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


WRITERS = {".csv": write_csv, ".jsonl": write_jsonl, ".json": write_json, ".parquet": write_parquet}
FIRST_ROW = {".csv": "row 1 (line 2)", ".jsonl": "line 1", ".json": "element 0", ".parquet": "row 1"}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
@pytest.mark.parametrize("column", ["option_6", "option_6_high_risk", "option_6_unsafe", "option_6_contradicts"])
def test_sixth_option_columns_are_an_error_in_every_flat_format(tmp_path: Path, suffix: str, column: str) -> None:
    """A sixth option (or its flag) is never dropped with its labels: the column is named."""
    rows = [{**row, "option_5": row["option_5"] or "Repeat later", column: "x" if column == "option_6" else 1} for row in flat_rows()]
    path = tmp_path / f"six{suffix}"
    WRITERS[suffix](path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    where = "header: column" if suffix in (".csv", ".parquet") else f"{FIRST_ROW[suffix]}: field"
    assert f"{where} {column!r}: items have 4 or 5 options (option_1..option_5 = A..E); there is no option 6" in str(info.value)


@pytest.mark.parametrize("suffix", sorted(WRITERS))
@pytest.mark.parametrize("value", ["yes", "no", "Y", "on", "t", "1.5", "true1"])
def test_flag_words_other_than_0_1_true_false_are_an_error_in_every_format(tmp_path: Path, suffix: str, value: str) -> None:
    rows = flat_rows()
    rows[0]["option_2_contradicts"] = value
    if suffix == ".parquet":  # one column type: every value of the column as text
        for row in rows[1:]:
            row["option_2_contradicts"] = str(row["option_2_contradicts"])
    path = tmp_path / f"flag{suffix}"
    WRITERS[suffix](path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert str(info.value) == (
        f"{path}: {FIRST_ROW[suffix]}: field 'option_2_contradicts': must be 0/1, true/false or empty (value: {value!r})"
    )


@pytest.mark.parametrize("value", ["TRUE", "False", "tRuE", "1", "0", "1.0", "0.0"])
def test_flag_spellings_accepted_in_parquet_text_columns(tmp_path: Path, value: str) -> None:
    rows = [{**row, "option_2_contradicts": str(row["option_2_contradicts"])} for row in flat_rows()]
    rows[0]["option_2_contradicts"] = value
    write_parquet(tmp_path / "ok.parquet", rows)
    assert load_items(tmp_path / "ok.parquet").items[0].option("B").contradicts is (value.lower() in ("true", "1", "1.0"))


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda r: r.update(question="What\x07 now?"),
            (
                "field 'question': contains the control character U+0007 ('\\x07') at character 4; "
                "only tab, newline and carriage return are allowed (value: 'What\\x07 now?')"
            ),
        ),
        (lambda r: r.update(option_2="Bone\x1bscan"), "field 'option_2': contains the control character U+001B ('\\x1b') at character 4"),
        (lambda r: r.update(evidence_clean="page 1\x0cpage 2"), "field 'evidence_clean': contains the control character U+000C"),
        (lambda r: r.update(metadata={"evidence_conflict": "\x1f"}), "field 'metadata.evidence_conflict': contains the control character U+001F"),
        (lambda r: r.update(subspecialty="neuro\x0b"), "field 'subspecialty': contains the control character U+000B"),
    ],
)
def test_control_characters_in_text_fields_name_row_and_field(tmp_path: Path, mutate, problem: str) -> None:
    rows = flat_rows()
    mutate(rows[1])
    path = tmp_path / "controls.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert str(info.value).startswith(f"{path}: line 2: {problem}")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_control_character_is_an_error_in_every_format(tmp_path: Path, suffix: str) -> None:
    rows = flat_rows()
    rows[0]["question"] = "Which\x02 study first?"
    path = tmp_path / f"controls{suffix}"
    WRITERS[suffix](path, rows)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    assert str(info.value).startswith(f"{path}: {FIRST_ROW[suffix]}: field 'question': contains the control character U+0002")


def test_control_character_in_canonical_option_text(tmp_path: Path) -> None:
    records = canonical_records()
    records[2]["options"][1]["text"] = "a\x1b[31mred"
    write_jsonl(tmp_path / "esc.jsonl", records)
    with pytest.raises(DatasetError, match=r"line 3: field 'options\[1\]\.text': contains the control character U\+001B"):
        load_items(tmp_path / "esc.jsonl")


def test_tab_newline_and_carriage_return_are_text(tmp_path: Path) -> None:
    rows = flat_rows()
    rows[0]["question"] = "Line one\twith a tab\r\nline two\nline three"
    write_jsonl(tmp_path / "ok.jsonl", rows)
    assert load_items(tmp_path / "ok.jsonl").items[0].question == rows[0]["question"]


def test_parquet_text_that_is_not_utf8_names_row_field_and_offset(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = flat_rows()
    table = pa.Table.from_pylist(rows)
    raw = [q.encode("utf-8") for q in table.column("question").to_pylist()]
    raw[1] = "Which finding suggests a névus?".encode("cp1252")
    bad = pa.array(raw, type=pa.binary()).cast(pa.string(), safe=False)
    table = table.set_column(table.column_names.index("question"), "question", bad)
    path = tmp_path / "latin.parquet"
    pq.write_table(table, path)
    with pytest.raises(DatasetError) as info:
        load_items(path)
    offset = raw[1].index(b"\xe9")
    assert str(info.value) == (
        f"{path}: row 2: field 'question': not UTF-8: byte 0xe9 at byte offset {offset} of the value; "
        "it looks like latin-1/cp1252; write the column as UTF-8 text"
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_bom_is_accepted_in_a_dataset_folder(tmp_path: Path, suffix: str, reference: tuple[Item, ...]) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    path = folder / f"test{suffix}"
    WRITERS[suffix](path, flat_rows())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_items(folder).items == reference


def test_latin1_line_deep_in_a_jsonl_file_names_its_line(tmp_path: Path) -> None:
    rows = flat_rows()
    rows[2]["evidence_clean"] = "Caf\u00e9-au-lait spots"
    path = tmp_path / "late.jsonl"
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode("cp1252") + b"\n" for r in rows))
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(DatasetError, match=rf"^{path}: not UTF-8: byte 0xe9 at byte offset {offset} \(line 3\); it looks like latin-1/cp1252"):
        load_items(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: "\n".join(json.dumps({**r, "option_2": "Bo\u0007ne scan"} if n == 0 else r) for n, r in enumerate(flat_rows())).encode(), "line 1: field 'option_2'"),
        (lambda: "\n".join(json.dumps(r, ensure_ascii=False) for r in flat_rows()).encode("utf-8") + "\ncafé".encode("latin-1"), "not UTF-8: byte 0xe9"),
    ],
)
def test_validate_data_and_task_load_give_the_same_one_line_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content, problem: str
) -> None:
    from lm_eval_radsafe.cli import eval_error_message, main
    from lm_eval_radsafe.harness import load_radsafe200

    path = tmp_path / "data.jsonl"
    path.write_bytes(content())
    assert main(["validate-data", str(path)]) == 1
    printed = capsys.readouterr().err
    with pytest.raises(DatasetError) as info:
        load_radsafe200(radsafe_data=str(path), radsafe_condition="closed_book")
    assert printed == f"error: {eval_error_message(info.value)}\n"
    assert printed.count("\n") == 1 and problem in printed

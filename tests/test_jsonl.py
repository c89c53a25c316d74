"""Every JSON-lines file is read through :mod:`lm_eval_radsafe.jsonl`: one parser, one set
of messages naming file and line, whichever reader meets the file."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
from lm_eval_radsafe.retrieval.agentic import ReportsError, read_reports
from lm_eval_radsafe.retrieval.prepare import PreparedError, _records
from test_imports import package_modules

from lm_eval_radsafe.analysis.samples import SamplesError, read_columns
from lm_eval_radsafe.jsonl import JsonlError, JsonlNotUtf8Error, jsonl_lines, jsonl_views, read_jsonl
from lm_eval_radsafe.loaders import DatasetError, load_items


def test_lines_carry_number_offset_and_completeness(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}')
    lines = list(jsonl_lines(path))
    assert [(line.number, line.offset, line.complete) for line in lines] == [(1, 0, True), (2, 9, True), (3, 10, False)]
    assert [line.record() for line in lines] == [{"a": 1}, None, {"b": 2}]
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (3, {"b": 2})]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 1 << 22])
@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b'{"a": 1}\n\n{"b": 2}', b'{"a": 1}\r\n{"b": "' + b"x" * 200 + b'"}\n', b"\n\n\nlast", b'{"a": 1}\n'],
)
@pytest.mark.parametrize("mapped", [True, False])
def test_line_views_are_the_lines_read_one_by_one(
    tmp_path: Path, content: bytes, chunk_size: int, mapped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines as views of the mapped file or of read chunks: same bytes, numbers and offsets
    as :func:`jsonl_lines`, whatever the chunk size (lines longer than a chunk, a last line
    without newline)."""
    if not mapped:
        monkeypatch.setattr("lm_eval_radsafe.jsonl.MAP_AT_MOST", 0)
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    expected = [(line.number, line.offset, line.raw) for line in jsonl_lines(path)]
    assert [(number, offset, bytes(view)) for number, offset, view in jsonl_views(path, chunk_size)] == expected


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1})]


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b'{"a": 1}\nnot json\n', JsonlError, r"bad\.jsonl, line 2: not valid JSON \(Expecting value, column 1\)"),
        (b'{"a": 1}\n[1, 2]\n', JsonlError, r"bad\.jsonl, line 2: expected a JSON object, got list"),
        (
            b'{"a": 1}\n{"b": "caf\xe9"}\n',
            JsonlNotUtf8Error,
            r"bad\.jsonl: not UTF-8: byte 0xe9 at byte offset 19 \(line 2\)",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, content: bytes, error: type, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(error, match=message) as caught:
        list(read_jsonl(path))
    assert caught.value.number == 2


def test_every_reader_gives_the_same_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "x"}\n{"id": "caf\xe9"}\n')
    line = r"bad\.jsonl: not UTF-8: byte 0xe9 at byte offset 23 \(line 2\)"
    with pytest.raises(DatasetError, match=line):
        load_items(path)
    with pytest.raises(SamplesError, match=line):
        read_columns(path, "strict", (), lambda value, where: value, lambda f, i: True, lambda *a: None)
    with pytest.raises(PreparedError, match=r"bad\.jsonl, line 2: bad chunk record \(not UTF-8: byte 0xe9"):
        list(_records(path, "chunk"))
    with pytest.raises(ReportsError, match=r"bad\.jsonl, line 2: not a report record \(not UTF-8: byte 0xe9"):
        read_reports(path)


def test_reports_drop_a_last_line_cut_inside_a_character(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "agentic.jsonl"
    whole = json.dumps({"id": "b", "report": "Befund: \u00fcberlagert"}, ensure_ascii=False).encode()
    cut = whole[: whole.index(b"\xc3") + 1]  # a killed write, half of a two-byte character
    path.write_bytes(json.dumps({"id": "a"}).encode() + b"\n" + cut)
    with caplog.at_level(logging.WARNING):
        assert read_reports(path) == [{"id": "a"}]
    assert "line 2: incomplete last record" in caplog.text


def _reads_lines_with_json_loads(path: Path) -> list[int]:
    """Lines of ``path`` where ``json.loads`` parses the loop variable of a ``for`` loop or a
    comprehension (a JSON-lines reader of its own)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            targets, scope = node.target, node
        elif isinstance(node, ast.comprehension):
            targets, scope = node.target, None
        else:
            continue
        names = {n.id for n in ast.walk(targets) if isinstance(n, ast.Name)}
        parent = scope
        if parent is None:  # a comprehension: search the expression that holds it
            parent = next(p for p in ast.walk(tree) if any(g is node for g in getattr(p, "generators", [])))
        for call in ast.walk(parent):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "loads"
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "json"
                and call.args
                and isinstance(call.args[0], ast.Name)
                and call.args[0].id in names
            ):
                found.append(call.lineno)
    return found


def test_the_guard_finds_a_reader_of_its_own(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "import json\n"
        "def a(p):\n    for line in open(p):\n        yield json.loads(line)\n"
        "def b(p):\n    return [json.loads(x) for x in open(p)]\n"
        "def c(p):\n    return json.loads(open(p).read())\n",
        encoding="utf-8",
    )
    assert _reads_lines_with_json_loads(source) == [4, 6]


def test_no_module_reads_json_lines_on_its_own() -> None:
    offenders = {
        name: lines
        for name, path in package_modules().items()
        if name != "lm_eval_radsafe.jsonl" and (lines := _reads_lines_with_json_loads(path))
    }
    assert not offenders, f"read JSON-lines files with lm_eval_radsafe.jsonl: {offenders}"

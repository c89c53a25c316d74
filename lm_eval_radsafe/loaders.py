"""Loaders: every supported layout of RadSaFE-style items -> validated :class:`Item` records.

Supported sources (see the README's "Data" section):

* our canonical JSONL (``options`` is a list of ``{letter, text, high_risk, unsafe,
  contradicts}`` records);
* the *flat* layout as CSV, Parquet, JSON or JSONL: ``question_id``, ``question`` /
  ``question_text``, option texts (an ``options`` dict or ``option_{i}`` columns),
  ``answer_idx`` (a letter) and ``option_{i}_{high_risk,unsafe,contradicts}`` flags,
  i = 1..5 mapping to A..E;
* the *nested* layout (JSON/JSONL): ``question_text``, ``options`` dict,
  ``correct_answer`` and ``metadata.{evidence_clean, evidence_conflict,
  deep_research_report}``;
* a Hugging Face hub dataset (default ``soroosharasteh/RadSaFE-200``) or a local
  dataset folder, read through ``datasets`` and mapped like the flat layout.

Every row that does not validate is reported with file, row, field and value; loading
then fails as a whole. Nothing is skipped. Names that look like a misspelt option,
answer or label field are errors (:func:`unknown_field`), so a typo cannot read as
all-0 labels; a dataset with no labels at all is refused unless ``allow_unlabelled``.
Files must be UTF-8 (a byte-order mark is accepted).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import difflib
import io
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from lm_eval_radsafe.assets import demo_items_path as demo_path
from lm_eval_radsafe.items import (
    CANONICAL_KEYS,
    FLAG_NAMES,
    LETTERS,
    OPTION_KEYS,
    Item,
    ItemError,
    Option,
    fingerprint,
)
from lm_eval_radsafe.jsonl import JsonlError, JsonlNotUtf8Error, read_jsonl
from lm_eval_radsafe.text_rules import NotUtf8Error, control_character, decode_utf8, guess_encoding

logger = logging.getLogger(__name__)

HUB_DATASET = "soroosharasteh/RadSaFE-200"
DEMO_SOURCE = "demo"
MAX_ERRORS_SHOWN = 25
#: ``load_items(..., allow_unlabelled=True)``; the same key in task ``--metadata``.
ALLOW_UNLABELLED = "allow_unlabelled"

# Column aliases, first match wins. Looked up at the row's top level, then in `metadata`.
_ID_KEYS = ("question_id", "id")
_QUESTION_KEYS = ("question_text", "question")
_ANSWER_KEYS = ("correct_answer", "answer_idx", "answer")
_CLEAN_KEYS = ("evidence_clean", "clean_evidence")
_CONFLICT_KEYS = ("evidence_conflict", "conflict_evidence")
_REPORT_KEYS = ("deep_research_report", "agentic_report")
_SUBSPECIALTY_KEYS = ("subspecialty",)
_QTYPE_KEYS = ("question_type",)

_FLAG_KEYS = tuple(f"option_{i}_{name}" for i in range(1, len(LETTERS) + 1) for name in FLAG_NAMES)
_OPTION_TEXT_KEYS = tuple(
    key
    for position, letter in enumerate(LETTERS, start=1)
    for key in (f"option_{position}", f"option_{position}_text", f"option_{letter}", letter)
)
#: Every field the flat and nested layouts read (top level or inside ``metadata``).
KNOWN_FIELDS = frozenset(
    _ID_KEYS
    + _QUESTION_KEYS
    + _ANSWER_KEYS
    + _CLEAN_KEYS
    + _CONFLICT_KEYS
    + _REPORT_KEYS
    + _SUBSPECIALTY_KEYS
    + _QTYPE_KEYS
    + ("options", "metadata", "supporting_passages")
    + _OPTION_TEXT_KEYS
    + _FLAG_KEYS
)
#: Words that make an unknown field look like an option, answer or label field (matched
#: on the name's words: ``Opt1HighRisk`` -> opt, 1, high, risk); ``high`` and ``risk``
#: count only together, and every word starting with ``contradict`` counts.
LABEL_WORDS = frozenset(
    {"option", "options", "opt", "opts", "choice", "choices", "answer", "answers", "ans"}
    | {"flag", "flags", "flagged", "highrisk", "unsafe"}
)
_SUGGESTIONS = _FLAG_KEYS + tuple(f"option_{i}" for i in range(1, len(LETTERS) + 1)) + _ANSWER_KEYS

_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}
_FLAG_VALUES = "0/1, true/false or empty"


class DatasetError(ValueError):
    """A dataset failed validation; ``problems`` lists every problem found, each naming
    the row (or header) and field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
            return
        shown = problems[:MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        lines = [f"{len(problems)} problems in {source}:"] + [f"  {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class HubAccessError(RuntimeError):
    """The hub dataset could not be read (offline, gated, or not found)."""


@dataclass(frozen=True)
class LoadedItems:
    """Validated items with where they came from and their fingerprint."""

    items: tuple[Item, ...]
    source: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labelled(self) -> bool:
        """True when every item carries option labels (flag-derived metrics are defined)."""
        return all(item.labelled for item in self.items)


def load_items(source: str | Path, allow_unlabelled: bool = False) -> LoadedItems:
    """Load and validate items from ``source``.

    ``source`` is ``"demo"`` (the bundled demo set), a path to a ``.jsonl``, ``.json``,
    ``.csv`` or ``.parquet`` file, a local dataset folder, or a hub id such as
    ``soroosharasteh/RadSaFE-200``. A dataset that carries no option labels at all is
    refused unless ``allow_unlabelled``; its items then have ``labelled=False`` and every
    flag-derived metric is NaN.

    Raises :class:`DatasetError` listing every problem, :class:`HubAccessError` when a
    hub dataset cannot be read, and ``FileNotFoundError`` for a path that does not exist
    (a path-like source is never sent to the hub).
    """
    text = str(source)
    if text == DEMO_SOURCE:
        return _finish(_read_file(demo_path()), str(demo_path()), allow_unlabelled)
    path = Path(text).expanduser()
    if path.is_file():
        return _finish(_read_file(path), str(path), allow_unlabelled)
    if path.is_dir():
        return _finish(_read_hub(str(path), local=True), str(path), allow_unlabelled)
    if looks_like_hub_id(text):
        return _finish(_read_hub(text), f"hf://{text}", allow_unlabelled)
    if _looks_like_path(text):
        raise FileNotFoundError(f"no such file or folder: {text}")
    raise FileNotFoundError(
        f"no such file or folder: {text} (give 'demo', a .jsonl/.json/.csv/.parquet file, a dataset folder, "
        f"or a hub id like {HUB_DATASET})"
    )


_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# a hub repo name: letters, digits, '-', '_', '.', not starting or ending with '-' or '.'
_HUB_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` with hub-legal parts, no data-file suffix, and ``org`` not a local folder."""
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(_HUB_PART.match(part) and ".." not in part and "--" not in part for part in parts)
        and not text.lower().endswith(_FILE_SUFFIXES)
        and not Path(parts[0]).is_dir()
    )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or "/" in text
        or "\\" in text
        or text.lower().endswith(_FILE_SUFFIXES + (".tsv", ".txt", ".xlsx"))
    )


# --------------------------------------------------------------------------- reading


Row = tuple[str, dict[str, Any]]  # (location such as "line 3", raw record)


class Table(NamedTuple):
    """Rows read from a source; ``columns`` is the header of a tabular source (CSV,
    Parquet, a ``datasets`` split) and None for JSON layouts."""

    rows: list[Row]
    columns: list[str] | None


def _read_file(path: Path) -> Table:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return Table(_jsonl_rows(path), None)
    if suffix == ".json":
        return Table(_json_rows(path), None)
    if suffix == ".csv":
        return _csv_table(path)
    if suffix == ".parquet":
        return _parquet_table(path)
    raise DatasetError(str(path), [f"unsupported file type {suffix!r}: use .jsonl, .json, .csv or .parquet"])


def read_text(path: Path) -> str:
    """The file's text: UTF-8, with or without a byte-order mark.

    Any other encoding is a :class:`DatasetError` naming the byte offset and line of the
    first undecodable byte and the likely encoding, with the ``iconv`` line that fixes it
    (the message of :func:`~lm_eval_radsafe.text_rules.decode_utf8`).
    """
    try:
        return decode_utf8(path.read_bytes(), path)
    except NotUtf8Error as exc:
        raise DatasetError(str(path), [exc.problem]) from None


def _jsonl_rows(path: Path) -> list[Row]:
    """The rows of a JSON-lines file (:func:`~lm_eval_radsafe.jsonl.read_jsonl`), a bad line
    a :class:`DatasetError` naming it (a non-UTF-8 one with the message of :func:`read_text`)."""
    try:
        return [(f"line {number}", record) for number, record in read_jsonl(path)]
    except JsonlNotUtf8Error as exc:
        raise DatasetError(str(path), [exc.reason]) from None
    except JsonlError as exc:
        raise DatasetError(str(path), [f"line {exc.number}: {exc.reason}"]) from None


def _json_rows(path: Path) -> list[Row]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(str(path), [f"not valid JSON ({exc.msg}, line {exc.lineno})"]) from None
    if not isinstance(data, list):
        raise DatasetError(str(path), ["expected a JSON list of records"])
    rows = []
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise DatasetError(str(path), [f"element {index}: expected an object, got {type(record).__name__}"])
        rows.append((f"element {index}", record))
    return rows


def _csv_table(path: Path) -> Table:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = []
    try:
        for number, record in enumerate(reader, start=1):
            where = f"row {number} (line {reader.line_num})"
            if None in record:
                raise DatasetError(str(path), [f"{where}: more cells than header columns"])
            rows.append((where, {k: (v if v != "" else None) for k, v in record.items()}))
    except csv.Error as exc:
        raise DatasetError(str(path), [f"line {reader.line_num}: not valid CSV ({exc})"]) from None
    return Table(rows, list(reader.fieldnames or []))


def _parquet_table(path: Path) -> Table:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    try:
        records = table.to_pylist()
    except UnicodeDecodeError:
        raise DatasetError(str(path), [_parquet_not_utf8(table, path)]) from None
    return Table([(f"row {n}", rec) for n, rec in enumerate(records, start=1)], list(table.column_names))


def _parquet_not_utf8(table: Any, path: Path) -> str:
    """The first string cell of a Parquet table that is not UTF-8, as a problem line."""
    import pyarrow as pa

    for name in table.column_names:
        column = table.column(name)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            continue
        for number, raw in enumerate(column.cast(pa.large_binary()).to_pylist(), start=1):
            if raw is None:
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (
                    f"row {number}: field {name!r}: not UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
                    f"of the value; {guess_encoding(raw, path).split(';')[0]}; write the column as UTF-8 text"
                )
    return "a text column is not UTF-8; write every text column as UTF-8"


def _read_hub(name: str, local: bool = False) -> Table:
    """A hub dataset, or a local dataset folder (``local``), read with ``datasets``."""
    import datasets

    if local:
        for data_file in sorted(Path(name).rglob("*")):
            if data_file.is_file() and data_file.suffix.lower() in (".csv", ".json", ".jsonl"):
                read_text(data_file)  # a non-UTF-8 file gets its own message, not the library's
    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:  # network, auth, gating, offline and parse errors all land here
        if local:
            raise DatasetError(name, [f"cannot read the dataset folder: {type(exc).__name__}: {exc}"]) from exc
        raise HubAccessError(_hub_help(name, exc)) from exc
    if "test" in loaded:
        split = "test"
    elif len(loaded) == 1:
        split = next(iter(loaded))
    else:
        raise DatasetError(name, [f"several splits {sorted(loaded)} and none named 'test'"])
    logger.info("read %s split %r from %s", len(loaded[split]), split, name)
    rows = [(f"row {n}", rec) for n, rec in enumerate(loaded[split].to_list(), start=1)]
    return Table(rows, list(loaded[split].column_names))


def _hub_help(name: str, exc: BaseException) -> str:
    return (
        f"could not read the dataset {name!r} from the Hugging Face hub: {type(exc).__name__}: {exc}\n"
        f"  * access: open https://huggingface.co/datasets/{name}, accept its terms if asked, "
        "then log in with `hf auth login` (or set HF_TOKEN); unset HF_HUB_OFFLINE / "
        "HF_DATASETS_OFFLINE when you are online.\n"
        "  * local copy: pass a file or folder instead, e.g. "
        "`--metadata '{\"radsafe_data\": \"/path/RadSaFE-200.csv\"}'` or "
        "`export RADSAFE_DATA=/path/RadSaFE-200.csv`.\n"
        "  * offline: the `radsafe_demo` tasks run on the bundled demo set with no network."
    )


# --------------------------------------------------------------------------- mapping


def _finish(table: Table, source: str, allow_unlabelled: bool) -> LoadedItems:
    problems = field_problems(table)
    items, row_problems = items_from_rows(table.rows)
    problems += row_problems
    if problems:
        raise DatasetError(source, problems)
    if not items:
        raise DatasetError(source, ["no items found"])
    if not any(_carries_labels(record) for _, record in table.rows):
        items = [dataclasses.replace(item, labelled=False) for item in items]
    if not all(item.labelled for item in items):
        if not allow_unlabelled:
            unmarked = sum(not item.labelled for item in items)
            some = f'{unmarked} item(s) are marked "labelled": false; accept NaN safety rates with {_ALLOW}'
            raise DatasetError(source, [_NO_LABELS if unmarked == len(items) else some])
        logger.warning("%s carries no option labels: every safety rate will be NaN (undefined)", source)
    elif not any(opt.flag(name) for item in items for opt in item.options for name in FLAG_NAMES):
        logger.warning("%s labels every option 0: every safety rate will be 0", source)
    return LoadedItems(items=tuple(items), source=source, fingerprint=fingerprint(items))


_ALLOW = (
    "--allow-unlabelled (radsafe validate-data), --metadata '{\"allow_unlabelled\": true}' (tasks) "
    "or load_items(..., allow_unlabelled=True)"
)
_NO_LABELS = (
    "no option labels: no row gives any option_{1..5}_{high_risk,unsafe,contradicts} flag (canonical: "
    "options[].high_risk/unsafe/contradicts) a value, so every safety rate would read 0; add the labels, "
    f"or accept NaN safety rates with {_ALLOW}"
)


def _carries_labels(record: Mapping[str, Any]) -> bool:
    """Whether a raw record gives any option label a value (0 counts; empty does not)."""
    if _is_canonical(record):
        if record.get("labelled") is False:
            return False
        return any(option.get(name) is not None for option in record["options"] for name in FLAG_NAMES)
    try:
        metadata = _metadata(record)
    except ItemError:
        metadata = {}
    return any(not _blank(source.get(key)) for source in (record, metadata) for key in _FLAG_KEYS)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --------------------------------------------------------------------------- field names


def field_problems(table: Table) -> list[str]:
    """One message per unknown field that looks like an option, answer or label field
    (flat and nested layouts), per repeated CSV column, and per option beyond E.

    A misspelt label column would otherwise read as all-0 labels; see :func:`unknown_field`.
    Fields that look like none of these are ignored, with one log line naming them.
    """
    problems: list[str] = []
    ignored: list[str] = []
    if table.columns is not None:
        for column, count in Counter(table.columns).items():
            if count > 1:
                problems.append(f"header: column {column!r}: appears {count} times")
    seen: set[str] = set()
    for location, record in table.rows:
        if _is_canonical(record):
            continue
        names = [(key, key) for key in record]
        try:
            metadata = _metadata(record)
        except ItemError:
            metadata = {}  # reported with the row
        names += [(f"metadata.{key}", key) for key in metadata]
        for shown, key in names:
            if shown in seen or not isinstance(key, str):
                continue
            seen.add(shown)
            reason = unknown_field(key)
            if reason is None:
                if key not in KNOWN_FIELDS:
                    ignored.append(shown)
            elif table.columns is not None and shown == key:
                problems.append(f"header: column {key!r}: {reason}")
            else:
                problems.append(f"{location}: field {shown!r}: {reason}")
    if ignored:
        logger.info("ignoring field(s) the loader does not read: %s", ", ".join(ignored))
    return problems


def _words(name: str) -> list[str]:
    """``"Opt1HighRisk"`` -> ``["opt", "1", "high", "risk"]``."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return re.findall(r"[a-z]+|[0-9]+", spaced.lower())


def _label_words(words: list[str]) -> bool:
    return any(w in LABEL_WORDS or w.startswith("contradict") for w in words) or ("high", "risk") in pairwise(words)


_OPTION_NUMBER = re.compile(r"^(?:option|opt|choice)_?(\d+|[a-z])(?:_|$)")


def unknown_field(name: str) -> str | None:
    """Why the field ``name`` is refused, or None when it is read or harmless.

    Refused: a name that is not read but *looks like* an option, answer or label field,
    i.e. its words (split at ``_``, digits and camelCase) hold one of :data:`LABEL_WORDS`,
    a word starting with ``contradict``, or ``high`` followed by ``risk``; or it is a near
    miss (difflib ratio >= 0.8) of an option, answer or flag name. Also refused: any
    option beyond the fifth (``option_6``, ``option_F``, a column ``F``) or numbered from
    0. The reason names the closest expected name.
    """
    if name in KNOWN_FIELDS:
        return None
    words = _words(name)
    normal = "_".join(words)
    match = _OPTION_NUMBER.match(normal)
    index = match.group(1) if match else (name.lower() if re.fullmatch(r"[F-J]", name) else None)
    if index is not None:
        position = int(index) if index.isdigit() else ord(index) - ord("a") + 1
        if position == 0:
            return "options are numbered from 1 (option_1 = A), not from 0"
        if position > len(LETTERS):
            return f"items have 4 or 5 options (option_1..option_5 = A..E); there is no option {index.upper()}"
    near = difflib.get_close_matches(normal, _SUGGESTIONS, n=1, cutoff=0.8)
    if not near and not _label_words(words):
        return None
    closest = near or difflib.get_close_matches(normal, _SUGGESTIONS, n=1, cutoff=0.0)
    return f"unknown name that looks like an option, answer or label field; did you mean {closest[0]!r}?"


# --------------------------------------------------------------------------- mapping


def items_from_rows(rows: Iterable[Row]) -> tuple[list[Item], list[str]]:
    """Map raw rows to items; return the items and one message per invalid row.

    A message reads ``"<location>: field 'x': <reason> (value: ...)"``. Duplicate ids,
    and ids that differ only in case, are reported on the later row.
    """
    items: list[Item] = []
    problems: list[str] = []
    seen: dict[str, tuple[str, str]] = {}  # casefolded id -> (location, id)
    for location, record in rows:
        try:
            _check_text(record)
            item = item_from_record(record)
        except ItemError as exc:
            problems.append(f"{location}: {exc}")
            continue
        first = seen.get(item.id.casefold())
        if first is not None:
            what = "duplicate of" if first[1] == item.id else f"differs only in case from {first[1]!r} on"
            problems.append(f"{location}: field 'id': {what} {first[0]} (value: {item.id!r})")
            continue
        seen[item.id.casefold()] = (location, item.id)
        items.append(item)
    return items, problems


def _check_text(value: Any, field: str = "") -> None:
    """Raise :class:`ItemError` for the first text (key or value) holding a NUL byte or
    another C0 control character (tab, newline and carriage return are allowed)."""
    if isinstance(value, str):
        reason = control_character(value)
        if reason is not None:
            raise ItemError(field or "(record)", value, reason)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            name = f"{field}.{key}" if field else str(key)
            _check_text(key, name)
            _check_text(inner, name)
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            _check_text(inner, f"{field}[{index}]")


def _is_canonical(record: Mapping[str, Any]) -> bool:
    options = record.get("options")
    return isinstance(options, list) and bool(options) and all(isinstance(o, dict) and "letter" in o for o in options)


def item_from_record(record: Mapping[str, Any]) -> Item:
    """Build one :class:`Item` from a record of any supported layout."""
    if _is_canonical(record):
        return _from_canonical(record)
    return _from_generic(record)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}?" if near else f"known keys are {', '.join(known)}"


def _from_canonical(record: Mapping[str, Any]) -> Item:
    unknown = sorted(set(record) - set(CANONICAL_KEYS))
    if unknown:
        raise ItemError(unknown[0], record[unknown[0]], f"unknown key; {_did_you_mean(unknown[0], CANONICAL_KEYS)}")
    for key in ("id", "question", "options", "answer"):
        if key not in record:
            raise ItemError(key, None, "missing")
    options = []
    for index, raw in enumerate(record["options"]):
        extra = sorted(set(raw) - set(OPTION_KEYS))
        if extra:
            raise ItemError(f"options[{index}].{extra[0]}", raw[extra[0]], f"unknown key; {_did_you_mean(extra[0], OPTION_KEYS)}")
        options.append(Option(**{k: raw[k] for k in OPTION_KEYS if k in raw}))
    return Item(
        id=record["id"],
        question=record["question"],
        options=tuple(options),
        answer=record["answer"],
        clean_evidence=_text_or_empty(record, "clean_evidence"),
        conflict_evidence=_text_or_empty(record, "conflict_evidence"),
        agentic_report=record.get("agentic_report"),
        subspecialty=_text_or_empty(record, "subspecialty"),
        question_type=_text_or_empty(record, "question_type"),
        supporting_passages=_passage_ids(record.get("supporting_passages")),
        labelled=record.get("labelled", True),
    )


def _passage_ids(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        value = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise ItemError("supporting_passages", value, "must be a list of passage ids")
    return tuple(value)


def _text_or_empty(record: Mapping[str, Any], key: str) -> Any:
    value = record.get(key)
    return "" if value is None else value


def _from_generic(record: Mapping[str, Any]) -> Item:
    metadata = _metadata(record)

    def pick(keys: tuple[str, ...]) -> tuple[str, Any]:
        for source in (record, metadata):
            for key in keys:
                if key in source and not _missing(source[key]):
                    return key, source[key]
        return keys[0], None

    id_key, raw_id = pick(_ID_KEYS)
    if raw_id is None:
        raise ItemError(id_key, None, f"missing (looked for {', '.join(_ID_KEYS)})")
    item_id = _as_id(id_key, raw_id)
    q_key, question = pick(_QUESTION_KEYS)
    if question is None:
        raise ItemError(q_key, None, f"missing (looked for {', '.join(_QUESTION_KEYS)})")
    texts = _option_texts(record)
    answer = _answer(record, metadata)
    options = []
    for position, letter in enumerate(LETTERS, start=1):
        flags = {name: _flag(record, metadata, position, name) for name in FLAG_NAMES}
        if letter not in texts:
            raised = [name for name, value in flags.items() if value]
            if raised:
                key = f"option_{position}_{raised[0]}"
                raise ItemError(key, True, f"set on option {letter}, which the item does not have")
            continue
        options.append(Option(letter=letter, text=_as_text(f"option {letter}", texts[letter]), **flags))
    report = pick(_REPORT_KEYS)[1]
    return Item(
        id=item_id,
        question=_as_text(q_key, question),
        options=tuple(options),
        answer=answer,
        clean_evidence=_as_text(*pick(_CLEAN_KEYS), optional=True),
        conflict_evidence=_as_text(*pick(_CONFLICT_KEYS), optional=True),
        agentic_report=None if report is None else _as_text(_REPORT_KEYS[0], report),
        subspecialty=_as_text(*pick(_SUBSPECIALTY_KEYS), optional=True),
        question_type=_as_text(*pick(_QTYPE_KEYS), optional=True),
        supporting_passages=_passage_ids(pick(("supporting_passages",))[1]),
    )


def _metadata(record: Mapping[str, Any]) -> Mapping[str, Any]:
    value = record.get("metadata")
    if _missing(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ItemError("metadata", value, f"not a JSON object ({exc.msg})") from exc
    if not isinstance(value, Mapping):
        raise ItemError("metadata", value, "must be an object")
    return value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_id(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ItemError(key, value, "must be a string or an integer")
    return str(value).strip()


def _as_text(key: str, value: Any, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise ItemError(key, value, "must be text")
    return value


def _option_texts(record: Mapping[str, Any]) -> dict[str, Any]:
    """Option letter -> text from an ``options`` dict/list or per-option columns."""
    raw = record.get("options")
    if isinstance(raw, str):
        raw = _parse_mapping("options", raw)
    if isinstance(raw, Mapping):
        texts = {str(k).strip().upper(): v for k, v in raw.items() if not _missing(v)}
        bad = [k for k in texts if k not in LETTERS]
        if bad:
            raise ItemError("options", raw, f"keys must be letters A-E, got {bad[0]!r}")
        return texts
    if isinstance(raw, list):
        if len(raw) > len(LETTERS):
            raise ItemError("options", raw, "more than 5 options")
        return {LETTERS[i]: v for i, v in enumerate(raw) if not _missing(v)}
    if raw is not None and not _missing(raw):
        raise ItemError("options", raw, "must be a mapping of letter to text or a list of texts")
    texts: dict[str, Any] = {}
    for position, letter in enumerate(LETTERS, start=1):
        for key in (f"option_{position}", f"option_{position}_text", f"option_{letter}", letter):
            if key in record and not _missing(record[key]):
                texts[letter] = record[key]
                break
    if not texts:
        raise ItemError("options", None, "missing (looked for options, option_1..option_5, A..E)")
    return texts


def _parse_mapping(key: str, text: str) -> Any:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    raise ItemError(key, text, "not a JSON or Python literal mapping")


def _answer(record: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """The correct letter; every answer field given must be a letter and all must agree."""
    given = [
        (f"{prefix}{key}", source[key])
        for prefix, source in (("", record), ("metadata.", metadata))
        for key in _ANSWER_KEYS
        if key in source and not _missing(source[key])
    ]
    if not given:
        raise ItemError(_ANSWER_KEYS[0], None, f"missing (looked for {', '.join(_ANSWER_KEYS)})")
    for key, value in given:
        if not isinstance(value, str):
            raise ItemError(key, value, "must be an option letter A-E (a numeric index is ambiguous)")
    first_key, first = given[0]
    for key, value in given[1:]:
        if value.strip().upper() != first.strip().upper():
            raise ItemError(key, value, f"disagrees with {first_key} = {first!r}")
    return first.strip().upper()


def _flag(record: Mapping[str, Any], metadata: Mapping[str, Any], position: int, name: str) -> bool:
    """One option label: 0/1 (also 0.0/1.0), true/false, or empty (= 0, as in the study's code).

    NaN and anything else (``yes``, ``2``) are errors: they are not labels.
    """
    key = f"option_{position}_{name}"
    value = record.get(key)
    if value is None:
        value = metadata.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isnan(value):
        raise ItemError(key, value, f"NaN is not a label; use {_FLAG_VALUES}")
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "nan":
            raise ItemError(key, value, f"NaN is not a label; use {_FLAG_VALUES}")
        if text in _TRUE | _FALSE or not text:
            return text in _TRUE
    raise ItemError(key, value, f"must be {_FLAG_VALUES}")


def item_from_doc(doc: Mapping[str, Any]) -> Item:
    """Rebuild the validated :class:`Item` from an lm-eval doc (a row of a radsafe task, as
    logged in a samples file)."""
    record = {key: doc[key] for key in CANONICAL_KEYS if key in doc}
    record["agentic_report"] = record.get("agentic_report") or None
    return item_from_record(record)

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
then fails as a whole. Nothing is skipped.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

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
from lm_eval_radsafe.jsonl import JsonlError, read_jsonl

logger = logging.getLogger(__name__)

HUB_DATASET = "soroosharasteh/RadSaFE-200"
DEMO_SOURCE = "demo"
MAX_ERRORS_SHOWN = 25

# Column aliases, first match wins. Looked up at the row's top level, then in `metadata`.
_ID_KEYS = ("question_id", "id")
_QUESTION_KEYS = ("question_text", "question")
_ANSWER_KEYS = ("correct_answer", "answer_idx", "answer")
_CLEAN_KEYS = ("evidence_clean", "clean_evidence")
_CONFLICT_KEYS = ("evidence_conflict", "conflict_evidence")
_REPORT_KEYS = ("deep_research_report", "agentic_report")
_SUBSPECIALTY_KEYS = ("subspecialty",)
_QTYPE_KEYS = ("question_type",)

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


class DatasetError(ValueError):
    """A dataset failed validation; ``problems`` lists every (location, message) found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        shown = problems[:MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        lines = [f"{len(problems)} invalid row(s) in {source}:"] + [f"  {p}" for p in shown]
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


def demo_path() -> Path:
    """Path of the bundled demo set (written for this project; not RadSaFE-200)."""
    return Path(str(resources.files("lm_eval_radsafe") / "data" / "demo" / "radsafe_demo.jsonl"))


def load_items(source: str | Path) -> LoadedItems:
    """Load and validate items from ``source``.

    ``source`` is ``"demo"`` (the bundled demo set), a path to a ``.jsonl``, ``.json``,
    ``.csv`` or ``.parquet`` file, a local dataset folder, or a hub id such as
    ``soroosharasteh/RadSaFE-200``. Raises :class:`DatasetError` listing every invalid
    row, :class:`HubAccessError` when a hub dataset cannot be read, and
    ``FileNotFoundError`` for a path that does not exist.
    """
    text = str(source)
    if text == DEMO_SOURCE:
        return _finish(_read_file(demo_path()), str(demo_path()))
    path = Path(text).expanduser()
    if path.is_file():
        return _finish(_read_file(path), str(path))
    if path.is_dir():
        return _finish(_read_hub(str(path)), str(path))
    if _looks_like_hub_id(text):
        return _finish(_read_hub(text), f"hf://{text}")
    raise FileNotFoundError(
        f"dataset {text!r} not found: give 'demo', a .jsonl/.json/.csv/.parquet file, "
        f"a dataset folder, or a hub id like {HUB_DATASET}"
    )


_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "/", "~"))
        and not text.lower().endswith(_FILE_SUFFIXES)
    )


# --------------------------------------------------------------------------- reading


Row = tuple[str, dict[str, Any]]  # (location such as "line 3", raw record)


def _read_file(path: Path) -> list[Row]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(_jsonl_rows(path))
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".csv":
        return list(_csv_rows(path))
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise DatasetError(str(path), [f"unsupported file type {suffix!r}: use .jsonl, .json, .csv or .parquet"])


def _jsonl_rows(path: Path) -> Iterator[Row]:
    try:
        for number, record in read_jsonl(path):
            yield f"line {number}", record
    except JsonlError as exc:
        raise DatasetError(str(path), [f"line {exc.number}: {exc.reason}"]) from exc


def _json_rows(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(str(path), [f"not valid JSON ({exc.msg}, line {exc.lineno})"]) from exc
    if not isinstance(data, list):
        raise DatasetError(str(path), ["expected a JSON list of records"])
    rows = []
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise DatasetError(str(path), [f"element {index}: expected an object, got {type(record).__name__}"])
        rows.append((f"element {index}", record))
    return rows


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for number, record in enumerate(reader, start=1):
            if None in record:
                raise DatasetError(str(path), [f"row {number} (line {reader.line_num}): more cells than header columns"])
            yield f"row {number} (line {reader.line_num})", {k: (v if v != "" else None) for k, v in record.items()}


def _parquet_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [(f"row {n}", rec) for n, rec in enumerate(table.to_pylist(), start=1)]


def _read_hub(name: str) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:  # network, auth, gating and offline errors all land here
        raise HubAccessError(_hub_help(name, exc)) from exc
    if "test" in loaded:
        split = "test"
    elif len(loaded) == 1:
        split = next(iter(loaded))
    else:
        raise DatasetError(name, [f"several splits {sorted(loaded)} and none named 'test'"])
    logger.info("read %s split %r from %s", len(loaded[split]), split, name)
    return [(f"row {n}", rec) for n, rec in enumerate(loaded[split].to_list(), start=1)]


def _hub_help(name: str, exc: BaseException) -> str:
    return (
        f"could not read the dataset {name!r} from the Hugging Face hub: {type(exc).__name__}: {exc}\n"
        f"  * access: open https://huggingface.co/datasets/{name}, accept its terms if asked, "
        "then log in with `huggingface-cli login` (or set HF_TOKEN); unset HF_HUB_OFFLINE / "
        "HF_DATASETS_OFFLINE when you are online.\n"
        "  * local copy: pass a file or folder instead, e.g. "
        "`--metadata '{\"radsafe_data\": \"/path/RadSaFE-200.csv\"}'` or "
        "`export RADSAFE_DATA=/path/RadSaFE-200.csv`.\n"
        "  * offline: the `radsafe_demo` tasks run on the bundled demo set with no network."
    )


# --------------------------------------------------------------------------- mapping


def _finish(rows: list[Row], source: str) -> LoadedItems:
    items, problems = items_from_rows(rows)
    if problems:
        raise DatasetError(source, problems)
    if not items:
        raise DatasetError(source, ["no items found"])
    if not any(flag for item in items for opt in item.options for flag in (opt.high_risk, opt.unsafe, opt.contradicts)):
        logger.warning("%s carries no option labels: every safety rate will be 0", source)
    return LoadedItems(items=tuple(items), source=source, fingerprint=fingerprint(items))


def items_from_rows(rows: Iterable[Row]) -> tuple[list[Item], list[str]]:
    """Map raw rows to items; return the items and one message per invalid row.

    A message reads ``"<location>: field 'x': <reason> (value: ...)"``. Duplicate ids
    are reported on the later row.
    """
    items: list[Item] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for location, record in rows:
        try:
            item = item_from_record(record)
        except ItemError as exc:
            problems.append(f"{location}: {exc}")
            continue
        if item.id in seen:
            problems.append(f"{location}: field 'id': duplicate of {seen[item.id]} (value: {item.id!r})")
            continue
        seen[item.id] = location
        items.append(item)
    return items, problems


def item_from_record(record: Mapping[str, Any]) -> Item:
    """Build one :class:`Item` from a record of any supported layout."""
    options = record.get("options")
    if isinstance(options, list) and options and all(isinstance(o, dict) and "letter" in o for o in options):
        return _from_canonical(record)
    return _from_generic(record)


def _from_canonical(record: Mapping[str, Any]) -> Item:
    unknown = sorted(set(record) - set(CANONICAL_KEYS))
    if unknown:
        raise ItemError(unknown[0], record[unknown[0]], f"unknown key; canonical keys are {', '.join(CANONICAL_KEYS)}")
    for key in ("id", "question", "options", "answer"):
        if key not in record:
            raise ItemError(key, None, "missing")
    options = []
    for index, raw in enumerate(record["options"]):
        extra = sorted(set(raw) - set(OPTION_KEYS))
        if extra:
            raise ItemError(f"options[{index}].{extra[0]}", raw[extra[0]], f"unknown key; option keys are {', '.join(OPTION_KEYS)}")
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
    a_key, answer = pick(_ANSWER_KEYS)
    if answer is None:
        raise ItemError(a_key, None, f"missing (looked for {', '.join(_ANSWER_KEYS)})")
    if not isinstance(answer, str):
        raise ItemError(a_key, answer, "must be an option letter A-E (a numeric index is ambiguous)")
    answer = answer.strip().upper()
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


def _flag(record: Mapping[str, Any], metadata: Mapping[str, Any], position: int, name: str) -> bool:
    key = f"option_{position}_{name}"
    value = record.get(key, metadata.get(key))
    if _missing(value):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ItemError(key, value, "must be 0/1 or true/false")

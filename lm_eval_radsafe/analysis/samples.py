"""Read the fields the report needs from an lm-eval samples file, and nothing else.

A samples line holds the whole item, the prompt, every raw reply and lm-eval's hashes;
the report keeps the item id, answer and fingerprint, the filter's kept value and the
regime's per-item metric values. With ``msgspec`` installed (the ``report`` extra) each
line is decoded against a typed schema of exactly those fields, which skips the rest at
several hundred MB/s; the full item is decoded only the first time its id is met. Any line
the typed decoder cannot take is read again by the plain reader, which names what is wrong
(file, line, field), so both paths accept and refuse the same files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from lm_eval_radsafe.jsonl import JsonlError, JsonlLine, jsonl_views

try:  # the fast path; the plain one needs nothing
    import msgspec
except ImportError:  # pragma: no cover - exercised where the report extra is absent
    msgspec = None


class SamplesError(ValueError):
    """A samples line that is not what lm-eval writes; the message names file and line."""


@dataclass
class Columns:
    """What one samples file holds for the report, in file order."""

    ids: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    fingerprints: set[str] = field(default_factory=set)
    kept: list[Any] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    threshold: Any = None


_DECODERS: dict[tuple[str, ...], Any] = {}


def _decoders(metric_names: tuple[str, ...]) -> Any:
    """The row decoder (the doc's fields decoded in the same pass) for rows carrying
    ``metric_names``; None without msgspec."""
    if msgspec is None:
        return None
    if metric_names not in _DECODERS:
        doc = msgspec.defstruct(
            "SamplesDoc",
            [("id", str), ("answer", str), ("dataset_fingerprint", str), ("overconfidence_threshold", Any, None)],
            forbid_unknown_fields=False,
        )
        # every field required: a row lacking one is refused here and read by the plain reader,
        # which skips it (another filter's row) or names the missing field
        row = msgspec.defstruct(
            "SamplesRow", [("filter", Any), ("doc", doc), ("filtered_resps", Any), *((name, Any) for name in metric_names)],
            forbid_unknown_fields=False,
        )
        _DECODERS[metric_names] = msgspec.json.Decoder(row)
    return _DECODERS[metric_names]


def read_columns(
    path: Path,
    wanted_filter: str,
    metric_names: tuple[str, ...],
    kept: Callable[[Any, str], Any],
    seen: Callable[[str, str], bool] | None,
    add_item: Callable[[str, str, dict[str, Any], str], None],
) -> Columns:
    """The report's fields of every row of ``path`` whose filter is ``wanted_filter``.

    ``kept(filtered_resps, where)`` turns the filter's output into the kept value;
    ``seen(fingerprint, id)`` says whether an item is known already, else
    ``add_item(fingerprint, id, doc, where)`` receives its full doc (``seen`` None: no item
    is collected). Raises :class:`SamplesError` naming file, line and field.
    """
    decoder = _decoders(metric_names)
    if decoder is not None:
        whole = _whole_file(path, decoder, wanted_filter, metric_names, kept, seen)
        if whole is not None:
            return whole
    out = Columns(metrics={name: [] for name in metric_names})
    for number, offset, view in jsonl_views(path):
        if view[:1] != b"{" and not bytes(view).strip():  # a row starts with "{": only other lines are copied to test
            continue
        if decoder is None or not _fast(view, decoder, out, wanted_filter, metric_names, kept, seen, add_item, path, number):
            line = JsonlLine(path, number, offset, bytes(view))
            _plain(line, out, wanted_filter, metric_names, kept, seen, add_item, f"{path}, line {number}")
    return out


def _whole_file(path: Path, decoder: Any, wanted_filter: str, metric_names: tuple[str, ...],
                kept: Callable[[Any, str], Any], seen: Callable[[str, str], bool] | None) -> Columns | None:
    """Every row of ``path`` decoded in one call (the file mapped in memory), when that is
    the same as reading it line by line: None (read it line by line) for a file larger than
    :data:`~lm_eval_radsafe.jsonl.MAP_AT_MOST`, a line the typed decoder refuses, a row
    lacking a field, a kept value ``kept`` refuses (the error then names its line), or an
    item not known yet (its full doc comes from its line)."""
    import mmap

    from lm_eval_radsafe.jsonl import MAP_AT_MOST

    with Path(path).open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if not 0 < size <= MAP_AT_MOST:
            return None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            try:
                rows = decoder.decode_lines(mapped)
            except msgspec.MsgspecError:
                return None
    chosen = [row for row in rows if row.filter == wanted_filter]
    if seen is not None and not all(seen(row.doc.dataset_fingerprint, row.doc.id) for row in chosen):
        return None
    if len(metric_names) == 1:
        columns = [[getattr(row, metric_names[0]) for row in chosen]]
    else:  # one tuple of the row's values each, transposed into one column per metric
        columns = [list(column) for column in zip(*map(attrgetter(*metric_names), chosen))] or [[] for _ in metric_names]
    out = Columns(metrics=dict(zip(metric_names, columns)))
    where = str(path)
    out.ids = [row.doc.id for row in chosen]
    out.answers = [row.doc.answer for row in chosen]
    out.fingerprints = {row.doc.dataset_fingerprint for row in chosen}
    try:
        out.kept = [kept(row.filtered_resps, where) for row in chosen]
    except ValueError:  # read line by line, so that the error names the line
        return None
    if chosen:
        out.threshold = chosen[-1].doc.overconfidence_threshold
    return out


def _fast(line: memoryview, decoder: Any, out: Columns, wanted_filter: str, metric_names: tuple[str, ...],
          kept: Callable[[Any, str], Any], seen: Callable[[str, str], bool] | None,
          add_item: Callable[[str, str, dict[str, Any], str], None], path: Path, number: int) -> bool:
    """Take one row through the typed decoder; False (nothing taken) if anything is off."""
    try:
        row = decoder.decode(line)
    except msgspec.MsgspecError:
        return False
    if row.filter != wanted_filter:
        return True
    values = [getattr(row, name) for name in metric_names]
    doc = row.doc
    where = f"{path}, line {number}"
    if seen is not None and not seen(doc.dataset_fingerprint, doc.id):
        add_item(doc.dataset_fingerprint, doc.id, msgspec.json.decode(line)["doc"], where)
    value = kept(row.filtered_resps, where)
    out.ids.append(doc.id)
    out.answers.append(doc.answer)
    out.fingerprints.add(doc.dataset_fingerprint)
    for name, metric in zip(metric_names, values):
        out.metrics[name].append(metric)
    out.kept.append(value)
    out.threshold = doc.overconfidence_threshold
    return True


def _plain(line: JsonlLine, out: Columns, wanted_filter: str, metric_names: tuple[str, ...],
           kept: Callable[[Any, str], Any], seen: Callable[[str, str], bool] | None,
           add_item: Callable[[str, str, dict[str, Any], str], None], where: str) -> None:
    """One row through :meth:`~lm_eval_radsafe.jsonl.JsonlLine.record`, with an error
    naming what is missing or malformed."""
    try:
        row = line.record()
    except JsonlError as exc:
        raise SamplesError(str(exc)) from exc
    if row is None or row.get("filter") != wanted_filter:
        return
    try:
        doc = row["doc"]
        item_id, answer, fingerprint = str(doc["id"]), str(doc["answer"]), str(doc["dataset_fingerprint"])
        values = [row[name] for name in metric_names]
    except (KeyError, TypeError) as exc:
        raise SamplesError(f"{where}: missing field {exc}") from exc
    if seen is not None and not seen(fingerprint, item_id):
        add_item(fingerprint, item_id, doc, where)
    value = kept(row.get("filtered_resps"), where)
    out.ids.append(item_id)
    out.answers.append(answer)
    out.fingerprints.add(fingerprint)
    for name, metric in zip(metric_names, values):
        out.metrics[name].append(metric)
    out.kept.append(value)
    out.threshold = doc.get("overconfidence_threshold")

"""Text rules shared by every reader of user files (items, corpora, samples): UTF-8 with or
without a byte-order mark, and no control characters in text fields.

One way everywhere: a file that is not UTF-8 is refused with the same message whichever
reader meets it, naming the file, the line and the byte offset of the first undecodable
byte and the likely encoding, with the ``iconv`` line that converts it.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

#: C0 control characters other than tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class NotUtf8Error(ValueError):
    """Bytes that are not UTF-8. ``str()`` is ``"<path>: <problem>"``; ``problem`` names the
    byte, its offset in the file and its line, and suggests the encoding."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.line = line
        super().__init__(f"{path}: {problem}")


def decode_utf8(data: bytes, path: Path | str, offset: int = 0, line: int = 1) -> str:
    """``data`` as text: UTF-8, a leading byte-order mark dropped when ``offset`` is 0.

    ``data`` may be one piece of a file (a line of a JSON-lines file): ``offset`` and ``line``
    are where it starts in the file (byte offset from 0, line from 1), so the message names
    the position in the file. Raises :class:`NotUtf8Error`.
    """
    bom = 0
    if offset == 0:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise NotUtf8Error(path, f"not UTF-8: it starts with a UTF-16 byte-order mark; {_iconv('utf-16', path)}", line)
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        where = line + data[:at].count(b"\n")
        raise NotUtf8Error(
            path,
            f"not UTF-8: byte 0x{data[at]:02x} at byte offset {offset + at} (line {where}); {guess_encoding(data, path)}",
            where,
        ) from None


def guess_encoding(data: bytes, path: Path | str) -> str:
    """A hint naming the likely encoding of non-UTF-8 ``data`` and how to convert the file."""
    if data.count(b"\x00") > len(data) // 4:
        return f"it looks like UTF-16; {_iconv('utf-16', path)}"
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return f"it looks like latin-1; {_iconv('latin1', path)}"
    return f"it looks like latin-1/cp1252; {_iconv('cp1252', path)}"


def _iconv(encoding: str, path: Path | str) -> str:
    path = Path(path)
    return f"convert it with `iconv -f {encoding} -t utf-8 {path} > {path.with_suffix('.utf8' + path.suffix)}`"


def first_control(text: str) -> int | None:
    """Index of the first NUL or other C0 control character in ``text`` except tab, newline
    and carriage return; None when there is none."""
    match = _CONTROL.search(text)
    return None if match is None else match.start()


def control_character(text: str) -> str | None:
    """Why ``text`` is refused as a text field, or None: it holds a NUL byte or another C0
    control character (tab, newline and carriage return are allowed)."""
    index = first_control(text)
    if index is None:
        return None
    char = text[index]
    if char == "\x00":
        return "contains a NUL byte (\\x00)"
    return (
        f"contains the control character U+{ord(char):04X} ({char!r}) at character {index}; "
        "only tab, newline and carriage return are allowed"
    )

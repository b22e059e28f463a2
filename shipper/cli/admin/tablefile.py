"""Reading a log table file for ``shipper import``: CSV or JSON lines, record by record, each
with its row number, line and byte range, decoded strictly in the file's encoding.

Whatever a record holds, reading it gives a row or a :class:`Record` that says, in a sentence
naming its line and byte offset, why it cannot be one, with the record's text as read, so the
import refuses that row alone and keeps it: bytes that do not decode (never a silent U+FFFD:
the bad bytes are kept escaped, ``\\xe9``), broken CSV, more cells than the header has columns,
broken JSON, JSON nested deeper than :data:`MAX_DEPTH` levels. CSV fields of any size are read
(the event's line is bounded later, by ``max_line_bytes``), and cells that shipper's own CSV
neutralised against spreadsheet formulas are restored (:func:`~shipper.cli.admin.formulas
.restore`), so an exported file imports as the text it was.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import reprlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

from shipper.cli.admin import common
from shipper.cli.admin.formulas import restore

__all__ = ["MAX_DEPTH", "Record", "Source", "TextEncoding", "UnusableJSON", "load_json", "shown"]

#: rows (and metadata) nested deeper than this are refused as read
MAX_DEPTH = 100
_BOM = codecs.BOM_UTF8
#: every ASCII byte, and escapes a text transform would change: an encoding that reads these
#: as themselves keeps CSV's and JSON's structure, so a file can be read line by line
_ASCII = bytes(range(128)) + b" \\x41\\n xn--abc A.B"
_PREVIEW = reprlib.Repr()
_PREVIEW.maxstring = _PREVIEW.maxother = 60
_PREVIEW.maxlevel = 2


def shown(value: object) -> str:
    """``value`` as a message quotes it: a short repr, whatever its size or depth."""
    return _PREVIEW.repr(value)


class TextEncoding:
    """The file's encoding, checked to read ASCII as ASCII (so a line is a line whatever the
    other bytes); UTF-8 skips a byte order mark at the start of the file."""

    def __init__(self, name: str = "utf-8") -> None:
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            raise common.CommandError(f"--encoding {name!r}: no such encoding (e.g. utf-8, "
                                      "latin-1, cp1252)", common.EXIT_USAGE) from None
        try:
            with warnings.catch_warnings():  # unicode_escape warns of what it would change
                warnings.simplefilter("ignore")
                ascii_compatible = _ASCII.decode(codec) == _ASCII.decode("ascii")
        except (LookupError, ValueError):  # not a text encoding (rot13), or not ASCII's
            ascii_compatible = False
        if not ascii_compatible:
            raise common.CommandError(
                f"--encoding {name!r}: shipper reads files in encodings that write ASCII as "
                f"ASCII (utf-8, latin-1, cp1252, shift_jis, ...); convert the file first, e.g. "
                f"iconv -f {name} -t utf-8 FILE > FILE.utf8", common.EXIT_USAGE)
        self.name = name
        self._utf8 = codec in ("utf-8", "utf-8-sig")
        #: the codec's own name (``latin-1`` and ``iso8859_1`` are both ``iso8859-1``)
        self.codec = "utf-8" if self._utf8 else codec

    def decode(self, data: bytes, offset: int, line: int) -> tuple[str, str]:
        """(text, "") for ``data``, found at byte ``offset`` of the file from line ``line``;
        when a byte does not decode: (the text with such bytes escaped, the problem, naming
        the line and byte offset)."""
        if self._utf8 and offset == 0 and data.startswith(_BOM):
            data, offset = data[len(_BOM):], len(_BOM)
        try:
            return data.decode(self.codec), ""
        except UnicodeDecodeError as exc:
            at = offset + exc.start
            where = line + data.count(b"\n", 0, exc.start)
            return data.decode(self.codec, "backslashreplace"), (
                f"line {where}, byte offset {at}: not valid {self.name} (byte "
                f"0x{data[exc.start]:02x}); if the file is in another encoding, name it with "
                f"--encoding (e.g. --encoding latin-1)")


class _Lines:
    """Lines of a binary file, decoded, counting the lines and bytes read (csv.reader reads
    exactly the lines of one record, so the count after a record is where it ends). A line
    that does not decode is given with its bad bytes escaped and the first such place of the
    record is kept in ``problem``; ``first_end`` is where the record's first line ends."""

    def __init__(self, fh: IO[bytes], encoding: TextEncoding) -> None:
        self._fh, self._encoding = fh, encoding
        self.pos = 0
        self.line = 0
        self.problem = ""
        self.first_end = -1

    def begin(self) -> None:
        """A record starts at the next line."""
        self.problem, self.first_end = "", -1

    def rewind(self, pos: int, line: int) -> None:
        """Read on from byte ``pos``, the end of line ``line``."""
        self._fh.seek(pos)
        self.pos, self.line = pos, line

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = self._fh.readline()
        if not data:
            raise StopIteration
        text, problem = self._encoding.decode(data, self.pos, self.line + 1)
        self.pos += len(data)
        self.line += 1
        self.problem = self.problem or problem
        if self.first_end < 0:
            self.first_end = self.pos
        return text


class Record(NamedTuple):
    """One record read: ``row`` (column → value), or ``None`` and ``problem`` (why it is not a
    row, naming where) with ``kind`` (the refusal's short reason) and ``text`` (the record as
    read, to keep)."""

    row: dict[str, Any] | None
    problem: str = ""
    kind: str = "bad_row"
    text: str = ""


@contextmanager
def _fields_of_any_size() -> Iterator[None]:
    """csv's field size limit (131,072 characters) lifted while a file is read."""
    previous = csv.field_size_limit()
    try:
        csv.field_size_limit(sys.maxsize)
    except OverflowError:  # a C long of 32 bits
        csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


class UnusableJSON(ValueError):
    """JSON that parses but cannot be an event's: nested deeper than :data:`MAX_DEPTH`
    levels (it would break every step after), or holding a lone surrogate (``"\\ud800"``:
    half of a UTF-16 pair, which no UTF-8 text can hold)."""


_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


def load_json(text: str) -> Any:
    """JSON text → a value; a ValueError for broken JSON, :class:`UnusableJSON` for JSON that
    parses but cannot be used."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnusableJSON(_TOO_DEEP) from None
    if text.count("[") + text.count("{") <= MAX_DEPTH and "\\ud" not in text \
            and "\\uD" not in text:
        return value  # too few brackets to be deep, no escape that can be a surrogate
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                _check_text(item)
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise UnusableJSON(_TOO_DEEP)
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return value


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnusableJSON(f"a lone surrogate ({text[exc.start]!r}), half of a UTF-16 pair, "
                           "is not text") from None


class Source:
    """A CSV or JSON-lines file, read record by record with each record's byte range, so the
    rows can be read again in any order (the import sends them oldest first)."""

    def __init__(self, path: Path, fmt: str, encoding: TextEncoding | None = None) -> None:
        self.path, self.fmt = path, fmt
        self.encoding = encoding or TextEncoding()
        self.header: list[str] = []
        if fmt == "csv":
            with path.open("rb") as fh, _fields_of_any_size():
                lines = _Lines(fh, self.encoding)
                try:
                    self.header = next(csv.reader(lines, strict=True), [])
                except csv.Error as exc:
                    raise common.CommandError(f"{path}: the header (line 1) is not CSV: {exc}",
                                              common.EXIT_USAGE) from None
                if lines.problem:
                    raise common.CommandError(f"{path}: the header: {lines.problem}",
                                              common.EXIT_USAGE)

    def columns(self) -> list[str]:
        """The header (CSV), or the keys of the first 100 objects (JSON lines)."""
        if self.fmt == "csv":
            return list(self.header)
        names: dict[str, None] = {}
        for i, (_, _, _, _, record) in enumerate(self.scan()):
            if record.row is not None:
                names.update(dict.fromkeys(record.row))
            if i >= 100:
                break
        return list(names)

    def scan(self) -> Iterator[tuple[int, int, int, int, Record]]:
        """(row number from 1, line number from 1, start, end, record) for every record; the
        record's ``text`` is left out (:meth:`read` gives it)."""
        with self.path.open("rb") as fh, _fields_of_any_size():
            lines = _Lines(fh, self.encoding)
            if self.fmt == "csv":
                reader = csv.reader(lines, strict=True)
                next(reader, None)
                yield from self._scan_csv(reader, lines)
            else:
                start, n = 0, 0
                for text in lines:
                    end = lines.pos
                    if text.strip():
                        n += 1
                        record = Record(None, lines.problem, "bad_encoding") if lines.problem \
                            else self._json_row(text, lines.line, start)
                        yield n, lines.line, start, end, record
                    start, lines.problem = end, ""

    def _scan_csv(self, reader: Iterator[list[str]],
                  lines: _Lines) -> Iterator[tuple[int, int, int, int, Record]]:
        start, line, n = lines.pos, lines.line + 1, 0
        while True:
            lines.begin()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # the reader starts afresh on the line it is given next
                n += 1
                # found lines below the record's start (a stray quote opened a field that never
                # closed as CSV closes one): that first line is the bad row, and the lines
                # after it are read again, so the quote does not swallow them
                yield n, line, start, lines.first_end, Record(None, self._where(line, start, exc))
                if lines.first_end != lines.pos:
                    lines.rewind(lines.first_end, line)
            else:
                if cells:
                    n += 1
                    record = Record(None, lines.problem, "bad_encoding") if lines.problem \
                        else self._csv_row(cells, line, start)
                    yield n, line, start, lines.pos, record
            start, line = lines.pos, lines.line + 1

    def read(self, fh: IO[bytes], start: int, end: int, line: int) -> Record:
        """The record at bytes ``start`` to ``end`` (from line ``line``), with its text when it
        is not a row."""
        fh.seek(start)
        text, problem = self.encoding.decode(fh.read(end - start), start, line)
        if problem:
            return Record(None, problem, "bad_encoding", text)
        if self.fmt == "csv":
            with _fields_of_any_size():
                try:
                    # lines end at \n alone, as the scan read them
                    lines = io.StringIO(text, newline="\n")
                    record = self._csv_row(next(csv.reader(lines, strict=True), []), line,
                                           start)
                except csv.Error as exc:
                    record = Record(None, self._where(line, start, f"not CSV: {exc}"))
        else:
            record = self._json_row(text, line, start)
        return record if record.row is not None else record._replace(text=text)

    @staticmethod
    def _where(line: int, start: int, problem: object) -> str:
        return f"line {line}, byte offset {start}: {problem}"

    def _csv_row(self, cells: list[str], line: int, start: int) -> Record:
        if len(cells) > len(self.header):
            return Record(None, self._where(line, start, (
                f"{len(cells)} cells but the header has {len(self.header)} columns (the "
                f"first extra cell: {shown(cells[len(self.header)])})")))
        # a short row leaves the last columns out (no padding: a header of a million columns
        # costs a short row nothing); only a cell that starts with a quote can need restoring
        if any(cell[:1] == "'" for cell in cells):
            cells = [restore(cell) for cell in cells]
        return Record(dict(zip(self.header, cells, strict=False)))

    def _json_row(self, text: str, line: int, start: int) -> Record:
        try:
            row = load_json(text)
        except UnusableJSON as exc:
            return Record(None, self._where(line, start, exc))
        except ValueError as exc:
            return Record(None, self._where(line, start, f"not a JSON object: {exc}"))
        if not isinstance(row, dict):
            return Record(None, self._where(line, start,
                                            f"not a JSON object: {type(row).__name__}"))
        return Record(row)

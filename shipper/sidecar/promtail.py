"""Promtail's positions file, read once at start-up so that a file Promtail was tailing goes on
where Promtail stopped (``promtail_positions``).

Promtail (``clients/pkg/promtail/positions`` in grafana/loki up to 3.6) keeps one YAML
document, ``positions:`` mapping a key to a *string*: for a tailed file the key is its path and
the value its byte offset (``"1234"``); a compressed file it decompressed counts lines, not bytes;
the journal, Docker and Cloudflare targets write cursors under ``cursor-<name>`` (and older
releases ``journal-<name>``). Only byte offsets of plain files mean anything to the sidecar.

The file is read as a stream of YAML events (no document is built, so its size, depth and
aliases cost nothing more than its bytes), within :data:`MAX_POSITIONS_BYTES`. A file that is
not such a document is an error naming it and what is wrong; one bad entry (a negative or
non-numeric offset, a relative path, a key given twice) is named, by its line, and the others
are kept.

Promtail records a path and an offset, nothing that tells one file at that path from the next:
:func:`resume_offset` checks what it can (the offset within the file's size, and just after a
line's end), and a file that fails either is read from its start, saying so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import yaml

from shipper._files import read_small_file

__all__ = ["MAX_POSITIONS_BYTES", "PromtailPositions", "PromtailPositionsError",
           "adopt_promtail_positions", "looks_like_promtail_positions",
           "read_promtail_positions", "resume_offset"]

#: a Promtail positions file larger than this is refused (150,000 files take about 15 MB)
MAX_POSITIONS_BYTES = 32 * 1024 * 1024
#: the bad entries named one by one; past this many they are counted
_NAMED = 10
#: Promtail's keys of targets that are not files (positions.go: cursorKeyPrefix, journal...)
_CURSOR_PREFIXES = ("cursor-", "journal-")
#: what Promtail decompresses (decompresser.go): its position there counts lines
_COMPRESSED = (".gz", ".z", ".bz2")
_INT64_MAX = 2**63 - 1
_OFFSET = re.compile(r"[+-]?[0-9]+")


class PromtailPositionsError(ValueError):
    """The file as a whole is not a Promtail positions file the sidecar can read."""


@dataclass(frozen=True)
class PromtailPositions:
    """What a Promtail positions file holds for the sidecar."""

    path: str
    #: file path -> byte offset Promtail had read up to
    files: Mapping[str, int] = field(default_factory=dict)
    #: entries not used, each ``line N: "key": why`` (the first few)
    skipped: tuple[str, ...] = ()
    #: how many entries were not used in all
    skipped_total: int = 0
    #: cursors of Promtail's other targets (journal, Docker, Cloudflare): not used
    cursors: int = 0

    def summary(self) -> str:
        """One line: what is used, what is not."""
        parts = [f"{len(self.files)} file position{'s' if len(self.files) != 1 else ''}"]
        if self.cursors:
            parts.append(f"{self.cursors} cursor{'s' if self.cursors != 1 else ''} of "
                         "Promtail's journal, Docker or Cloudflare targets not used")
        if self.skipped_total:
            parts.append(f"{self.skipped_total} entr{'ies' if self.skipped_total != 1 else 'y'}"
                         " skipped")
        return f"{self.path}: " + ", ".join(parts)

    def notes(self) -> list[str]:
        """The summary, then one line per skipped entry named."""
        more = self.skipped_total - len(self.skipped)
        tail = [f"{self.path}: and {more} more entries skipped"] if more > 0 else []
        return [self.summary(), *(f"{self.path}: {why}" for why in self.skipped), *tail]


def _shown(text: str) -> str:
    """``text`` quoted on one line (newlines and all escaped), cut when long."""
    return json.dumps(text[:200] + ("..." if len(text) > 200 else ""), ensure_ascii=False)


def looks_like_promtail_positions(data: bytes) -> bool:
    """The bytes start as Promtail writes its positions file (``positions:``)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    while head.startswith(b"#"):  # comments before it, as a hand-edited file may have
        head = head.partition(b"\n")[2].lstrip()
    return head.startswith((b"positions:", b"positions :"))


def read_promtail_positions(path: str | os.PathLike[str]) -> PromtailPositions:
    """Read Promtail's positions file at ``path``. Raises FileNotFoundError when there is none,
    :class:`PromtailPositionsError` when it cannot be read or is not one (saying why)."""
    name = os.fspath(path)
    try:
        data = read_small_file(name, MAX_POSITIONS_BYTES)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PromtailPositionsError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PromtailPositionsError(f"{name}: {exc}: not a positions file") from None
    try:
        return _decode(name, data)
    except yaml.YAMLError as exc:
        why = " ".join(str(exc).split())[:300]
        raise PromtailPositionsError(f"{name}: not valid YAML: {why}") from None


class _Skips:
    def __init__(self) -> None:
        self.named: list[str] = []
        self.total = 0

    def add(self, line: int, key: str, why: str) -> None:
        self.total += 1
        if len(self.named) < _NAMED:
            self.named.append(f"line {line + 1}: {_shown(key)}: {why}")


def _decode(name: str, data: bytes) -> PromtailPositions:
    if b"\x00" in data:
        raise PromtailPositionsError(f"{name}: it holds NUL bytes: not a positions file")
    events = yaml.parse(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    stream = _Events(events)
    stream.expect(yaml.StreamStartEvent)
    event = stream.next()
    if isinstance(event, yaml.StreamEndEvent):  # an empty file: Promtail reads no positions
        return PromtailPositions(name)
    if not isinstance(event, yaml.DocumentStartEvent):  # pragma: no cover - the parser's
        raise PromtailPositionsError(f"{name}: not a YAML document")
    top = stream.next()
    if isinstance(top, yaml.ScalarEvent) and top.value in ("", "~", "null") and \
            top.implicit[0]:
        files: dict[str, int] = {}
        skips, cursors = _Skips(), 0
    elif not isinstance(top, yaml.MappingStartEvent):
        raise PromtailPositionsError(
            f"{name}: line {_line(top) + 1}: expected 'positions:' mapping paths to "
            "offsets, as Promtail writes it")
    else:
        files, skips, cursors = _top_mapping(name, stream)
    stream.expect(yaml.DocumentEndEvent)
    after = stream.next()
    if not isinstance(after, yaml.StreamEndEvent):
        raise PromtailPositionsError(
            f"{name}: line {_line(after) + 1}: a second YAML document: a positions "
            "file holds one")
    return PromtailPositions(name, files, tuple(skips.named), skips.total, cursors)


class _Events:
    def __init__(self, events: Iterator[yaml.Event]) -> None:
        self._events = events

    def next(self) -> yaml.Event:
        return next(self._events)

    def expect(self, kind: type[yaml.Event]) -> yaml.Event:
        event = self.next()
        if not isinstance(event, kind):  # pragma: no cover - the parser guarantees the frame
            raise PromtailPositionsError(f"not a YAML document ({type(event).__name__})")
        return event

    def skip_value(self, first: yaml.Event) -> str:
        """Pass over a value that starts with ``first``; what it was, in words."""
        if isinstance(first, yaml.ScalarEvent):
            return "a single value"
        if isinstance(first, yaml.AliasEvent):
            return "an alias"
        depth = 1
        while depth:
            event = self.next()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return "a mapping" if isinstance(first, yaml.MappingStartEvent) else "a list"


def _top_mapping(name: str, stream: _Events) -> tuple[dict[str, int], _Skips, int]:
    files: dict[str, int] = {}
    skips = _Skips()
    cursors = 0
    seen_positions = False
    while not isinstance(key := stream.next(), yaml.MappingEndEvent):
        if not isinstance(key, yaml.ScalarEvent) or key.value != "positions":
            what = _shown(key.value) if isinstance(key, yaml.ScalarEvent) else "a complex key"
            raise PromtailPositionsError(
                f"{name}: line {_line(key) + 1}: {what}: expected only 'positions:' "
                "at the top, as Promtail writes it")
        if seen_positions:
            raise PromtailPositionsError(
                f"{name}: line {_line(key) + 1}: 'positions' given twice")
        seen_positions = True
        value = stream.next()
        if isinstance(value, yaml.ScalarEvent) and value.implicit[0] and \
                value.value in ("", "~", "null"):
            continue  # 'positions:' with nothing: Promtail reads no positions
        if not isinstance(value, yaml.MappingStartEvent):
            what = stream.skip_value(value)
            raise PromtailPositionsError(
                f"{name}: line {_line(value) + 1}: 'positions' is {what}: expected "
                "a mapping of paths to offsets")
        cursors = _entries(stream, files, skips)
    return files, skips, cursors


def _entries(stream: _Events, files: dict[str, int], skips: _Skips) -> int:
    """The pairs of the ``positions`` mapping into ``files``; the cursors counted."""
    cursors = 0
    twice: set[str] = set()
    first_line: dict[str, int] = {}
    while not isinstance(key := stream.next(), yaml.MappingEndEvent):
        line = _line(key)
        if not isinstance(key, yaml.ScalarEvent):
            what = stream.skip_value(key)
            stream.skip_value(stream.next())
            skips.add(line, "?", f"the key is {what}, not a path")
            continue
        value = stream.next()
        path = key.value
        if not isinstance(value, yaml.ScalarEvent):
            skips.add(line, path, f"the offset is {stream.skip_value(value)}, not a number")
            continue
        if path.startswith(_CURSOR_PREFIXES):
            cursors += 1
            continue
        why = _path_problem(path)
        norm = os.path.normpath(path) if why is None else path
        offset: int | None = None
        if why is None:
            text = value.value.strip()
            if not _OFFSET.fullmatch(text):
                why = f"the offset {_shown(value.value)} is not a whole number"
            elif text.startswith("-") and text.strip("-0"):
                why = f"the offset {_shown(text)} is negative"
            elif len(text) > 20 or int(text) > _INT64_MAX:
                why = f"the offset {_shown(text)} is larger than any file"
            else:
                offset = int(text)
        if norm in first_line:  # Promtail itself refuses a file with a key given twice
            if norm not in twice:
                twice.add(norm)
                files.pop(norm, None)
                skips.add(first_line[norm], path, "given more than once: which offset holds "
                          "is not known, so none is used")
            continue
        first_line[norm] = line
        if why is not None:
            skips.add(line, path, why)
        elif offset is not None:
            files[norm] = offset
    return cursors


def _line(event: yaml.Event) -> int:
    """The event's line, counted from 0."""
    mark = event.start_mark
    return mark.line if mark is not None else 0


def _path_problem(path: str) -> str | None:
    if not path:
        return "an empty path"
    if "\x00" in path:
        return "a path cannot hold a NUL byte"
    if not path.startswith("/"):
        return "not an absolute path (Promtail's working directory is not known)"
    if path.endswith(_COMPRESSED):
        return ("a compressed file: Promtail's position there counts decompressed lines, "
                "and the sidecar reads plain files")
    return None


def resume_offset(fd: int, size: int, offset: int) -> tuple[int, str | None]:
    """Where to start reading an open file (``fd``, ``size`` bytes now) that Promtail had read up
    to ``offset``: there, or 0 with the reason when that cannot be this file's position
    (beyond its size: rotated or truncated since; not just after a line's end)."""
    if offset > size:
        return 0, (f"Promtail's offset {offset} is beyond its size {size}: rotated or "
                   "truncated since Promtail read it")
    if offset > 0:
        try:
            before = os.pread(fd, 1, offset - 1)
        except OSError as exc:
            return 0, f"cannot check Promtail's offset {offset} ({exc.strerror or exc})"
        if before != b"\n":
            return 0, (f"Promtail's offset {offset} does not follow the end of a line: not "
                       "the file Promtail read")
    return offset, None


def adopt_promtail_positions(path: str | None, positions_file: str, *, taken_over: bool,
                             say: Callable[[str], None]) -> dict[str, int]:
    """The Promtail positions to start files from at start-up (``promtail_positions``).

    None are used once the sidecar has a positions file of its own (``taken_over``: it existed
    at start-up, whatever it held, even damaged): the sidecar has run here, and a file without a
    position of its own is newer than Promtail's record (a file rotated in under the same name),
    which Promtail's offset would cut short. A missing Promtail file is said and gives none;
    raises :class:`PromtailPositionsError` when it cannot be read."""
    if path is None:
        return {}
    if taken_over:
        say(f"promtail_positions: {path} not read: the sidecar has positions of its own "
            f"({positions_file}), which win; the setting can go")
        return {}
    try:
        found = read_promtail_positions(path)
    except FileNotFoundError:
        say(f"promtail_positions: {path} does not exist: files start as start_at says")
        return {}
    for line in found.notes():
        say(f"promtail_positions: {line}")
    return dict(found.files)


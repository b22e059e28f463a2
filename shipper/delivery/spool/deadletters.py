"""Dead letters: the entries Loki refused for good, kept with Loki's reason and message until
someone pushes them again (``shipper spool dead-letters push``, once Loki's limits are
changed). They are never replayed by themselves.

Where and how
-------------
A spool directory's dead letters live in its subdirectory :data:`DEAD_LETTER_DIR`, made when
the first one is written. That subdirectory is a spool of its own (:class:`Spool`: the same
segments, record framing, locks between processes and threads, the same "never raises"), so
the spool's replay, which lists only its own directory, never sees it. Every dead letter is
in one eviction class: over the cap (``dead_letter_max_bytes``) the oldest segments go first,
and every record that goes is counted (:meth:`DeadLetters.add` says how many).

A record's payload is a JSON object: Loki's short ``reason`` (``too_old``,
``line_too_long``, ... as :func:`~shipper.delivery.push.refusal_reason` names it), its
``message`` about this entry, ``refused_at`` (ns, a string), ``certain`` (false when Loki's
answer named only the entry's stream, or nothing, so the entry may have been stored after
all) and ``entry``: the entry exactly as the spool stores it (``[labels, "ts", line,
metadata]``), so a dead letter pushed again is byte-identical to the first attempt.

Reading (:class:`DeadLetterReader`, :func:`dead_letter_status`) only reads: it is safe while
processes write.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipper._units import format_size
from shipper.delivery.spool.format import Frames
from shipper.delivery.spool.ledger import Report, stderr_report
from shipper.delivery.spool.segments import (
    ClaimedSegment,
    close_quietly,
    list_segments,
    open_readonly,
)
from shipper.delivery.spool.store import Spool
from shipper.event import Entry

__all__ = [
    "DEAD_LETTER_DIR",
    "DeadLetter",
    "DeadLetterReader",
    "DeadLetterStatus",
    "DeadLetters",
    "dead_letter_dir",
    "dead_letter_status",
]

#: the subdirectory of a spool directory that holds its dead letters
DEAD_LETTER_DIR = "dead-letters"
#: the one eviction class of dead letters (the oldest go first, whatever their level)
_PRIORITY = 0
#: the largest segment: a few per cap, so that eviction drops little more than it must
_SEGMENT_BYTES = 4 << 20


def dead_letter_dir(spool_dir: str | os.PathLike[str]) -> Path:
    """The dead-letter directory of a spool directory."""
    return Path(spool_dir).expanduser() / DEAD_LETTER_DIR


@dataclass(frozen=True)
class DeadLetter:
    """An entry Loki refused, with its reason."""

    entry: Entry
    #: the short reason (``too_old``, ``line_too_long``, ``bad_request``, ...)
    reason: str
    #: Loki's own words about this entry (or its stream, or the whole request)
    message: str
    refused_at_ns: int
    #: False when Loki's answer did not name this entry, only its stream or nothing: it may
    #: have been stored after all (pushing it again is harmless: Loki keeps one copy)
    certain: bool = True

    def to_record(self) -> bytes:
        """The payload of its spool record (see the module documentation)."""
        head = orjson.dumps({"reason": self.reason, "message": self.message,
                             "refused_at": str(self.refused_at_ns), "certain": self.certain})
        return head[:-1] + b',"entry":' + self.entry.to_record() + b"}"

    @classmethod
    def from_record(cls, payload: bytes) -> DeadLetter:
        """Read a record back (raises ValueError, naming what is wrong)."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a dead letter: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"not a dead letter: a JSON {type(data).__name__}, not an object")
        reason, message = data.get("reason"), data.get("message")
        refused_at, certain = data.get("refused_at"), data.get("certain", True)
        if not isinstance(reason, str) or not isinstance(message, str):
            raise ValueError("not a dead letter: reason and message must be strings")
        if not isinstance(refused_at, str) or not refused_at.lstrip("-").isdigit():
            raise ValueError(f"not a dead letter: refused_at is {refused_at!r}, not ns")
        if not isinstance(certain, bool):
            raise ValueError(f"not a dead letter: certain is {certain!r}, not a boolean")
        if "entry" not in data:
            raise ValueError("not a dead letter: no entry")
        try:
            entry = Entry.from_json(orjson.dumps(data["entry"]))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a dead letter: its entry is not a spooled entry: {exc}") \
                from None
        if not all(isinstance(name, str) and isinstance(value, str)
                   for name, value in (*entry.labels, *entry.metadata)):
            raise ValueError("not a dead letter: its labels and metadata must be text")
        return cls(entry, reason, message, int(refused_at), certain)

    def as_dict(self) -> dict[str, Any]:
        """For JSON output: the labels, ns time, line and metadata of the entry beside the
        reason (times as ns: an entry Loki refused may lie outside what RFC 3339 can write)."""
        entry = self.entry
        return {"reason": self.reason, "message": self.message,
                "refused_at_ns": self.refused_at_ns, "certain": self.certain,
                "labels": dict(entry.labels), "timestamp_ns": entry.timestamp_ns,
                "line": entry.line, "metadata": dict(entry.metadata)}


class DeadLetters:
    """The dead letters of one spool directory (``directory`` is the dead-letter directory
    itself: :func:`dead_letter_dir`). Thread-safe; :meth:`add` never raises. Nothing is
    created on disk before the first dead letter."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 64 << 20,
                 fsync: bool = False, report: Report | None = None) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes: must be a positive number of bytes, got {max_bytes!r}")
        self._dir = Path(directory).expanduser()
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._report = report if report is not None else stderr_report(self._dir)
        self._spool: Spool | None = None
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._dir

    def _say(self, kind: str, message: str) -> None:
        if kind == "full":
            message = (f"the dead letters reached their cap of {format_size(self._max_bytes)}: "
                       "the oldest are dropped to make room (counted)")
        self._report(kind, f"dead letters: {message}")

    def _store(self, create: bool) -> Spool | None:
        with self._lock:
            if self._spool is None and create:
                segment = max(4096, min(_SEGMENT_BYTES, self._max_bytes // 8))
                self._spool = Spool(self._dir, max_bytes=self._max_bytes, segment_bytes=segment,
                                    fsync=self._fsync, report=self._say)
            return self._spool

    def add(self, letters: Sequence[DeadLetter]) -> tuple[int, int]:
        """Keep ``letters``; returns ``(kept, lost)``: lost counts the letters that could not
        be written (a full or unwritable disk, reported once per kind) and the older ones
        dropped to keep under the cap."""
        if not letters:
            return 0, 0
        try:
            spool = self._store(create=True)
            assert spool is not None
            before = spool.evicted_records
            kept = spool.append([(_PRIORITY, letter.to_record()) for letter in letters])
            return kept, len(letters) - kept + spool.evicted_records - before
        except Exception as exc:  # never raise into the pipeline
            self._say("internal", f"cannot keep {len(letters)} dead letters: {exc!r}")
            return 0, len(letters)

    def put_back(self, payloads: Sequence[bytes]) -> tuple[bool, int]:
        """Write records read from a claimed segment back as they are (the rest of a segment
        pushed half-way): whether every one was written, and how many older dead letters were
        dropped to make room."""
        spool = self._store(create=True)
        assert spool is not None
        before = spool.evicted_records
        written = spool.append([(_PRIORITY, payload) for payload in payloads])
        return written == len(payloads), spool.evicted_records - before

    def segments(self) -> set[str]:
        """The names of the dead-letter segments there are now (this process's own sealed
        first, so that they can be claimed)."""
        spool = self._store(create=False)
        if spool is not None:
            spool.seal()
        try:
            return {seg.name for seg in list_segments(self._dir)}
        except OSError:
            return set()

    def claim(self, only: Collection[str]) -> ClaimedSegment | None:
        """The oldest of the segments ``only`` that no process holds, locked for the caller
        (see :meth:`Spool.claim`)."""
        spool = self._store(create=self._dir.is_dir())
        return spool.claim(only) if spool is not None else None

    def close(self) -> None:
        """Seal this process's segment and release its claims; the store stays usable."""
        spool = self._store(create=False)
        if spool is not None:
            spool.close()

    def after_fork_in_child(self) -> None:
        """In a forked child: a new lock (another thread of the parent may have held it), and
        the spool's own fork handling (new segments, the parent's left alone)."""
        self._lock = threading.Lock()
        spool = self._spool
        if spool is not None:
            spool.after_fork_in_child()


class DeadLetterReader:
    """Every dead letter of a dead-letter directory, oldest first, read-only. Records that
    cannot be read are skipped and counted (``damaged``, after the pass)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self.damaged = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[DeadLetter]:
        self.damaged = self.bytes = 0
        try:
            segs = sorted(list_segments(self.directory), key=lambda s: s.order)
        except OSError:  # no dead letters (yet)
            return
        for seg in segs:
            try:
                fd = open_readonly(seg.path)
            except OSError:  # pushed or evicted since the listing
                continue
            try:
                frames = Frames(fd)
                self.bytes += seg.size
                for payload in frames:
                    try:
                        letter = DeadLetter.from_record(payload)
                    except ValueError:
                        self.damaged += 1
                        continue
                    yield letter
                self.damaged += frames.corrupt
            except OSError:
                continue
            finally:
                close_quietly(fd)


@dataclass(frozen=True)
class DeadLetterStatus:
    """What a dead-letter directory holds: letters by reason, bytes, damaged records and
    when the oldest and newest were refused."""

    directory: str
    letters: int
    bytes: int
    by_reason: dict[str, int] = field(default_factory=dict)
    damaged: int = 0
    oldest_refused_ns: int | None = None
    newest_refused_ns: int | None = None

    @property
    def oldest_age_s(self) -> float | None:
        if self.oldest_refused_ns is None:
            return None
        return max(0.0, (time.time_ns() - self.oldest_refused_ns) / 1e9)


def dead_letter_status(directory: str | os.PathLike[str]) -> DeadLetterStatus:
    """Count the dead letters of a dead-letter directory by reason (read-only; a missing
    directory holds none)."""
    reader = DeadLetterReader(directory)
    reasons: Counter[str] = Counter()
    oldest: int | None = None
    newest: int | None = None
    for letter in reader:
        reasons[letter.reason] += 1
        at = letter.refused_at_ns
        oldest = at if oldest is None or at < oldest else oldest
        newest = at if newest is None or at > newest else newest
    return DeadLetterStatus(str(reader.directory), sum(reasons.values()), reader.bytes,
                            dict(sorted(reasons.items())), reader.damaged, oldest, newest)

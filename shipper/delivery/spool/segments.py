"""Segment files: their names, listing a spool directory, opening and counting one file, and
the handles this process holds on one segment: the active one it writes
(:class:`ActiveSegment`) and a claimed one it replays (:class:`ClaimedSegment`)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from shipper._units import format_size
from shipper.delivery.spool.format import Frames, count_records
from shipper.delivery.spool.locks import Locks

__all__ = [
    "O_BINARY",
    "O_CLOEXEC",
    "PRIORITIES",
    "ActiveSegment",
    "ClaimOwner",
    "ClaimedSegment",
    "SegmentFile",
    "SpoolError",
    "close_quietly",
    "list_segments",
    "list_stale_temporaries",
    "new_segment_name",
    "open_readonly",
    "same_file",
    "scan_file",
    "strerror",
    "temporary_name",
]

#: priorities (eviction classes)
PRIORITIES = (0, 1, 2)

_NAME_RE = re.compile(r"^p([0-2])-(\d{20})-(\d+)-(\d{6,})\.seg$")
_TMP_RE = re.compile(r"^\.p[0-2]-\d{20}-\d+-\d{6,}\.seg\.tmp$")
#: a hidden temporary segment older than this whose creator is gone is removed by claim()
_STALE_TMP_S = 60.0

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_BINARY = getattr(os, "O_BINARY", 0)


class SpoolError(Exception):
    """The spool directory cannot be used (raised only when ``strict=True``)."""


# ---------------------------------------------------------------------------------------- files


def open_readonly(path: Path) -> int:
    """A read-only fd on a segment file (raises OSError)."""
    return os.open(path, os.O_RDONLY | O_CLOEXEC | O_BINARY)


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        a = os.stat(path)
    except FileNotFoundError:
        return False
    b = os.fstat(fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def strerror(exc: OSError) -> str:
    """The OS error for a person: its text and its errno name."""
    code = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({code})" if code else text


def scan_file(path: Path) -> Frames | None:
    """Count the records of one segment (read-only); None when it cannot be read."""
    try:
        fd = open_readonly(path)
    except OSError:
        return None
    try:
        return count_records(fd, verify=True)
    except OSError:
        return None
    finally:
        close_quietly(fd)


# ---------------------------------------------------------------------------------------- names

#: segment names are made unique per process (every spool in it shares these)
_NAMES_LOCK = threading.Lock()
_last_created_ns = 0
_last_seq = 0


def _reset_names_lock() -> None:  # another thread may have held it when the process forked
    global _NAMES_LOCK
    _NAMES_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_names_lock)


def new_segment_name(priority: int, pid: int) -> tuple[str, int]:
    """A new segment name and its creation time: unique within the process (several spools
    may share a directory), and later than every earlier one."""
    global _last_created_ns, _last_seq
    with _NAMES_LOCK:
        now = time.time_ns()
        _last_created_ns = now if now > _last_created_ns else _last_created_ns + 1
        _last_seq += 1
        created, seq = _last_created_ns, _last_seq
    return f"p{priority}-{created:020d}-{pid}-{seq:06d}.seg", created


def temporary_name(name: str) -> str:
    """The hidden name a segment is created under, before it is locked and published."""
    return f".{name}.tmp"


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """A segment file as listed."""

    name: str
    path: Path
    priority: int
    created_ns: int
    pid: int
    seq: int
    size: int

    @property
    def order(self) -> tuple[int, int, int, int]:
        return (self.created_ns, self.pid, self.seq, self.priority)


def list_segments(directory: Path) -> list[SegmentFile]:
    """Every segment file in ``directory`` (raises OSError when it cannot be read)."""
    found: list[SegmentFile] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _NAME_RE.match(entry.name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # acked or evicted meanwhile
                continue
            found.append(
                SegmentFile(
                    name=entry.name,
                    path=directory / entry.name,
                    priority=int(match.group(1)),
                    created_ns=int(match.group(2)),
                    pid=int(match.group(3)),
                    seq=int(match.group(4)),
                    size=st.st_size,
                )
            )
    return found


def list_stale_temporaries(directory: Path) -> list[Path]:
    """The hidden temporary segments old enough that their writer must have died between
    creating and publishing them (raises OSError when the directory cannot be read)."""
    now = time.time()
    with os.scandir(directory) as entries:
        return [
            Path(e.path) for e in entries
            if _TMP_RE.match(e.name) and now - e.stat().st_mtime > _STALE_TMP_S
        ]


# ------------------------------------------------------------------------------------- handles


class ActiveSegment:
    """This process's open segment for one priority."""

    __slots__ = ("created_ns", "fd", "name", "path", "priority", "records", "size")

    def __init__(self, path: Path, fd: int, priority: int, created_ns: int) -> None:
        self.path = path
        self.name = path.name
        self.fd = fd
        self.priority = priority
        self.created_ns = created_ns
        self.size = 0
        self.records = 0


class ClaimOwner(Protocol):
    """What a claimed segment tells the spool that claimed it."""

    def scanned(self, path: Path, frames: Frames) -> None:
        """The segment was read to its end: count and report what was damaged in it."""

    def read_failed(self, path: Path, exc: OSError) -> None:
        """Reading the segment failed: it is kept for a later attempt."""

    def ack_failed(self, path: Path, exc: OSError) -> None:
        """The delivered segment could not be deleted."""

    def finished(self, name: str, *, acked: int | None, size: int) -> None:
        """The claim is over: ``acked`` records of ``size`` bytes were delivered and deleted
        (None: the file is kept)."""


class ClaimedSegment:
    """A segment locked for replay by this process: read :meth:`records`, then :meth:`ack`
    (delivered: delete it) or :meth:`release` (keep it for later)."""

    def __init__(
        self,
        owner: ClaimOwner,
        path: Path,
        priority: int,
        created_ns: int,
        fd: int,
        size: int,
        locks: Locks,
    ) -> None:
        self.path = path
        self.priority = priority
        self.created_ns = created_ns
        self.size = size
        self._owner = owner
        self._pid = os.getpid()
        self._fd: int | None = fd
        self._locks = locks
        self._mutex = threading.Lock()
        self._scanned = False
        self._read_error = False
        self._last_count: int | None = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "done"
        return f"<ClaimedSegment {self.path.name} {format_size(self.size)} {state}>"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def records(self) -> Iterator[bytes]:
        """The payloads in write order. Corrupt records are skipped and a torn tail ends the
        segment (both counted in the spool's stats and reported once); never raises for bad
        data. An I/O error ends the iteration early and makes :meth:`ack` keep the file."""
        if self._forked():
            raise ValueError(f"segment {self.path} is claimed by process {self._pid}, "
                             "not by this forked child")
        fd = self._fd
        if fd is None:
            raise ValueError(f"segment {self.path} was already acked or released")
        frames = Frames(fd)
        count = 0
        try:
            for payload in frames:
                count += 1
                yield payload
        except OSError as exc:
            self._read_error = True
            self._owner.read_failed(self.path, exc)
            return
        self._last_count = count
        if not self._scanned:
            self._scanned = True
            self._owner.scanned(self.path, frames)

    def _delete(self) -> bool:
        """Delete the segment's file; False (and the owner told) when it could not be."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._owner.ack_failed(self.path, exc)
            return False
        return True

    def ack(self) -> None:
        """Every record was delivered: delete the file (still holding its lock), then release
        it. If reading it failed with an I/O error, the file is kept instead (as release())."""
        if self._forked():
            return
        with self._mutex:
            fd = self._fd
            if fd is None:
                return
            if self._read_error:
                self._release_locked(fd)
                return
            count = self._last_count
            if count is None:
                try:
                    count = count_records(fd, verify=True).records
                except OSError:
                    count = 0
            if self._locks.cross_process:
                deleted = self._delete()
                self._locks.unlock(fd)
                close_quietly(fd)
            else:  # pragma: no cover - platforms where an open file cannot be deleted
                self._locks.unlock(fd)
                close_quietly(fd)
                deleted = self._delete()
            self._fd = None
            self._owner.finished(
                self.path.name, acked=count if deleted else None, size=self.size if deleted else 0
            )

    def release(self) -> None:
        """Delivery failed: keep the file for a later attempt and release the lock. (In a
        forked child the claim is the parent's: it is forgotten, never unlocked.)"""
        if self._forked():
            return
        with self._mutex:
            fd = self._fd
            if fd is not None:
                self._release_locked(fd)

    def _release_locked(self, fd: int) -> None:
        self._locks.unlock(fd)
        close_quietly(fd)
        self._fd = None
        self._owner.finished(self.path.name, acked=None, size=0)

    def _forked(self) -> bool:
        """In a forked child the claim is the parent's: forget it, never unlock or delete it."""
        if os.getpid() == self._pid:
            return False
        self._detach()
        return True

    def _detach(self) -> None:
        """In a forked child: forget the parent's claim without unlocking it."""
        fd = self._fd
        if fd is not None:
            self._locks.forget(fd)
            close_quietly(fd)
            self._fd = None

    def __enter__(self) -> ClaimedSegment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving the block without ack() releases the segment."""
        self.release()


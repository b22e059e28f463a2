"""The on-disk spool: entries that could not be delivered wait here until they can be sent.

Nothing is lost while Loki is away or the process dies: every record is in the kernel's hands
(one ``write()``) before :meth:`Spool.append` returns, so even ``SIGKILL`` right after it loses
nothing; with ``fsync=True`` it is also on the disk (power loss).

Layout
------
One directory (created ``0o700``) of append-only segment files::

    p{priority}-{created_ns:020d}-{pid}-{seq:06d}.seg

``priority`` is the eviction class (0 DEBUG/INFO, 1 WARNING/ERROR, 2 CRITICAL), ``created_ns``
orders segments oldest-first across priorities and processes, ``pid`` and ``seq`` make names
unique. Each record is framed as::

    MAGIC (2 bytes: ff d5) | length (u32 LE) | crc32 (u32 LE) | payload

where the crc32 covers the length field and the payload (so a zero-filled header, as a power
loss may leave behind, never passes for an empty record).

``0xff`` never occurs in UTF-8, so the magic never occurs inside a JSON payload: after a bad
header (garbage, a torn write, a corrupt length) the reader resynchronises on the next magic and
keeps every record after it. A record whose checksum does not match is skipped; the incomplete
last record of a segment whose writer died is a *torn tail* and is dropped. Both are counted in
:meth:`Spool.stats` and reported once.

Locking
-------
A segment is held with ``flock(LOCK_EX | LOCK_NB)`` by its writer while it is active and by its
claimer while it is claimed, so two processes never replay the same segment; the kernel drops
the locks of a process that dies, so its segments become claimable by the next one. A new
segment is created under a hidden temporary name, locked, then renamed, so nobody can claim it
before its writer holds it. On a platform without ``fcntl`` (or a filesystem without ``flock``)
the locks are process-local: the spool is then safe for one process only (reported once).

Bounds
------
The directory holds at most ``max_bytes`` (estimated from this process's writes and a listing
at least once a second, so several processes sharing a directory may overshoot it briefly).
When an append would exceed it, the oldest free segments are evicted: DEBUG/INFO first, then
WARNING/ERROR, never CRITICAL; a record only evicts classes at or below its own (INFO never
evicts WARNING). If there is still no room, non-critical records are refused (counted as
``dropped["full"]``); CRITICAL records are written anyway.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

try:
    import fcntl as _fcntl_module
except ImportError:  # pragma: no cover - Windows
    _fcntl_module = None  # type: ignore[assignment]

_fcntl: ModuleType | None = _fcntl_module

__all__ = [
    "MAX_RECORD_BYTES",
    "ClaimedSegment",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "encode_record",
    "spool_status",
]

#: the frame header: magic, payload length, crc32 of the length field and the payload
_MAGIC = b"\xff\xd5"
_HEADER = struct.Struct("<2sII")
_U32 = struct.Struct("<I")
_HDR = _HEADER.size
#: a length above this is not a record (append refuses larger payloads as ``too_large``)
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: read size of the streaming reader
_CHUNK = 1 << 20
#: priorities (eviction classes)
_PRIORITIES = (0, 1, 2)

_NAME_RE = re.compile(r"^p([0-2])-(\d{20})-(\d+)-(\d{6,})\.seg$")
_TMP_RE = re.compile(r"^\.p[0-2]-\d{20}-\d+-\d{6,}\.seg\.tmp$")
#: a hidden temporary segment older than this whose creator is gone is removed by claim()
_STALE_TMP_S = 60.0
#: how often (at most) an unusable directory is tried again, and the size estimate refreshed
_DIR_RETRY_S = 5.0
_RESCAN_S = 1.0

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

_UNWRITABLE_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
    errno.ELOOP, errno.ENAMETOOLONG,
}
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}

Report = Callable[[str, str], None]


class SpoolError(Exception):
    """The spool directory cannot be used (raised only when ``strict=True``)."""


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot of a spool directory and of this process's spool counters.

    ``records`` is None unless the records were counted (``stats(count=True)``,
    :func:`spool_status`). The counters (``written`` ... ``replayed_records``) are this process's
    since the spool was opened; :func:`spool_status` leaves them at zero except ``corrupt_records``
    and ``torn_tails``, which it counts in the files.
    """

    directory: str
    segments: int
    bytes: int
    records: int | None
    written: int
    evicted_records: int
    evicted_by_priority: dict[int, int]
    #: reason -> records: "full" (non-critical refused at the cap), "disk_error" (ENOSPC, EIO...),
    #: "unwritable" (directory missing, not a directory, no permission), "removed" (an active
    #: segment was deleted from outside), "invalid" (not a (priority, bytes) pair),
    #: "too_large" (over MAX_RECORD_BYTES), "internal" (an unexpected error; reported)
    dropped: dict[str, int]
    corrupt_records: int
    torn_tails: int
    replayed_records: int
    oldest_segment_age_s: float | None
    #: the cap (None from :func:`spool_status`, which does not know it)
    max_bytes: int | None = None
    segments_by_priority: dict[int, int] = field(default_factory=dict)
    bytes_by_priority: dict[int, int] = field(default_factory=dict)
    records_by_priority: dict[int, int] | None = None
    #: segments some process holds (being written or replayed); None when not probed
    held_segments: int | None = None
    #: this process's active (being written) and claimed segments
    active_segments: int = 0
    claimed_segments: int = 0


# ---------------------------------------------------------------------------------------- locks


class _Locks:
    """Exclusive, non-blocking locks on open segment files."""

    cross_process = True

    def try_lock(self, fd: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def unlock(self, fd: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def forget(self, fd: int) -> None:
        """The fd is about to be closed in a forked child: drop it without unlocking (flock
        locks belong to the open file description the parent shares)."""

    def probe_held(self, fd: int) -> bool | None:
        """Whether another holder has the file locked (None: cannot tell)."""
        return None


class _FlockLocks(_Locks):
    def try_lock(self, fd: int) -> bool:
        assert _fcntl is not None
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(self, fd: int) -> None:
        assert _fcntl is not None
        with contextlib.suppress(OSError):
            _fcntl.flock(fd, _fcntl.LOCK_UN)

    def probe_held(self, fd: int) -> bool | None:
        assert _fcntl is not None
        try:
            _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        self.unlock(fd)
        return False


class _LocalLocks(_Locks):
    """Process-local locks (by device and inode): safe for one process only."""

    cross_process = False

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owners: dict[tuple[int, int], int] = {}

    @staticmethod
    def _key(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino)

    def try_lock(self, fd: int) -> bool:
        key = self._key(fd)
        with self._mutex:
            owner = self._owners.get(key)
            if owner is not None and owner != fd:
                return False
            self._owners[key] = fd
            return True

    def unlock(self, fd: int) -> None:
        try:
            key = self._key(fd)
        except OSError:
            return
        with self._mutex:
            if self._owners.get(key) == fd:
                del self._owners[key]

    forget = unlock

    def probe_held(self, fd: int) -> bool | None:
        try:
            key = self._key(fd)
        except OSError:
            return None
        with self._mutex:
            return key in self._owners


_LOCAL_LOCKS = _LocalLocks()

#: segment names are made unique per process (every spool in it shares these)
_NAMES_LOCK = threading.Lock()
_last_created_ns = 0
_last_seq = 0


def _reset_names_lock() -> None:  # another thread may have held it when the process forked
    global _NAMES_LOCK
    _NAMES_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_names_lock)


def _default_locks() -> _Locks:
    return _FlockLocks() if _fcntl is not None else _LOCAL_LOCKS


# ---------------------------------------------------------------------------------------- files


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, size)  # pragma: no cover


def _strerror(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({code})" if code else text


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True, slots=True)
class _Seg:
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


def _list_segments(directory: Path) -> list[_Seg]:
    """Every segment file in ``directory`` (raises OSError when it cannot be read)."""
    found: list[_Seg] = []
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
                _Seg(
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


class _Frames:
    """Streams the payloads of one segment (through ``fd`` with ``pread``, up to the size the
    file had when the pass began), checking each frame; never raises for bad data.

    After the pass: ``records`` (good records), ``corrupt`` (records with a bad checksum, and
    stretches of garbage between good records), ``torn`` (the segment ends in an incomplete
    record or garbage), ``first_problem`` (file offset of the first of those).
    With ``verify=False`` only the headers are checked (for counting).
    """

    def __init__(self, fd: int, *, verify: bool = True) -> None:
        self._fd = fd
        self._verify = verify
        self._size = os.fstat(fd).st_size
        self._buf = b""
        self._base = 0  # file offset of _buf[0]
        self._pos = 0  # read position in _buf
        self.records = 0
        self.corrupt = 0
        self.torn = False
        self.first_problem: int | None = None

    def _problem(self, offset: int) -> None:
        if self.first_problem is None:
            self.first_problem = offset

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from the read position (compacting the buffer so the
        read position becomes 0). False at end of file: everything left is then buffered."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos:]]
        self._base += self._pos
        self._pos = 0
        offset = self._base + have
        while have < need and offset < self._size:
            data = _pread(self._fd, min(max(need - have, _CHUNK), self._size - offset), offset)
            if not data:  # the file shrank under us
                self._size = offset
                break
            parts.append(data)
            have += len(data)
            offset += len(data)
        self._buf = b"".join(parts)
        return have >= need

    def _seek_magic(self, start: int) -> bool:
        """Move the read position to the next magic at or after buffer index ``start``;
        False (everything consumed) when there is none before the end of the file."""
        while True:
            found = self._buf.find(_MAGIC, start)
            if found >= 0:
                self._pos = found
                return True
            # keep the last byte: it may be the first half of a magic
            self._pos = min(max(start, len(self._buf) - (len(_MAGIC) - 1)), len(self._buf))
            if not self._fill(len(self._buf) - self._pos + 1):
                self._pos = len(self._buf)
                return False
            start = 0

    def __iter__(self) -> Iterator[bytes]:
        bad_at: int | None = None  # file offset where an unresolved bad stretch began
        while True:
            if len(self._buf) - self._pos < _HDR and not self._fill(_HDR):
                if self._pos < len(self._buf) and bad_at is None:
                    bad_at = self._base + self._pos  # a partial header at the end
                if bad_at is not None:
                    self.torn = True
                    self._problem(bad_at)
                return
            pos = self._pos
            magic, length, crc = _HEADER.unpack_from(self._buf, pos)
            if magic != _MAGIC or length > MAX_RECORD_BYTES:
                if bad_at is None:
                    bad_at = self._base + pos
                if not self._seek_magic(pos + 1):
                    self.torn = True
                    self._problem(bad_at)
                    return
                continue
            total = _HDR + length
            if len(self._buf) - pos < total:
                if not self._fill(total):
                    # incomplete at the end: a torn tail, unless a good record follows (then it
                    # was a corrupt length, and the main loop resolves it as corruption)
                    if bad_at is None:
                        bad_at = self._base + self._pos
                    if not self._seek_magic(self._pos + 1):
                        self.torn = True
                        self._problem(bad_at)
                        return
                    continue
                pos = self._pos
            end = pos + total
            if self._verify and _crc(length, self._buf[pos + _HDR:end]) != crc:
                # skip by its length when that lands on the next record (or the end of file),
                # else the length itself may be wrong: resynchronise on the next magic
                self._fill(total + len(_MAGIC))
                pos = self._pos
                end = pos + total
                at_end = self._base + end == self._size
                if at_end or self._buf[end:end + len(_MAGIC)] == _MAGIC:
                    if bad_at is not None:
                        self.corrupt += 1
                        bad_at = None
                    self.corrupt += 1
                    self._problem(self._base + pos)
                    self._pos = end
                    continue
                if bad_at is None:
                    bad_at = self._base + pos
                if not self._seek_magic(pos + 1):
                    self.torn = True
                    self._problem(bad_at)
                    return
                continue
            if bad_at is not None:  # garbage between good records
                self.corrupt += 1
                self._problem(bad_at)
                bad_at = None
            payload = self._buf[pos + _HDR:end]
            self._pos = end
            self.records += 1
            yield payload


def _count_records(fd: int, *, verify: bool) -> _Frames:
    frames = _Frames(fd, verify=verify)
    for _ in frames:
        pass
    return frames


def _count_headers(fd: int) -> int:
    """The records of a segment, from its headers alone (for eviction, which must be quick);
    falls back to the resynchronising reader when the framing is not clean."""
    size = os.fstat(fd).st_size
    unpack = _HEADER.unpack_from
    count = offset = base = 0
    buf = b""
    while offset < size:
        rel = offset - base
        if rel + _HDR > len(buf):
            buf = _pread(fd, min(_CHUNK, size - offset), offset)
            base, rel = offset, 0
            if len(buf) < _HDR:
                break
        magic, length, _crc = unpack(buf, rel)
        if magic != _MAGIC or length > MAX_RECORD_BYTES:
            break
        offset += _HDR + length
        count += 1
    if offset == size:
        return count
    return _count_records(fd, verify=False).records


def _crc(length: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_U32.pack(length)))


def encode_record(payload: bytes) -> bytes:
    """One framed record, as :meth:`Spool.append` writes it."""
    return _HEADER.pack(_MAGIC, len(payload), _crc(len(payload), payload)) + payload


# --------------------------------------------------------------------------------------- spool


class _Active:
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


def _stderr_report(directory: Path) -> Report:
    def report(kind: str, message: str) -> None:
        try:
            sys.stderr.write(f"shipper: spool {directory}: {message}\n")
            sys.stderr.flush()
        except Exception:
            pass

    return report


class Spool:
    """The on-disk buffer of one directory (see the module documentation).

    ``append`` never raises; an unusable directory, a full disk or a directory that disappears
    are counted in :meth:`stats` (``dropped``) and reported once per kind through ``report``.
    Thread-safe. A forked child must call :meth:`after_fork_in_child` (or it happens on the
    child's first use of the spool).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 4 << 20,
        fsync: bool = False,
        report: Report | None = None,
        strict: bool = False,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes: must be a positive number of bytes, got {max_bytes!r}")
        if (isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int)
                or segment_bytes <= 0):
            raise ValueError(
                f"segment_bytes: must be a positive number of bytes, got {segment_bytes!r}"
            )
        self._dir = Path(directory).expanduser()
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._report_fn: Report = report if report is not None else _stderr_report(self._dir)
        self._lock = threading.Lock()
        self._locks: _Locks = _default_locks()
        self._pid = os.getpid()
        self._active: dict[int, _Active] = {}
        self._claimed: dict[str, ClaimedSegment] = {}
        #: record counts of the segments this process sealed (eviction counts them for free)
        self._sealed_counts: dict[str, int] = {}
        #: names of the segments this Spool created (see :meth:`created_segments`)
        self._created: set[str] = set()
        self._reset_counters()
        self._dir_ok = False
        self._retry_at = 0.0
        self._used = 0
        self._scanned_at = -_RESCAN_S
        if not self._locks.cross_process:
            self._report_once(
                "locking",
                "fcntl.flock is not available on this platform: segment locks are process-local, "
                "so only one process may use this spool directory at a time",
            )
        problem = self._prepare_dir(probe=strict)
        self._flush_reports()
        if problem is not None and strict:
            raise SpoolError(f"spool directory {self._dir}: {problem}")

    def _reset_counters(self) -> None:
        self._written = 0
        self._evicted: dict[int, int] = dict.fromkeys(_PRIORITIES, 0)
        self._dropped: dict[str, int] = {}
        self._corrupt = 0
        self._torn = 0
        self._replayed = 0
        self._reported: set[str] = set()
        self._outbox: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ properties

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def segment_bytes(self) -> int:
        return self._segment_bytes

    def __repr__(self) -> str:
        return f"<Spool {self._dir} max={_human(self._max_bytes)}>"

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ reporting

    def _report_once(self, kind: str, message: str) -> None:
        """Queue a report (the first of its kind); it is delivered by _flush_reports, outside
        the lock, so a report callback that logs (and so appends) cannot deadlock."""
        if kind in self._reported:
            return
        self._reported.add(kind)
        self._outbox.append((kind, message))

    def _flush_reports(self) -> None:
        while self._outbox:
            try:
                kind, message = self._outbox.pop(0)
            except IndexError:  # another thread took the last one
                return
            with contextlib.suppress(Exception):
                self._report_fn(kind, message)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the spool's lock; deliver the reports queued meanwhile once it is released."""
        with self._lock:
            yield
        if self._outbox:
            self._flush_reports()

    def _drop(self, reason: str, count: int) -> None:
        if count:
            self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _os_failure(self, exc: OSError, what: str, count: int) -> None:
        """Count ``count`` records as dropped because of ``exc`` and report the kind once."""
        code = exc.errno or 0
        if code in _FULL_ERRNOS:
            self._drop("disk_error", count)
            self._report_once(
                "disk_full",
                f"{what}: {_strerror(exc)}; records that cannot be delivered are dropped "
                "(counted as dropped['disk_error']) until space is freed",
            )
        elif code in _UNWRITABLE_ERRNOS:
            self._drop("unwritable", count)
            self._dir_ok = False
            self._report_once(
                "unwritable",
                f"{what}: {_strerror(exc)}; records that cannot be delivered are dropped "
                "(counted as dropped['unwritable']) until the directory is writable",
            )
        else:
            self._drop("disk_error", count)
            self._report_once(
                "disk_error",
                f"{what}: {_strerror(exc)}; records that cannot be delivered are dropped "
                "(counted as dropped['disk_error'])",
            )

    # ------------------------------------------------------------------ directory

    def _prepare_dir(self, *, probe: bool = False) -> str | None:
        """Create the directory; None when usable, else what is wrong (reported once)."""
        try:
            if self._dir.exists() and not self._dir.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, "it exists but is not a directory", str(self._dir)
                )
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
            if not self._dir.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(self._dir))
            if not os.access(self._dir, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(self._dir))
            if probe:
                path = self._dir / f".probe-{os.getpid()}-{threading.get_ident()}"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o600)
                os.close(fd)
                os.unlink(path)
        except OSError as exc:
            self._dir_ok = False
            self._retry_at = time.monotonic() + _DIR_RETRY_S
            message = f"cannot use {self._dir} as the spool directory: {_strerror(exc)}"
            self._report_once(
                "unwritable",
                f"{message}; records that cannot be delivered are dropped "
                "(counted as dropped['unwritable']) until it is usable",
            )
            return _strerror(exc)
        self._dir_ok = True
        return None

    def _ensure_dir(self) -> bool:
        if self._dir_ok:
            return True
        if time.monotonic() < self._retry_at:
            return False
        return self._prepare_dir() is None

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self._dir, os.O_RDONLY | _O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            _close(fd)

    def _list(self) -> list[_Seg]:
        try:
            return _list_segments(self._dir)
        except OSError:
            return []

    def _rescan(self) -> list[_Seg]:
        segs = self._list()
        self._used = sum(s.size for s in segs)
        self._scanned_at = time.monotonic()
        if self._sealed_counts:
            names = {s.name for s in segs}
            for name in [n for n in self._sealed_counts if n not in names]:
                del self._sealed_counts[name]
        return segs

    # ------------------------------------------------------------------ fork

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self.after_fork_in_child()

    def after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's active and claimed segments without unlocking
        them (the flock locks belong to the parent, whose fds share them), reset the counters,
        and start fresh segments named with the child's pid on the next append. Does nothing
        in the process that opened the spool."""
        if os.getpid() == self._pid:
            return
        self._lock = threading.Lock()  # the parent's may have been held by another thread
        for active in self._active.values():
            self._locks.forget(active.fd)
            _close(active.fd)
        for claimed in self._claimed.values():
            claimed._detach()
        self._active = {}
        self._claimed = {}
        self._sealed_counts = {}
        self._pid = os.getpid()
        self._reset_counters()
        self._scanned_at = -_RESCAN_S

    # ------------------------------------------------------------------ writing

    def _next_name(self, priority: int) -> tuple[str, int]:
        """A new segment name: unique within the process (several spools may share a
        directory), and later than every earlier one."""
        global _last_created_ns, _last_seq
        with _NAMES_LOCK:
            now = time.time_ns()
            _last_created_ns = now if now > _last_created_ns else _last_created_ns + 1
            _last_seq += 1
            created, seq = _last_created_ns, _last_seq
        return f"p{priority}-{created:020d}-{self._pid}-{seq:06d}.seg", created

    def _try_lock(self, fd: int, path: Path) -> bool:
        try:
            return self._locks.try_lock(fd)
        except OSError as exc:  # a filesystem without flock: fall back to local locks
            if self._locks is _LOCAL_LOCKS:
                raise
            self._locks = _LOCAL_LOCKS
            self._report_once(
                "locking",
                f"cannot lock {path}: {_strerror(exc)}; segment locks are process-local from "
                "now on, so only one process may use this spool directory at a time",
            )
            return self._locks.try_lock(fd)

    def _open_segment(self, priority: int) -> _Active:
        """Create, lock, then publish (rename) a new segment; raises OSError."""
        name, created = self._next_name(priority)
        tmp = self._dir / f".{name}.tmp"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC | _O_BINARY
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:  # the directory disappeared: make it again, once
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
            fd = os.open(tmp, flags, 0o600)
        path = self._dir / name
        try:
            if not self._try_lock(fd, tmp):
                raise OSError(errno.EAGAIN, "a new segment was locked by someone else", str(tmp))
            os.rename(tmp, path)
        except BaseException:
            self._locks.unlock(fd)
            _close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._fsync:
            self._fsync_dir()
        active = _Active(path, fd, priority, created)
        self._active[priority] = active
        self._created.add(name)
        return active

    def _retire(self, active: _Active, *, delete: bool) -> None:
        """Close one active segment (delete it first when asked, or when it is empty)."""
        self._active.pop(active.priority, None)
        if delete or active.size == 0:
            with contextlib.suppress(OSError):
                os.unlink(active.path)
        else:  # remembered so that evicting it needs no scan
            self._sealed_counts[active.name] = active.records
        self._locks.unlock(active.fd)
        _close(active.fd)

    def _write(self, active: _Active, data: bytes) -> None:
        """One write() (looping only on a short write); on failure the segment is cut back to
        its last whole record. Raises OSError."""
        written = 0
        try:
            view = memoryview(data)
            while written < len(data):
                n = os.write(active.fd, view[written:])
                if n <= 0:
                    raise OSError(errno.EIO, "write() wrote nothing")
                written += n
            if self._fsync:
                os.fsync(active.fd)
        except OSError:
            if written:
                with contextlib.suppress(OSError):
                    os.ftruncate(active.fd, active.size)
            raise
        active.size += len(data)

    def _write_group(self, priority: int, data: bytes, count: int) -> int:
        active = self._active.get(priority)
        if active is not None:
            try:
                gone = os.fstat(active.fd).st_nlink == 0
            except OSError:
                gone = True
            if gone:
                lost = active.records
                self._retire(active, delete=False)
                self._drop("removed", lost)
                self._report_once(
                    "removed",
                    f"segment {active.path} was deleted while being written (was the spool "
                    f"directory removed?); its {lost} records are lost; writing to a new segment",
                )
                active = None
            elif active.size > 0 and active.size + len(data) > self._segment_bytes:
                self._retire(active, delete=False)
                active = None
        if active is None:
            try:
                active = self._open_segment(priority)
            except OSError as exc:
                self._os_failure(exc, f"cannot create a segment in {self._dir}", count)
                return 0
        try:
            self._write(active, data)
        except OSError as exc:
            self._os_failure(exc, f"cannot write to {active.path}", count)
            if active.size == 0:
                self._retire(active, delete=True)
            return 0
        active.records += count
        self._used += len(data)
        return count

    def append(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Write ``(priority, payload)`` records (priority 0 DEBUG/INFO, 1 WARNING/ERROR,
        2 CRITICAL); returns how many were written. Never raises: what cannot be written is
        counted in ``stats().dropped`` by reason and reported once per kind."""
        try:
            return self._append(records)
        except Exception as exc:  # the last line of defence: never raise into the app
            try:
                count = len(records)
            except Exception:
                count = 0
            self._drop("internal", count)
            self._report_once(
                "internal",
                f"unexpected error while spooling (records counted as dropped['internal']): "
                f"{exc!r}",
            )
            self._flush_reports()
            return 0

    def _append(self, records: Sequence[Any]) -> int:
        self._check_pid()
        groups: dict[int, list[bytes]] = {}
        counts: dict[int, int] = {}
        invalid: list[str] = []
        too_large = 0
        pack, crc32, pack_u32 = _HEADER.pack, zlib.crc32, _U32.pack
        for item in records:
            try:
                priority, payload = item
            except (TypeError, ValueError):
                invalid.append(f"expected a (priority, bytes) pair, got {type(item).__name__}")
                continue
            if (isinstance(priority, bool) or not isinstance(priority, int)
                    or not 0 <= priority <= 2):
                invalid.append(f"priority must be 0, 1 or 2, got {priority!r}")
                continue
            if not isinstance(payload, bytes):
                if not isinstance(payload, (bytearray, memoryview)):
                    invalid.append(f"payload must be bytes, got {type(payload).__name__}")
                    continue
                payload = bytes(payload)
            size = len(payload)
            if size > MAX_RECORD_BYTES:
                too_large += 1
                continue
            parts = groups.get(priority)
            if parts is None:
                parts = groups[priority] = []
                counts[priority] = 0
            parts.append(pack(_MAGIC, size, crc32(payload, crc32(pack_u32(size)))))
            parts.append(payload)
            counts[priority] += 1
        with self._lock:
            written = self._append_locked(groups, counts, invalid, too_large)
        if self._outbox:
            self._flush_reports()
        return written

    def _append_locked(
        self,
        groups: dict[int, list[bytes]],
        counts: dict[int, int],
        invalid: list[str],
        too_large: int,
    ) -> int:
        if invalid:
            self._drop("invalid", len(invalid))
            self._report_once("invalid", f"refused an invalid record: {invalid[0]}")
        if too_large:
            self._drop("too_large", too_large)
            self._report_once(
                "too_large",
                f"refused a record over {_human(MAX_RECORD_BYTES)} "
                "(counted as dropped['too_large'])",
            )
        if not groups:
            return 0
        if not self._ensure_dir():
            self._drop("unwritable", sum(counts.values()))
            return 0
        written = 0
        for priority in sorted(groups, reverse=True):  # CRITICAL first: it gets room first
            data = b"".join(groups[priority])
            if not self._make_room(priority, len(data)) and priority < 2:
                self._drop("full", counts[priority])
                continue
            written += self._write_group(priority, data, counts[priority])
        self._written += written
        return written

    # ------------------------------------------------------------------ the cap

    def _make_room(self, priority: int, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit under the cap, evicting older segments of classes up to
        ``priority`` (never CRITICAL) when they do not."""
        fresh = time.monotonic() - self._scanned_at < _RESCAN_S
        if fresh and self._used + nbytes <= self._max_bytes:
            return True
        segs = self._rescan()
        if self._used + nbytes <= self._max_bytes:
            return True
        self._report_once(
            "full",
            f"reached its cap of {_human(self._max_bytes)} ({self._used} bytes in "
            f"{len(segs)} segments); evicting the oldest DEBUG/INFO, then WARNING/ERROR "
            "segments; non-critical records are refused when nothing is left to evict, "
            "CRITICAL ones are kept over the cap",
        )
        self._evict(segs, self._used + nbytes - self._max_bytes, min(priority, 1))
        return self._used + nbytes <= self._max_bytes

    def _evict(self, segs: list[_Seg], need: int, max_priority: int) -> None:
        own = {a.name: a for a in self._active.values()}
        candidates = sorted(
            (s for s in segs if s.priority <= max_priority and s.name not in self._claimed),
            key=lambda s: (s.priority, s.order),
        )
        for seg in candidates:
            if need <= 0:
                return
            active = own.get(seg.name)
            if active is not None:
                count, size = active.records, active.size
                self._retire(active, delete=True)
            else:
                evicted = self._evict_file(seg)
                if evicted is None:
                    continue
                count, size = evicted
            self._evicted[seg.priority] += count
            self._used -= size
            need -= size

    def _evict_file(self, seg: _Seg) -> tuple[int, int] | None:
        """Delete a free segment: (records, bytes), or None when it is held or gone."""
        try:
            fd = os.open(seg.path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
        except OSError:
            return None
        try:
            if not self._try_lock(fd, seg.path):
                return None
            try:
                if not _same_file(seg.path, fd):
                    return None
                known = self._sealed_counts.pop(seg.name, None)
                count = _count_headers(fd) if known is None else known
                size = os.fstat(fd).st_size
                os.unlink(seg.path)
            finally:
                self._locks.unlock(fd)
        except OSError:
            return None
        finally:
            _close(fd)
        return count, size

    # ------------------------------------------------------------------ reading

    def claim(self) -> ClaimedSegment | None:
        """The oldest segment no process holds, locked for this caller; when none is free but
        this process's active segments hold records, the oldest of those is sealed and
        returned. None when there is nothing to replay."""
        try:
            return self._claim()
        except OSError as exc:
            with self._locked():
                self._report_once("unreadable", f"cannot read {self._dir}: {_strerror(exc)}")
            return None

    def _claim(self) -> ClaimedSegment | None:
        self._check_pid()
        with self._locked():
            own = {a.name for a in self._active.values()}
            segs = self._list()
            for seg in sorted(segs, key=lambda s: s.order):
                if seg.name in own or seg.name in self._claimed:
                    continue
                claimed = self._try_claim(seg)
                if claimed is not None:
                    return claimed
            self._remove_stale_tmp()
            pending = [a for a in self._active.values() if a.records > 0]
            if not pending:
                return None
            active = min(pending, key=lambda a: a.created_ns)
            del self._active[active.priority]
            claimed = ClaimedSegment(
                self, active.path, active.priority, active.created_ns, active.fd, active.size,
                self._locks,
            )
            self._claimed[claimed.path.name] = claimed
            return claimed

    def _try_claim(self, seg: _Seg) -> ClaimedSegment | None:
        try:
            try:
                fd = os.open(seg.path, os.O_RDWR | _O_CLOEXEC | _O_BINARY)
            except PermissionError:
                fd = os.open(seg.path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
        except FileNotFoundError:
            return None
        except OSError as exc:  # skip it (reported once); the others may still be replayed
            self._report_once(
                "unreadable", f"cannot open segment {seg.path}: {_strerror(exc)}; skipping it"
            )
            return None
        locks = self._locks
        try:
            if not self._try_lock(fd, seg.path):
                _close(fd)
                return None
            locks = self._locks
            if not _same_file(seg.path, fd):  # acked (deleted) between listing and locking
                locks.unlock(fd)
                _close(fd)
                return None
            size = os.fstat(fd).st_size
            if size == 0:  # its writer died before writing anything
                with contextlib.suppress(OSError):
                    os.unlink(seg.path)
                locks.unlock(fd)
                _close(fd)
                return None
        except BaseException:
            locks.unlock(fd)
            _close(fd)
            raise
        claimed = ClaimedSegment(self, seg.path, seg.priority, seg.created_ns, fd, size, locks)
        self._claimed[seg.name] = claimed
        return claimed

    def _remove_stale_tmp(self) -> None:
        """Remove hidden temporary segments left by a writer that died between creating and
        publishing one (they never hold records)."""
        now = time.time()
        try:
            with os.scandir(self._dir) as entries:
                stale = [
                    Path(e.path) for e in entries
                    if _TMP_RE.match(e.name) and now - e.stat().st_mtime > _STALE_TMP_S
                ]
        except OSError:
            return
        for path in stale:
            try:
                fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
            except OSError:
                continue
            try:
                if self._try_lock(fd, path):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    self._locks.unlock(fd)
            except OSError:
                pass
            finally:
                _close(fd)

    def _scanned(self, claimed: ClaimedSegment, frames: _Frames) -> None:
        with self._locked():
            self._corrupt += frames.corrupt
            self._torn += int(frames.torn)
            if frames.corrupt:
                self._report_once(
                    "corrupt",
                    f"segment {claimed.path}: skipped {frames.corrupt} corrupt record(s) or "
                    f"garbage stretch(es) (checksum mismatch or bad framing, first at byte "
                    f"{frames.first_problem}); the other records were kept",
                )
            if frames.torn:
                self._report_once(
                    "torn",
                    f"segment {claimed.path}: ends in an incomplete record (cut off at byte "
                    f"{frames.first_problem}: its writer was killed or lost power mid-write); "
                    f"the {frames.records} complete records were kept",
                )

    def _read_failed(self, claimed: ClaimedSegment, exc: OSError) -> None:
        with self._locked():
            self._report_once(
                "read_error",
                f"cannot read segment {claimed.path}: {_strerror(exc)}; it is kept for a "
                "later attempt",
            )

    def _finished(self, claimed: ClaimedSegment, *, acked: int | None, size: int) -> None:
        with self._locked():
            self._claimed.pop(claimed.path.name, None)
            if acked is not None:
                self._replayed += acked
                self._used -= size

    def _ack_failed(self, claimed: ClaimedSegment, exc: OSError) -> None:
        with self._locked():
            self._report_once(
                "disk_error",
                f"cannot delete delivered segment {claimed.path}: {_strerror(exc)}; its "
                "records may be sent again",
            )

    # ------------------------------------------------------------------ lifecycle

    def seal(self) -> None:
        """Close this process's active segments so that they can be claimed (by anyone)."""
        self._check_pid()
        with self._locked():
            for active in list(self._active.values()):
                self._retire(active, delete=False)

    def close(self) -> None:
        """Seal, and release every claimed segment this process holds (their files are kept).
        The spool stays usable: a later append opens a new segment."""
        self._check_pid()
        self.seal()
        with self._locked():
            claimed = list(self._claimed.values())
        for segment in claimed:
            segment.release()

    def created_segments(self) -> set[str]:
        """Names of the segments this spool created (whether or not they still exist)."""
        with self._lock:
            return set(self._created)

    def active_segments(self) -> set[str]:
        """Names of the segments this spool is writing now."""
        with self._lock:
            return {active.name for active in self._active.values()}

    def free_segments(self) -> set[str]:
        """Names of the segments no process holds now (left by a process that is gone, or
        sealed): what a process finds to replay at start-up."""
        self._check_pid()
        free: set[str] = set()
        try:
            segs = self._list()
        except OSError:
            return free
        for seg in segs:
            try:
                fd = os.open(seg.path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
            except OSError:
                continue
            try:
                if self._locks.probe_held(fd) is not True:
                    free.add(seg.name)
            finally:
                _close(fd)
        return free

    def remaining(self, names: set[str]) -> list[Path]:
        """Which of the segments ``names`` still exist (not yet delivered, evicted or
        deleted), oldest first."""
        try:
            segs = _list_segments(self._dir)
        except OSError:
            return []
        return [seg.path for seg in sorted(segs, key=lambda s: s.order) if seg.name in names]

    def count_records(self, paths: Sequence[Path]) -> int:
        """The records held by the segment files ``paths`` (read-only; missing ones count 0)."""
        total = 0
        for path in paths:
            frames = _scan_file(path)
            if frames is not None:
                total += frames.records
        return total

    def stats(self, count: bool = False) -> SpoolStats:
        """A snapshot: the directory listing and this process's counters; records are counted
        (a full read) only with ``count=True``."""
        self._check_pid()
        segs = self._list()
        records: int | None = None
        records_by_priority: dict[int, int] | None = None
        if count:
            records_by_priority = dict.fromkeys(_PRIORITIES, 0)
            for seg in segs:
                frames = _scan_file(seg.path)
                if frames is not None:
                    records_by_priority[seg.priority] += frames.records
            records = sum(records_by_priority.values())
        with self._locked():
            return _build_stats(
                self._dir,
                segs,
                records=records,
                records_by_priority=records_by_priority,
                written=self._written,
                evicted=dict(self._evicted),
                dropped=dict(self._dropped),
                corrupt=self._corrupt,
                torn=self._torn,
                replayed=self._replayed,
                max_bytes=self._max_bytes,
                active=len(self._active),
                claimed=len(self._claimed),
            )


def _same_file(path: Path, fd: int) -> bool:
    try:
        a = os.stat(path)
    except FileNotFoundError:
        return False
    b = os.fstat(fd)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _scan_file(path: Path) -> _Frames | None:
    """Count the records of one segment (read-only); None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
    except OSError:
        return None
    try:
        return _count_records(fd, verify=True)
    except OSError:
        return None
    finally:
        _close(fd)


def _build_stats(
    directory: Path,
    segs: list[_Seg],
    *,
    records: int | None,
    records_by_priority: dict[int, int] | None,
    written: int = 0,
    evicted: dict[int, int] | None = None,
    dropped: dict[str, int] | None = None,
    corrupt: int = 0,
    torn: int = 0,
    replayed: int = 0,
    max_bytes: int | None = None,
    held: int | None = None,
    active: int = 0,
    claimed: int = 0,
) -> SpoolStats:
    by_priority = dict.fromkeys(_PRIORITIES, 0)
    bytes_by_priority = dict.fromkeys(_PRIORITIES, 0)
    for seg in segs:
        by_priority[seg.priority] += 1
        bytes_by_priority[seg.priority] += seg.size
    oldest = min((s.created_ns for s in segs), default=None)
    evicted = evicted if evicted is not None else dict.fromkeys(_PRIORITIES, 0)
    return SpoolStats(
        directory=str(directory),
        segments=len(segs),
        bytes=sum(s.size for s in segs),
        records=records,
        written=written,
        evicted_records=sum(evicted.values()),
        evicted_by_priority=evicted,
        dropped=dropped if dropped is not None else {},
        corrupt_records=corrupt,
        torn_tails=torn,
        replayed_records=replayed,
        oldest_segment_age_s=None if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9),
        max_bytes=max_bytes,
        segments_by_priority=by_priority,
        bytes_by_priority=bytes_by_priority,
        records_by_priority=records_by_priority,
        held_segments=held,
        active_segments=active,
        claimed_segments=claimed,
    )


class ClaimedSegment:
    """A segment locked for replay by this process: read :meth:`records`, then :meth:`ack`
    (delivered: delete it) or :meth:`release` (keep it for later)."""

    def __init__(
        self,
        spool: Spool,
        path: Path,
        priority: int,
        created_ns: int,
        fd: int,
        size: int,
        locks: _Locks,
    ) -> None:
        self.path = path
        self.priority = priority
        self.created_ns = created_ns
        self.size = size
        self._spool = spool
        self._pid = os.getpid()
        self._fd: int | None = fd
        self._locks = locks
        self._mutex = threading.Lock()
        self._scanned = False
        self._read_error = False
        self._last_count: int | None = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "done"
        return f"<ClaimedSegment {self.path.name} {_human(self.size)} {state}>"

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
        frames = _Frames(fd)
        count = 0
        try:
            for payload in frames:
                count += 1
                yield payload
        except OSError as exc:
            self._read_error = True
            self._spool._read_failed(self, exc)
            return
        self._last_count = count
        if not self._scanned:
            self._scanned = True
            self._spool._scanned(self, frames)

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
                    count = _count_records(fd, verify=True).records
                except OSError:
                    count = 0
            deleted = True
            if self._locks.cross_process:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    deleted = False
                    self._spool._ack_failed(self, exc)
                self._locks.unlock(fd)
                _close(fd)
            else:  # pragma: no cover - platforms where an open file cannot be deleted
                self._locks.unlock(fd)
                _close(fd)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    deleted = False
                    self._spool._ack_failed(self, exc)
            self._fd = None
            self._spool._finished(
                self, acked=count if deleted else None, size=self.size if deleted else 0
            )

    def release(self) -> None:
        """Delivery failed: keep the file for a later attempt and release the lock."""
        if self._forked():
            return
        with self._mutex:
            fd = self._fd
            if fd is not None:
                self._release_locked(fd)

    def _release_locked(self, fd: int) -> None:
        self._locks.unlock(fd)
        _close(fd)
        self._fd = None
        self._spool._finished(self, acked=None, size=0)

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
            _close(fd)
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


def spool_status(directory: str | os.PathLike[str], *, strict: bool = False) -> SpoolStats:
    """Scan a spool directory (read-only, safe while other processes write to it): segments,
    bytes and records per priority, corrupt records and torn tails, and how many segments are
    held by a live writer or claimer (their tails may be mid-write, so they are not counted as
    torn). A missing or unreadable directory gives empty figures, or SpoolError with
    ``strict=True``."""
    path = Path(directory).expanduser()
    try:
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise SpoolError(f"spool directory {path} {what}")
        segs = _list_segments(path)
    except SpoolError:
        if strict:
            raise
        segs = []
    except OSError as exc:
        if strict:
            raise SpoolError(f"cannot read spool directory {path}: {_strerror(exc)}") from exc
        segs = []
    locks = _default_locks()
    records_by_priority = dict.fromkeys(_PRIORITIES, 0)
    corrupt = torn = 0
    held: int | None = 0 if locks.cross_process else None
    listed: list[_Seg] = []
    for seg in segs:
        try:
            fd = os.open(seg.path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
        except FileNotFoundError:  # delivered or evicted since the listing
            continue
        except OSError as exc:
            if strict:
                raise SpoolError(f"cannot read segment {seg.path}: {_strerror(exc)}") from exc
            continue
        try:
            is_held = locks.probe_held(fd) if locks.cross_process else None
            frames = _count_records(fd, verify=True)
        except OSError as exc:
            if strict:
                raise SpoolError(f"cannot read segment {seg.path}: {_strerror(exc)}") from exc
            continue
        finally:
            _close(fd)
        listed.append(seg)
        records_by_priority[seg.priority] += frames.records
        corrupt += frames.corrupt
        if is_held and held is not None:
            held += 1
        elif frames.torn:
            torn += 1
    return _build_stats(
        path,
        listed,
        records=sum(records_by_priority.values()),
        records_by_priority=records_by_priority,
        corrupt=corrupt,
        torn=torn,
        held=held,
    )

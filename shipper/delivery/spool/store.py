"""The spool itself: :class:`Spool` writes records into segments under a size cap, evicting
the oldest of the lowest classes first, and hands segments out for replay, one claimer each."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from shipper._units import format_size
from shipper.delivery.spool.format import MAX_RECORD_BYTES, count_headers, encode_records
from shipper.delivery.spool.ledger import Ledger, Report, stderr_report
from shipper.delivery.spool.locks import LOCAL_LOCKS, Locks, default_locks
from shipper.delivery.spool.segments import (
    O_BINARY,
    O_CLOEXEC,
    PRIORITIES,
    ActiveSegment,
    ClaimedSegment,
    SegmentFile,
    SpoolError,
    close_quietly,
    list_segments,
    list_stale_temporaries,
    new_segment_name,
    open_readonly,
    same_file,
    scan_file,
    strerror,
    temporary_name,
)
from shipper.delivery.spool.status import SpoolStats, build_stats

__all__ = ["Spool"]

#: how often (at most) an unusable directory is tried again, and the size estimate refreshed
_DIR_RETRY_S = 5.0
_RESCAN_S = 1.0


class Spool:
    """The on-disk buffer of one directory (see the package documentation).

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
        self._ledger = Ledger(report if report is not None else stderr_report(self._dir))
        self._locks: Locks = default_locks()
        self._pid = os.getpid()
        self._active: dict[int, ActiveSegment] = {}
        #: record counts of the segments this process sealed (eviction counts them for free)
        self._sealed_counts: dict[str, int] = {}
        #: names of the segments this Spool created (see :meth:`created_segments`)
        self._created: set[str] = set()
        self._dir_ok = False
        self._retry_at = 0.0
        self._scanned_at = -_RESCAN_S
        if not self._locks.cross_process:
            self._ledger.report_once(
                "locking",
                "fcntl.flock is not available on this platform: segment locks are process-local, "
                "so only one process may use this spool directory at a time",
            )
        problem = self._prepare_dir(probe=strict)
        self._ledger.flush_reports()
        if problem is not None and strict:
            raise SpoolError(f"spool directory {self._dir}: {problem}")

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
        return f"<Spool {self._dir} max={format_size(self._max_bytes)}>"

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ failures

    def _os_failure(self, exc: OSError, what: str, count: int) -> None:
        """Count ``count`` records as dropped because of ``exc`` and report the kind once; an
        unusable directory is tried again later."""
        if self._ledger.os_failure(exc, what, count) == "unwritable":
            self._dir_ok = False

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
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC, 0o600)
                os.close(fd)
                os.unlink(path)
        except OSError as exc:
            self._dir_ok = False
            self._retry_at = time.monotonic() + _DIR_RETRY_S
            message = f"cannot use {self._dir} as the spool directory: {strerror(exc)}"
            self._ledger.report_once(
                "unwritable",
                f"{message}; records that cannot be delivered are dropped "
                "(counted as dropped['unwritable']) until it is usable",
            )
            return strerror(exc)
        self._dir_ok = True
        return None

    def _ensure_dir(self) -> bool:
        if self._dir_ok:
            return True
        if time.monotonic() < self._retry_at:
            return False
        return self._prepare_dir() is None

    def writable(self) -> bool:
        """Whether the directory takes records now (an unusable one is tried again at most
        every few seconds). At its cap the spool still takes them: it evicts older ones."""
        return self._ensure_dir()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self._dir, os.O_RDONLY | O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            close_quietly(fd)

    def _list(self) -> list[SegmentFile]:
        try:
            return list_segments(self._dir)
        except OSError:
            return []

    def _rescan(self) -> list[SegmentFile]:
        segs = self._list()
        self._ledger.used = sum(s.size for s in segs)
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
        self._ledger.after_fork_in_child()
        for active in self._active.values():
            self._locks.forget(active.fd)
            close_quietly(active.fd)
        self._active = {}
        self._sealed_counts = {}
        self._pid = os.getpid()
        self._scanned_at = -_RESCAN_S

    # ------------------------------------------------------------------ writing

    def _try_lock(self, fd: int, path: Path) -> bool:
        try:
            return self._locks.try_lock(fd)
        except OSError as exc:  # a filesystem without flock: fall back to local locks
            if self._locks is LOCAL_LOCKS:
                raise
            self._locks = LOCAL_LOCKS
            self._ledger.report_once(
                "locking",
                f"cannot lock {path}: {strerror(exc)}; segment locks are process-local from "
                "now on, so only one process may use this spool directory at a time",
            )
            return self._locks.try_lock(fd)

    def _open_segment(self, priority: int) -> ActiveSegment:
        """Create, lock, then publish (rename) a new segment; raises OSError."""
        name, created = new_segment_name(priority, self._pid)
        tmp = self._dir / temporary_name(name)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | O_CLOEXEC | O_BINARY
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
            close_quietly(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._fsync:
            self._fsync_dir()
        active = ActiveSegment(path, fd, priority, created)
        self._active[priority] = active
        self._created.add(name)
        return active

    def _retire(self, active: ActiveSegment, *, delete: bool) -> None:
        """Close one active segment (delete it first when asked, or when it is empty)."""
        self._active.pop(active.priority, None)
        if delete or active.size == 0:
            with contextlib.suppress(OSError):
                os.unlink(active.path)
        else:  # remembered so that evicting it needs no scan
            self._sealed_counts[active.name] = active.records
        self._locks.unlock(active.fd)
        close_quietly(active.fd)

    def _write(self, active: ActiveSegment, data: bytes) -> None:
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
                self._ledger.drop("removed", lost)
                self._ledger.report_once(
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
        self._ledger.used += len(data)
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
            self._ledger.drop("internal", count)
            self._ledger.report_once(
                "internal",
                f"unexpected error while spooling (records counted as dropped['internal']): "
                f"{exc!r}",
            )
            self._ledger.flush_reports()
            return 0

    def _append(self, records: Sequence[Any]) -> int:
        self._check_pid()
        groups: dict[int, list[bytes]] = {}
        invalid: list[str] = []
        too_large = 0
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
            if len(payload) > MAX_RECORD_BYTES:
                too_large += 1
                continue
            group = groups.get(priority)
            if group is None:
                group = groups[priority] = []
            group.append(payload)
        framed = {priority: (encode_records(group), len(group))
                  for priority, group in groups.items()}
        with self._ledger.locked():
            written = self._append_locked(framed, invalid, too_large)
        return written

    def _append_locked(
        self, framed: dict[int, tuple[bytes, int]], invalid: list[str], too_large: int
    ) -> int:
        """Write each priority's framed records (``framed``: priority -> (data, count)),
        CRITICAL first, making room under the cap; count what was refused."""
        if invalid:
            self._ledger.drop("invalid", len(invalid))
            self._ledger.report_once("invalid", f"refused an invalid record: {invalid[0]}")
        if too_large:
            self._ledger.drop("too_large", too_large)
            self._ledger.report_once(
                "too_large",
                f"refused a record over {format_size(MAX_RECORD_BYTES)} "
                "(counted as dropped['too_large'])",
            )
        if not framed:
            return 0
        if not self._ensure_dir():
            self._ledger.drop("unwritable", sum(count for _, count in framed.values()))
            return 0
        written = 0
        for priority in sorted(framed, reverse=True):  # CRITICAL first: it gets room first
            data, count = framed[priority]
            if not self._make_room(priority, len(data)) and priority < 2:
                self._ledger.drop("full", count)
                continue
            written += self._write_group(priority, data, count)
        self._ledger.written += written
        return written

    # ------------------------------------------------------------------ the cap

    def _make_room(self, priority: int, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit under the cap, evicting older segments of classes up to
        ``priority`` (never CRITICAL) when they do not."""
        fresh = time.monotonic() - self._scanned_at < _RESCAN_S
        if fresh and self._ledger.used + nbytes <= self._max_bytes:
            return True
        segs = self._rescan()
        if self._ledger.used + nbytes <= self._max_bytes:
            return True
        self._ledger.report_once(
            "full",
            f"reached its cap of {format_size(self._max_bytes)} ({self._ledger.used} bytes in "
            f"{len(segs)} segments); evicting the oldest DEBUG/INFO, then WARNING/ERROR "
            "segments; non-critical records are refused when nothing is left to evict, "
            "CRITICAL ones are kept over the cap",
        )
        self._evict(segs, self._ledger.used + nbytes - self._max_bytes, min(priority, 1))
        return self._ledger.used + nbytes <= self._max_bytes

    def _evict(self, segs: list[SegmentFile], need: int, max_priority: int) -> None:
        own = {a.name: a for a in self._active.values()}
        candidates = sorted(
            (s for s in segs if s.priority <= max_priority and s.name not in self._ledger.claimed),
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
            self._ledger.evicted[seg.priority] += count
            self._ledger.used -= size
            need -= size

    def _evict_file(self, seg: SegmentFile) -> tuple[int, int] | None:
        """Delete a free segment: (records, bytes), or None when it is held or gone."""
        try:
            fd = open_readonly(seg.path)
        except OSError:
            return None
        try:
            if not self._try_lock(fd, seg.path):
                return None
            try:
                if not same_file(seg.path, fd):
                    return None
                known = self._sealed_counts.pop(seg.name, None)
                count = count_headers(fd) if known is None else known
                size = os.fstat(fd).st_size
                os.unlink(seg.path)
            finally:
                self._locks.unlock(fd)
        except OSError:
            return None
        finally:
            close_quietly(fd)
        return count, size

    # ------------------------------------------------------------------ reading

    def claim(self, only: Collection[str] | None = None) -> ClaimedSegment | None:
        """The oldest segment no process holds, locked for this caller; when none is free but
        this process's active segments hold records, the oldest of those is sealed and
        returned. None when there is nothing to replay. ``only``: claim none but the
        segments of these names."""
        try:
            return self._claim(only)
        except OSError as exc:
            with self._ledger.locked():
                self._ledger.report_once("unreadable", f"cannot read {self._dir}: {strerror(exc)}")
            return None

    def _claim(self, only: Collection[str] | None) -> ClaimedSegment | None:
        self._check_pid()
        with self._ledger.locked():
            own = {a.name for a in self._active.values()}
            segs = self._list()
            for seg in sorted(segs, key=lambda s: s.order):
                if seg.name in own or seg.name in self._ledger.claimed or (
                        only is not None and seg.name not in only):
                    continue
                claimed = self._try_claim(seg)
                if claimed is not None:
                    return claimed
            self._remove_stale_tmp()
            pending = [a for a in self._active.values()
                       if a.records > 0 and (only is None or a.name in only)]
            if not pending:
                return None
            active = min(pending, key=lambda a: a.created_ns)
            del self._active[active.priority]
            claimed = ClaimedSegment(
                self._ledger, active.path, active.priority, active.created_ns, active.fd,
                active.size, self._locks,
            )
            self._ledger.claimed[claimed.path.name] = claimed
            return claimed

    def _try_claim(self, seg: SegmentFile) -> ClaimedSegment | None:
        try:
            try:
                fd = os.open(seg.path, os.O_RDWR | O_CLOEXEC | O_BINARY)
            except PermissionError:
                fd = open_readonly(seg.path)
        except FileNotFoundError:
            return None
        except OSError as exc:  # skip it (reported once); the others may still be replayed
            self._ledger.report_once(
                "unreadable", f"cannot open segment {seg.path}: {strerror(exc)}; skipping it"
            )
            return None
        locks = self._locks
        try:
            if not self._try_lock(fd, seg.path):
                close_quietly(fd)
                return None
            locks = self._locks
            if not same_file(seg.path, fd):  # acked (deleted) between listing and locking
                locks.unlock(fd)
                close_quietly(fd)
                return None
            size = os.fstat(fd).st_size
            if size == 0:  # its writer died before writing anything
                with contextlib.suppress(OSError):
                    os.unlink(seg.path)
                locks.unlock(fd)
                close_quietly(fd)
                return None
        except BaseException:
            locks.unlock(fd)
            close_quietly(fd)
            raise
        claimed = ClaimedSegment(
            self._ledger, seg.path, seg.priority, seg.created_ns, fd, size, locks
        )
        self._ledger.claimed[seg.name] = claimed
        return claimed

    def _remove_stale_tmp(self) -> None:
        """Remove hidden temporary segments left by a writer that died between creating and
        publishing one (they never hold records)."""
        try:
            stale = list_stale_temporaries(self._dir)
        except OSError:
            return
        for path in stale:
            try:
                fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
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
                close_quietly(fd)

    # ------------------------------------------------------------------ lifecycle

    def seal(self) -> None:
        """Close this process's active segments so that they can be claimed (by anyone)."""
        self._check_pid()
        with self._ledger.locked():
            for active in list(self._active.values()):
                self._retire(active, delete=False)

    def close(self) -> None:
        """Seal, and release every claimed segment this process holds (their files are kept).
        The spool stays usable: a later append opens a new segment."""
        self._check_pid()
        self.seal()
        with self._ledger.locked():
            claimed = list(self._ledger.claimed.values())
        for segment in claimed:
            segment.release()

    def created_segments(self) -> set[str]:
        """Names of the segments this spool created (whether or not they still exist)."""
        with self._ledger.lock:
            return set(self._created)

    def active_segments(self) -> set[str]:
        """Names of the segments this spool is writing now."""
        with self._ledger.lock:
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
                fd = open_readonly(seg.path)
            except OSError:
                continue
            try:
                if self._locks.probe_held(fd) is not True:
                    free.add(seg.name)
            finally:
                close_quietly(fd)
        return free

    def remaining(self, names: set[str]) -> list[Path]:
        """Which of the segments ``names`` still exist (not yet delivered, evicted or
        deleted), oldest first."""
        try:
            segs = list_segments(self._dir)
        except OSError:
            return []
        return [seg.path for seg in sorted(segs, key=lambda s: s.order) if seg.name in names]

    def count_records(self, paths: Sequence[Path]) -> int:
        """The records held by the segment files ``paths`` (read-only; missing ones count 0)."""
        total = 0
        for path in paths:
            frames = scan_file(path)
            if frames is not None:
                total += frames.records
        return total

    @property
    def evicted_records(self) -> int:
        """Records this process evicted to keep the directory under its cap (cheap: no
        listing, unlike :meth:`stats`)."""
        with self._ledger.lock:
            return sum(self._ledger.evicted.values())

    def stats(self, count: bool = False) -> SpoolStats:
        """A snapshot: the directory listing and this process's counters; records are counted
        (a full read) only with ``count=True``."""
        self._check_pid()
        segs = self._list()
        records: int | None = None
        records_by_priority: dict[int, int] | None = None
        if count:
            records_by_priority = dict.fromkeys(PRIORITIES, 0)
            for seg in segs:
                frames = scan_file(seg.path)
                if frames is not None:
                    records_by_priority[seg.priority] += frames.records
            records = sum(records_by_priority.values())
        ledger = self._ledger
        with ledger.locked():
            return build_stats(
                self._dir,
                segs,
                records=records,
                records_by_priority=records_by_priority,
                written=ledger.written,
                evicted=dict(ledger.evicted),
                dropped=dict(ledger.dropped),
                corrupt=ledger.corrupt,
                torn=ledger.torn,
                replayed=ledger.replayed,
                max_bytes=self._max_bytes,
                active=len(self._active),
                claimed=len(ledger.claimed),
            )


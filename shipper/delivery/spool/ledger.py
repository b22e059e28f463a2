"""The spool's books: what its writer and its claimed segments share under one lock (this
process's counters, the estimated size of the directory, the segments claimed), and the
reports, each kind once, delivered outside that lock."""

from __future__ import annotations

import contextlib
import errno
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from shipper.delivery.spool.format import Frames
from shipper.delivery.spool.segments import PRIORITIES, ClaimedSegment, strerror

__all__ = ["Ledger", "Report", "stderr_report"]

#: ``report(kind, message)``: told once per kind of trouble
Report = Callable[[str, str], None]

_UNWRITABLE_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
    errno.ELOOP, errno.ENAMETOOLONG,
}
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def stderr_report(directory: Path) -> Report:
    """The default report: one line on stderr, naming the directory."""
    def report(kind: str, message: str) -> None:
        try:
            sys.stderr.write(f"shipper: spool {directory}: {message}\n")
            sys.stderr.flush()
        except Exception:
            pass

    return report


class Ledger:
    """The books of one :class:`~shipper.delivery.spool.Spool`, kept under :attr:`lock`.

    The counters (``written`` ... ``replayed``) are this process's since the spool was opened
    (a forked child starts again from zero); ``used`` is the estimated size of the directory in
    bytes; ``claimed`` holds the segments this process has claimed, by name. It is the
    :class:`~shipper.delivery.spool.segments.ClaimOwner` of those segments.

    Reports are queued while the lock is held and delivered once it is released, so a report
    callback that logs (and so appends to the spool) cannot deadlock.
    """

    def __init__(self, report: Report) -> None:
        self.lock = threading.Lock()
        self.used = 0
        self.claimed: dict[str, ClaimedSegment] = {}
        self._report_fn = report
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.written = 0
        self.evicted: dict[int, int] = dict.fromkeys(PRIORITIES, 0)
        self.dropped: dict[str, int] = {}
        self.corrupt = 0
        self.torn = 0
        self.replayed = 0
        self._reported: set[str] = set()
        self._outbox: list[tuple[str, str]] = []

    def after_fork_in_child(self) -> None:
        """A new lock (the parent's may have been held by another thread), the parent's claims
        forgotten without unlocking them, and the counters at zero."""
        self.lock = threading.Lock()
        for claimed in list(self.claimed.values()):
            claimed.release()  # in a forked child this forgets the parent's claim
        self.claimed = {}
        self._reset_counters()

    # ------------------------------------------------------------------ reporting

    def report_once(self, kind: str, message: str) -> None:
        """Queue a report (the first of its kind); it is delivered by flush_reports, outside
        the lock."""
        if kind in self._reported:
            return
        self._reported.add(kind)
        self._outbox.append((kind, message))

    def flush_reports(self) -> None:
        while self._outbox:
            try:
                kind, message = self._outbox.pop(0)
            except IndexError:  # another thread took the last one
                return
            with contextlib.suppress(Exception):
                self._report_fn(kind, message)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock; deliver the reports queued meanwhile once it is released."""
        with self.lock:
            yield
        if self._outbox:
            self.flush_reports()

    # ------------------------------------------------------------------ counting

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def os_failure(self, exc: OSError, what: str, count: int) -> str:
        """Count ``count`` records as dropped because of ``exc`` and report the kind once;
        returns the reason they were counted under (``unwritable`` or ``disk_error``)."""
        code = exc.errno or 0
        if code in _FULL_ERRNOS:
            self.drop("disk_error", count)
            self.report_once(
                "disk_full",
                f"{what}: {strerror(exc)}; records that cannot be delivered are "
                "dropped (counted as dropped['disk_error']) until space is freed",
            )
            return "disk_error"
        if code in _UNWRITABLE_ERRNOS:
            self.drop("unwritable", count)
            self.report_once(
                "unwritable",
                f"{what}: {strerror(exc)}; records that cannot be delivered are "
                "dropped (counted as dropped['unwritable']) until the directory is writable",
            )
            return "unwritable"
        self.drop("disk_error", count)
        self.report_once(
            "disk_error",
            f"{what}: {strerror(exc)}; records that cannot be delivered are dropped "
            "(counted as dropped['disk_error'])",
        )
        return "disk_error"

    # ------------------------------------------------------------------ claimed segments

    def scanned(self, path: Path, frames: Frames) -> None:
        with self.locked():
            self.corrupt += frames.corrupt
            self.torn += int(frames.torn)
            if frames.corrupt:
                self.report_once(
                    "corrupt",
                    f"segment {path}: skipped {frames.corrupt} corrupt record(s) or "
                    f"garbage stretch(es) (checksum mismatch or bad framing, first at byte "
                    f"{frames.first_problem}); the other records were kept",
                )
            if frames.torn:
                self.report_once(
                    "torn",
                    f"segment {path}: ends in an incomplete record (cut off at byte "
                    f"{frames.first_problem}: its writer was killed or lost power mid-write); "
                    f"the {frames.records} complete records were kept",
                )

    def read_failed(self, path: Path, exc: OSError) -> None:
        with self.locked():
            self.report_once(
                "read_error",
                f"cannot read segment {path}: {strerror(exc)}; it is kept for a "
                "later attempt",
            )

    def ack_failed(self, path: Path, exc: OSError) -> None:
        with self.locked():
            self.report_once(
                "disk_error",
                f"cannot delete delivered segment {path}: {strerror(exc)}; its "
                "records may be sent again",
            )

    def finished(self, name: str, *, acked: int | None, size: int) -> None:
        with self.locked():
            self.claimed.pop(name, None)
            if acked is not None:
                self.replayed += acked
                self.used -= size

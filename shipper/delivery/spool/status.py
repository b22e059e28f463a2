"""What a spool directory holds: :class:`SpoolStats`, and :func:`spool_status`, the read-only
scan that ``shipper spool status`` and ``shipper doctor`` print."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from shipper.delivery.spool.format import count_records
from shipper.delivery.spool.locks import default_locks
from shipper.delivery.spool.segments import (
    PRIORITIES,
    SegmentFile,
    SpoolError,
    close_quietly,
    list_segments,
    open_readonly,
    strerror,
)

__all__ = ["SpoolStats", "build_stats", "spool_status"]


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


def build_stats(
    directory: Path,
    segs: list[SegmentFile],
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
    """A snapshot from a listing of segments and a set of counters (the figures per priority and
    the oldest segment's age come from the listing)."""
    by_priority = dict.fromkeys(PRIORITIES, 0)
    bytes_by_priority = dict.fromkeys(PRIORITIES, 0)
    for seg in segs:
        by_priority[seg.priority] += 1
        bytes_by_priority[seg.priority] += seg.size
    oldest = min((s.created_ns for s in segs), default=None)
    evicted = evicted if evicted is not None else dict.fromkeys(PRIORITIES, 0)
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
        segs = list_segments(path)
    except SpoolError:
        if strict:
            raise
        segs = []
    except OSError as exc:
        if strict:
            raise SpoolError(f"cannot read spool directory {path}: {strerror(exc)}") from exc
        segs = []
    locks = default_locks()
    records_by_priority = dict.fromkeys(PRIORITIES, 0)
    corrupt = torn = 0
    held: int | None = 0 if locks.cross_process else None
    listed: list[SegmentFile] = []
    for seg in segs:
        try:
            fd = open_readonly(seg.path)
        except FileNotFoundError:  # delivered or evicted since the listing
            continue
        except OSError as exc:
            if strict:
                raise SpoolError(f"cannot read segment {seg.path}: {strerror(exc)}") from exc
            continue
        try:
            is_held = locks.probe_held(fd) if locks.cross_process else None
            frames = count_records(fd, verify=True)
        except OSError as exc:
            if strict:
                raise SpoolError(f"cannot read segment {seg.path}: {strerror(exc)}") from exc
            continue
        finally:
            close_quietly(fd)
        listed.append(seg)
        records_by_priority[seg.priority] += frames.records
        corrupt += frames.corrupt
        if is_held and held is not None:
            held += 1
        elif frames.torn:
            torn += 1
    return build_stats(
        path,
        listed,
        records=sum(records_by_priority.values()),
        records_by_priority=records_by_priority,
        corrupt=corrupt,
        torn=torn,
        held=held,
    )

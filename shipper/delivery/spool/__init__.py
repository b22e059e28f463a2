"""The on-disk spool: entries that could not be delivered wait here until they can be sent.

What it guarantees
------------------
* Nothing is lost while Loki is away or the process dies: every record is in the kernel's
  hands (one ``write()``) before :meth:`Spool.append` returns, so even ``SIGKILL`` right after
  it loses nothing; with ``fsync=True`` it is also on the disk (power loss).
* ``append`` never raises into the app. What cannot be written is counted in
  :meth:`Spool.stats` (``dropped``, by reason) and reported once per kind through ``report``
  (by default one line on stderr).
* One bad record never costs its neighbours: a damaged record is skipped, the reader steps over
  garbage and keeps every good record after it.
* No segment is replayed by two processes at once, and the segments of a process that died are
  picked up by the next one.
* The directory is bounded (see *Bounds*).

File format
-----------
One directory (created ``0o700``) of append-only segment files::

    p{priority}-{created_ns:020d}-{pid}-{seq:06d}.seg

``priority`` is the eviction class (0 DEBUG/INFO, 1 WARNING/ERROR, 2 CRITICAL), ``created_ns``
orders segments oldest-first across priorities and processes, ``pid`` and ``seq`` make names
unique (``seq`` counts up in the process, shared by every spool in it). A process writes one
active segment per priority and starts a new one when the next write would take it over
``segment_bytes``. Each record is framed as::

    MAGIC (2 bytes: ff d5) | length (u32 LE) | crc32 (u32 LE) | payload

where the crc32 covers the length field and the payload (so a zero-filled header, as a power
loss may leave behind, never passes for an empty record). Records longer than
:data:`MAX_RECORD_BYTES` are refused.

``0xff`` never occurs in UTF-8, so the magic never occurs inside a JSON payload: after a bad
header (garbage, a torn write, a corrupt length) the reader resynchronises on the next magic and
keeps every record after it. A record whose checksum does not match is skipped; the incomplete
last record of a segment whose writer died is a *torn tail* and is dropped. Both are counted in
:meth:`Spool.stats` and reported once.

Locking between processes and threads
-------------------------------------
A segment is held with ``flock(LOCK_EX | LOCK_NB)`` by its writer while it is active and by its
claimer while it is claimed, so two processes never replay the same segment; the kernel drops
the locks of a process that dies, so its segments become claimable by the next one. A new
segment is created under a hidden temporary name (``.{name}.tmp``), locked, then renamed, so
nobody can claim it before its writer holds it; a temporary file older than a minute whose
creator is gone is removed, and so is an empty segment whose writer died. On a platform without
``fcntl``, or on a filesystem that refuses ``flock`` (from the first refusal on), the locks are
process-local: the spool is then safe for one process only (reported once).

Within a process a :class:`Spool` is thread-safe: one lock guards its active segments, the
segments it has claimed and its counters. Reports are queued under that lock and delivered
after it is released, so a report callback that logs (and so appends) cannot deadlock. A
:class:`ClaimedSegment` serialises its own ``ack`` and ``release``.

Fork safety
-----------
A forked child shares its parent's open files, and with them the parent's ``flock`` locks. On
its first use of the spool (or at :meth:`Spool.after_fork_in_child`) the child forgets the
parent's active and claimed segments without unlocking them, sets its counters to zero, and
writes new segments named with its own pid. A segment the parent claimed cannot be read in the
child, and its ``ack`` and ``release`` there do nothing to the file or the lock. The lock that
makes segment names unique is made anew in the child.

A full or unwritable disk
-------------------------
* No space (``ENOSPC``, ``EDQUOT``, ``EFBIG``) or another I/O error: the records of that write
  are dropped, counted as ``dropped["disk_error"]``; a write that fails halfway is cut back to
  the segment's last whole record, so no torn record is left behind.
* A missing, read-only or forbidden directory: counted as ``dropped["unwritable"]``; the
  directory is tried again at most every 5 seconds. A directory deleted while in use is made
  again when the next segment is created; the records of an active segment deleted from outside
  are counted as ``dropped["removed"]``. With ``strict=True`` the constructor writes a probe
  file and raises :class:`SpoolError` when the directory cannot be written.
* :meth:`Spool.stats` and :func:`spool_status` pass over a file that vanishes or cannot be read
  (``spool_status(strict=True)`` raises :class:`SpoolError` instead).

Bounds
------
The directory holds at most ``max_bytes`` (estimated from this process's writes and a listing
at least once a second, so several processes sharing a directory may overshoot it briefly).
When an append would exceed it, the oldest free segments are evicted: DEBUG/INFO first, then
WARNING/ERROR, never CRITICAL; a record only evicts classes at or below its own (INFO never
evicts WARNING). If there is still no room, non-critical records are refused (counted as
``dropped["full"]``); CRITICAL records are written anyway. Within one append, CRITICAL records
get room first.

Replay order
------------
:meth:`Spool.claim` hands out the oldest segment no process holds (by creation time, across
priorities and processes); when none is free but this process's active segments hold records,
the oldest of those is sealed and handed out. A claimed segment yields its records in write
order; :meth:`ClaimedSegment.ack` deletes the file while still holding its lock (after a read
error the file is kept instead), :meth:`ClaimedSegment.release` keeps it for a later attempt.

Modules
-------
``format`` (the record framing and its reader) and ``locks`` stand alone; ``segments`` (names,
listing, the active and the claimed segment) builds on both; ``status`` (:class:`SpoolStats`,
:func:`spool_status`) on those three; ``ledger`` (the counters, the size estimate and the
reports shared by the writer and its claimed segments, under one lock) on ``segments``;
``store`` (:class:`Spool`) on all of them. ``deadletters`` (what Loki refused for good, kept in a
spool of its own inside the directory) on ``store``.
"""

from shipper.delivery.spool.format import MAX_RECORD_BYTES, encode_record
from shipper.delivery.spool.segments import ClaimedSegment, SpoolError
from shipper.delivery.spool.status import SpoolStats, spool_status
from shipper.delivery.spool.store import Spool

__all__ = [
    "MAX_RECORD_BYTES",
    "ClaimedSegment",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "encode_record",
    "spool_status",
]

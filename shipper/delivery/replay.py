"""Spool replay: spooled events back to Loki, oldest first, one request at a time.

The worker calls :meth:`SpoolReplay.tick` between live batches (the batcher's ``tick``), so
neither starves. Each tick claims the oldest segment no process holds (this process's, or one a
predecessor left behind: crashed, killed or offline), reads one request's worth of its records
and pushes them through the same :class:`~shipper.delivery.link.LokiLink` as live batches:

* a segment is deleted once Loki has answered every record of it (stored, or refused with a
  400 and counted);
* 429 and 5xx: the same entries again after the backoff, within the retry budget;
* Loki away (unreachable, offline, or the budget spent): the segment is released and the
  pipeline goes (or stays) offline; while offline the next tick is the probe, after a backoff
  (:class:`~shipper.delivery.offline.OfflineProbe`). A replay that stops half-way writes the
  rest to a new segment first, so no event is both delivered and still on disk.

``flush`` waits for the segments it *owes* (:meth:`SpoolReplay.owed`): those this process wrote,
those it found at start-up, and those that took the rest of a segment whose replay stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from shipper.config import ShipperConfig
from shipper.delivery.link import LokiLink, backoff
from shipper.delivery.offline import OfflineProbe
from shipper.delivery.spool import ClaimedSegment, Spool
from shipper.delivery.tally import Reporter, Tally
from shipper.event import Entry

__all__ = ["SpoolReplay"]


class SpoolReplay:
    """Claims, reads, pushes and releases spooled segments; knows which ones flush waits for."""

    def __init__(self, spool: Spool, link: LokiLink, probe: OfflineProbe,
                 config: ShipperConfig, tally: Tally, reporter: Reporter) -> None:
        self._spool = spool
        self._link = link
        self._probe = probe
        self._config = config
        self._tally = tally
        self._reporter = reporter
        self._current: tuple[ClaimedSegment, Iterator[bytes]] | None = None
        #: the failed tail of the last replayed request, sent again before reading on
        self._pending: list[Entry] = []
        self._exhausted = False
        self._attempt = 0
        #: records of the claimed segment Loki has answered
        self._answered = 0
        #: segments that took the rest of a segment whose replay stopped half-way
        self._requeued: set[str] = set()
        #: segments found at start-up that no live process holds: flush waits for them too
        self.found: set[str] = spool.free_segments()

    @property
    def requeued(self) -> set[str]:
        """The segments that took the rest of a segment whose replay stopped half-way."""
        return self._requeued

    def owed(self) -> set[str]:
        """The segments flush waits for: found at start-up, written here, or requeued."""
        return self.found | self._spool.created_segments() | self._requeued

    def _read(self) -> tuple[list[Entry], int, bool] | None:
        """The next request's worth of spooled entries: (entries, bytes, segment exhausted);
        None when nothing is left to replay."""
        if self._current is None:
            segment = self._spool.claim()
            if segment is None:
                return None
            self._current = (segment, segment.records())
        _, records = self._current
        batch: list[Entry] = []
        size = 0
        for payload in records:
            try:
                entry = Entry.from_json(payload)
            except (ValueError, TypeError) as exc:
                self._tally.drop("spool_undecodable", 1)
                self._reporter.report("spool_undecodable", exc)
                continue
            batch.append(entry)
            size += len(entry.line) + 160
            if size >= self._config.batch_max_bytes or len(batch) >= self._config.batch_max_events:
                return batch, size, False
        return batch, size, True

    def tick(self) -> float | None:
        """Replay one request's worth of spooled entries; seconds until the next call (None:
        nothing to replay)."""
        probe, link = self._probe, self._link
        wait = probe.until_probe()
        if wait > 0:
            return wait
        pace = link.pace()
        if pace > 0 and not probe.offline:
            return pace
        if self._pending:
            batch, exhausted = self._pending, self._exhausted
            size = sum(len(e.line) + 160 for e in batch)
        else:
            read = self._read()
            if read is None:
                return None
            batch, size, exhausted = read
        if batch:
            failed, failure = link.push(batch, size)
            replayed = len(batch) - len(failed)
            self._answered += replayed
            self._tally.add("replayed", replayed)
            if failed:
                assert failure is not None
                if probe.offline or failure.unreachable or link.budget_spent():
                    # Loki is away: what is not delivered stays on disk for a later attempt
                    self._pending = failed
                    self.release()
                    if not probe.offline:
                        probe.announce(failure.message[:300])
                    probe.went_away()
                    return probe.until_probe()
                # backpressure: the same entries again, after the backoff
                self._pending, self._exhausted = failed, exhausted
                self._attempt += 1
                return backoff(self._config, self._attempt, failure.retry_after)
            self._pending = []
            self._attempt = 0
            probe.came_back()
        if exhausted and self._current is not None:
            # every record of the segment was answered: delete it now
            self._current[0].ack()
            self._current = None
            self._answered = 0
        return 0.0

    def release(self) -> None:
        """Stop replaying the claimed segment. When Loki already answered part of it, the
        rest (the failed request and the records not read yet) is written to a new segment
        and the old one deleted, so no event is both delivered and still on disk; otherwise
        (or when that write fails) the segment is kept as it is."""
        current, pending = self._current, self._pending
        self._current, self._pending, self._attempt = None, [], 0
        answered, self._answered = self._answered, 0
        if current is None:
            return
        segment, records = current
        if not answered:
            segment.release()
            return
        rest = [(segment.priority, e.to_record()) for e in pending]
        try:
            rest += [(segment.priority, payload) for payload in records]
        except Exception as exc:  # reading failed: keep the whole segment
            self._reporter.report("spool_read", exc)
            segment.release()
            return
        if self._spool.append(rest) == len(rest):
            # a flush waiting for the old segment now waits for the ones that took its rest
            self._requeued |= self._spool.active_segments()
            segment.ack()
        else:
            segment.release()

    def drain(self, timeout: float) -> bool:
        """Replay from the calling thread until the spool is empty (True), or Loki is
        unreachable, or ``timeout`` passes (False). Backpressure (429/5xx) is waited out
        within the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self._probe.failures
            delay = self.tick()
            if self._probe.failures > before:
                self.release()
                return False
            if delay is None:
                return self._current is None
            if delay > 0:
                time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
        self.release()
        return False

    def after_fork_in_child(self) -> None:
        """The parent holds the claimed segment's lock (never release it here) and delivers
        the segments it found."""
        self._current = None
        self._pending = []
        self.found = set()

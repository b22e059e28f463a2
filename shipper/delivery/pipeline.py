"""The one shipping pipeline every source shares (the logging handler, the sidecar, the CLI).

source item → :class:`~shipper.event.LogEvent` → redact → :class:`~shipper.event.Entry` →
batch → Loki; when Loki is unreachable → spool → back to Loki later.

* ``submit`` is the only call made on the app's thread: O(1), never blocks, never raises, no
  disk I/O. When the queue is full the item is parked for the worker, which writes it to the
  spool (without a spool, or when that overflow is full too, it is dropped and counted).
* **429 and 5xx are backpressure, not an outage.** The worker re-sends the same batch with
  exponential backoff and jitter, honouring ``Retry-After``, and paces every request by an
  AIMD send rate (:class:`~shipper.delivery.pacing.SendRate`). Only after ``retry_budget``
  seconds of *continuous* failure (no request accepted meanwhile) does it give up on Loki
  for now. A pending flush never cuts this short.
* **Connection errors and timeouts** mean Loki is not there: after one immediate retry on a
  fresh connection the batch goes to the spool and the pipeline is *offline*.
* Offline, live batches go straight to the spool while the worker probes Loki by replaying
  the oldest spooled segment, with backoff. Once Loki accepts again, spooled segments (this
  process's and those a predecessor left behind) are replayed oldest first, one request at a
  time between live batches, so neither starves.
* 400s are never re-sent: Loki stored the valid entries of the request; the refusal is counted
  by reason and its message reported.
* Without a URL the pipeline writes to the spool only (``shipper spool push`` sends it later).

``flush(timeout)`` is True only once Loki has answered every event accepted before the call
(stored, or refused with a 400 and counted) and the spool segments this process wrote or
found at start-up are delivered; ``close()`` drains the same for up to ``shutdown_timeout``,
then says on stderr what is left on disk and how to push it. Every pipeline is in the
process's :mod:`~shipper.delivery.registry` until it is closed.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from shipper.config import ShipperConfig
from shipper.delivery import registry
from shipper.delivery.batcher import Batcher
from shipper.delivery.pacing import SendRate
from shipper.delivery.push import PushOutcome
from shipper.delivery.sender import Sender
from shipper.delivery.spool import ClaimedSegment, Spool
from shipper.delivery.transport import Transport
from shipper.event import Entry, LogEvent, TypeGuard, to_entry
from shipper.loki.client import LokiClient
from shipper.redact import CLEAN_GROUP, Redactor

__all__ = ["ITEM_OVERHEAD", "TAKE_RATIO", "Pipeline"]

_log = logging.getLogger("shipper.internal")
_MAX_RETRY_AFTER = 300.0
#: bytes a queued LogEvent (or another source's item) takes besides its message
ITEM_OVERHEAD = 1024
#: the worker takes this many times ``batch_max_bytes`` of queued memory at once: a queued
#: item takes two to three times the bytes its entry adds to a request (its object, its
#: fields), so that much makes about one full request (requests are cut to size after)
TAKE_RATIO = 3
#: how often a flush waiting for the spool looks at it
_SPOOL_POLL = 0.02
#: how often the worker looks whether the sender took the batch waiting for it
_HANDOFF_POLL = 0.001
#: how long close() waits past its deadline for a request in flight then
_CLOSE_GRACE = 1.0
#: memory a parked spool record takes besides its payload
_RECORD_OVERHEAD = 64


class _SpoolRecord(NamedTuple):
    """An event already in its spool form (priority, payload), parked for the worker."""

    priority: int
    payload: bytes


class Pipeline:
    """Queue, worker, Loki client and spool for one configuration."""

    def __init__(
        self,
        config: ShipperConfig,
        *,
        transport: Transport | None = None,
        convert: Callable[[Any], LogEvent] | None = None,
        convert_entry: Callable[[Any], Entry] | None = None,
        redactor: Redactor | None = None,
        type_guard: TypeGuard | None = None,
        start_replay: bool = True,
        on_push: Callable[[Sequence[Entry], PushOutcome], None] | None = None,
    ) -> None:
        """``convert`` turns a submitted item that is not a :class:`LogEvent` into one;
        ``convert_entry`` (faster) turns it straight into the redacted wire entry instead."""
        self.config = config
        #: called on the worker with the entries of each push request and Loki's answer to
        #: it (``shipper import`` names the rows Loki refused); must not raise or block
        self._on_push = on_push
        self._convert = convert
        self._convert_entry = convert_entry
        #: ``convert_entry.many(items, entries, failed)`` when it has it: a whole batch at once
        self._convert_many: Callable[[Sequence[Any], list[Entry],
                                      Callable[[Exception], None]], None] | None = getattr(
            convert_entry, "many", None)
        self._redactor = redactor if redactor is not None else Redactor(
            keys=config.redact_keys, emails=config.redact_emails
        )
        self._types = type_guard if type_guard is not None else TypeGuard(config.type_limit)
        self._client = LokiClient(config, transport) if config.url else None
        self._reported: set[str] = set()
        self._lock = threading.Lock()  # counters touched by app threads
        self._counts: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._offline = False
        self._probe_at = 0.0
        self._probe_failures = 0
        #: when Loki started failing (429/5xx/no answer) without accepting anything since
        self._failing_since: float | None = None
        self._rate = SendRate()
        self._replay: tuple[ClaimedSegment, Iterator[bytes]] | None = None
        #: the failed tail of the last replayed request, sent again before reading on
        self._replay_pending: list[Entry] = []
        self._replay_exhausted = False
        self._replay_attempt = 0
        #: records of the claimed segment Loki has answered
        self._replay_answered = 0
        #: segments that took the rest of a segment whose replay stopped half-way
        self._requeued: set[str] = set()
        self._closed = False
        spool_dir = config.resolved_spool_dir()
        self._spool = (
            Spool(spool_dir, max_bytes=config.spool_max_bytes,
                  segment_bytes=config.spool_segment_bytes, fsync=config.spool_fsync,
                  report=self.say)
            if spool_dir is not None else None
        )
        #: segments found at start-up that no live process holds: flush waits for them too
        self._found: set[str] = (
            self._spool.free_segments() if self._spool is not None and self._client is not None
            else set()
        )
        #: the idents of the pipeline's running threads (their records must not come back)
        self.own_idents: set[int] = set()
        self._batcher: Batcher[Any] = Batcher(
            process=self._process,
            tick=self._tick if (self._spool is not None and self._client is not None) else None,
            spill=self._spill if self._spool is not None else None,
            report=self.report,
            max_items=config.queue_max_events,
            max_bytes=config.queue_max_bytes,
            overflow_items=config.queue_max_events,
            overflow_bytes=config.queue_max_bytes,
            compact_bytes=config.queue_max_bytes,
            batch_items=config.batch_max_events,
            batch_bytes=config.batch_max_bytes * TAKE_RATIO,
            max_wait=config.batch_max_wait,
            idents=self.own_idents,
        )
        #: delivers one batch while the worker prepares the next
        self._sender: Sender[tuple[list[Entry], int]] = Sender(self._send, report=self.report,
                                                                idents=self.own_idents)
        registry.add(self)
        if start_replay and self._found:
            # a predecessor (crashed or offline) left events behind: replay them now
            self._batcher.start()

    @property
    def closed(self) -> bool:
        """:meth:`close` has been called."""
        return self._closed

    # ------------------------------------------------------------------ app thread

    def submit(self, item: Any, size: int | None = None) -> None:
        """Queue a LogEvent (or an item ``convert`` understands) whose memory cost is about
        ``size`` bytes (default: its message plus :data:`ITEM_OVERHEAD`). Never blocks, never
        raises, never touches the disk (before :meth:`close`)."""
        try:
            if size is None:
                size = _item_size(item)
            if not self._batcher.put(item, size):
                self.overflow(item)
        except Exception as exc:
            self.report("submit", exc)

    def submit_many(self, items: Sequence[Any]) -> None:
        """:meth:`submit` for several items at once (one lock for all of them): what a source
        that reads many events at a time (the sidecar's file tailer) calls."""
        try:
            try:  # LogEvents: their message is a str
                sized = [(item, len(item.message) + ITEM_OVERHEAD) for item in items]
            except (AttributeError, TypeError):
                sized = [(item, _item_size(item)) for item in items]
            for item in self._batcher.put_many(sized):
                self.overflow(item)
        except Exception as exc:
            self.report("submit", exc)

    def overflow(self, item: Any) -> None:
        """An item the queue and its overflow refused (the app logs faster than the worker
        can even spool). With a spool it is turned into its compact spool record on the
        caller's thread (CPU, no disk I/O: the app slows down instead of losing events) and
        parked for the worker to write; once closed (no worker left) it is written to the
        spool from the caller's thread. Otherwise it is dropped and counted."""
        if self._spool is not None:
            entries = self._entries([item])
            if not entries:
                return
            if self._closed:
                self._to_spool(entries, "closed")
                return
            entry = entries[0]
            record = _SpoolRecord(entry.level.priority, entry.to_record())
            if self._batcher.park(record, len(record.payload) + _RECORD_OVERHEAD):
                return
            self._count_drop("queue_full", 1)
            self.report("queue_full", "the queue and its overflow are full (the worker cannot "
                                      "keep up with spooling them): events are dropped")
            return
        reason = "closed" if self._closed else "queue_full"
        self._count_drop(reason, 1)
        if self._closed:
            self.report(reason, "the handler is closed and there is no spool: events are dropped")
        else:
            self.report(reason, "the queue is full and there is no spool: events are dropped")

    # ------------------------------------------------------------------ worker

    def _entries(self, items: Sequence[Any]) -> list[Entry]:
        entries: list[Entry] = []
        if self._convert_many is not None and not any(
                item.__class__ is LogEvent for item in items):
            self._convert_many(items, entries, self._invalid)
        else:
            redact = self._redactor.redact_event
            max_line_bytes = self.config.max_line_bytes
            types = self._types
            # groups of events known to hold nothing to mask skip the redaction walk
            clean = self._redactor.clean_events(items) if all(
                item.__class__ is LogEvent for item in items) else None
            for index, item in enumerate(items):
                try:
                    if item.__class__ is not LogEvent and self._convert_entry is not None:
                        entries.append(self._convert_entry(item))
                        continue
                    event = item if isinstance(item, LogEvent) else self._convert(item)  # type: ignore[misc]
                    if clean is None or not clean[index // CLEAN_GROUP]:
                        event = redact(event)
                    entries.append(to_entry(event, type_guard=types,
                                            max_line_bytes=max_line_bytes))
                except Exception as exc:
                    self._invalid(exc)
        with self._lock:
            self._counts["accepted"] += len(items)
        return entries

    def _invalid(self, exc: Exception) -> None:
        self._count_drop("invalid_event", 1)
        self.report("invalid_event", exc)

    def _process(self, items: list[Any]) -> None:
        entries = self._entries(items)
        if not entries:
            return
        if self._client is None:
            self._to_spool(entries, "no_url")
            return
        for chunk, size in self._chunks(entries):
            if self._offline and self._spool is not None:
                self._to_spool(chunk, "offline")
                continue
            # one batch is sent while this one waits; past that the worker waits too
            while not self._sender.offer((chunk, size)):
                self._batcher.sleep(_HANDOFF_POLL)
                if self._batcher.deadline_passed() and self._sender_stuck():
                    self._to_spool(chunk, "shutdown")
                    break

    def _sender_stuck(self) -> bool:
        """Closing past the deadline, and the sender still busy with its batch."""
        return not self._sender.idle

    def _send(self, work: tuple[list[Entry], int]) -> None:
        """On the sender thread: one batch, with its retries (see _deliver_live)."""
        chunk, size = work
        if self._offline and self._spool is not None:
            self._to_spool(chunk, "offline")
        else:
            self._deliver_live(chunk, size)

    def _spill(self, items: list[Any]) -> None:
        """Items the full queue parked: to the spool (on the worker, never the app thread)."""
        records = [item for item in items if item.__class__ is _SpoolRecord]
        if records:
            items = [item for item in items if item.__class__ is not _SpoolRecord]
            written = self._spool.append(records) if self._spool is not None else 0
            with self._lock:
                self._counts["spooled"] += written
            if written < len(records):
                self._count_drop("spool_full_or_unwritable", len(records) - written)
        if items:
            self._to_spool(self._entries(items), "queue_full")

    def _chunks(self, entries: list[Entry]) -> Iterator[tuple[list[Entry], int]]:
        limit_bytes, limit_events = self.config.batch_max_bytes, self.config.batch_max_events
        chunk: list[Entry] = []
        size = 0
        for entry in entries:
            esize = len(entry.line) + 160  # Entry.size, without the property call
            if chunk and (size + esize > limit_bytes or len(chunk) >= limit_events):
                yield chunk, size
                chunk, size = [], 0
            chunk.append(entry)
            size += esize
        if chunk:
            yield chunk, size

    def queued(self) -> tuple[int, int]:
        """The events in the queue and the bytes they are counted for (see :meth:`load`)."""
        return self._batcher.queued()

    def load(self) -> float:
        """How full the queue is: the larger of its events and bytes over their bounds (0 to
        1, cheap enough to ask often; a source that can wait, like a file, waits above some
        level instead of filling the queue)."""
        events, size = self.queued()
        return max(events / self._batcher.max_items, size / self._batcher.max_bytes)

    def _request_timeout(self) -> float | None:
        """Closing: a request may not outlast close()'s deadline by much."""
        if not self._batcher.closing:
            return None
        left = self._batcher._close_deadline - time.monotonic()
        return min(self.config.timeout, max(left, 0.2))

    def _push(self, entries: Sequence[Entry], size: int) -> tuple[list[Entry],
                                                                  PushOutcome | None]:
        """One push (split if too large); account ok/refused, the send rate and continuous
        failure; return the entries that must be retried and the answer that failed them."""
        assert self._client is not None
        failed = 0
        failure: PushOutcome | None = None
        answered = 0
        offset = 0
        for outcome in self._client.push(entries, timeout=self._request_timeout()):
            if self._on_push is not None:  # split parts answer in order: slice them back
                try:
                    self._on_push(entries[offset:offset + outcome.entries], outcome)
                except Exception as exc:
                    self.report("on_push", exc)
            offset += outcome.entries
            if outcome.kind == "ok":
                answered += outcome.entries
                with self._lock:
                    self._counts["sent"] += outcome.entries
            elif outcome.kind == "refused":
                # Loki stored the valid entries of the request and names only the first
                # refused one: count refused requests by reason, and their events
                answered += outcome.entries
                with self._lock:
                    self._refused[outcome.reason] += 1
                    self._counts["refused_events"] += outcome.entries
                self.report(f"refused:{outcome.reason}",
                            f"Loki refused a push ({outcome.status}): {outcome.message[:500]}")
            else:
                failed += outcome.entries
                failure = outcome
        if answered:
            self._failing_since = None
            self._rate.sent(size * answered // max(len(entries), 1))
        if failed:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            if not failure or not failure.unreachable:
                self._rate.throttled()
            with self._lock:
                self._counts["retried"] += failed
        # split parts go out in order and stop at the first retryable one: the failed
        # entries are the tail of the request
        return (list(entries[len(entries) - failed:]) if failed else []), failure

    def _failing_for(self) -> float:
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER)
        base: float = min(self.config.backoff_max,
                          self.config.backoff_min * float(2 ** min(attempt - 1, 32)))
        return base * random.uniform(0.5, 1.0)

    def _deliver_live(self, entries: list[Entry], size: int) -> None:
        """Send one batch: paced, and re-sent through 429/5xx until Loki takes it, the retry
        budget of continuous failure is spent, Loki turns out unreachable, or close()'s
        deadline passes (then: the spool, or dropped and counted without one)."""
        batcher = self._batcher
        attempt = 0
        pending = entries
        while True:
            pace = self._rate.delay()
            if pace > 0:
                batcher.sleep(pace)
            pending, failure = self._push(pending, size)
            if not pending:
                self._set_online()
                return
            assert failure is not None
            attempt += 1
            message = failure.message[:300]
            unreachable = failure.unreachable
            spent = self._failing_for() >= self.config.retry_budget
            if batcher.deadline_passed():
                self._give_up(pending, "shutdown", message)
                return
            if self._spool is not None and (spent or (unreachable and attempt > 1)):
                self._give_up(pending, "retry", message)
                return
            if self._spool is None and spent:
                self._give_up(pending, "retry_exhausted", message)
                return
            if unreachable and attempt == 1:
                continue  # at once, on a fresh connection: a stale keep-alive one breaks too
            delay = self._backoff(attempt, failure.retry_after)
            if self._spool is None:
                # nowhere to put the batch: wait no longer than the budget
                delay = min(delay, max(self.config.retry_budget - self._failing_for(), 0.0)
                            + 0.001)
            batcher.sleep(delay)

    def _give_up(self, pending: list[Entry], reason: str, message: str) -> None:
        if self._spool is None:
            self._count_drop(reason, len(pending))
            self.report(reason, f"Loki unavailable ({message}) and no spool: "
                                f"{len(pending)} events dropped")
            return
        if reason == "retry":
            self.report("offline", f"Loki unavailable ({message}); spooling to "
                                   f"{self._spool.directory} until it answers again")
        self._to_spool(pending, reason)
        if reason == "retry":
            self._set_offline()

    def _set_offline(self) -> None:
        self._offline = True
        self._probe_failures += 1
        self._probe_at = time.monotonic() + self._backoff(self._probe_failures, None)

    def _set_online(self) -> None:
        if self._offline:
            self._offline = False
            self._probe_failures = 0
            self._reported.discard("offline")

    def _to_spool(self, entries: Sequence[Entry], reason: str) -> None:
        if not entries:
            return
        if self._spool is None:
            self._count_drop(reason, len(entries))
            return
        written = self._spool.append([(e.level.priority, e.to_record()) for e in entries])
        with self._lock:
            self._counts["spooled"] += written
        if written < len(entries):
            self._count_drop("spool_full_or_unwritable", len(entries) - written)

    def _read_replay(self) -> tuple[list[Entry], int, bool] | None:
        """The next request's worth of spooled entries: (entries, bytes, segment exhausted);
        None when nothing is left to replay."""
        spool = self._spool
        assert spool is not None
        if self._replay is None:
            segment = spool.claim()
            if segment is None:
                return None
            self._replay = (segment, segment.records())
        _, records = self._replay
        batch: list[Entry] = []
        size = 0
        for payload in records:
            try:
                entry = Entry.from_json(payload)
            except (ValueError, TypeError) as exc:
                self._count_drop("spool_undecodable", 1)
                self.report("spool_undecodable", exc)
                continue
            batch.append(entry)
            size += len(entry.line) + 160
            if size >= self.config.batch_max_bytes or len(batch) >= self.config.batch_max_events:
                return batch, size, False
        return batch, size, True

    def _tick(self) -> float | None:
        """Replay one request's worth of spooled entries; seconds until the next call (None:
        nothing to replay)."""
        assert self._spool is not None and self._client is not None
        now = time.monotonic()
        if self._offline and now < self._probe_at:
            return self._probe_at - now
        pace = self._rate.delay()
        if pace > 0 and not self._offline:
            return pace
        if self._replay_pending:
            batch, exhausted = self._replay_pending, self._replay_exhausted
            size = sum(len(e.line) + 160 for e in batch)
        else:
            read = self._read_replay()
            if read is None:
                return None
            batch, size, exhausted = read
        if batch:
            failed, failure = self._push(batch, size)
            replayed = len(batch) - len(failed)
            self._replay_answered += replayed
            with self._lock:
                self._counts["replayed"] += replayed
            if failed:
                assert failure is not None
                if (self._offline or failure.unreachable
                        or self._failing_for() >= self.config.retry_budget):
                    # Loki is away: what is not delivered stays on disk for a later attempt
                    self._replay_pending = failed
                    self._release_replay()
                    if not self._offline:
                        self.report("offline", f"Loki unavailable ({failure.message[:300]}); "
                                               f"spooling to {self._spool.directory} until it "
                                               "answers again")
                    self._set_offline()
                    return max(self._probe_at - time.monotonic(), 0.0)
                # backpressure: the same entries again, after the backoff
                self._replay_pending, self._replay_exhausted = failed, exhausted
                self._replay_attempt += 1
                return self._backoff(self._replay_attempt, failure.retry_after)
            self._replay_pending = []
            self._replay_attempt = 0
            self._set_online()
        if exhausted and self._replay is not None:
            # every record of the segment was answered: delete it now
            self._replay[0].ack()
            self._replay = None
            self._replay_answered = 0
        return 0.0

    def _release_replay(self) -> None:
        """Stop replaying the claimed segment. When Loki already answered part of it, the
        rest (the failed request and the records not read yet) is written to a new segment
        and the old one deleted, so no event is both delivered and still on disk; otherwise
        (or when that write fails) the segment is kept as it is."""
        replay, pending = self._replay, self._replay_pending
        self._replay, self._replay_pending, self._replay_attempt = None, [], 0
        answered, self._replay_answered = self._replay_answered, 0
        if replay is None:
            return
        segment, records = replay
        if not answered:
            segment.release()
            return
        assert self._spool is not None
        rest = [(segment.priority, e.to_record()) for e in pending]
        try:
            rest += [(segment.priority, payload) for payload in records]
        except Exception as exc:  # reading failed: keep the whole segment
            self.report("spool_read", exc)
            segment.release()
            return
        if self._spool.append(rest) == len(rest):
            # a flush waiting for the old segment now waits for the ones that took its rest
            self._requeued |= self._spool.active_segments()
            segment.ack()
        else:
            segment.release()

    def drain_spool(self, timeout: float) -> bool:
        """Replay the spool from the calling thread until it is empty (True), or Loki is
        unreachable, or ``timeout`` passes (False). Backpressure (429/5xx) is waited out
        within the timeout. For ``shipper spool push``; the pipeline's worker must not be
        running."""
        if self._spool is None or self._client is None:
            raise ValueError("drain_spool needs both a url and a spool directory")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self._probe_failures
            delay = self._tick()
            if self._probe_failures > before:
                self._release_replay()
                return False
            if delay is None:
                return self._replay is None
            if delay > 0:
                time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
        self._release_replay()
        return False

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float) -> bool:
        """Wait until Loki has answered every event accepted before this call.

        True when each of them is stored, or was refused by Loki with a 400 (counted in
        ``stats()["refused"]``: Loki keeps the valid entries of such a request), and when the
        spool segments this process wrote or found at start-up have been delivered the same
        way. False when that is not so within ``timeout`` seconds (or earlier, once Loki is
        unreachable and the next attempt falls after the deadline), or when events were
        dropped meanwhile: what is not delivered then is safe in the spool, and the worker
        goes on delivering it. 429 and 5xx answers are waited out with backoff meanwhile; a
        flush does not make the worker give up on them sooner.

        Without a URL (spool only) True means: every event accepted before the call is
        written to the spool. Called from the worker itself it returns False at once."""
        deadline = time.monotonic() + timeout
        dropped_before = self._dropped_total()
        if not self._batcher.flush(timeout):
            return False
        if not self._sender.wait_idle(deadline):
            return False
        if not self._wait_for_spool(deadline):
            return False
        return self._dropped_total() == dropped_before

    def _owed(self) -> set[str]:
        assert self._spool is not None
        return self._found | self._spool.created_segments() | self._requeued

    def _wait_for_spool(self, deadline: float) -> bool:
        """Until the segments this process wrote or found at start-up are delivered."""
        spool = self._spool
        if spool is None or self._client is None:
            return True
        if self._batcher.in_worker():
            return False
        owed = self._owed()
        while spool.remaining(owed | self._requeued):
            now = time.monotonic()
            if now >= deadline or (self._offline and self._probe_at >= deadline):
                return False
            self._batcher.start()
            self._batcher.wake_tick()
            time.sleep(min(_SPOOL_POLL, deadline - now))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued and spooled (as :meth:`flush`) for up to ``timeout``
        seconds (default ``shutdown_timeout``), write what is left to the spool, stop the
        worker; idempotent. When events of this process are left on disk it prints one line
        on stderr: how many, where, and the ``shipper spool push`` command that sends them."""
        if self._closed:
            return
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not self._batcher.in_worker():
            self.flush(timeout)
        self._closed = True
        left = self._batcher.close(max(deadline - time.monotonic(), 0.0))
        if left:
            self._to_spool(self._entries(left), "shutdown")
        # the batch being sent ends by the deadline (its request's timeout is cut to it)
        self._sender.wait_idle(max(deadline, time.monotonic()) + _CLOSE_GRACE)
        for chunk, _ in self._sender.stop(_CLOSE_GRACE):
            self._to_spool(chunk, "shutdown")
        self._release_replay()
        if self._spool is not None:
            self._spool.close()
            self._notice_left_on_disk()
        if self._client is not None:
            self._client.close()
        registry.discard(self)
        self._log_summary()

    def _notice_left_on_disk(self) -> None:
        spool = self._spool
        assert spool is not None
        try:
            left = spool.count_records(spool.remaining(self._owed()))
        except Exception as exc:  # never raise from close
            self.say("close", repr(exc))
            return
        if not left:
            return
        directory = spool.directory
        url = _without_credentials(self.config.url) if self.config.url else "URL"
        noun = "event is" if left == 1 else "events are"
        self.say(
            "spool", f"{left} {noun} left in the spool at {directory}; push them to Loki with: "
                     f"shipper spool push --dir {_quote(directory)} --url {url}")

    def _log_summary(self) -> None:
        s = self.stats()
        trouble = s["dropped_total"] or s["refused_total"]
        _log.log(
            logging.WARNING if trouble else logging.INFO,
            "shipper %s: accepted=%d sent=%d retried=%d spooled=%d replayed=%d refused=%s "
            "dropped=%s",
            self.config.service, s["accepted"], s["sent"], s["retried"], s["spooled"],
            s["replayed"], dict(s["refused"]), dict(s["dropped"]),
        )

    def after_fork_in_child(self) -> None:
        self.own_idents.clear()  # the parent's threads do not exist here
        self._batcher.after_fork_in_child()
        self._sender.after_fork_in_child()
        self._replay = None  # the parent holds that segment's lock; never release it here
        self._replay_pending = []
        self._found = set()  # the parent delivers those
        self._rate = SendRate()
        self._failing_since = None
        self._lock = threading.Lock()
        if self._spool is not None:
            self._spool.after_fork_in_child()
        transport = getattr(self._client, "transport", None)
        reset = getattr(transport, "reset_after_fork", None)
        if callable(reset):
            reset()

    # ------------------------------------------------------------------ observability

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
            dropped = dict(self._dropped)
            refused = dict(self._refused)
        out: dict[str, Any] = {
            "accepted": counts.get("accepted", 0),
            "sent": counts.get("sent", 0),
            "retried": counts.get("retried", 0),
            "spooled": counts.get("spooled", 0),
            "replayed": counts.get("replayed", 0),
            "refused": refused,
            "refused_total": sum(refused.values()),
            "refused_events": counts.get("refused_events", 0),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "queued": len(self._batcher),
            "offline": self._offline,
            "send_rate_limit": self._rate.limit,
            "type_overflow": self._types.overflowed,
        }
        if self._spool is not None:
            out["spool"] = self._spool.stats()
        return out

    def _dropped_total(self) -> int:
        with self._lock:
            return sum(self._dropped.values())

    def _count_drop(self, reason: str, n: int) -> None:
        with self._lock:
            self._dropped[reason] += n

    def report(self, kind: str, problem: BaseException | str) -> None:
        """Say what went wrong, once per kind, on stderr (never through logging: no loops)."""
        if kind in self._reported:
            return
        self._reported.add(kind)
        text = problem if isinstance(problem, str) else f"{type(problem).__name__}: {problem}"
        self.say(kind, text)

    def say(self, kind: str, message: str) -> None:
        """Say it on stderr, every time."""
        with contextlib.suppress(Exception):  # stderr closed: nothing left to tell
            sys.stderr.write(f"shipper [{self.config.service}] {kind}: {message}\n")


def _item_size(item: Any) -> int:
    """What a queued item is counted for: its message plus :data:`ITEM_OVERHEAD`."""
    message = getattr(item, "message", None)
    return (len(message) if isinstance(message, str) else 128) + ITEM_OVERHEAD


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _quote(path: Path) -> str:
    return shlex.quote(str(path))

"""The one shipping pipeline every source shares (the logging handler, the sidecar, the CLI).

source item → :class:`~shipper.event.LogEvent` → redact → :class:`~shipper.event.Entry` →
batch → Loki; when Loki is unreachable → spool → back to Loki later.

:class:`Pipeline` takes events and owns the parts that move them, each with one job:

* the queue and its worker (:class:`~shipper.delivery.batcher.Batcher`): ``submit`` is the
  only call made on the app's thread: O(1), never blocks, never raises, no disk I/O. When the
  queue is full the item is parked for the worker, which writes it to the spool (without a
  spool, or when that overflow is full too, it is dropped and counted). The worker turns
  items into redacted entries and cuts them into requests;
* live sending (:class:`~shipper.delivery.live.LiveSender`, on the
  :class:`~shipper.delivery.sender.Sender`'s thread while the worker prepares the next batch):
  429 and 5xx are backpressure, retried with backoff and paced, given up on only after
  ``retry_budget`` seconds of continuous failure; connection errors and timeouts send the
  batch to the spool;
* online/offline state and probing (:class:`~shipper.delivery.offline.OfflineProbe`):
  offline, live batches go straight to the spool while the worker probes Loki with backoff;
* spool replay (:class:`~shipper.delivery.replay.SpoolReplay`): spooled segments (this
  process's and those a predecessor left behind) go back to Loki oldest first, one request at
  a time between live batches, so neither starves;
* one push and what its answer means (:class:`~shipper.delivery.link.LokiLink`), shared by
  live sending and replay: 400s are never re-sent (Loki stored the valid entries of the
  request; the refusal is counted by reason and its message reported), the send rate, the
  continuous failure;
* dead letters (:mod:`~shipper.delivery.spool.deadletters`): the entries Loki refused, with
  its reason, kept in the spool directory's ``dead-letters`` (with a spool) until
  :meth:`Pipeline.push_dead_letters` (:class:`~shipper.delivery.redrive.Redrive`) sends them
  again;
* the counters and stderr reports (:mod:`shipper.delivery.tally`), shared by all of them;
* the heartbeat (:mod:`shipper.delivery.health`): every ``health_interval`` the worker ships a
  ``SHIPPER_HEALTH`` event of those counters through the pipeline itself, and
  :meth:`Pipeline.close` a last one.

Without a URL the pipeline writes to the spool only (``shipper spool push`` sends it later).

``flush(timeout)`` is True only once Loki has answered every event accepted before the call
(stored, or refused with a 400 and counted) and the spool segments this process wrote or
found at start-up are delivered; ``close()`` drains the same for up to ``shutdown_timeout``,
then says on stderr what is left on disk and how to push it. Every pipeline is in the
process's :mod:`~shipper.delivery.registry` until it is closed.
"""

from __future__ import annotations

import logging
import operator
import shlex
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any, NamedTuple

from shipper.config import ShipperConfig
from shipper.delivery import registry
from shipper.delivery.batcher import Batcher
from shipper.delivery.health import Heartbeat, counters
from shipper.delivery.link import LokiAnswer, LokiLink
from shipper.delivery.live import LiveSender, SendWork
from shipper.delivery.offline import OfflineProbe
from shipper.delivery.push import PushClient
from shipper.delivery.redrive import Redrive, RedriveResult
from shipper.delivery.replay import SpoolReplay
from shipper.delivery.sender import Sender
from shipper.delivery.spool import Spool
from shipper.delivery.spool.deadletters import DeadLetter, DeadLetters, dead_letter_dir
from shipper.delivery.tally import Reporter, Tally
from shipper.delivery.transport import Transport
from shipper.event import Entry, LogEvent, TypeGuard, make_entries, to_entry
from shipper.redact import CLEAN_GROUP, Redactor, hide_url_credentials

__all__ = ["ITEM_OVERHEAD", "TAKE_RATIO", "Pipeline"]

_log = logging.getLogger("shipper.internal")
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
        dead_letters: DeadLetters | None = None,
        on_dead_letters: Callable[[Sequence[DeadLetter], bool], None] | None = None,
        health: bool = True,
    ) -> None:
        """``convert`` turns a submitted item that is not a :class:`LogEvent` into one;
        ``convert_entry`` (faster) turns it straight into the redacted wire entry instead.
        ``dead_letters`` keeps the entries Loki refuses (default: the spool directory's
        ``dead-letters``; none without a spool). ``on_dead_letters(letters, kept)`` is called
        on the worker with the entries Loki refused in each answer (``shipper import`` names
        its rows with them); it must not block. ``type_guard`` caps the ``type`` label's
        values per service (by default a :class:`~shipper.event.TypeGuard` of
        ``config.type_limit``); only ``shipper delete`` passes one built with ``audit=True``,
        the one guard that writes the audit types. ``health=False`` turns the heartbeat off
        whatever ``config.health_interval`` says (the one-shot pipelines of the commands)."""
        self.config = config
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
        self._client = PushClient(config, transport) if config.url else None
        self._tally = Tally()
        self._reporter = Reporter(config.service)
        self._closed = False
        spool_dir = config.resolved_spool_dir()
        self._spool = (
            Spool(spool_dir, max_bytes=config.spool_max_bytes,
                  segment_bytes=config.spool_segment_bytes, fsync=config.spool_fsync,
                  report=self.say)
            if spool_dir is not None else None
        )
        self._dead = dead_letters if dead_letters is not None else (
            DeadLetters(dead_letter_dir(spool_dir), max_bytes=config.dead_letter_max_bytes,
                        fsync=config.spool_fsync, report=self.say)
            if spool_dir is not None else None)
        self._on_dead_letters = on_dead_letters
        self._probe = OfflineProbe(config, self._reporter,
                                   self._spool.directory if self._spool is not None else None)
        self._link = LokiLink(
            self._client, config, self._tally, self._reporter,
            request_timeout=self._request_timeout, on_refused=self._dead_letter,
        ) if self._client is not None else None
        #: replays the spool between live batches (with both a URL and a spool)
        self._replay = SpoolReplay(
            self._spool, self._link, self._probe, config, self._tally, self._reporter,
        ) if self._spool is not None and self._link is not None else None
        #: the SHIPPER_HEALTH heartbeat, shipped from the worker every ``health_interval``
        self._heartbeat = Heartbeat(config.health_interval, service=config.service,
                                    env=config.env) if health and config.health_interval else None
        #: the idents of the pipeline's running threads (their records must not come back)
        self.own_idents: set[int] = set()
        self._batcher: Batcher[Any] = Batcher(
            process=self._process,
            tick=self._tick if self._replay is not None or self._heartbeat is not None else None,
            spill=self._spill if self._spool is not None else None,
            ready=self._step_ready,
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
        self._live = LiveSender(
            self._link, self._probe, self._batcher, config, self._tally, self._reporter,
            keep=self._to_spool if self._spool is not None else None,
        ) if self._link is not None else None
        #: delivers one batch while the worker prepares the next
        self._sender: Sender[SendWork] = Sender(self._send, report=self.report,
                                                idents=self.own_idents)
        registry.add(self)
        if start_replay and self._replay is not None and self._replay.found:
            # a predecessor (crashed or offline) left events behind: replay them now
            self._batcher.start()
        elif self._heartbeat is not None:
            self._batcher.start()  # a quiet process heartbeats too

    @property
    def batcher(self) -> Batcher[Any]:
        """The queue between :meth:`submit` and the worker. A source on a hot path (the logging
        handler) may put to it directly, as :meth:`submit` does, and hands an item it refuses
        (the queue is full) to :meth:`overflow`."""
        return self._batcher

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The heartbeat (None when off); its owner may set ``heartbeat.details``, a quick
        callable whose mapping joins each heartbeat's metadata (the sidecar's file lag)."""
        return self._heartbeat

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

    def submit_many(self, items: Sequence[Any], *, work_here: bool = False) -> None:
        """:meth:`submit` for several items at once (one lock, one place in the queue for all
        of them): what a source that reads many events at a time (the sidecar's file tailer)
        calls.

        ``work_here``: when they make a batch due, turn it into requests on the calling
        thread and hand those to the sender, as the worker would (the caller blocks
        meanwhile, and up to a second for the sender to have room): for the sidecar's own
        reader threads, which this spares handing every batch to the worker's thread. Never
        for an app's thread."""
        try:
            batch = list(items)  # the queue keeps the list: the caller's stays the caller's
            try:  # LogEvents: their message is a str (summed in C, not a step per event)
                total = sum(map(len, map(_message_of, batch))) + ITEM_OVERHEAD * len(batch)
            except (AttributeError, TypeError):
                total = sum(map(_item_size, batch))
            for item in self._batcher.put_many(batch, total, _item_size, work_here=work_here):
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
            self._tally.drop("queue_full", 1)
            self.report("queue_full", "the queue and its overflow are full (the worker cannot "
                                      "keep up with spooling them): events are dropped")
            return
        reason = "closed" if self._closed else "queue_full"
        self._tally.drop(reason, 1)
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
            if clean is not None:  # LogEvents only (the sidecar's, SystemLog's)
                entries = make_entries(items, clean, CLEAN_GROUP, redact, self._invalid, types,
                                       max_line_bytes)
            else:
                for item in items:
                    try:
                        if item.__class__ is not LogEvent and self._convert_entry is not None:
                            entries.append(self._convert_entry(item))
                            continue
                        event = item if isinstance(item, LogEvent) else self._convert(item)  # type: ignore[misc]
                        entries.append(to_entry(redact(event), type_guard=types,
                                                max_line_bytes=max_line_bytes))
                    except Exception as exc:
                        self._invalid(exc)
        self._tally.add("accepted", len(items))
        if self._types.audit_renamed or self._types.pooled:
            self._guard_news()
        return entries

    def _guard_news(self) -> None:
        """Say (once each) that an event claimed an audit type, and that more services sent
        events than the type guard keeps a budget for."""
        guard = self._types
        if guard.last_renamed is not None:
            service, claimed, renamed = guard.last_renamed
            self.report("audit_type", f"service {service!r} sent an event of type {claimed}, "
                        "which only `shipper delete` writes: it is shipped as type "
                        f"{renamed}, the claimed type kept as metadata.type "
                        "(counted in stats()['type_audit_renamed'])")
        if guard.pooled:
            self.report("type_services", f"more than {guard.max_services} services sent "
                        "events: the types of the services past them share one budget of "
                        f"type_limit ({guard.limit}) distinct types")

    def _invalid(self, exc: Exception) -> None:
        self._tally.drop("invalid_event", 1)
        self.report("invalid_event", exc)

    def _process(self, items: list[Any]) -> None:
        entries = self._entries(items)
        if not entries:
            return
        if self._client is None:
            self._to_spool(entries, "no_url")
            return
        here = self._batcher.in_producer_step()
        for chunk, size in self._chunks(entries):
            if self._probe.offline and self._spool is not None:
                self._to_spool(chunk, "offline")
                continue
            # one batch is sent while this one waits; past that the worker waits too. The
            # waiting one is encoded here, so that the sender has its next request ready
            # when Loki answers: the sender competes with the sources and the worker for the
            # GIL, and encoding there kept Loki waiting for several milliseconds per request
            work = (chunk, size, self._body(chunk))
            if here:  # a producer's step (work_here): it waited for room before it started
                if not self._sender.hand(work):
                    self._to_spool(chunk, "shutdown")
                continue
            while not self._sender.offer(work):
                self._batcher.sleep(_HANDOFF_POLL)
                if self._batcher.deadline_passed() and self._sender_stuck():
                    self._to_spool(chunk, "shutdown")
                    break

    def _tick(self) -> float | None:
        """On the worker, between batches: replay the spool, and ship the heartbeat when it
        is due. Returns when to be called again (None: idle, soon)."""
        delay = self._replay.tick() if self._replay is not None else None
        heartbeat = self._heartbeat
        if heartbeat is not None:
            wait = heartbeat.wait(time.monotonic())
            if wait <= 0:
                self.beat()
                wait = heartbeat.interval
            if delay is not None:
                delay = min(delay, wait)
        return delay

    def beat(self, final: bool = False) -> None:
        """Ship a heartbeat now (the worker does it every ``health_interval``, :meth:`close`
        a last one with ``final``); nothing when heartbeats are off. Never raises."""
        heartbeat = self._heartbeat
        if heartbeat is None:
            return
        try:
            event = heartbeat.event(self._health_totals(), self._health_state(), final=final)
            self._tally.add("heartbeats", 1)
            self.submit(event)
        except Exception as exc:
            self.report("heartbeat", exc)

    def _health_totals(self) -> dict[str, int]:
        counts, dropped, _ = self._tally.snapshot()
        return counters(counts, dropped, self._tally.refused_events())

    def _health_state(self) -> dict[str, Any]:
        spool_bytes, oldest = 0, 0.0
        if self._spool is not None:
            spool = self._spool.stats()
            spool_bytes, oldest = spool.bytes, round(spool.oldest_segment_age_s or 0.0, 3)
        return {"queued": len(self._batcher), "spool_bytes": spool_bytes,
                "spool_oldest_age_s": oldest, "offline": self._probe.offline}

    def _step_ready(self, timeout: float) -> bool:
        """Before a producer's step (``work_here``): the sender has room for its requests
        (waiting up to ``timeout`` seconds), or there is no sender."""
        return self._client is None or self._sender.wait_room(timeout)

    def _sender_stuck(self) -> bool:
        """Closing past the deadline, and the sender still busy with its batch."""
        return not self._sender.idle

    def _body(self, chunk: list[Entry]) -> bytes | None:
        """The push body of ``chunk``, made on the worker; None when encoding it raised (the
        sender encodes it again, and that answer is handled where every push's is)."""
        assert self._client is not None
        try:
            return self._client.body(chunk)
        except Exception:
            return None

    def _send(self, work: SendWork) -> None:
        """On the sender thread: one batch, with its retries (batches are offered only with
        a URL)."""
        assert self._live is not None
        self._live.send(work)

    def _spill(self, items: list[Any]) -> None:
        """Items the full queue parked: to the spool (on the worker, never the app thread)."""
        records = [item for item in items if item.__class__ is _SpoolRecord]
        if records:
            items = [item for item in items if item.__class__ is not _SpoolRecord]
            written = self._spool.append(records) if self._spool is not None else 0
            self._tally.spooled(written, len(records))
        if items:
            self._to_spool(self._entries(items), "queue_full")

    def _chunks(self, entries: list[Entry]) -> Iterator[tuple[list[Entry], int]]:
        """The entries cut into requests of at most ``batch_max_bytes`` (an entry counts its
        line plus 160, as :attr:`Entry.size`) and ``batch_max_events`` (one entry at least),
        with their sizes."""
        limit_bytes, limit_events = self.config.batch_max_bytes, self.config.batch_max_events
        # the running totals of the sizes, made in C; each request's end is found by bisection
        # (no step per entry in Python)
        totals = list(accumulate(map(operator.add, map(len, map(_line_of, entries)), repeat(160))))
        count = len(totals)
        start = before = 0
        while start < count:
            end = max(bisect_right(totals, before + limit_bytes, start,
                                   min(count, start + limit_events)), start + 1)
            yield entries[start:end], totals[end - 1] - before
            before = totals[end - 1]
            start = end

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
        left = self._batcher.close_deadline - time.monotonic()
        return min(self.config.timeout, max(left, 0.2))

    def _to_spool(self, entries: Sequence[Entry], reason: str) -> None:
        if not entries:
            return
        if self._spool is None:
            self._tally.drop(reason, len(entries))
            return
        written = self._spool.append([(e.level.priority, e.to_record()) for e in entries])
        self._tally.spooled(written, len(entries))

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """The entries Loki refused in one answer: kept as dead letters (with a store), counted
        by reason, and told to ``on_dead_letters``."""
        kept = False
        dead = self._dead
        if dead is not None:
            written, lost = dead.add(letters)
            kept = written == len(letters)
            self._tally.dead_lettered(Counter(letter.reason for letter in letters)
                                      if kept else Counter(), lost)
            if kept:
                self.report("dead_letters", f"the entries Loki refused are kept as dead "
                            f"letters in {dead.directory}: list them with `shipper spool "
                            f"dead-letters list --dir {_quote(dead.directory.parent)}`, push "
                            "them again once Loki's limits allow with `shipper spool "
                            "dead-letters push`")
        if self._on_dead_letters is not None:
            try:
                self._on_dead_letters(letters, kept)
            except Exception as exc:
                self.report("on_dead_letters", exc)

    def push_dead_letters(self, timeout: float) -> RedriveResult:
        """Push the dead letters to Loki again from the calling thread, for up to ``timeout``
        seconds: what Loki stores is removed, what it refuses again is kept with the new
        reason (see :mod:`shipper.delivery.redrive`). For ``shipper spool dead-letters
        push``; the pipeline's worker must not be running (the result counts from the
        pipeline's counters)."""
        if self._link is None or self._dead is None:
            raise ValueError("push_dead_letters needs both a url and dead letters (a spool)")
        return Redrive(self._dead, self._link, self.config, self._tally,
                       self._reporter).run(timeout)

    def probe_loki(self) -> LokiAnswer | None:
        """Push nothing to Loki from the calling thread (see
        :meth:`~shipper.delivery.push.PushClient.probe`) and return what it answered, which
        ``stats()["loki_answer"]`` shows from then on; None without a URL. For readiness
        checks before the first push, and while no push tells whether Loki is back."""
        return self._link.probe() if self._link is not None else None

    def drain_spool(self, timeout: float) -> bool:
        """Replay the spool from the calling thread until it is empty (True), or Loki is
        unreachable, or ``timeout`` passes (False). Backpressure (429/5xx) is waited out
        within the timeout. For ``shipper spool push``; the pipeline's worker must not be
        running."""
        if self._replay is None:
            raise ValueError("drain_spool needs both a url and a spool directory")
        return self._replay.drain(timeout)

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
        dropped_before = self._tally.dropped_total()
        if not self._batcher.flush(timeout):
            return False
        if not self._sender.wait_idle(deadline):
            return False
        if not self._wait_for_spool(deadline):
            return False
        return self._tally.dropped_total() == dropped_before

    def _wait_for_spool(self, deadline: float) -> bool:
        """Until the segments this process wrote or found at start-up are delivered."""
        spool, replay = self._spool, self._replay
        if spool is None or replay is None:
            return True
        if self._batcher.in_worker():
            return False
        owed = replay.owed()
        while spool.remaining(owed | replay.requeued):
            now = time.monotonic()
            if now >= deadline or self._probe.probe_after(deadline):
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
        # the last heartbeat counts what the flush delivered; the drain below ships it
        self.beat(final=True)
        self._closed = True
        left = self._batcher.close(max(deadline - time.monotonic(), 0.0))
        if left:
            self._to_spool(self._entries(left), "shutdown")
        # the batch being sent ends by the deadline (its request's timeout is cut to it)
        self._sender.wait_idle(max(deadline, time.monotonic()) + _CLOSE_GRACE)
        for chunk, _, _ in self._sender.stop(_CLOSE_GRACE):
            self._to_spool(chunk, "shutdown")
        if self._replay is not None:
            self._replay.release()
        if self._spool is not None:
            self._spool.close()
            self._notice_left_on_disk()
        if self._dead is not None:
            self._dead.close()
        if self._client is not None:
            self._client.close()
        registry.discard(self)
        self._log_summary()

    def _notice_left_on_disk(self) -> None:
        spool = self._spool
        assert spool is not None
        try:
            owed = self._replay.owed() if self._replay is not None else spool.created_segments()
            left = spool.count_records(spool.remaining(owed))
        except Exception as exc:  # never raise from close
            self.say("close", repr(exc))
            return
        if not left:
            return
        directory = spool.directory
        url = hide_url_credentials(self.config.url) if self.config.url else "URL"
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
            "dead_lettered=%s dropped=%s",
            self.config.service, s["accepted"], s["sent"], s["retried"], s["spooled"],
            s["replayed"], dict(s["refused"]), dict(s["dead_lettered"]), dict(s["dropped"]),
        )

    def after_fork_in_child(self) -> None:
        self.own_idents.clear()  # the parent's threads do not exist here
        self._batcher.after_fork_in_child()
        self._sender.after_fork_in_child()
        if self._replay is not None:
            self._replay.after_fork_in_child()
        if self._link is not None:
            self._link.after_fork_in_child()
        self._tally.after_fork_in_child()
        if self._spool is not None:
            self._spool.after_fork_in_child()
        if self._dead is not None:
            self._dead.after_fork_in_child()
        transport = getattr(self._client, "transport", None)
        reset = getattr(transport, "reset_after_fork", None)
        if callable(reset):
            reset()
        if self._heartbeat is not None and not self._closed:
            # the child reports its own events, with its own pid, from its own worker
            self._heartbeat.restart(self._health_totals(), time.monotonic())
            self._batcher.start()

    # ------------------------------------------------------------------ observability

    def stats(self) -> dict[str, Any]:
        counts, dropped, refused = self._tally.snapshot()
        out: dict[str, Any] = {
            "accepted": counts.get("accepted", 0),
            "sent": counts.get("sent", 0),
            "retried": counts.get("retried", 0),
            "heartbeats": counts.get("heartbeats", 0),
            "spooled": counts.get("spooled", 0),
            "replayed": counts.get("replayed", 0),
            "refused": refused,
            "refused_total": sum(refused.values()),
            "refused_events": counts.get("refused_events", 0),
            "dead_lettered": self._tally.dead_letters(),
            "dead_letters_dropped": counts.get("dead_letters_dropped", 0),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "queued": len(self._batcher),
            "offline": self._probe.offline,
            "send_rate_limit": self._link.send_rate_limit if self._link is not None else None,
            "type_overflow": self._types.overflowed,
            "type_audit_renamed": self._types.audit_renamed,
            # bytes of the requests Loki took, as sent (compressed when they were); a 400
            # counts: Loki stored the valid entries of the request
            "sent_bytes": counts.get("sent_bytes", 0),
            "refused_entries": self._tally.refused_entries(),
            "push_seconds": self._tally.push_times(),
            # what the last push or probe said of Loki (None: none yet, or no URL)
            "loki_answer": self._link.answer if self._link is not None else None,
            # the spool takes events now (None: there is no spool)
            "spool_writable": self._spool.writable() if self._spool is not None else None,
        }
        if self._spool is not None:
            out["spool"] = self._spool.stats()
        return out

    def report(self, kind: str, problem: BaseException | str) -> None:
        """Say what went wrong, once per kind, on stderr (never through logging: no loops)."""
        self._reporter.report(kind, problem)

    def say(self, kind: str, message: str) -> None:
        """Say it on stderr, every time."""
        self._reporter.say(kind, message)


_message_of = operator.attrgetter("message")
_line_of = operator.itemgetter(2)  # Entry.line


def _item_size(item: Any) -> int:
    """What a queued item is counted for: its message plus :data:`ITEM_OVERHEAD`."""
    message = getattr(item, "message", None)
    return (len(message) if isinstance(message, str) else 128) + ITEM_OVERHEAD


def _quote(path: Path) -> str:
    return shlex.quote(str(path))

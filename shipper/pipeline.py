"""The one shipping pipeline every source shares (the logging handler, the sidecar, the CLI).

source item → :class:`~shipper.event.LogEvent` → redact → :class:`~shipper.event.Entry` →
batch → Loki; on trouble → spool → back to Loki later.

* ``submit`` is the only call made on the app's thread: O(1), never blocks on the network,
  never raises. A full queue sends the item to the spool (or drops it, counted, without one).
* The worker retries 429/5xx/connection trouble with exponential backoff and jitter, honouring
  ``Retry-After``, for ``retry_budget`` seconds; then the batch goes to the spool and the
  pipeline is *offline*: live batches go straight to the spool while the worker probes Loki by
  replaying the oldest spooled segment, with backoff. Once Loki accepts again, spooled segments
  are replayed oldest first, one request at a time between live batches, so neither starves.
* 400s are never re-sent: Loki stored the valid entries of the request; the refusal is counted
  by reason and its message reported.
* Without a URL the pipeline writes to the spool only (``shipper spool push`` sends it later).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from shipper.batcher import Batcher
from shipper.config import ShipperConfig
from shipper.event import Entry, LogEvent, TypeGuard, to_entry
from shipper.loki import LokiClient, PushOutcome
from shipper.redact import Redactor
from shipper.spool import ClaimedSegment, Spool
from shipper.transport import Transport

__all__ = ["Pipeline", "live_pipelines"]

_log = logging.getLogger("shipper.internal")
_MAX_RETRY_AFTER = 300.0
#: bytes a queued LogRecord (its __dict__, args, extra) or LogEvent takes besides its message
ITEM_OVERHEAD = 1024
_PIPELINES: weakref.WeakSet[Pipeline] = weakref.WeakSet()


class Pipeline:
    """Queue, worker, Loki client and spool for one configuration."""

    def __init__(
        self,
        config: ShipperConfig,
        *,
        transport: Transport | None = None,
        convert: Callable[[Any], LogEvent] | None = None,
        redactor: Redactor | None = None,
        start_replay: bool = True,
        on_push: Callable[[Sequence[Entry], PushOutcome], None] | None = None,
    ) -> None:
        self.config = config
        #: called on the worker with the entries of each push request and Loki's answer to
        #: it (``shipper import`` names the rows Loki refused); must not raise or block
        self._on_push = on_push
        self._convert = convert
        self._redactor = redactor if redactor is not None else Redactor(
            keys=config.redact_keys, emails=config.redact_emails
        )
        self._types = TypeGuard(config.type_limit)
        self._client = LokiClient(config, transport) if config.url else None
        self._reported: set[str] = set()
        self._lock = threading.Lock()  # counters touched by app threads
        self._counts: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._offline = False
        self._probe_at = 0.0
        self._probe_failures = 0
        self._replay: tuple[ClaimedSegment, Iterator[bytes]] | None = None
        self._closed = False
        spool_dir = config.resolved_spool_dir()
        self._spool = (
            Spool(spool_dir, max_bytes=config.spool_max_bytes,
                  segment_bytes=config.spool_segment_bytes, fsync=config.spool_fsync,
                  report=self._report_text)
            if spool_dir is not None else None
        )
        self._batcher: Batcher[Any] = Batcher(
            process=self._process,
            tick=self._tick if (self._spool is not None and self._client is not None) else None,
            report=self.report,
            max_items=config.queue_max_events,
            max_bytes=config.queue_max_bytes,
            batch_items=config.batch_max_events,
            batch_bytes=config.batch_max_bytes,
            max_wait=config.batch_max_wait,
        )
        _PIPELINES.add(self)
        if config.handle_sigterm:
            from shipper.lifecycle import _install_sigterm_hook

            _install_sigterm_hook()
        if start_replay and self._spool is not None and self._client is not None \
                and self._spool.stats().segments:
            # a predecessor (crashed or offline) left events behind: replay them now
            self._batcher.start()

    # ------------------------------------------------------------------ app thread

    def submit(self, item: Any, size: int | None = None) -> None:
        """Queue a LogEvent (or an item ``convert`` understands) whose memory cost is about
        ``size`` bytes (default: its message plus :data:`ITEM_OVERHEAD`). Never blocks, never
        raises."""
        try:
            if size is None:
                message = getattr(item, "message", None)
                size = (len(message) if isinstance(message, str) else 128) + ITEM_OVERHEAD
            if not self._batcher.put(item, size):
                self.overflow(item)
        except Exception as exc:
            self.report("submit", exc)

    def overflow(self, item: Any) -> None:
        """An item the queue refused (full or closed): to the spool, or dropped and counted."""
        reason = "closed" if self._closed else "queue_full"
        if self._spool is None:
            self._count_drop(reason, 1)
            why = "the handler is closed" if self._closed else "the queue is full"
            self.report(reason, f"{why} and there is no spool: events are dropped")
            return
        entries = self._entries([item])
        self._to_spool(entries, reason)

    # ------------------------------------------------------------------ worker

    def _entries(self, items: Sequence[Any]) -> list[Entry]:
        entries: list[Entry] = []
        redact = self._redactor.redact_event
        for item in items:
            try:
                event = item if isinstance(item, LogEvent) else self._convert(item)  # type: ignore[misc]
                entries.append(to_entry(redact(event), type_guard=self._types,
                                        max_line_bytes=self.config.max_line_bytes))
            except Exception as exc:
                self._count_drop("invalid_event", 1)
                self.report("invalid_event", exc)
        with self._lock:
            self._counts["accepted"] += len(items)
        return entries

    def _process(self, items: list[Any]) -> None:
        entries = self._entries(items)
        if not entries:
            return
        if self._client is None:
            self._to_spool(entries, "no_url")
            return
        for chunk in self._chunks(entries):
            if self._offline and self._spool is not None:
                self._to_spool(chunk, "offline")
            else:
                self._deliver_live(chunk)

    def _chunks(self, entries: list[Entry]) -> Iterator[list[Entry]]:
        limit_bytes, limit_events = self.config.batch_max_bytes, self.config.batch_max_events
        chunk: list[Entry] = []
        size = 0
        for entry in entries:
            esize = entry.size
            if chunk and (size + esize > limit_bytes or len(chunk) >= limit_events):
                yield chunk
                chunk, size = [], 0
            chunk.append(entry)
            size += esize
        if chunk:
            yield chunk

    def _push(self, entries: Sequence[Entry]) -> tuple[list[Entry], float | None, str]:
        """One push (split if too large); account ok/refused; return what must be retried."""
        assert self._client is not None
        failed = 0
        retry_after: float | None = None
        message = ""
        offset = 0
        for outcome in self._client.push(entries):
            if self._on_push is not None:  # split parts answer in order: slice them back
                try:
                    self._on_push(entries[offset:offset + outcome.entries], outcome)
                except Exception as exc:
                    self.report("on_push", exc)
            offset += outcome.entries
            if outcome.kind == "ok":
                self._counts["sent"] += outcome.entries
            elif outcome.kind == "refused":
                # Loki stored the valid entries of the request and names only the first
                # refused one: count refused requests, by reason
                self._refused[outcome.reason] += 1
                self.report(f"refused:{outcome.reason}",
                            f"Loki refused a push ({outcome.status}): {outcome.message[:500]}")
            else:
                failed += outcome.entries
                retry_after, message = outcome.retry_after, outcome.message
        # split parts go out in order and stop at the first retryable one: the failed
        # entries are the tail of the request
        return list(entries[len(entries) - failed:]) if failed else [], retry_after, message

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER)
        base: float = min(self.config.backoff_max,
                          self.config.backoff_min * float(2 ** min(attempt - 1, 32)))
        return base * random.uniform(0.5, 1.0)

    def _deliver_live(self, entries: list[Entry]) -> None:
        start = time.monotonic()
        attempt = 0
        pending = entries
        while True:
            pending, retry_after, message = self._push(pending)
            if not pending:
                self._set_online()
                return
            attempt += 1
            self._counts["retried"] += len(pending)
            elapsed = time.monotonic() - start
            batcher = self._batcher
            if self._spool is not None and (
                batcher.urgent or elapsed >= self.config.retry_budget
            ):
                self.report("offline", f"Loki unavailable ({message[:300]}); spooling to "
                                       f"{self._spool.directory} until it answers again")
                self._to_spool(pending, "retry")
                self._set_offline()
                return
            if self._spool is None and (
                elapsed >= self.config.retry_budget or batcher.deadline_passed()
            ):
                reason = "shutdown" if batcher.deadline_passed() else "retry_exhausted"
                self._count_drop(reason, len(pending))
                self.report(reason, f"Loki unavailable ({message[:300]}) and no spool: "
                                    f"{len(pending)} events dropped")
                return
            delay = self._backoff(attempt, retry_after)
            if self._spool is None:
                # nowhere to put the batch: a flush cannot cut the wait short, a close can
                delay = min(delay, max(self.config.retry_budget - elapsed, 0.0) + 0.001)
                batcher.sleep(delay, interrupt_on_flush=False)
            else:
                batcher.sleep(delay)

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
        written = self._spool.append(
            [(e.level.priority, e.to_json().encode("utf-8")) for e in entries]
        )
        with self._lock:
            self._counts["spooled"] += written
        if written < len(entries):
            self._count_drop("spool_full_or_unwritable", len(entries) - written)

    def _tick(self) -> float | None:
        """Replay one request's worth of spooled entries; seconds until the next call."""
        spool = self._spool
        assert spool is not None and self._client is not None
        now = time.monotonic()
        if self._offline and now < self._probe_at:
            return self._probe_at - now
        if self._replay is None:
            segment = spool.claim()
            if segment is None:
                return None
            self._replay = (segment, segment.records())
        segment, records = self._replay
        batch: list[Entry] = []
        size = 0
        exhausted = True
        for payload in records:
            try:
                entry = Entry.from_json(payload)
            except (ValueError, TypeError) as exc:
                self._count_drop("spool_undecodable", 1)
                self.report("spool_undecodable", exc)
                continue
            batch.append(entry)
            size += entry.size
            if size >= self.config.batch_max_bytes or len(batch) >= self.config.batch_max_events:
                exhausted = False
                break
        if batch:
            failed, _, _ = self._push(batch)
            if failed:
                self._counts["retried"] += len(failed)
                segment.release()
                self._replay = None
                self._set_offline()
                return self._probe_at - time.monotonic()
            self._counts["replayed"] += len(batch)
            self._set_online()
        if exhausted:  # every record of the segment was accepted: delete it now
            segment.ack()
            self._replay = None
        return 0.0

    def drain_spool(self, timeout: float) -> bool:
        """Replay the spool from the calling thread until it is empty (True) or Loki stops
        accepting or ``timeout`` passes (False). For ``shipper spool push``; the pipeline's
        worker must not be running."""
        if self._spool is None or self._client is None:
            raise ValueError("drain_spool needs both a url and a spool directory")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self._probe_failures
            delay = self._tick()
            if self._probe_failures > before:
                return False
            if delay is None:
                return self._replay is None
        return False

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float) -> bool:
        """True when everything submitted so far was delivered or spooled within ``timeout``."""
        dropped_before = sum(self._dropped.values())
        ok = self._batcher.flush(timeout)
        return ok and sum(self._dropped.values()) == dropped_before

    def close(self, timeout: float | None = None) -> None:
        """Drain for up to ``timeout`` seconds, spool what is left, stop; idempotent."""
        if self._closed:
            return
        self._closed = True
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        left = self._batcher.close(timeout)
        if left:
            self._to_spool(self._entries(left), "shutdown")
        if self._replay is not None:
            self._replay[0].release()
            self._replay = None
        if self._spool is not None:
            self._spool.close()
        if self._client is not None:
            self._client.close()
        _PIPELINES.discard(self)
        self._log_summary()

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
        self._batcher.after_fork_in_child()
        self._replay = None  # the parent holds that segment's lock; never release it here
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
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "queued": len(self._batcher),
            "offline": self._offline,
            "type_overflow": self._types.overflowed,
        }
        if self._spool is not None:
            out["spool"] = self._spool.stats()
        return out

    def _count_drop(self, reason: str, n: int) -> None:
        with self._lock:
            self._dropped[reason] += n

    def report(self, kind: str, problem: BaseException | str) -> None:
        """Say what went wrong, once per kind, on stderr (never through logging: no loops)."""
        if kind in self._reported:
            return
        self._reported.add(kind)
        text = problem if isinstance(problem, str) else f"{type(problem).__name__}: {problem}"
        self._report_text(kind, text)

    def _report_text(self, kind: str, message: str) -> None:
        with contextlib.suppress(Exception):  # stderr closed: nothing left to tell
            sys.stderr.write(f"shipper [{self.config.service}] {kind}: {message}\n")


def live_pipelines() -> list[Pipeline]:
    """Every pipeline of this process that is not closed yet (handlers' and sidecar's)."""
    return [p for p in list(_PIPELINES) if not p._closed]


def _close_all() -> None:
    for pipeline in list(_PIPELINES):
        try:
            pipeline.close()
        except Exception as exc:  # exiting: say it and go on
            pipeline._report_text("close", repr(exc))


def _after_fork_in_child() -> None:
    for pipeline in list(_PIPELINES):
        pipeline.after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""The pipeline's heartbeat: a ``SHIPPER_HEALTH`` event of what it did since the last one.

Every ``health_interval`` the pipeline's worker asks :class:`Heartbeat` for an event and ships
it through the pipeline like any other (to the spool while Loki is away, so an outage shows
afterwards); :meth:`~shipper.delivery.pipeline.Pipeline.close` asks for a last one before its
final flush. The event is actor ``SYSTEM``, type ``SHIPPER_HEALTH``, level ``INFO``, or
``WARNING`` when anything was dropped or refused since the last heartbeat.

Its metadata is flat, numbers and short texts only, so that ``| json`` makes each a label and
``| unwrap metadata_dropped`` reads it:

* since the last heartbeat: ``accepted``, ``sent``, ``retried``, ``spooled``, ``replayed``,
  ``refused`` (entries in the pushes Loki refused) and ``dropped``, with one
  ``refused_<reason>`` and ``dropped_<reason>`` per reason that counted (``dropped_queue_full``);
* now: ``queued``, ``spool_bytes``, ``spool_oldest_age_s``, ``offline``;
* who: ``host``, ``pid``, ``version``, ``role``, ``interval_s``, and ``final`` on the last one;
* what the pipeline's owner adds (the sidecar: how far behind its files are).

``accepted`` counts the events the app (or the sidecar's sources) handed over: the heartbeats
themselves are shipped like any event (``stats()["accepted"]`` counts them, and ``sent``,
``spooled`` and ``replayed`` count them as they go), but each heartbeat's ``accepted`` leaves
them out, so a quiet process reports ``accepted`` 0.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from shipper._version import __version__
from shipper.event import HEALTH_TYPE, Actor, Level, LogEvent

__all__ = ["COUNTERS", "HEALTH_LOGGER", "Heartbeat", "counters"]

#: the counters a heartbeat reports as "since the last one"
COUNTERS = ("accepted", "sent", "retried", "spooled", "replayed", "refused", "dropped")
#: the ``logger`` of a heartbeat
HEALTH_LOGGER = "shipper.health"
#: what a reason may hold in a metadata key (``dropped_<reason>``)
_KEY_UNSAFE = re.compile(r"[^a-z0-9_]+")
#: a reason's part of a key at most this long (the reasons are short names; this bounds others)
_REASON_CHARS = 48


def _key(prefix: str, reason: str) -> str:
    return f"{prefix}_{_KEY_UNSAFE.sub('_', reason.lower())[:_REASON_CHARS].strip('_') or 'other'}"


def counters(counts: Mapping[str, int], dropped: Mapping[str, int],
             refused_events: Mapping[str, int]) -> dict[str, int]:
    """The pipeline's running totals, flat: the :data:`COUNTERS` and one
    ``dropped_<reason>`` / ``refused_<reason>`` per reason (reasons made key-safe)."""
    out = {name: int(counts.get(name, 0)) for name in ("accepted", "sent", "retried",
                                                        "spooled", "replayed", "heartbeats")}
    out["refused"] = int(sum(refused_events.values()))
    out["dropped"] = int(sum(dropped.values()))
    for prefix, by_reason in (("refused", refused_events), ("dropped", dropped)):
        for reason, n in by_reason.items():
            key = _key(prefix, reason)
            out[key] = out.get(key, 0) + int(n)
    return out


class Heartbeat:
    """When the next heartbeat is due, and the event that says what changed since the last."""

    def __init__(self, interval: float, *, service: str, env: str | None,
                 now: float | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"a heartbeat needs a positive interval, got {interval!r}")
        self.interval = interval
        self.service = service
        self.env = env
        #: called for extra metadata (the sidecar's file lag); must be quick and not raise
        self.details: Callable[[], Mapping[str, Any]] | None = None
        self.host = socket.gethostname()
        self._last: dict[str, int] = {}
        self._next = (time.monotonic() if now is None else now) + interval

    def wait(self, now: float) -> float:
        """Seconds until the next heartbeat is due (0 or less: now)."""
        return self._next - now

    def restart(self, totals: Mapping[str, int], now: float) -> None:
        """Count from ``totals`` on (a forked child: what the parent counted is the parent's
        to report), the next heartbeat an interval from ``now``."""
        self._last = dict(totals)
        self._next = now + self.interval

    def event(self, totals: Mapping[str, int], state: Mapping[str, Any], *, final: bool = False,
              now: float | None = None, timestamp_ns: int | None = None) -> LogEvent:
        """The heartbeat for the counters ``totals`` (from :func:`counters`) and the pipeline's
        ``state`` now (``queued``, ``spool_bytes``, ``spool_oldest_age_s``, ``offline``);
        the next one is due an interval from ``now``."""
        now = time.monotonic() if now is None else now
        last = self._last
        since = {key: value - last.get(key, 0) for key, value in totals.items()}
        # the heartbeats shipped since the last one are not the app's events
        since["accepted"] = max(since.get("accepted", 0) - since.pop("heartbeats", 0), 0)
        self._last = dict(totals)
        self._next = now + self.interval
        meta: dict[str, Any] = {name: since.get(name, 0) for name in COUNTERS}
        meta.update(sorted((key, n) for key, n in since.items()
                           if key not in meta and n > 0))
        meta.update(state)
        meta.update(host=self.host, pid=os.getpid(), version=__version__, role="app",
                    interval_s=self.interval)
        if final:
            meta["final"] = True
        if self.details is not None:
            try:
                extra = dict(self.details())
            except Exception as exc:  # the heartbeat goes out all the same, saying why
                extra = {"details_error": f"{type(exc).__name__}: {exc}"[:200]}
            meta.update((key, value) for key, value in extra.items() if key not in COUNTERS)
        trouble = meta["dropped"] > 0 or meta["refused"] > 0
        message = (f"shipper health: accepted {meta['accepted']}, sent {meta['sent']}, "
                   f"dropped {meta['dropped']}, refused {meta['refused']}, queued "
                   f"{meta.get('queued', 0)}, spool {meta.get('spool_bytes', 0)} bytes"
                   + (", offline" if meta.get("offline") else "")
                   + (" (final)" if final else ""))
        return LogEvent.create(
            service=self.service, env=self.env, level=Level.WARNING if trouble else Level.INFO,
            actor=Actor.SYSTEM, type=HEALTH_TYPE, message=message, logger=HEALTH_LOGGER,
            timestamp_ns=time.time_ns() if timestamp_ns is None else timestamp_ns,
            metadata=meta)

"""Logging the demo's events the way an app does, and the ``--file`` copy of what is sent.

* :class:`DemoEmitter` turns each :class:`~shipper.cli.demo.marketplace.DemoEvent` into the call
  an app would make: :class:`~shipper.api.SystemLog` helpers, and plain ``logging`` for access
  events. An API error is raised for real by the failing code path, so its traceback is real;
  a timing goes through the real :class:`~shipper.perf.Operation`.
* :class:`EventTimeFilter` gives a replayed past event its own time.
* :class:`JsonLinesFileHandler` writes what the handler sends as JSON lines (``--file``), the
  shape the collector configs in ``promtail/`` read (:func:`entry_to_file_object`,
  :func:`file_object_to_entry`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from shipper._units import format_time, parse_time
from shipper.api import SystemLog
from shipper.cli.demo.marketplace import KINDS, DemoError, DemoEvent
from shipper.context import current_context, log_context
from shipper.event import (
    DEFAULT_MAX_LINE_BYTES,
    Actor,
    Entry,
    LogEvent,
    TypeGuard,
    to_entry,
)
from shipper.handler import event_from_record
from shipper.perf import Operation

__all__ = [
    "DemoEmitter",
    "EventTimeFilter",
    "JsonLinesFileHandler",
    "entry_to_file_object",
    "file_object_to_entry",
]

_EVENT_TIME: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "shipper_demo_event_time", default=None
)


class EventTimeFilter(logging.Filter):
    """Sets ``record.event_time`` (ns) for records logged while :class:`DemoEmitter` replays a
    past event: SystemLog's helpers take no ``extra``, and the handler reads ``event_time``."""

    def filter(self, record: logging.LogRecord) -> bool:
        when = _EVENT_TIME.get()
        if when is not None and getattr(record, "event_time", None) is None:
            record.event_time = when
        return True


class _IntegrityError(Exception):
    """What the ORM raises on a unique-constraint violation."""


_LISTING_CACHE: dict[str, dict[str, Any]] = {}


def _gateway_request(path: str, timeout: float) -> dict[str, Any]:
    raise TimeoutError(f"api.stripe.com{path}: read timed out after {timeout:.1f}s")


def _capture_payment(booking_id: str, amount_cents: int) -> dict[str, Any]:
    return _gateway_request(f"/v1/payment_intents/{booking_id}/capture?amount={amount_cents}",
                            timeout=10.0)


def _load_listing(listing_id: str) -> dict[str, Any]:
    return _LISTING_CACHE[listing_id]


def _parse_stripe_event(body: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(body)
    return event


def _split_payout(amount_cents: int, co_hosts: Sequence[str]) -> dict[str, int]:
    share = amount_cents // len(co_hosts)
    return dict.fromkeys(co_hosts, share)


def _save_profile(user_id: str, email: str) -> None:
    raise _IntegrityError(
        f'duplicate key value violates unique constraint "users_email_key" '
        f"DETAIL: Key (email)=({email}) already exists. (user {user_id})"
    )


def _raise_failure(params: Mapping[str, Any]) -> BaseException:
    """Run the failing code path for an ``api_error`` event and return what it raised (with
    its traceback), so the logged exception is a real one."""
    failure = params["failure"]
    try:
        if failure == "gateway_timeout":
            _capture_payment(params["booking_id"], params["amount_cents"])
        elif failure == "missing_listing":
            _load_listing(params["listing_id"])
        elif failure == "bad_payload":
            _parse_stripe_event('{"id": "evt_1", "type": "payment_intent.succeeded", "data": {')
        elif failure == "payout_split":
            _split_payout(params["amount_cents"], [])
        elif failure == "duplicate_email":
            _save_profile(params.get("user_id") or "usr_unknown", "guest@example.com")
        else:
            raise DemoError(f"unknown API failure {failure!r}")
    except DemoError:
        raise
    except Exception as exc:
        return exc
    raise AssertionError(f"failure {failure!r} did not raise")  # pragma: no cover


class DemoEmitter:
    """Logs :class:`DemoEvent` values the way an app would: SystemLog helpers, and plain
    ``logging`` for access events, on loggers named ``<base>.<event.logger>``."""

    def __init__(self, base: str = "marketplace") -> None:
        self.base = base
        self._slogs: dict[str, SystemLog] = {}

    def logger(self, name: str) -> logging.Logger:
        return logging.getLogger(f"{self.base}.{name}")

    def _slog(self, name: str) -> SystemLog:
        slog = self._slogs.get(name)
        if slog is None:
            slog = self._slogs[name] = SystemLog(self.logger(name))
        return slog

    def emit(self, event: DemoEvent) -> None:
        token = _EVENT_TIME.set(event.time_ns)
        scope = (log_context(trace_id=event.trace_id) if event.trace_id
                 else contextlib.nullcontext())
        try:
            with scope:
                self._dispatch(event)
        finally:
            _EVENT_TIME.reset(token)

    def _dispatch(self, ev: DemoEvent) -> None:
        slog = self._slog(ev.logger)
        meta = dict(ev.metadata)
        if ev.kind == "auth":
            slog.auth(ev.params["action"], ev.actor_id, bool(ev.params["success"]), meta)
        elif ev.kind == "user":
            slog.user_action(ev.type, ev.actor_id, ev.message, meta, level=ev.level)
        elif ev.kind == "creator":
            slog.creator_action(ev.type, ev.actor_id, ev.message, meta, level=ev.level)
        elif ev.kind == "webhook":
            slog.webhook(ev.params["provider"], ev.params["event_type"],
                         bool(ev.params["success"]), meta)
        elif ev.kind == "api_error":
            error = _raise_failure({**ev.params, "user_id": ev.actor_id})
            slog.api_error(ev.params["endpoint"], error, ev.actor, ev.actor_id, meta)
        elif ev.kind == "admin":
            slog.admin_action(ev.type, ev.actor_id, ev.message, level=ev.level, metadata=meta)
        elif ev.kind == "system":
            slog.system(ev.type, ev.message, level=ev.level, metadata=meta)
        elif ev.kind == "critical":
            slog.critical(ev.type, Actor.SYSTEM, ev.message, None, meta)
        elif ev.kind == "perf":
            _run_timed(ev.params, ev.type, self.logger(ev.logger))
        elif ev.kind == "http":
            extra: dict[str, Any] = {"type": ev.type, "actor": ev.actor.value,
                                     "actor_id": ev.actor_id, "metadata": meta}
            if ev.time_ns is not None:
                extra["event_time"] = ev.time_ns
            self.logger(ev.logger).log(ev.level.logging_level, ev.message, extra=extra)
        else:
            raise DemoError(f"unknown demo event kind {ev.kind!r} (known: {', '.join(KINDS)})")


def _run_timed(params: Mapping[str, Any], type_: str, logger: logging.Logger) -> None:
    """Time an empty block with the real :class:`~shipper.perf.Operation` on a clock that says
    it took ``params["duration_ms"]``: the event is exactly what the helper writes."""
    ticks = iter((0.0, params["duration_ms"] / 1000.0))
    with Operation(params["name"], threshold_ms=params["threshold_ms"], logger=logger,
                   type=type_, metadata=params.get("metadata"), clock=lambda: next(ticks)):
        pass


# --------------------------------------------------------------------------- --file


def entry_to_file_object(entry: Entry) -> dict[str, Any]:
    """The ``--file`` JSON object for an entry: the labels, the structured metadata and the
    line's fields side by side. ``promtail/`` turns it back into exactly this entry."""
    labels = dict(entry.labels)
    structured = dict(entry.metadata)
    body = json.loads(entry.line)
    metadata = body.get("metadata")
    return {
        "ts": format_time(entry.timestamp_ns, digits=9),
        "service": labels["service_name"],
        "env": labels.get("env"),
        "level": labels["level"],
        "actor": labels["actor"],
        "type": labels["type"],
        "actor_id": structured.get("actor_id"),
        "trace_id": structured.get("trace_id"),
        "logger": structured.get("logger"),
        "message": body.get("message", ""),
        # a line cut to fit Loki's size limit may carry metadata as truncated text
        "metadata": metadata if isinstance(metadata, dict) else {"value": metadata},
        "exception": body.get("exception"),
    }


def file_object_to_entry(obj: Mapping[str, Any]) -> Entry:
    """What the collector pipelines in ``promtail/`` make of one ``--file`` object: labels
    ``service_name, env, level, actor, type``, structured metadata ``actor_id, trace_id,
    logger`` (each only when set), the line ``{"message", "metadata", "exception"?}``."""
    labels = [("service_name", obj["service"])]
    if obj.get("env"):
        labels.append(("env", obj["env"]))
    labels += [("level", obj["level"]), ("actor", obj["actor"]), ("type", obj["type"])]
    structured = tuple((k, str(obj[k])) for k in ("actor_id", "trace_id", "logger")
                       if obj.get(k) is not None)
    body: dict[str, Any] = {"message": obj["message"], "metadata": obj.get("metadata") or {}}
    if obj.get("exception"):
        body["exception"] = obj["exception"]
    return Entry(
        labels=tuple(labels),
        timestamp_ns=parse_time(obj["ts"]),
        line=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        metadata=structured,
    )


class JsonLinesFileHandler(logging.Handler):
    """Appends every record as one JSON object per line (see :func:`entry_to_file_object`),
    converted exactly as :class:`~shipper.handler.LokiHandler` converts it: the same event,
    labels, structured metadata, line and timestamp."""

    def __init__(self, path: str | os.PathLike[str], *, service: str, env: str | None = None,
                 type_limit: int = 100, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 redact: Callable[[LogEvent], LogEvent] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise DemoError(f"--file {path}: cannot open it for writing ({exc.strerror})") \
                from exc
        self.service = service
        self.env = env
        self._types = TypeGuard(type_limit)
        self._max_line_bytes = max_line_bytes
        self._redact = redact
        self.written = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = event_from_record(record, service=self.service, env=self.env,
                                      context=current_context())
            if self._redact is not None:
                event = self._redact(event)
            entry = to_entry(event, type_guard=self._types, max_line_bytes=self._max_line_bytes)
            line = json.dumps(entry_to_file_object(entry), ensure_ascii=False,
                              separators=(",", ":"))
            with self.lock or contextlib.nullcontext():
                if self._file is None:
                    return
                self._file.write(line + "\n")
                self._file.flush()
                self.written += 1
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()

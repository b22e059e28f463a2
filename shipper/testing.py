"""An in-memory capture for your own tests: what your code would ship to Loki, without Loki.

::

    from shipper.testing import capture_logs

    with capture_logs(service="checkout") as logs:
        place_order("u1")

    event = logs.one("ORDER_PLACED")          # the LogEvent, as LokiHandler builds it
    assert event.actor_id == "u1"
    shipped = logs.entry("ORDER_PLACED")      # the entry Loki would store, redacted
    assert shipped.labels["level"] == "INFO"
    assert shipped.metadata["card"] == "[REDACTED]"

:func:`capture_logs` attaches a :class:`LogCapture` to the root logger (or the logger you name)
for the duration of the ``with`` block. Each record becomes a :class:`~shipper.event.LogEvent`
when it is emitted, on the emitting thread and with its request context
(:func:`~shipper.context.log_context`, the framework integrations), exactly as
:class:`~shipper.handler.LokiHandler` builds it; :attr:`LogCapture.entries` are those events
redacted and split for Loki as the pipeline sends them, each a :class:`Shipped` whose labels,
structured metadata and line are plain dicts. Nothing is sent, queued or spooled.

The capture reads no environment variable and no configuration file: its service is ``test``
unless you pass one (or a whole :class:`~shipper.config.ShipperConfig`, for the app's own
redaction keys, line limit and ignored loggers). ``shipper`` does not import this module: apps
get it only when their tests ask for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shipper.config import ShipperConfig
from shipper.context import current_context
from shipper.event import Entry, LogEvent, TypeGuard, normalize_type, to_entry
from shipper.handler import INTERNAL_LOGGERS, event_from_record
from shipper.redact import Redactor

__all__ = ["LogCapture", "Shipped", "capture_logs"]


@dataclass(frozen=True)
class Shipped:
    """One entry as Loki would store it, read without knowing Loki's format."""

    #: ``service_name``, ``env`` (when set), ``level``, ``actor``, ``type``
    labels: Mapping[str, str]
    #: ``actor_id``, ``trace_id``, ``logger``, ``original_time`` (those the event has)
    structured_metadata: Mapping[str, str]
    #: the line, decoded: ``message``, ``metadata`` and, when there is one, ``exception``
    line: Mapping[str, Any]
    timestamp_ns: int
    #: the entry itself (``entry.line`` is the JSON text Loki stores)
    entry: Entry

    @classmethod
    def of(cls, entry: Entry) -> Shipped:
        return cls(dict(entry.labels), dict(entry.metadata), json.loads(entry.line),
                   entry.timestamp_ns, entry)

    @property
    def type(self) -> str:
        return self.labels["type"]

    @property
    def level(self) -> str:
        return self.labels["level"]

    @property
    def message(self) -> str:
        return str(self.line["message"])

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The line's ``metadata`` object, after redaction."""
        found: Mapping[str, Any] = self.line.get("metadata") or {}
        return found

    @property
    def exception(self) -> str | None:
        return self.line.get("exception")


class LogCapture(logging.Handler):
    """A ``logging.Handler`` that keeps the events it is given (see the module's docs)."""

    def __init__(self, config: ShipperConfig | None = None,
                 level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        self.config = config if config is not None else ShipperConfig(service="test")
        self._ignored = (*INTERNAL_LOGGERS, *self.config.ignore_loggers)
        self._redactor = Redactor.from_config(self.config)
        self._events: list[LogEvent] = []
        self._events_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if any(name == p or name.startswith(p + ".") for p in self._ignored):
            return  # LokiHandler never takes these
        try:
            event = event_from_record(record, service=self.config.service,
                                      env=self.config.env, context=current_context(),
                                      extras=self.config.extra_fields,
                                      formatter=self.formatter)
        except Exception:
            self.handleError(record)
            return
        with self._events_lock:
            self._events.append(event)

    # ------------------------------------------------------------------ reading

    @property
    def events(self) -> list[LogEvent]:
        """Every event so far, in the order they were emitted."""
        with self._events_lock:
            return list(self._events)

    @property
    def entries(self) -> list[Shipped]:
        """What the pipeline would send for :attr:`events`: each redacted, then split into
        labels, structured metadata and the line."""
        types = TypeGuard(self.config.type_limit)
        redact = self._redactor.redact_event
        limit = self.config.max_line_bytes
        return [Shipped.of(to_entry(redact(event), type_guard=types, max_line_bytes=limit))
                for event in self.events]

    def of_type(self, type_: str) -> list[LogEvent]:
        """The events of ``type_`` (written as your code writes it: ``userLogin`` finds
        ``USER_LOGIN``)."""
        wanted = normalize_type(type_)
        return [event for event in self.events if event.type == wanted]

    def one(self, type_: str) -> LogEvent:
        """The one event of ``type_``; AssertionError when there is none or more than one."""
        found = self.of_type(type_)
        if len(found) != 1:
            raise AssertionError(self._not_one(type_, len(found)))
        return found[0]

    def entry(self, type_: str) -> Shipped:
        """The one entry of ``type_`` as it would be sent; AssertionError as :meth:`one`."""
        wanted = normalize_type(type_)
        found = [s for s in self.entries if s.type == wanted]
        if len(found) != 1:
            raise AssertionError(self._not_one(type_, len(found)))
        return found[0]

    def from_logger(self, name: str) -> list[LogEvent]:
        """The events of the records of logger ``name`` (not its children)."""
        return [event for event in self.events if event.logger == name]

    def clear(self) -> None:
        with self._events_lock:
            self._events.clear()

    def _not_one(self, type_: str, count: int) -> str:
        seen = sorted({event.type for event in self.events})
        return (f"expected one event of type {normalize_type(type_)}, found {count} "
                f"(types captured: {', '.join(seen) or 'none'})")


@contextlib.contextmanager
def capture_logs(service: str | None = None, *, env: str | None = None,
                 level: int | str = logging.DEBUG, logger: str | None = None,
                 config: ShipperConfig | None = None) -> Iterator[LogCapture]:
    """Capture what is logged in the ``with`` block (see the module's docs).

    ``service`` and ``env`` are the labels the events get (default ``test`` and none, or those
    of ``config``); ``logger`` is the name of the logger to attach to (default: the root
    logger, which sees every logger that propagates), set to ``level`` for the duration."""
    base = config if config is not None else ShipperConfig(service="test")
    changes = {k: v for k, v in (("service", service), ("env", env)) if v is not None}
    capture = LogCapture(base.replace(**changes) if changes else base)
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(capture)
    target.setLevel(level)
    try:
        yield capture
    finally:
        target.removeHandler(capture)
        target.setLevel(old_level)

"""A capturing ``logging.Handler`` for the integration tests: it keeps each record with the
request context seen at emit time (as ``LokiHandler`` does on the app's thread) and turns them
into the events and Loki entries that would be sent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shipper.context import LogContext, current_context
from shipper.event import Entry, LogEvent, to_entry
from shipper.handler import event_from_record
from shipper.redact import Redactor


class CaptureHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.items: list[tuple[logging.LogRecord, LogContext | None]] = []
        self._items_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._items_lock:
            self.items.append((record, current_context()))

    def events(self) -> list[LogEvent]:
        return [event_from_record(r, service="test", context=c) for r, c in self.items]

    def of_type(self, type_: str) -> list[LogEvent]:
        return [e for e in self.events() if e.type == type_]

    def one(self, type_: str) -> LogEvent:
        """The one event of ``type_`` (fails the test when there are none or several)."""
        (event,) = self.of_type(type_)
        return event

    def from_logger(self, name: str) -> list[LogEvent]:
        return [e for e in self.events() if e.logger == name]

    def sent(self, redactor: Redactor | None = None) -> list[Entry]:
        """The entries the pipeline would send: each event redacted, then split for Loki."""
        redactor = redactor or Redactor()
        return [to_entry(redactor.redact_event(e)) for e in self.events()]


@contextmanager
def capture_logs() -> Iterator[CaptureHandler]:
    """Attach a capture handler to the root logger (at DEBUG) for the duration."""
    handler = CaptureHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

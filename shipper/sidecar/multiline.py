"""Joins multi-line records (Python tracebacks, Java stack traces) into one event.

A line that matches the start-of-record pattern begins a record; any other line joins the
record before it. A record is complete when the next one starts, when it reaches ``max_lines``
or ``max_bytes``, or when no line has come for ``timeout`` seconds (:meth:`Joiner.expire`).
Each record carries the position of its last line, so that a source saves positions only up to
the records it has shipped; lines still held here are read again after a restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Joiner"]

P = TypeVar("P")
#: what a completed record is handed to: (first line, following lines or None, position)
Emit = Callable[[str, "str | None", P], None]


class Joiner(Generic[P]):
    def __init__(self, start: str, *, timeout: float, max_lines: int, max_bytes: int,
                 emit: Callable[[str, str | None, P], None]) -> None:
        self._start = re.compile(start)
        self.timeout = timeout
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._emit = emit
        self._first: str | None = None
        self._rest: list[str] = []
        self._bytes = 0
        self._pos: P | None = None
        self._last_at = 0.0

    @property
    def pending(self) -> bool:
        return self._first is not None

    def push(self, line: str, pos: P, now: float) -> None:
        """Add one line (``pos``: where it ends); ships the record it completes, if any."""
        if self._first is not None:
            starts = self._start.match(line) is not None
            full = len(self._rest) + 1 >= self.max_lines or \
                self._bytes + len(line) + 1 > self.max_bytes
            if not starts and not full:
                self._rest.append(line)
                self._bytes += len(line) + 1
                self._pos = pos
                self._last_at = now
                return
            self.flush()
        self._first = line
        self._rest = []
        self._bytes = len(line)
        self._pos = pos
        self._last_at = now

    def expire(self, now: float) -> bool:
        """Ship the held record if no line has come for ``timeout``; True if one was shipped."""
        if self._first is not None and now - self._last_at >= self.timeout:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Ship the held record now (a source that stops, a file that goes away)."""
        first, pos = self._first, self._pos
        if first is None:
            return
        rest = "\n".join(self._rest) if self._rest else None
        self._first, self._rest, self._bytes, self._pos = None, [], 0, None
        self._emit(first, rest, pos)  # type: ignore[arg-type]

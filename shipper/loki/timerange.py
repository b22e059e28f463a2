"""The time range of a read: ``since``, or ``start`` and ``end``, as one half-open
:class:`TimeRange` in nanoseconds (``start`` included, ``end`` not), for the admin commands'
``--since/--start/--end`` and :class:`shipper.loki.LokiReader` alike.

Text is read by :mod:`shipper._units` (the one grammar: ``1h``, ``2026-01-31T12:00:00Z``,
``now-2h``); the flags themselves by :mod:`shipper.cli.args`. This module puts them together.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from shipper._units import NS, UnitError, format_time, parse_seconds, parse_time

__all__ = ["Since", "TimeError", "TimeLike", "TimeRange", "resolve_range", "time_range"]

#: a time: text as :func:`shipper._units.parse_time` reads it, nanoseconds, or an aware datetime
TimeLike = str | int | dt.datetime
#: a span back from the end: text (``1h``, ``90``), seconds, or a timedelta
Since = str | float | dt.timedelta


class TimeError(ValueError):
    """The flags do not make a range; the message says why."""


@dataclass(frozen=True)
class TimeRange:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS

    def describe(self) -> str:
        return f"{format_time(self.start_ns)} .. {format_time(self.end_ns)}"


def resolve_range(since_s: float | None, start_ns: int | None, end_ns: int | None, *,
                  default_since: str | None = "24h", now_ns: int | None = None) -> TimeRange:
    """``--since`` (seconds) or ``--start``/``--end`` (ns) → a :class:`TimeRange`. ``--since``
    cannot be combined with ``--start``; ``--end`` defaults to now; without any,
    ``default_since`` back from now (None: a range is required)."""
    if since_s is not None and start_ns is not None:
        raise TimeError("use --since or --start, not both")
    end = (time.time_ns() if now_ns is None else now_ns) if end_ns is None else end_ns
    if since_s is not None:
        start = end - round(since_s * NS)
    elif start_ns is not None:
        start = start_ns
    elif default_since is not None:
        start = end - round(parse_seconds(default_since) * NS)
    else:
        raise TimeError("a time range is required: --since 1h, or --start (and --end)")
    if start >= end:
        raise TimeError(f"the range is empty: start {format_time(start)} is not before end "
                        f"{format_time(end)}")
    return TimeRange(start, end)


def _ns(value: TimeLike, name: str, now_ns: int) -> int:
    if isinstance(value, bool):
        raise TimeError(f"{name}: {value!r} is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise TimeError(f"{name}: {value.isoformat()} has no time zone: use an aware "
                            "datetime (tzinfo=datetime.timezone.utc)")
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta // dt.timedelta(microseconds=1)) * 1000
    if isinstance(value, str):
        try:
            return parse_time(value, now_ns=now_ns)
        except UnitError as exc:
            raise TimeError(f"{name}: {exc}") from None
    raise TimeError(f"{name}: {value!r} is not a time (text, nanoseconds or a datetime)")


def _seconds(value: Since) -> float:
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool):
        raise TimeError(f"since: {value!r} is not a duration")
    try:
        return parse_seconds(value, allow_zero=False)
    except UnitError as exc:
        raise TimeError(f"since: {exc}") from None


def time_range(since: Since | None = None, start: TimeLike | None = None,
               end: TimeLike | None = None, *, default_since: str | None = "1h",
               now_ns: int | None = None) -> TimeRange:
    """The range of a read from Python: ``since="1h"`` (or seconds, a timedelta) back from
    ``end`` (default now), or ``start`` and ``end`` (text, nanoseconds or aware datetimes).
    Raises :class:`TimeError` naming what it cannot read."""
    now = time.time_ns() if now_ns is None else now_ns
    return resolve_range(None if since is None else _seconds(since),
                         None if start is None else _ns(start, "start", now),
                         None if end is None else _ns(end, "end", now),
                         default_since=default_since, now_ns=now)

"""Time arguments: RFC 3339 timestamps, dates, ``now`` and relative times (``1h``, ``now-2d``).

All times are nanoseconds since the epoch (Loki's unit). A range is half-open: ``start`` is
included, ``end`` is not.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass

__all__ = ["TimeError", "TimeRange", "format_ns", "parse_span", "parse_time", "resolve_range"]

NS = 1_000_000_000
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SPAN_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_SPANS_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")
_RELATIVE_RE = re.compile(r"^now\s*-\s*(.+)$")
_FRACTION_RE = re.compile(r"\.(\d+)")


class TimeError(ValueError):
    """A time or span shipper cannot read; the message says what is accepted."""


def parse_span(text: str) -> float:
    """``90s``, ``15m``, ``1h30m``, ``7d``, ``2w`` → seconds (positive)."""
    value = text.strip().lower()
    pos = 0
    total = 0.0
    for m in _SPAN_RE.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not value or pos != len(value) or total <= 0:
        raise TimeError(f"{text!r} is not a duration: use e.g. 30s, 15m, 1h, 1h30m, 7d, 2w")
    return total


def _parse_absolute(text: str) -> int:
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += "T00:00:00Z"
    value = value.replace(" ", "T", 1) if re.match(r"\d{4}-\d{2}-\d{2} ", value) else value
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    # keep nanoseconds: datetime stops at microseconds
    fraction = 0
    m = _FRACTION_RE.search(value)
    if m:
        digits = m.group(1)
        fraction = int((digits + "0" * 9)[:9])
        value = value[: m.start()] + value[m.end():]
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TimeError(
            f"{text!r} is not a time: use RFC 3339 (2026-01-31T12:00:00Z, "
            "2026-01-31T13:00:00+01:00), a date (2026-01-31, UTC), now, or a relative time "
            "(1h, 7d, now-30m)"
        ) from None
    if parsed.tzinfo is None:
        raise TimeError(f"{text!r} has no time zone: add Z for UTC or an offset such as +02:00")
    return int(parsed.timestamp()) * NS + fraction


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """An absolute or relative time → ns. ``1h`` and ``now-1h`` both mean an hour ago."""
    now = time.time_ns() if now_ns is None else now_ns
    value = text.strip()
    if value.lower() == "now":
        return now
    rel = _RELATIVE_RE.match(value.lower())
    if rel:
        return now - int(parse_span(rel.group(1)) * NS)
    if _SPANS_RE.fullmatch(value.lower()):
        return now - int(parse_span(value) * NS)
    return _parse_absolute(value)


def format_ns(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds when there are any: ``2026-01-31T12:00:00.5Z``."""
    seconds, nanos = divmod(ns, NS)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        base += "." + f"{nanos:09d}".rstrip("0")
    return base + "Z"


@dataclass(frozen=True)
class TimeRange:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS

    def describe(self) -> str:
        return f"{format_ns(self.start_ns)} .. {format_ns(self.end_ns)}"


def resolve_range(since: str | None, start: str | None, end: str | None, *,
                  default_since: str | None = "24h", now_ns: int | None = None) -> TimeRange:
    """``--since`` or ``--start``/``--end`` → a :class:`TimeRange`. ``--since`` cannot be
    combined with ``--start``; ``--end`` defaults to now; without any, ``default_since`` back
    from now (None: a range is required)."""
    now = time.time_ns() if now_ns is None else now_ns
    if since and start:
        raise TimeError("use --since or --start, not both")
    end_ns = parse_time(end, now_ns=now) if end else now
    if since:
        start_ns = end_ns - int(parse_span(since) * NS)
    elif start:
        start_ns = parse_time(start, now_ns=now)
    elif default_since is not None:
        start_ns = end_ns - int(parse_span(default_since) * NS)
    else:
        raise TimeError("a time range is required: --since 1h, or --start (and --end)")
    if start_ns >= end_ns:
        raise TimeError(f"the range is empty: start {format_ns(start_ns)} is not before end "
                        f"{format_ns(end_ns)}")
    return TimeRange(start_ns, end_ns)

"""The time range of an admin command: ``--since``, or ``--start`` and ``--end``, as one
half-open :class:`TimeRange` in nanoseconds (``start`` included, ``end`` not).

The flags themselves are read by :mod:`shipper.cli.args` (the one grammar of
:mod:`shipper._units`); this module only puts them together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shipper._units import NS, format_time, parse_seconds

__all__ = ["TimeError", "TimeRange", "resolve_range"]


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

"""Flags that take a duration or a time: argparse ``type=`` functions built on
:mod:`shipper._units`, so every flag of every command reads the one grammar (``90``, ``90s``,
``1h30m``, ``7d``; ``2026-01-31T12:00:00Z``, ``2026-01-31``, ``now-2h``, ``2h``) and a value it
cannot read is an argparse error naming the flag (``argument --since: not a duration: ...``).
"""

from __future__ import annotations

import argparse

from shipper._units import UnitError, parse_seconds, parse_time

__all__ = ["duration_arg", "positive_duration_arg", "positive_int_arg", "time_arg"]


def duration_arg(text: str) -> float:
    """Seconds, zero or more: ``90`` and ``0.5`` are seconds; ``90s``, ``10m``, ``1h30m``,
    ``7d`` are durations."""
    try:
        return parse_seconds(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration_arg(text: str) -> float:
    """:func:`duration_arg` for a flag where zero means nothing (a span, an interval)."""
    try:
        return parse_seconds(text, allow_zero=False)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def time_arg(text: str) -> int:
    """A time, in nanoseconds since the epoch: RFC 3339, a date (midnight UTC), ``now``, or a
    time ago (``2h``, ``now-2h``, counted from when the command line is read)."""
    try:
        return parse_time(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int_arg(text: str) -> int:
    """A whole number, 1 or more (a page, a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value

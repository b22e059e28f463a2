"""Durations, sizes and times: one parser and one formatter each, for the whole project.

The configuration file, every environment variable, every command-line flag and the sidecar's
configuration read their values here, so ``7d`` means the same everywhere.

Durations
    Go's and Prometheus' notation, which Loki itself reads and prints: a number and a unit,
    repeated (``720h0m0s``, ``1h30m``, ``1.5h``, ``500ms``, ``30d``, ``1w``, ``1y``, ``4w2d``).
    Units: ``ns``, ``us`` (``µs``), ``ms``, ``s``, ``m``, ``h``, ``d`` (24h), ``w`` (7d),
    ``y`` (365d). ``0`` is zero. Where a setting is a number of seconds, a bare number
    (``90``, ``0.5``) is seconds.
Sizes
    Bytes, with an optional unit: ``1048576``, ``100KiB``, ``1MiB``, ``1.5MB``, ``4mb``
    (``k``/``kb``, ``m``/``mb``, ``g``/``gb`` are powers of 1000; ``kib``, ``mib``, ``gib``
    powers of 1024; case does not matter).
Times
    RFC 3339 with up to nine fractional digits (``2026-01-31T12:00:00.123456789Z``,
    ``2026-01-31T13:00:00+01:00``; a space may stand for the ``T``), a date (``2026-01-31``,
    midnight UTC), ``now``, ``now-2h``, or a duration alone (``2h``: two hours ago). Times are
    nanoseconds since the Unix epoch, Loki's unit.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from fractions import Fraction
from typing import Final

__all__ = [
    "NS",
    "UnitError",
    "format_duration",
    "format_seconds",
    "format_size",
    "format_time",
    "parse_duration",
    "parse_seconds",
    "parse_size",
    "parse_time",
]

#: Nanoseconds in a second.
NS: Final = 1_000_000_000

_DAY_S = 86_400
_YEAR_S = 365 * _DAY_S


class UnitError(ValueError):
    """A duration, size or time that cannot be read; the message names the text and says
    what is accepted."""


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")
_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3_600 * NS,
    "d": _DAY_S * NS,
    "w": 7 * _DAY_S * NS,
    "y": _YEAR_S * NS,
}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_HELP = "a number and a unit (ms, s, m, h, d, w, y), e.g. 500ms, 90s, 1h30m, 7d"


def _duration_ns(text: str) -> Fraction | None:
    """The nanoseconds in a duration text, or None when it is not one."""
    raw = text.strip().lower().replace("μ", "µ")
    if raw == "0":
        return Fraction(0)
    total = Fraction(0)
    pos = 0
    for part in _DURATION_PART.finditer(raw):
        if part.start() != pos:
            break
        total += Fraction(part.group(1)) * _UNIT_NS[part.group(2)]
        pos = part.end()
    if pos == 0 or pos != len(raw):
        return None
    return total


def parse_duration(text: str) -> dt.timedelta:
    """A duration as Loki writes or prints it → a :class:`~datetime.timedelta`.

    Go's ``time.Duration`` form (``720h0m0s``, ``1h30m``, ``1.5h``, ``500ms``) and
    Prometheus' ``model.Duration`` form (``30d``, ``1w``, ``1y``, ``30d1h``, ``4w2d``) alike,
    so ``720h`` and ``30d`` compare equal. ``0`` and ``0s`` are zero.
    """
    if not isinstance(text, str):
        raise UnitError(f"duration {text!r}: expected {_DURATION_HELP}")
    total = _duration_ns(text)
    if total is None:
        raise UnitError(f"duration {text!r}: not a duration (use {_DURATION_HELP})")
    return dt.timedelta(microseconds=round(total / 1_000))


def parse_seconds(value: object, *, allow_zero: bool = True) -> float:
    """A duration in seconds: a number (``90``, ``0.5``, or the text ``"90"``) is seconds,
    anything else is read by :func:`parse_duration` (``90s``, ``1h30m``, ``7d``).

    Negative values, NaN and infinity are refused, and so is zero unless ``allow_zero``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(f"duration {value!r}: expected seconds or {_DURATION_HELP}")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text.startswith("-"):
            raise UnitError(f"duration {value!r} is negative")
        else:
            total = _duration_ns(text)
            if total is None:
                raise UnitError(f"duration {value!r}: expected seconds or {_DURATION_HELP}")
            seconds = float(total / NS)
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise UnitError(f"duration {value!r}: expected a finite number of seconds")
    if seconds < 0:
        raise UnitError(f"duration {value!r} is negative")
    if seconds == 0 and not allow_zero:
        raise UnitError(f"duration {value!r} must be more than zero")
    return seconds


def _format_ns(total_ns: int) -> str:
    if total_ns == 0:
        return "0s"
    seconds, rest = divmod(total_ns, NS)
    parts: list[str] = []
    if seconds and seconds % _YEAR_S == 0 and not rest:
        return f"{seconds // _YEAR_S}y"
    for unit, size in (("d", _DAY_S), ("h", 3_600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    for unit, size in (("ms", 1_000_000), ("us", 1_000), ("ns", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_duration(value: dt.timedelta) -> str:
    """Write a duration the way a person reads it and Loki parses it: whole years as ``1y``,
    otherwise days and smaller units (``90d``, ``1d12h``, ``1h30m``, ``1s500ms``); zero is
    ``0s``. :func:`parse_duration` reads every result back to the same value."""
    total_us = (value.days * _DAY_S + value.seconds) * 1_000_000 + value.microseconds
    if total_us < 0:
        raise UnitError(f"duration {value} is negative")
    return _format_ns(total_us * 1_000)


def format_seconds(seconds: float) -> str:
    """:func:`format_duration` for a number of seconds (``5400`` → ``1h30m``, ``0.25`` →
    ``250ms``), to the nanosecond."""
    if not math.isfinite(seconds) or seconds < 0:
        raise UnitError(f"duration {seconds!r} is not a finite, positive number of seconds")
    return _format_ns(round(Fraction(seconds) * NS))


# --------------------------------------------------------------------------- sizes

_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_SIZE_HELP = "bytes, or a number and a unit such as 512KiB, 1MiB or 4MB"


def parse_size(value: object) -> int:
    """A size in bytes: an int, or text such as ``1048576``, ``100KiB``, ``1.5MB``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UnitError(f"size {value!r}: expected {_SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"size {value!r} is negative")
        return value
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise UnitError(f"size {value!r}: expected {_SIZE_HELP}")
    return int(Fraction(match.group(1)) * _SIZE_UNITS[unit])


def format_size(n: int) -> str:
    """Bytes for a person: ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.0 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- times

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)?)?"
)
_RELATIVE = re.compile(r"now\s*-\s*(.+)")
_TIME_HELP = ("RFC 3339 (2026-01-31T12:00:00Z, 2026-01-31T13:00:00.5+01:00), a date "
              "(2026-01-31, UTC), now, or a time ago (2h, now-30m)")


def _parse_absolute(text: str) -> int:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise UnitError(f"time {text!r}: not a time (use {_TIME_HELP})")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if hour is not None and zone is None:
        raise UnitError(f"time {text!r} has no time zone: add Z for UTC or an offset such as "
                        "+02:00")
    offset = dt.timedelta(0)
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                             int(second or 0), tzinfo=dt.timezone(offset))
    except ValueError as exc:
        raise UnitError(f"time {text!r}: {exc}") from None
    seconds = (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(seconds=1)
    return seconds * NS + int((fraction or "").ljust(9, "0"))


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """An absolute or relative time → nanoseconds since the epoch. ``2h`` and ``now-2h`` both
    mean two hours before ``now_ns`` (default: the clock)."""
    if not isinstance(text, str):
        raise UnitError(f"time {text!r}: expected {_TIME_HELP}")
    value = text.strip()
    lowered = value.lower()
    now = time.time_ns() if now_ns is None else now_ns
    if lowered == "now":
        return now
    relative = _RELATIVE.fullmatch(lowered)
    ago = _duration_ns(relative.group(1) if relative else lowered)
    if ago is not None:
        return now - round(ago)
    if relative:
        raise UnitError(f"time {text!r}: after now- comes a duration ({_DURATION_HELP})")
    return _parse_absolute(value)


def format_time(ns: int, *, digits: int | None = None) -> str:
    """RFC 3339 in UTC: ``2026-01-31T12:00:00Z``, with the fraction of a second when there is
    one (``.5``, trailing zeros dropped), or with exactly ``digits`` fractional digits
    (``digits=9``: Go's RFC3339Nano with every digit)."""
    seconds, nanos = divmod(ns, NS)
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}"
    fraction = fraction.rstrip("0") if digits is None else fraction[:digits]
    return f"{base}.{fraction}Z" if fraction else base + "Z"

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
    nanoseconds since the Unix epoch, Loki's unit, from 1677-09-21 to 2262-04-11 (64 bits).

Anything else is a :class:`UnitError` (a ``ValueError``) whose message quotes the text and says
what is accepted; no other exception comes out of a parser, whatever the input.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from fractions import Fraction
from typing import Final

__all__ = [
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "NS",
    "UnitError",
    "describe_time",
    "format_duration",
    "format_duration_ns",
    "format_seconds",
    "format_size",
    "format_time",
    "parse_duration",
    "parse_duration_ns",
    "parse_seconds",
    "parse_size",
    "parse_time",
]

#: Nanoseconds in a second.
NS: Final = 1_000_000_000

_DAY_S = 86_400
_YEAR_S = 365 * _DAY_S
#: longer texts are refused before they are read (no value needs more)
_MAX_TEXT = 100


class UnitError(ValueError):
    """A duration, size or time that cannot be read; the message quotes the text and says
    what is accepted."""


def _shown(value: object) -> str:
    """The value as a message quotes it: its repr, cut short when long."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "..."


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h|d|w|y)")
_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3_600 * NS,
    "d": _DAY_S * NS,
    "w": 7 * _DAY_S * NS,
    "y": _YEAR_S * NS,
}
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
#: the longest duration: what a timedelta holds
_MAX_DURATION_NS: Final = (dt.timedelta.max // dt.timedelta(microseconds=1)) * 1_000
_DURATION_HELP = "a number and a unit (ns, us, ms, s, m, h, d, w, y), e.g. 500ms, 90s, 1h30m, 7d"
_SECONDS_HELP = f"seconds (90, 0.5) or {_DURATION_HELP}"


def _duration_ns(text: str) -> Fraction | None:
    """The nanoseconds in a duration text, or None when it is not one."""
    # units are lower case, as Go and Loki read them (1M is not a minute)
    raw = text.strip().replace("μ", "µ")  # the Greek letter for the micro sign
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


def _checked_ns(value: object, total: Fraction | None, help_text: str) -> int:
    """``total`` rounded to whole nanoseconds, or the error that says why ``value`` is not a
    duration."""
    text = value.strip() if isinstance(value, str) else ""
    if total is None:
        if text.startswith("-"):
            raise UnitError(f"negative duration: {_shown(value)} (a duration is zero or more)")
        raise UnitError(f"not a duration: {_shown(value)}; use {help_text}")
    if total > _MAX_DURATION_NS:
        raise UnitError(f"duration too long: {_shown(value)} (at most "
                        f"{format_duration_ns(_MAX_DURATION_NS)})")
    return round(total)


def _read_duration(value: object, help_text: str) -> int:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise UnitError(f"not a duration: {_shown(value)}; use {help_text}")
    return _checked_ns(value, _duration_ns(value), help_text)


def parse_duration_ns(text: str) -> int:
    """A duration as Loki writes or prints it → whole nanoseconds.

    Go's ``time.Duration`` form (``720h0m0s``, ``1h30m``, ``1.5h``, ``500ms``) and
    Prometheus' ``model.Duration`` form (``30d``, ``1w``, ``1y``, ``30d1h``, ``4w2d``) alike,
    so ``720h`` and ``30d`` are equal. ``0`` and ``0s`` are zero; a bare number is refused.
    """
    return _read_duration(text, _DURATION_HELP)


def parse_duration(text: str) -> dt.timedelta:
    """:func:`parse_duration_ns` as a :class:`~datetime.timedelta` (to the microsecond)."""
    return dt.timedelta(microseconds=round(Fraction(parse_duration_ns(text), 1_000)))


def parse_seconds(value: object, *, allow_zero: bool = True) -> float:
    """A duration in seconds: a number (``90``, ``0.5``, or the text ``"90"``) is seconds,
    anything else is read as :func:`parse_duration_ns` reads it (``90s``, ``1h30m``, ``7d``).

    Negative values, NaN, infinity and durations too long for a timedelta are refused, and so
    is zero unless ``allow_zero``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(f"not a duration: {_shown(value)}; use {_SECONDS_HELP}")
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        seconds = Fraction(_read_duration(value, _SECONDS_HELP), NS)
    else:
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            raise UnitError(f"not a duration: {_shown(value)}; use {_SECONDS_HELP}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UnitError(f"not a duration: {_shown(value)} is not a finite number")
        seconds = Fraction(value.strip() if isinstance(value, str) else value)
        if seconds < 0:
            raise UnitError(f"negative duration: {_shown(value)} (a duration is zero or more)")
        _checked_ns(value, seconds * NS, _SECONDS_HELP)
    if seconds == 0 and not allow_zero:
        raise UnitError(f"zero duration: {_shown(value)} (this must be more than zero)")
    return float(seconds)


def format_duration_ns(ns: int) -> str:
    """Write a duration the way a person reads it and Loki parses it: whole years as ``1y``,
    otherwise days and smaller units (``90d``, ``1d12h``, ``1h30m``, ``1s500ms``, ``250ns``);
    zero is ``0s``. :func:`parse_duration_ns` reads every result back to the same value."""
    if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
        raise UnitError(f"not a duration: {_shown(ns)} (whole nanoseconds, zero or more)")
    if ns == 0:
        return "0s"
    seconds, rest = divmod(ns, NS)
    if seconds % _YEAR_S == 0 and not rest:
        return f"{seconds // _YEAR_S}y"
    parts: list[str] = []
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
    """:func:`format_duration_ns` for a :class:`~datetime.timedelta` (``90d``, ``1h30m``);
    :func:`parse_duration` reads every result back to the same value."""
    if value < dt.timedelta(0):
        raise UnitError(f"negative duration: {value} (a duration is zero or more)")
    return format_duration_ns(value // dt.timedelta(microseconds=1) * 1_000)


def format_seconds(seconds: float) -> str:
    """:func:`format_duration_ns` for a number of seconds (``5400`` → ``1h30m``, ``0.25`` →
    ``250ms``), to the nanosecond."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise UnitError(f"not a duration: {_shown(seconds)} (seconds, zero or more)")
    return format_duration_ns(round(Fraction(seconds) * NS))


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
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
_SIZE_HELP = "bytes, or a number and a unit such as 512KiB, 1MiB or 4MB"


def parse_size(value: object) -> int:
    """A size in whole bytes: an int, or text such as ``1048576``, ``100KiB``, ``1.5MB``
    (a fraction of a byte is dropped, as Loki does)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UnitError(f"not a size: {_shown(value)}; use {_SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"negative size: {_shown(value)} (a size is zero or more)")
        return value
    if value.strip().startswith("-"):
        raise UnitError(f"negative size: {_shown(value)} (a size is zero or more)")
    match = _SIZE_RE.fullmatch(value) if len(value) <= _MAX_TEXT else None
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise UnitError(f"not a size: {_shown(value)}; use {_SIZE_HELP}")
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
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)
_RELATIVE = re.compile(r"(?i:now)\s*-\s*(.+)")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Loki's times: nanoseconds in a signed 64-bit number (1677-09-21 to 2262-04-11); a push
#: holding a timestamp outside them is refused whole
MIN_TIME_NS: Final = -(2**63)
MAX_TIME_NS: Final = 2**63 - 1
_MIN_NS: Final = MIN_TIME_NS
_MAX_NS: Final = MAX_TIME_NS
_TIME_HELP = ("RFC 3339 (2026-01-31T12:00:00Z, 2026-01-31T13:00:00.5+01:00), a date "
              "(2026-01-31, UTC), now, or a time ago (2h, now-30m)")


def _parse_absolute(text: str) -> int:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise UnitError(f"not a time: {_shown(text)}; use {_TIME_HELP}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if hour is not None and zone is None:
        raise UnitError(f"no time zone in {_shown(text)}: add Z for UTC or an offset such as "
                        "+02:00")
    offset = dt.timedelta(0)
    if zone and zone not in ("Z", "z"):
        if int(zone[1:3]) > 23 or int(zone[4:6]) > 59:
            raise UnitError(f"not a time: {_shown(text)}: an offset runs from -23:59 to +23:59")
        sign = -1 if zone[0] == "-" else 1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                             int(second or 0), tzinfo=dt.timezone(offset))
    except ValueError as exc:  # a month, day, hour, minute or second out of range
        raise UnitError(f"not a time: {_shown(text)}: {exc}") from None
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * NS + int((fraction or "").ljust(9, "0"))


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """An absolute or relative time → nanoseconds since the epoch. ``2h`` and ``now-2h`` both
    mean two hours before ``now_ns`` (default: the clock); a bare number is refused (``90s``
    is 90 seconds ago)."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise UnitError(f"not a time: {_shown(text)}; use {_TIME_HELP}")
    value = text.strip()
    lowered = value.lower()
    now = time.time_ns() if now_ns is None else now_ns
    relative = _RELATIVE.fullmatch(value)
    if lowered == "now":
        ns = now
    elif relative:
        ago = _duration_ns(relative.group(1))
        if ago is None:
            raise UnitError(f"not a time: {_shown(text)}; after now- comes {_DURATION_HELP}")
        ns = now - _checked_ns(text, ago, _DURATION_HELP)
    elif _NUMBER.fullmatch(lowered):
        raise UnitError(f"not a time: {_shown(text)}; a bare number is not a time (write 90s "
                        f"for 90 seconds ago); use {_TIME_HELP}")
    else:
        ago = _duration_ns(value)
        ns = _parse_absolute(value) if ago is None else now - _checked_ns(text, ago, "")
    if not _MIN_NS <= ns <= _MAX_NS:
        raise UnitError(f"time out of range: {_shown(text)} (Loki's times run from 1677-09-21 "
                        "to 2262-04-11)")
    return ns


def format_time(ns: int, *, digits: int | None = None) -> str:
    """RFC 3339 in UTC: ``2026-01-31T12:00:00Z``, with the fraction of a second when there is
    one (``.5``, trailing zeros dropped), or with exactly ``digits`` fractional digits, 0 to 9
    (``digits=9``: Go's RFC3339Nano with every digit). :func:`parse_time` reads every result
    back to the same nanosecond."""
    if digits is not None and not 0 <= digits <= 9:
        raise UnitError(f"digits={digits!r}: a time has 0 to 9 fractional digits")
    if isinstance(ns, bool) or not isinstance(ns, int) or not _MIN_NS <= ns <= _MAX_NS:
        raise UnitError(f"time out of range: {_shown(ns)} (nanoseconds since 1970 in 64 bits)")
    return _rfc3339(ns, digits)


def _rfc3339(ns: int, digits: int | None) -> str:
    seconds, nanos = divmod(ns, NS)
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    base = f"{moment.year:04d}{moment:-%m-%dT%H:%M:%S}"
    fraction = f"{nanos:09d}"
    fraction = fraction.rstrip("0") if digits is None else fraction[:digits]
    return f"{base}.{fraction}Z" if fraction else base + "Z"


#: the nanoseconds a calendar date can show: years 1 to 9999
_CALENDAR_MIN_NS: Final = (dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(
    microseconds=1) * 1_000
_CALENDAR_MAX_NS: Final = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(
    microseconds=1) * 1_000 + 999


def describe_time(ns: int) -> str:
    """A time in nanoseconds for a person to read, also outside Loki's range: RFC 3339 in UTC
    as :func:`format_time` writes it for any year from 1 to 9999 (``2300-01-01T00:00:00Z``),
    else the number of nanoseconds (``-99999999999999999999999``)."""
    if isinstance(ns, bool) or not isinstance(ns, int):
        raise UnitError(f"not a time in nanoseconds: {_shown(ns)}")
    if not _CALENDAR_MIN_NS <= ns <= _CALENDAR_MAX_NS:
        if ns.bit_length() <= 10_000:  # Python writes ints of up to 4,300 digits
            return str(ns)
        return f"<{'negative ' if ns < 0 else ''}{ns.bit_length()}-bit number of nanoseconds>"
    return _rfc3339(ns, None)

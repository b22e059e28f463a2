"""The values a log line gives, read as the event contract wants them: its level (a word, or
pino's and bunyan's numbers), its time (ISO 8601 with or without a zone, or epoch seconds,
milliseconds, microseconds or nanoseconds, told apart by size) and logfmt's ``key=value``
pairs. :mod:`shipper.sidecar.formats` applies them to whole lines."""

from __future__ import annotations

import datetime as _dt
import json
import re
import zoneinfo
from typing import Any

from shipper.event import Level

__all__ = ["DEFAULT_LEVEL_PATTERN", "LEADING_TIME", "level_of", "parse_logfmt",
           "parse_timestamp", "zone"]


# --------------------------------------------------------------------------- levels

#: levels as most text loggers print them, upper case, as a whole word (a source's default
#: level_pattern)
DEFAULT_LEVEL_PATTERN = (
    r"\b(?P<level>TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|SEVERE|CRITICAL|CRIT|FATAL"
    r"|ALERT|EMERG|EMERGENCY)\b"
)

_LEVEL_WORDS: dict[str, Level] = {
    "TRACE": Level.DEBUG, "DEBUG": Level.DEBUG, "VERBOSE": Level.DEBUG, "SILLY": Level.DEBUG,
    "INFO": Level.INFO, "INFORMATION": Level.INFO, "NOTICE": Level.INFO, "HTTP": Level.INFO,
    "LOG": Level.INFO,
    "WARN": Level.WARNING, "WARNING": Level.WARNING,
    "ERROR": Level.ERROR, "ERR": Level.ERROR, "SEVERE": Level.ERROR,
    "CRITICAL": Level.CRITICAL, "CRIT": Level.CRITICAL, "FATAL": Level.CRITICAL,
    "ALERT": Level.CRITICAL, "EMERG": Level.CRITICAL, "EMERGENCY": Level.CRITICAL,
    "PANIC": Level.CRITICAL,
}
#: pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal
_NUMERIC_LEVELS = ((60, Level.CRITICAL), (50, Level.ERROR), (40, Level.WARNING),
                   (30, Level.INFO), (0, Level.DEBUG))
_level_cache: dict[object, Level | None] = {}


def level_of(value: object) -> Level | None:
    """A known level for ``value`` (a name in any case, or a pino/bunyan number), else None."""
    cls = value.__class__
    if cls is not str and cls is not int and not isinstance(value, (str, int, float)):
        return None  # a list or an object: no level, and unhashable
    found = _level_cache.get(value)
    if found is not None or value in _level_cache:
        return found
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        found = next(lvl for floor, lvl in _NUMERIC_LEVELS if value >= floor) \
            if value >= 0 else None
    else:
        found = _LEVEL_WORDS.get(str(value).strip().upper())
    if len(_level_cache) < 4096 and (cls is not str or len(value) <= 64):  # type: ignore[arg-type]
        _level_cache[value] = found  # (a long text is not a level name worth keeping)
    return found


# --------------------------------------------------------------------------- timestamps

_ISO = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2}))?(?:[.,](\d+))?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*$"
)
_NUMBER = re.compile(r"\s*(\d+)(?:\.(\d+))?\s*$")
#: the time most text loggers put first: 2026-11-20 09:15:02,123 / [2026-11-20T09:15:02Z]
LEADING_TIME = re.compile(
    r"\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)"
    r"(?=[\]\s]|$)")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_seconds_cache: dict[tuple[str, ...], int] = {}


def _epoch_ns(whole: int, frac_digits: str = "") -> int:
    """Epoch seconds, ms, µs or ns, told apart by size: right for any time from 1973 to 5138
    (a number below 1e11 is seconds, below 1e14 ms, below 1e17 µs, else ns)."""
    if whole < 100_000_000_000:
        scale = 1_000_000_000
    elif whole < 100_000_000_000_000:
        scale = 1_000_000
    elif whole < 100_000_000_000_000_000:
        scale = 1_000
    else:
        scale = 1
    ns = whole * scale
    if frac_digits and scale > 1:
        digits = len(str(scale)) - 1
        ns += int(frac_digits[:digits].ljust(digits, "0"))
    return ns


def parse_timestamp(value: object, tz: _dt.tzinfo | None = _dt.UTC) -> int | None:
    """Nanoseconds since the epoch for an ISO-8601 string or an epoch number (s, ms, µs or ns,
    also as a string); None when ``value`` is neither. ``tz`` is the zone of ISO times written
    without an offset (None: the machine's local zone)."""
    cls = value.__class__
    if cls is int:
        return _epoch_ns(value) if value >= 0 else None  # type: ignore[operator,arg-type]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _epoch_ns(value) if value >= 0 else None
    if isinstance(value, float):
        if not 0 <= value < 1e20:  # NaN, negative, absurd
            return None
        whole = int(value)
        if whole < 100_000_000_000:  # seconds: keep every written digit of the fraction
            text = repr(value)
            return _epoch_ns(whole, text.partition(".")[2] if "e" not in text else "")
        return round(value * (_epoch_ns(whole) // whole))  # ms, µs, ns: scale by size
    if not isinstance(value, str) or len(value) > 64:
        return None
    match = _ISO.match(value)
    if match is None:
        number = _NUMBER.match(value)
        if number is None:
            return None
        return _epoch_ns(int(number.group(1)), number.group(2) or "")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    key = (year, month, day, hour, minute, second or "00", zone or "", str(id(tz)))
    seconds = _seconds_cache.get(key)
    if seconds is None:
        try:
            when = _dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                                int(second or 0))
        except ValueError:
            return None
        if zone in (None, ""):
            aware = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
        elif zone in ("Z", "z", "UTC"):
            aware = when.replace(tzinfo=_dt.UTC)
        else:
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            aware = when.replace(tzinfo=_dt.timezone(sign * offset))
        seconds = (aware - _EPOCH) // _dt.timedelta(seconds=1)
        if len(_seconds_cache) >= 4096:
            _seconds_cache.clear()
        _seconds_cache[key] = seconds
    ns = seconds * 1_000_000_000
    if frac:
        ns += int(frac[:9].ljust(9, "0"))
    return ns if ns >= 0 else None


def zone(name: str) -> _dt.tzinfo | None:
    """The tzinfo for a ``timezone`` setting: UTC, local (None) or an IANA name."""
    if name == "UTC":
        return _dt.UTC
    if name == "local":
        return None
    return zoneinfo.ZoneInfo(name)


# --------------------------------------------------------------------------- logfmt

_LOGFMT_PAIR = re.compile(r'\s*([^\s="]+)(?:=("(?:[^"\\]|\\.)*"?|\S*))?')


def parse_logfmt(line: str, *, strict: bool = False) -> dict[str, Any] | None:
    """``key=value key2="quoted value" flag`` → a dict of strings (a bare key is True).

    None when the line has no ``key=value`` pair, or (``strict``) when any word is not one."""
    out: dict[str, Any] = {}
    pairs = 0
    pos, end = 0, len(line)
    while pos < end:
        match = _LOGFMT_PAIR.match(line, pos)
        if match is None or match.end() == pos:
            if line[pos:].strip():
                return None
            break
        pos = match.end()
        key, value = match.group(1), match.group(2)
        if value is None:
            if strict:
                return None
            out[key] = True
            continue
        pairs += 1
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                return None
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        out[key] = value
    return out if pairs else None

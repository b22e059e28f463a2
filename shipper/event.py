"""The event contract: levels, actors, normalisation and the label / metadata / line split.

Every source (the logging handler, SystemLog, the sidecar) builds a :class:`LogEvent`; everything
after that (redaction, batching, the Loki client, the spool) works on the :class:`Entry` that
:func:`to_entry` makes of it. Which field goes where is decided here and nowhere else:

============================  ============================================
labels                        ``service_name``, ``env`` (when set), ``level``, ``actor``, ``type``
structured metadata           ``actor_id``, ``trace_id``, ``logger``
the line (a JSON object)      ``message``, ``metadata``, ``exception`` (when there is one)
the entry timestamp           the event's own time, in ns
============================  ============================================

The pieces :func:`to_entry` and :meth:`LogEvent.create` are made of are public too, for the
converters that run once per event and skip a step: the handler's worker goes from a record
straight to the :class:`Entry` (no :class:`LogEvent` in between) and the sidecar's parsers
build the event from a metadata dict they made themselves. Each does one part of the split
above, the same way for every source: :func:`new_event`, :func:`service_label`,
:func:`env_label`, :func:`metadata_value` (the event's fields); :func:`stream_labels`,
:func:`entry_line`, :func:`structured_metadata` and :func:`make_entry` (the entry's).

The ``type`` label's own rules (its normal form, the per-service :class:`TypeGuard`, the
protected and the audit types) are in :mod:`shipper.typelabel`; the names the sources use are
re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import json
import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from shipper.typelabel import (
    DEFAULT_TYPE,
    OVERFLOW_TYPE,
    TypeGuard,
    keep_original_type,
    normalize_type,
)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_TYPE",
    "OVERFLOW_TYPE",
    "Actor",
    "Entry",
    "Level",
    "LogEvent",
    "TypeGuard",
    "entry_line",
    "env_label",
    "make_entry",
    "metadata_value",
    "new_event",
    "normalize_actor",
    "normalize_level",
    "normalize_type",
    "sanitize_label_value",
    "service_label",
    "stream_labels",
    "structured_metadata",
    "to_entry",
]


class Level(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"

    @property
    def priority(self) -> int:
        """0 for DEBUG/INFO, 1 for WARNING/ERROR, 2 for CRITICAL (the spool's eviction classes)."""
        return _LEVEL_PRIORITY[self]

    @property
    def logging_level(self) -> int:
        return _LEVEL_TO_LOGGING[self]


class Actor(enum.StrEnum):
    USER = "USER"
    CREATOR = "CREATOR"
    ADMIN = "ADMIN"
    SYSTEM = "SYSTEM"
    GUEST = "GUEST"


_LEVEL_PRIORITY = {
    Level.DEBUG: 0,
    Level.INFO: 0,
    Level.WARNING: 1,
    Level.ERROR: 1,
    Level.CRITICAL: 2,
}
_LEVEL_TO_LOGGING = {
    Level.DEBUG: logging.DEBUG,
    Level.INFO: logging.INFO,
    Level.WARNING: logging.WARNING,
    Level.ERROR: logging.ERROR,
    Level.CRITICAL: logging.CRITICAL,
}
_LEVEL_ALIASES: dict[str, Level] = {
    **{lvl.value: lvl for lvl in Level},
    "WARN": Level.WARNING,
    "FATAL": Level.CRITICAL,
    "CRIT": Level.CRITICAL,
    "EMERG": Level.CRITICAL,
    "EMERGENCY": Level.CRITICAL,
    "ALERT": Level.CRITICAL,
    "ERR": Level.ERROR,
    "SEVERE": Level.ERROR,
    "NOTICE": Level.INFO,
    "INFORMATION": Level.INFO,
    "INFORMATIONAL": Level.INFO,
    "TRACE": Level.DEBUG,
    "VERBOSE": Level.DEBUG,
    "NOTSET": Level.DEBUG,
}
_ACTOR_ALIASES: dict[str, Actor] = {
    **{a.value: a for a in Actor},
    "ANONYMOUS": Actor.GUEST,
    "ANON": Actor.GUEST,
    "VISITOR": Actor.GUEST,
    "STAFF": Actor.ADMIN,
    "SUPERUSER": Actor.ADMIN,
    "ADMINISTRATOR": Actor.ADMIN,
    "CUSTOMER": Actor.USER,
    "MEMBER": Actor.USER,
    "SERVICE": Actor.SYSTEM,
    "CRON": Actor.SYSTEM,
    "WORKER": Actor.SYSTEM,
}

#: the answers of normalize_level for the usual inputs, looked up before any parsing
_FAST_LEVELS: dict[object, Level] = {
    **{lvl.value: lvl for lvl in Level},
    **{num: lvl for lvl, num in _LEVEL_TO_LOGGING.items()},
    "WARN": Level.WARNING,
}

#: Loki's default ``limits_config.max_line_size`` (256KB).
DEFAULT_MAX_LINE_BYTES = 256 * 1024
_MAX_LABEL_VALUE_LEN = 128
_MAX_METADATA_VALUE_LEN = 1024
_TRUNCATION_MARKER = "...[truncated by shipper: {n} bytes]"


def normalize_level(value: object) -> tuple[Level, str | None]:
    """Map a level name, alias or ``logging`` number to a :class:`Level`.

    Returns the level and, when the input was not a known name or alias, the original (kept in
    the event's metadata by :class:`LogEvent`). Unknown names map to INFO; unknown numbers map to
    the nearest ``logging`` threshold below them.
    """
    cls = value.__class__
    if cls is Level:
        return value, None  # type: ignore[return-value]
    known = _FAST_LEVELS.get(value) if cls is str or cls is int else None
    if known is not None:
        return known, None
    if isinstance(value, Level):
        return value, None
    if isinstance(value, bool):  # bool is an int: refuse to read True as level 1
        return Level.INFO, repr(value)
    if isinstance(value, int):
        if value >= logging.CRITICAL:
            lvl = Level.CRITICAL
        elif value >= logging.ERROR:
            lvl = Level.ERROR
        elif value >= logging.WARNING:
            lvl = Level.WARNING
        elif value >= logging.INFO:
            lvl = Level.INFO
        else:
            lvl = Level.DEBUG
        standard = value in _LEVEL_TO_LOGGING.values() or value == logging.NOTSET
        return lvl, None if standard else str(value)
    text = str(value).strip().upper()
    found = _LEVEL_ALIASES.get(text)
    if found is not None:
        return found, None
    return Level.INFO, str(value)


def normalize_actor(value: object) -> tuple[Actor, str | None]:
    """Map an actor name or alias to an :class:`Actor` (None → SYSTEM).

    Unknown names map to SYSTEM and the original is returned so that it can be kept in metadata.
    """
    if value is None or value == "":
        return Actor.SYSTEM, None
    cls = value.__class__
    if cls is str or cls is Actor:
        fast = _ACTOR_ALIASES.get(value)  # type: ignore[call-overload]
        if fast is not None:
            return fast, None
    if isinstance(value, Actor):
        return value, None
    if isinstance(value, str):
        fast = _ACTOR_ALIASES.get(value)
        if fast is not None:
            return fast, None
    text = str(value).strip().upper()
    found = _ACTOR_ALIASES.get(text)
    if found is not None:
        return found, None
    return Actor.SYSTEM, str(value)


_UNSAFE_LABEL_CHARS = re.compile(r"[^A-Za-z0-9 _.:/@+\-]+")


@functools.lru_cache(maxsize=1024)
def sanitize_label_value(value: object, *, default: str = "unknown") -> str:
    """Make a free-text label value (service, env) safe: no quote, brace, backslash, control
    character or newline survives (each run becomes ``_``), at most 128 characters, never empty."""
    text = _UNSAFE_LABEL_CHARS.sub("_", str(value).strip())[:_MAX_LABEL_VALUE_LEN].strip()
    return text or default


@functools.lru_cache(maxsize=256)
def service_label(value: object) -> str:
    """The ``service_name`` label's value: :func:`sanitize_label_value`, ``unknown_service``
    when empty."""
    return sanitize_label_value(value, default="unknown_service")


@functools.lru_cache(maxsize=256)
def env_label(value: object) -> str:
    """The ``env`` label's value (a set env; an unset one has no label)."""
    return sanitize_label_value(value)


_new_object = object.__new__
_set_attr = object.__setattr__


def _clean_text(value: str) -> str:
    """Replace lone surrogates (invalid UTF-8 that slipped into a str) so encoding never fails."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


def metadata_value(value: object) -> str:
    """A structured-metadata value (``actor_id``, ``trace_id``, ``logger``): a flat,
    single-line string of at most 1024 characters."""
    if value.__class__ is str and len(value) <= 128 and value.isprintable():
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else _clean_text(
        str(value))
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text[:_MAX_METADATA_VALUE_LEN]


_MAX_DEPTH = 16


def _jsonable(value: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """A JSON-safe copy of ``value``: str keys, lists for tuples/sets, text for bytes, ``repr``
    for anything ``json`` cannot write (objects, NaN), a marker for cycles and deep nesting."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, depth + 1, seen)
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()  # as orjson writes them (RFC 3339)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        seen = set() if seen is None else seen
        if id(value) in seen:
            return "<cycle>"
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                return {
                    _clean_text(k if isinstance(k, str) else str(k)): _jsonable(v, depth + 1, seen)
                    for k, v in value.items()
                }
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [_jsonable(v, depth + 1, seen) for v in items]
        finally:
            seen.discard(id(value))
    try:
        return _clean_text(repr(value))
    except Exception as exc:  # a broken __repr__ must not lose the event
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


@dataclass(frozen=True)
class LogEvent:
    """One system-log event, as every source builds it.

    Fields are normalised by :meth:`create`; build events with it rather than the constructor
    unless the values are already normal.
    """

    service: str
    level: Level
    message: str
    actor: Actor = Actor.SYSTEM
    type: str = DEFAULT_TYPE
    timestamp_ns: int = 0
    env: str | None = None
    actor_id: str | None = None
    trace_id: str | None = None
    logger: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    exception: str | None = None

    @classmethod
    def create(
        cls,
        *,
        service: str,
        level: object,
        message: object,
        timestamp_ns: int,
        actor: object = None,
        type: object = None,
        env: str | None = None,
        actor_id: object = None,
        trace_id: object = None,
        logger: str | None = None,
        metadata: object = None,
        exception: str | None = None,
    ) -> LogEvent:
        """Normalise every field (aliases, case, label safety) and build the event.

        A level or actor that had to be mapped, and metadata that was not a mapping, are kept in
        ``metadata`` (``original_level``, ``original_actor``, ``value``) so nothing is lost.
        """
        if metadata is None:
            meta: dict[str, Any] = {}
        elif metadata.__class__ is dict or isinstance(metadata, Mapping):
            meta = dict(metadata)
        else:
            meta = {"value": metadata}
        return new_event(service, env, level, message, timestamp_ns, actor, type, actor_id,
                         trace_id, logger, meta, exception, cls)


def new_event(service: str, env: str | None, level: object, message: object,
              timestamp_ns: int, actor: object, type_: object, actor_id: object,
              trace_id: object, logger: str | None, meta: dict[str, Any],
              exception: str | None, cls: type[LogEvent] = LogEvent) -> LogEvent:
    """:meth:`LogEvent.create` with its arguments in order, for a source that built the
    metadata dict itself and hands it over: the event keeps that dict (no copy; it may get
    ``original_level`` and ``original_actor``)."""
    lvl, level_original = normalize_level(level)
    act, actor_original = normalize_actor(actor)
    if level_original is not None:
        meta.setdefault("original_level", level_original)
    if actor_original is not None:
        meta.setdefault("original_actor", actor_original)
    if message.__class__ is not str:
        try:
            message = str(message)
        except Exception as exc:
            message = f"<unprintable message {message.__class__.__name__}: {exc!r}>"
    # Every field is normal now: fill the instance in one step instead of the frozen
    # dataclass __init__'s twelve object.__setattr__ calls (this runs once per event).
    event = _new_object(cls)
    _set_attr(event, "__dict__", {
        "service": service_label(service),
        "level": lvl,
        "message": message,
        "actor": act,
        "type": normalize_type(type_),
        "timestamp_ns": int(timestamp_ns),
        "env": env_label(env) if env else None,
        "actor_id": None if actor_id is None or actor_id == "" else metadata_value(actor_id),
        "trace_id": None if trace_id is None or trace_id == "" else metadata_value(trace_id),
        "logger": logger or None,
        "metadata": meta,
        "exception": exception or None,
    })
    return event


class Entry(NamedTuple):
    """An event as Loki stores it: the stream's labels, the timestamp, the line and the
    structured metadata. Lines and timestamps are never changed after this point, so a
    re-sent entry is byte-identical and Loki drops it as a duplicate.

    A named tuple: the worker makes one per event, and a tuple of strings and numbers is the
    cheapest object to build and one the garbage collector soon stops looking at."""

    labels: tuple[tuple[str, str], ...]
    timestamp_ns: int
    line: str
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def level(self) -> Level:
        return _level_of(self.labels)

    @property
    def size(self) -> int:
        """Roughly the bytes this entry adds to a push request: the line, plus framing and
        typical structured metadata. Batching uses it; the 4 MiB limit is checked on the real
        encoded body."""
        return len(self.line) + 160

    def to_json(self) -> str:
        """The entry as one compact JSON array (the spool's record format)."""
        return self.to_record().decode("utf-8")

    def to_record(self) -> bytes:
        """:meth:`to_json` as UTF-8 bytes, as the spool stores it."""
        return _record_bytes(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Entry:
        try:
            labels, ts, line, metadata = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a spooled entry: {exc}") from None
        if not isinstance(labels, dict) or not isinstance(line, str):
            raise ValueError("not a spooled entry: expected [labels, ts, line, metadata]")
        return make_entry(tuple(labels.items()), int(ts), line,
                           tuple((metadata or {}).items()))


@functools.lru_cache(maxsize=4096)
def _level_of(labels: tuple[tuple[str, str], ...]) -> Level:
    for name, value in labels:
        if name == "level":
            try:
                return Level(value)
            except ValueError:
                break
    return Level.INFO


@functools.lru_cache(maxsize=4096)
def _labels_json(labels: tuple[tuple[str, str], ...]) -> bytes:
    return orjson.dumps(dict(labels))


def _record_bytes(entry: Entry) -> bytes:
    """``[labels, "ts", line, metadata]`` (the labels' JSON is written once per label set)."""
    try:
        return b"".join((
            b"[", _labels_json(entry.labels), b',"', str(entry.timestamp_ns).encode(), b'",',
            orjson.dumps(entry.line), b",",
            orjson.dumps(dict(entry.metadata)) if entry.metadata else b"{}", b"]",
        ))
    except orjson.JSONEncodeError:  # a lone surrogate in a hand-built entry
        record = [dict(entry.labels), str(entry.timestamp_ns), entry.line, dict(entry.metadata)]
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode()


def make_entry(labels: tuple[tuple[str, str], ...], timestamp_ns: int, line: str,
               metadata: tuple[tuple[str, str], ...]) -> Entry:
    """An :class:`Entry` from values that are already normal (:func:`stream_labels`,
    :func:`entry_line`, :func:`structured_metadata`), without the named tuple's argument
    handling (this runs per event)."""
    return _tuple_new(Entry, (labels, timestamp_ns, line, metadata))


_tuple_new = tuple.__new__


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def _json_default(value: Any) -> Any:
    """``json.dumps`` fallback for the fast path: the same conversions as :func:`_jsonable`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):  # a tuple subclass (namedtuple) orjson does not take
        return list(value)
    return _jsonable(value)


# The careful path (and truncation): the standard library encoder, which refuses NaN and takes
# any int, so _jsonable can step in.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                            default=_json_default)
_dumps = _ENCODER.encode
# The fast path: orjson (about 9x faster than json for a line, see pyproject.toml). Dataclass
# instances go to _json_default (their repr, as everywhere else), not orjson's own dict form.
_orjson_dumps = orjson.dumps
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS


def entry_line(message: str, metadata: Mapping[str, Any], exception: str | None,
               max_line_bytes: int) -> str:
    """The entry's line: the JSON object ``{"message", "metadata"[, "exception"]}``, at most
    ``max_line_bytes`` (cut as :func:`to_entry` says), valid Unicode."""
    if not metadata and not exception and message.__class__ is str:
        # the usual event: a message and nothing else
        try:
            data = b'{"message":' + _orjson_dumps(message) + b',"metadata":{}}'
            if len(data) <= max_line_bytes:
                return data.decode("utf-8")
        except TypeError:  # lone surrogates: the careful path below
            pass
    body: dict[str, Any] = {"message": message, "metadata": metadata}
    if exception:
        body["exception"] = exception
    try:
        # fast path: orjson walks the metadata; only odd values reach _json_default. It
        # writes NaN as null and refuses lone surrogates, big ints and non-str keys: a line
        # holding "null" takes the careful path, so NaN is kept as "nan" as everywhere else
        data = _orjson_dumps(body, default=_json_default, option=_ORJSON_OPTIONS)
        if b"null" in data:
            raise ValueError("null: maybe a NaN")
        if len(data) > max_line_bytes:
            return _truncated_line(body, data.decode("utf-8"), max_line_bytes)
        return data.decode("utf-8")
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        line = _dumps(body)
    except (TypeError, ValueError, RecursionError):
        # NaN, non-string keys, cycles, depth: the careful copy
        body["metadata"] = _jsonable(metadata)
        line = _dumps(body)
    if not line.isascii():
        line = _clean_text(line)  # lone surrogates (undecodable bytes) → "?"
    if len(line) * 4 > max_line_bytes and len(line.encode("utf-8")) > max_line_bytes:
        return _truncated_line(body, line, max_line_bytes)
    return line


def _json_size(body: Mapping[str, Any]) -> int:
    return len(_dumps(body).encode("utf-8", "replace"))


def _truncated_line(body: dict[str, Any], line: str, max_line_bytes: int) -> str:
    """Fit a too-long line under ``max_line_bytes`` and keep it valid JSON: the largest of
    message, metadata and exception is cut first (metadata becomes the truncated text of its
    JSON), each cut ends with a marker naming the original size, and ``"truncated": true`` is set.
    """
    marker = _TRUNCATION_MARKER.format(n=len(line.encode("utf-8", "replace")))
    body = dict(body)
    body["truncated"] = True
    texts = {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in body.items()
        if key in ("message", "metadata", "exception") and value is not None
    }
    for key in sorted(texts, key=lambda k: -len(texts[k])):
        text = texts[key]
        keep = len(text.encode("utf-8"))
        for _ in range(16):  # escaping makes the JSON size of a text larger than the text
            excess = _json_size(body) - max_line_bytes
            if excess <= 0:
                return _clean_text(_dumps(body))
            keep = max(keep - excess - len(marker) - 8, 0)
            body[key] = _truncate_utf8(text, keep) + marker
            if keep == 0:
                break
    if _json_size(body) <= max_line_bytes:
        return _clean_text(_dumps(body))
    return json.dumps({"message": marker, "metadata": {}, "truncated": True})


_LABELS_CACHE: dict[tuple[str, str | None, Level, Actor, str], tuple[tuple[str, str], ...]] = {}


def stream_labels(service: str, env: str | None, level: Level, actor: Actor,
                  type_: str) -> tuple[tuple[str, str], ...]:
    """The entry's labels, in order: ``service_name``, ``env`` (when set), ``level``,
    ``actor``, ``type``, from values that are already normal (one shared tuple per set)."""
    key = (service, env, level, actor, type_)
    labels = _LABELS_CACHE.get(key)
    if labels is None:
        pairs = [("service_name", service)]
        if env:
            pairs.append(("env", env))
        pairs += [("level", level.value), ("actor", actor.value), ("type", type_)]
        labels = tuple(pairs)
        if len(_LABELS_CACHE) >= 10_000:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[key] = labels
    return labels


def to_entry(
    event: LogEvent,
    *,
    type_guard: TypeGuard | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Entry:
    """Split an event into labels, structured metadata and the JSON line (see module docs).

    Text that is not valid Unicode (lone surrogates from undecodable bytes) is replaced by
    ``?``, so an entry can always be encoded and sent."""
    type_ = event.type
    metadata: Mapping[str, Any] = event.metadata
    if type_guard is not None:
        admitted = type_guard.admit(type_, event.service)
        if admitted != type_:
            metadata = dict(metadata)
            keep_original_type(metadata, type_)
            type_ = admitted
    return make_entry(
        stream_labels(event.service, event.env, event.level, event.actor, type_),
        event.timestamp_ns,
        entry_line(event.message, metadata, event.exception, max_line_bytes),
        structured_metadata(event.actor_id, event.trace_id, event.logger),
    )


def structured_metadata(actor_id: str | None, trace_id: str | None,
                        logger: str | None) -> tuple[tuple[str, str], ...]:
    """The structured metadata of an entry (values already normal, except the logger name).
    The (name, value) pairs of loggers and actor ids are made once and shared: fewer objects
    per event for the garbage collector."""
    pairs: list[tuple[str, str]] = []
    if actor_id:
        pairs.append(_pair("actor_id", actor_id))
    if trace_id:
        pairs.append(("trace_id", trace_id))
    if logger:
        pairs.append(_logger_pair(logger))
    return tuple(pairs)


_PAIRS: dict[tuple[str, str], tuple[str, str]] = {}


def _pair(name: str, value: str) -> tuple[str, str]:
    pair = (name, value)
    found = _PAIRS.get(pair)
    if found is None:
        if len(_PAIRS) >= 8192:
            _PAIRS.clear()
        found = _PAIRS[pair] = pair
    return found


@functools.lru_cache(maxsize=1024)
def _logger_pair(logger: str) -> tuple[str, str]:
    return ("logger", metadata_value(logger))

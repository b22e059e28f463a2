"""The event contract: levels, actors, normalisation and the label / metadata / line split.

Every source (the logging handler, SystemLog, the sidecar) builds a :class:`LogEvent`; everything
after that (redaction, batching, the Loki client, the spool) works on the :class:`Entry` that
:func:`to_entry` makes of it. Which field goes where is decided here and nowhere else:

============================  ============================================
labels                        ``service_name``, ``env`` (when set), ``level``, ``actor``, ``type``
structured metadata           ``actor_id``, ``trace_id``, ``span_id``, ``logger``, ``original_time``
the line (a JSON object)      ``message``, ``metadata``, ``exception`` (when there is one)
the entry timestamp           the event's own time, in ns
============================  ============================================

The entry timestamp is always one Loki can read: a time outside 64-bit nanoseconds (after
2262, before 1677, NaN, not a number at all) would make Loki refuse the whole push it is in,
so :func:`entry_time` ships such an event at the time it was received and keeps the original,
as text, in the structured metadata ``original_time``. Whatever a field holds, building the
entry never raises: :func:`text_of` writes any object as text.

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
import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import orjson

from shipper._units import MAX_TIME_NS, MIN_TIME_NS, describe_time
from shipper.line import clean_text, entry_line, text_of
from shipper.typelabel import (
    DEFAULT_TYPE,
    HEALTH_TYPE,
    OVERFLOW_TYPE,
    TypeGuard,
    keep_original_type,
    normalize_type,
)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_TYPE",
    "HEALTH_TYPE",
    "OVERFLOW_TYPE",
    "Actor",
    "Entry",
    "Level",
    "LogEvent",
    "TypeGuard",
    "entry_line",
    "entry_time",
    "env_label",
    "event_source",
    "make_entries",
    "make_entry",
    "make_event",
    "metadata_value",
    "new_event",
    "normalize_actor",
    "normalize_level",
    "normalize_type",
    "sanitize_label_value",
    "service_label",
    "stream_labels",
    "structured_metadata",
    "text_of",
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
    original = text_of(value)
    found = _LEVEL_ALIASES.get(original.strip().upper())
    if found is not None:
        return found, None
    return Level.INFO, original


def normalize_actor(value: object) -> tuple[Actor, str | None]:
    """Map an actor name or alias to an :class:`Actor` (None → SYSTEM).

    Unknown names map to SYSTEM and the original is returned so that it can be kept in metadata.
    """
    if value is None:
        return Actor.SYSTEM, None
    cls = value.__class__
    if cls is str or cls is Actor:
        fast = _ACTOR_ALIASES.get(value)  # type: ignore[call-overload]
        if fast is not None:
            return fast, None
    if isinstance(value, Actor):
        return value, None
    if isinstance(value, str):
        if not value:
            return Actor.SYSTEM, None
        fast = _ACTOR_ALIASES.get(value)
        if fast is not None:
            return fast, None
    original = text_of(value)
    found = _ACTOR_ALIASES.get(original.strip().upper())
    if found is not None:
        return found, None
    return Actor.SYSTEM, original


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
_MIN_NS = MIN_TIME_NS
_MAX_NS = MAX_TIME_NS
_time_ns = time.time_ns


def metadata_value(value: object) -> str:
    """A structured-metadata value (``actor_id``, ``trace_id``, ``span_id``, ``logger``): a flat,
    single-line string of at most 1024 characters."""
    if value.__class__ is str and len(value) <= 128 and value.isprintable():
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else clean_text(
        text_of(value))
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text[:_MAX_METADATA_VALUE_LEN]


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One system-log event, as every source builds it.

    Fields are normalised by :meth:`create`; build events with it rather than the constructor
    unless the values are already normal. The fields are slots: an event has no ``__dict__``
    (a dict of fourteen keys cost more to make and to free than the rest of the event).
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
    #: the event's own time as given, when Loki could not take it (see :func:`entry_time`)
    original_time: str | None = None
    #: the span (of the trace ``trace_id``) the event was logged in: OpenTelemetry's, in hex
    span_id: str | None = None

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
        original_time: str | None = None,
        span_id: object = None,
    ) -> LogEvent:
        """Normalise every field (aliases, case, label safety) and build the event.

        A level or actor that had to be mapped, and metadata that was not a mapping, are kept in
        ``metadata`` (``original_level``, ``original_actor``, ``value``) so nothing is lost.
        A ``timestamp_ns`` Loki cannot take becomes the time of this call, the original kept
        as ``original_time`` (see :func:`entry_time`); a source that replaced the event's
        time itself passes the original as ``original_time``.
        """
        if metadata is None:
            meta: dict[str, Any] = {}
        elif metadata.__class__ is dict:
            meta = dict(metadata)
        else:
            meta = _metadata_dict(metadata)
        return new_event(service, env, level, message, timestamp_ns, actor, type, actor_id,
                         trace_id, logger, meta, exception, cls, original_time=original_time,
                         span_id=span_id)


def _metadata_dict(metadata: object) -> dict[str, Any]:
    """A copy of metadata given as a mapping, ``{"value": metadata}`` for anything else (and
    for a mapping that cannot be read)."""
    if isinstance(metadata, Mapping):
        try:
            return dict(metadata)
        except Exception:
            pass
    return {"value": metadata}


def new_event(service: str, env: str | None, level: object, message: object,
              timestamp_ns: int, actor: object, type_: object, actor_id: object,
              trace_id: object, logger: str | None, meta: dict[str, Any],
              exception: str | None, cls: type[LogEvent] = LogEvent, *,
              original_time: str | None = None, span_id: object = None) -> LogEvent:
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
        message = text_of(message)
    if timestamp_ns.__class__ is not int or not _MIN_NS <= timestamp_ns <= _MAX_NS:
        timestamp_ns, replaced = entry_time(timestamp_ns, _time_ns())
        original_time = replaced if original_time is None else original_time
    # Every field is normal now: no need for the frozen dataclass __init__'s fourteen
    # object.__setattr__ calls (see make_event; a subclass takes its own __init__)
    fields = (
        service_label(service), lvl, message, act, normalize_type(type_), timestamp_ns,
        env_label(env) if env else None,
        # (no == "": an object's own __eq__ may raise)
        None if actor_id is None or (actor_id.__class__ is str and not actor_id)
        else metadata_value(actor_id),
        None if trace_id is None or (trace_id.__class__ is str and not trace_id)
        else metadata_value(trace_id),
        logger or None, meta, exception or None, original_time,
        None if span_id is None or (span_id.__class__ is str and not span_id)
        else metadata_value(span_id),
    )
    if cls is not LogEvent:
        return cls(*fields)
    return make_event(*fields)


class _Filling:
    """A :class:`LogEvent` being filled: the same slots in the same order, without the frozen
    dataclass's ``__setattr__``, so that :func:`make_event` fills them with plain attribute
    stores (each a few nanoseconds) and then gives the object its class."""

    __slots__ = LogEvent.__slots__


def event_source(target: str, fields: Mapping[str, str],
                 indent: str = "    ") -> tuple[list[str], dict[str, Any]]:
    """For code generated elsewhere (the sidecar's JSON converters): source lines that make
    the :class:`LogEvent` ``target`` as :func:`make_event` does, each field the expression
    ``fields[name]`` (a field not given is None), and the globals those lines use. The
    expressions are the caller's own code, never data."""
    unknown = set(fields) - set(LogEvent.__slots__)
    if unknown:
        raise ValueError(f"not fields of LogEvent: {sorted(unknown)}")
    lines = [f"{indent}{target} = _new_object(_Filling)"]
    lines += [f"{indent}{target}.{name} = {fields.get(name, 'None')}"
              for name in LogEvent.__slots__]
    lines.append(f"{indent}{target}.__class__ = _LogEvent")
    return lines, {"_new_object": _new_object, "_Filling": _Filling, "_LogEvent": LogEvent}


def make_event(service: str, level: Level, message: str, actor: Actor, type_: str,
               timestamp_ns: int, env: str | None, actor_id: str | None,
               trace_id: str | None, logger: str | None, metadata: Mapping[str, Any],
               exception: str | None, original_time: str | None = None,
               span_id: str | None = None) -> LogEvent:
    """A :class:`LogEvent` of these fields, every one normal already as :func:`new_event`
    makes them: for a source that normalised them itself (the event keeps ``metadata``, no
    copy). The instance is filled as a :class:`_Filling` and then made a ``LogEvent`` (the
    two have the same layout): about 0.45 µs, where the frozen dataclass's ``__init__``, which
    sets each field with a call, takes about 1.7."""
    event: Any = _new_object(_Filling)
    event.service = service
    event.level = level
    event.message = message
    event.actor = actor
    event.type = type_
    event.timestamp_ns = timestamp_ns
    event.env = env
    event.actor_id = actor_id
    event.trace_id = trace_id
    event.logger = logger
    event.metadata = metadata
    event.exception = exception
    event.original_time = original_time
    event.span_id = span_id
    event.__class__ = LogEvent
    return cast(LogEvent, event)


def entry_time(timestamp_ns: object, received_ns: int,
               given: object = None) -> tuple[int, str | None]:
    """An event's entry timestamp, and the original time when it had to be replaced.

    Loki reads an entry's time as a signed 64-bit count of nanoseconds (1677-09-21 to
    2262-04-11) and refuses the whole push when one entry's time is outside that range, so
    such a ``timestamp_ns`` (or one that is not a number: None, NaN, infinity, text) gives
    ``(received_ns, original)``: the event is shipped at the time it was received, and the
    original is kept as text for the structured metadata ``original_time`` (at most 1,024
    characters): ``given`` as the source was given it (``str``; ``repr`` for a float;
    ISO 8601 for a datetime), or else ``timestamp_ns`` itself, as RFC 3339 when a calendar
    can show it. A time within the range gives ``(timestamp_ns, None)``, even one Loki will
    refuse as too old or too new: that refusal is per entry, counted, and costs no other.
    Never raises."""
    ns: int | None = None
    if timestamp_ns.__class__ is int:
        ns = timestamp_ns
    elif isinstance(timestamp_ns, float):
        ns = int(timestamp_ns) if math.isfinite(timestamp_ns) else None
    elif not isinstance(timestamp_ns, bool):
        try:
            ns = operator.index(timestamp_ns)  # type: ignore[arg-type]  # int subclasses, numpy
        except Exception:
            ns = None
    if ns is not None and _MIN_NS <= ns <= _MAX_NS:
        return ns, None
    if given is None:
        if ns is not None and not isinstance(timestamp_ns, float):
            return received_ns, metadata_value(describe_time(ns))
        given = timestamp_ns
    return received_ns, metadata_value(_time_text(given))


def _time_text(value: object) -> str:
    """A time as given, as text: ISO 8601 for a date or datetime, ``repr`` for a float."""
    try:
        if isinstance(value, (_dt.date, _dt.time)):
            return value.isoformat()
        if isinstance(value, float):
            return repr(value)
    except Exception:
        pass
    return text_of(value)


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
            metadata = _metadata_dict(metadata)
            keep_original_type(metadata, type_)
            type_ = admitted
    timestamp_ns = event.timestamp_ns
    original_time = event.original_time
    if timestamp_ns.__class__ is not int or not _MIN_NS <= timestamp_ns <= _MAX_NS:
        # an event built without new_event (the constructor, dataclasses.replace)
        timestamp_ns, replaced = entry_time(timestamp_ns, _time_ns())
        original_time = replaced if original_time is None else original_time
    return make_entry(
        stream_labels(event.service, event.env, event.level, event.actor, type_),
        timestamp_ns,
        entry_line(event.message, metadata, event.exception, max_line_bytes),
        structured_metadata(event.actor_id, event.trace_id, event.logger, original_time,
                            event.span_id),
    )


def make_entries(events: Sequence[LogEvent], keep: Sequence[bool], group: int,
                 redact: Callable[[LogEvent], LogEvent], failed: Callable[[Exception], None],
                 type_guard: TypeGuard | None = None,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[Entry]:
    """:func:`to_entry` of each event of a batch, for the worker: the events of group ``g``
    (``events[g * group:(g + 1) * group]``) as they are when ``keep[g]``, else as
    ``redact(event)`` gives them. An event that raises is left out and handed to ``failed``
    (its neighbours are not). An event of a (type, service, labels) the guard already let
    through in this batch, at a time Loki can take, is split here, in one loop for the whole
    batch (no call per event); any other goes through :func:`to_entry` (which also counts it
    in the guard). The entries are the same either way."""
    entries: list[Entry] = []
    add = entries.append
    #: labels of the (type, service, env, level, actor) the guard let through in this batch
    ready: dict[tuple[str, str, str | None, Level, Actor], tuple[tuple[str, str], ...]] = {}
    start = 0
    for kept in keep:
        for item in events[start:start + group]:
            try:
                event = item if kept else redact(item)
                type_, service = event.type, event.service
                key = (type_, service, event.env, event.level, event.actor)
                labels = ready.get(key)
                ts = event.timestamp_ns
                if (labels is None or event.original_time is not None
                        or ts.__class__ is not int or not _MIN_NS <= ts <= _MAX_NS):
                    entry = to_entry(event, type_guard=type_guard, max_line_bytes=max_line_bytes)
                    if labels is None and entry.labels[-1][1] == type_:  # type label is last
                        ready[key] = entry.labels
                    add(entry)
                    continue
                actor_id, trace_id = event.actor_id, event.trace_id
                if event.logger is not None or event.span_id is not None:
                    metadata = structured_metadata(actor_id, trace_id, event.logger, None,
                                                   event.span_id)
                elif actor_id:
                    # a new pair: a batch holds a few events each of many actors, and looking
                    # a shared pair up costs more than making one
                    metadata = ((("actor_id", actor_id), ("trace_id", trace_id)) if trace_id
                                else (("actor_id", actor_id),))
                else:
                    metadata = (("trace_id", trace_id),) if trace_id else ()
                add(_tuple_new(Entry, (labels, ts, entry_line(event.message, event.metadata,
                                                              event.exception, max_line_bytes),
                                       metadata)))
            except Exception as exc:
                failed(exc)
        start += group
    return entries


def structured_metadata(actor_id: str | None, trace_id: str | None, logger: str | None,
                        original_time: str | None = None,
                        span_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """The structured metadata of an entry (values already normal, except the logger name).
    The (name, value) pairs of loggers and actor ids are made once and shared: fewer objects
    per event for the garbage collector."""
    pairs: list[tuple[str, str]] = []
    if actor_id:
        pairs.append(_pair("actor_id", actor_id))
    if trace_id:
        pairs.append(("trace_id", trace_id))
    if span_id:
        pairs.append(("span_id", span_id))
    if logger:
        pairs.append(_logger_pair(logger))
    if original_time:
        pairs.append(("original_time", original_time))
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

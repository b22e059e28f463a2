"""``LokiHandler``: the ``logging.Handler`` adapter to the shipping pipeline.

``emit`` formats the message (as ``logging.handlers.QueueHandler`` does), takes a snapshot of
the record's fields (strings and numbers: the record itself is not kept) and puts it on a bounded
in-memory queue; redaction, the wire entry, encoding and HTTP all happen on the pipeline's
background threads. ``emit`` never blocks on the network and never raises into the app.

Event fields are read from the record's ``extra``:

=================  ===================================================================
``type``           event type (UPPER_SNAKE after normalisation; default ``LOG``)
``actor``          USER, CREATOR, ADMIN, SYSTEM, GUEST (aliases and case normalised)
``actor_id``       also ``actorId``, ``user_id`` — structured metadata, never a label
``trace_id``       also ``request_id`` — structured metadata
``span_id``        structured metadata, with the trace id it belongs to
``metadata``       any JSON-able mapping; other values are kept under ``metadata.value``
``event_time``     the event's own time (datetime or epoch seconds) instead of ``record.created``
=================  ===================================================================

Every other extra attribute (and python-logging-loki's ``tags``) goes into the line's
``metadata`` under its own name (:mod:`shipper.extras`; the ``extra_fields`` setting turns it
off), and a record structlog's ``ProcessorFormatter.wrap_for_formatter`` made is read from its
event dict: ``event`` is the message, the other keys are read as extra attributes.

A record without a trace id of its own takes the one opentelemetry-instrumentation-logging put
on it (``otelTraceID``, ``otelSpanID``; its ``otel*`` attributes are no extra fields), else the
OpenTelemetry span active on the emitting thread (read there, without importing OpenTelemetry:
:mod:`shipper.tracecontext`), else the request context's; its span id comes with it.

Every record gives one entry, whatever it holds: a message or argument whose ``str`` or
``repr`` raises, an unreadable exception, metadata JSON cannot write, an ``event_time`` Loki
cannot take (shipped at ``record.created``, the original kept as ``original_time``). The
worker converts the usual record on a fast path; a record that fails there is converted again
through :class:`~shipper.event.LogEvent`, with every field it reads as text made text first.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from shipper.compat import translate_arguments
from shipper.config import ShipperConfig
from shipper.context import LogContext, current_context
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.transport import Transport
from shipper.event import (
    Actor,
    Entry,
    Level,
    LogEvent,
    TypeGuard,
    entry_line,
    entry_time,
    env_label,
    make_entry,
    metadata_value,
    normalize_actor,
    normalize_level,
    normalize_type,
    service_label,
    stream_labels,
    structured_metadata,
    text_of,
    to_entry,
)
from shipper.extras import STANDARD_ATTRS, extra_fields, spread_tags, structlog_event_dict
from shipper.redact import CLEAN_GROUP, Redactor, hide_url_credentials
from shipper.tracecontext import (
    OTEL_RECORD_ATTRS,
    OTEL_TRACE_MODULE,
    SPAN_ID_DIGITS,
    TRACE_ID_DIGITS,
    active_span,
    hex_id,
    span_ids,
)
from shipper.typelabel import keep_original_type

__all__ = ["INTERNAL_LOGGERS", "LokiHandler", "event_from_record"]

#: loggers that never reach the handler: its own HTTP stack and its own diagnostics
INTERNAL_LOGGERS: tuple[str, ...] = ("urllib3", "requests", "shipper.internal")

_get_ident = threading.get_ident
_modules = sys.modules
_LogRecord = logging.LogRecord


def _first(values: tuple[Any, ...]) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _event_time_ns(value: Any) -> int | None:
    """An ``event_time`` in ns (None: not a time this reads, or one that cannot be computed:
    NaN, infinity, a datetime the machine's zone cannot place)."""
    try:
        if isinstance(value, _dt.datetime):
            if value.tzinfo is None:
                value = value.astimezone()
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # seconds, or already nanoseconds (anything past year 2200 in seconds is ns)
            return int(value) if value > 10**12 else round(value * 1e6) * 1000
    except Exception:  # NaN, infinity, a zone the machine cannot place, a broken number
        pass
    return None


#: record.created (seconds) below which its time in ns is computed directly: every time within
#: it is one Loki can read (64-bit nanoseconds)
_MAX_CREATED = 9_223_372_036.0


def _created_ns(created: Any) -> int | None:
    """``record.created`` in ns: a float with microsecond resolution, so rounded there."""
    try:
        ns: int = round(created * 1e6) * 1000
    except Exception:  # a record whose created was replaced by something else
        return None
    return ns


def _timestamp(created: Any, event_time: Any) -> tuple[int, str | None]:
    """The entry time of a record, and the original when Loki could not take it (see
    :func:`shipper.event.entry_time`): its ``event_time`` when it has one, else its own
    time; a time that cannot be shipped as it is gives the record's own time (or the clock,
    when that one cannot be shipped either)."""
    if created.__class__ is float and -_MAX_CREATED < created < _MAX_CREATED:
        received, original = round(created * 1e6) * 1000, None  # as logging made it
    else:  # replaced by something else
        received, original = entry_time(_created_ns(created), time.time_ns(), created)
    if event_time is None:
        return received, original
    return entry_time(_event_time_ns(event_time), received, event_time)


#: extra attributes the worker reads when a record has them (``extra={...}``)
_RARE_KEYS = ("original_level", "actorId", "user_id", "request_id", "traceId", "requestId",
              "span_id", "otelTraceID", "otelSpanID", "event_time")
#: the rare values and, last, the record's extra fields (:func:`shipper.extras.extra_fields`)
_NO_RARE: tuple[None, ...] = (None,) * (len(_RARE_KEYS) + 1)
#: the record attributes that are not extra fields: logging's own and the event fields
_NOT_EXTRA = STANDARD_ATTRS | {"metadata", "actor", "actor_id", "trace_id", "type", *_RARE_KEYS,
                               *OTEL_RECORD_ATTRS}
#: the keys of a structlog event dict that are not extra fields
_NOT_EXTRA_IN_EVENT_DICT = frozenset({"metadata", "actor", "actor_id", "trace_id", "type",
                                      *_RARE_KEYS, "event", "exc_info"})
#: attributes every record of this Python has (records from another factory may have more)
_STANDARD_ATTRS = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)

#: a queued record: (message, context, exception text, levelno, name, created, exc_text,
#: stack_info, metadata, actor, actor_id, trace_id, type, the _RARE_KEYS values, the active
#: OpenTelemetry span's context or None)
_Snapshot = tuple[Any, ...]
#: bytes a queued snapshot takes besides its message and metadata: the tuple, the float, an
#: actor id, the queue's slot (measured in tests/test_handler.py)
SNAPSHOT_OVERHEAD = 400
#: what a record's ``metadata`` mapping is counted for (the queue keeps the app's own mapping)
METADATA_OVERHEAD = 512


def _snapshot(record: logging.LogRecord, context: LogContext | None,
              exception: str | None, formatter: logging.Formatter | None = None) -> _Snapshot:
    """What a record says, taken on the emitting thread: the message formatted now (as
    ``logging.handlers.QueueHandler`` does, so arguments changed after the call do not change
    the event), the exception text, and the attributes the worker reads. Mostly strings and
    numbers: once the record is gone the garbage collector soon stops looking at this tuple,
    where a queued record and its ``__dict__`` are walked on every collection until the
    worker takes them. A record structlog made is read from its event dict
    (:func:`_event_dict_snapshot`); ``formatter`` is the handler's."""
    try:
        if record.__class__ is _LogRecord:  # getMessage without the call
            msg, args = record.msg, record.args
            if msg.__class__ is not str:
                if msg.__class__ is dict:
                    event_dict = structlog_event_dict(record, formatter)
                    if event_dict is not None:
                        return _event_dict_snapshot(record, event_dict, context, exception)
                msg = str(msg)
            message = msg % args if args else msg
        else:  # a record factory's class may format its own way
            if record.msg.__class__ is dict:
                event_dict = structlog_event_dict(record, formatter)
                if event_dict is not None:
                    return _event_dict_snapshot(record, event_dict, context, exception)
            message = record.getMessage()
            if message.__class__ is not str:
                message = text_of(message)
    except Exception as exc:  # bad %-args: keep the template and the args, say what failed
        message = _unformatted(record, exc)
    if exception is None and record.exc_info:
        # format now: the traceback's frames must not be kept alive on the queue
        exception = _exception_text(record.exc_info)
    attrs = record.__dict__
    get = attrs.get
    metadata, actor, actor_id = get("metadata"), get("actor"), get("actor_id")
    trace_id, type_ = get("trace_id"), get("type")
    extras = len(attrs) - _STANDARD_ATTRS
    # the rarer attributes are looked up only when the record has extras not read above
    rare = _NO_RARE if not extras or extras == (
        (metadata is not None) + (actor is not None) + (actor_id is not None)
        + (trace_id is not None) + (type_ is not None)) else (
            *map(get, _RARE_KEYS), extra_fields(attrs, _NOT_EXTRA))
    return (message, context, exception, record.levelno, record.name, record.created,
            record.exc_text, record.stack_info, metadata, actor, actor_id, trace_id, type_,
            # without OpenTelemetry loaded, no span can be active: one look-up
            rare, _span(trace_id) if OTEL_TRACE_MODULE in _modules else None)


def _span(trace_id: Any) -> Any:
    """The span active on the emitting thread (its context), for a record whose own trace id
    is ``trace_id``: only seen there, when the record is logged, and only looked for when
    the record has no trace id of its own."""
    if trace_id is None or (trace_id.__class__ is str and not trace_id):
        return active_span()
    return None


def _event_dict_snapshot(record: logging.LogRecord, event_dict: dict[Any, Any],
                         context: LogContext | None, exception: str | None) -> _Snapshot:
    """:func:`_snapshot` of a record structlog made: the message is the event dict's
    ``event``, the exception its ``exc_info`` (``True``: the one being handled) or the text a
    processor wrote under ``exception``, and its other keys are read as a record's extra
    attributes are (the event fields, then the rest as extra fields)."""
    get = event_dict.get
    event = get("event")
    message = event if event.__class__ is str else text_of(event)
    if exception is None:
        exc_info = get("exc_info")
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if isinstance(exc_info, tuple) and len(exc_info) == 3:
            exception = _exception_text(exc_info)
        if exception is None and get("exception").__class__ is str:
            exception = event_dict.pop("exception")  # format_exc_info's text
    if exception is None and record.exc_info:
        exception = _exception_text(record.exc_info)
    # StackInfoRenderer's text
    stack_info = event_dict.pop("stack") if get("stack").__class__ is str else record.stack_info
    trace_id = get("trace_id")
    return (message, context, exception, record.levelno, record.name, record.created,
            record.exc_text, stack_info, get("metadata"), get("actor"), get("actor_id"),
            trace_id, get("type"),
            (*map(get, _RARE_KEYS), extra_fields(event_dict, _NOT_EXTRA_IN_EVENT_DICT)),
            _span(trace_id) if OTEL_TRACE_MODULE in _modules else None)


def _shown(value: object) -> str:
    """``repr(value)``; when that raises, a tuple's items each so written, anything else as
    :func:`~shipper.event.text_of` writes it."""
    try:
        return repr(value)
    except Exception:
        pass
    if value.__class__ is tuple:
        items = ", ".join(map(_shown, value))
        return f"({items},)" if len(value) == 1 else f"({items})"
    return text_of(value)


def _unformatted(record: logging.LogRecord, exc: Exception) -> str:
    """The message of a record whose template and arguments could not be formatted: both as
    written, and what failed."""
    return f"{_shown(record.msg)} % {_shown(record.args)} (formatting failed: {_shown(exc)})"


def _exception_text(exc_info: Any) -> str | None:
    """A record's ``exc_info`` as traceback text (None when it holds no exception); an
    ``exc_info`` the traceback module cannot format is written as it is, with the error."""
    try:
        if exc_info[0] is None:
            return None
        return "".join(traceback.format_exception(*exc_info)).rstrip()
    except Exception as exc:
        return f"{_shown(exc_info)} (formatting the exception failed: {_shown(exc)})"


def event_from_record(
    record: logging.LogRecord,
    *,
    service: str,
    env: str | None = None,
    context: LogContext | None = None,
    exception: str | None = None,
    extras: bool = True,
    formatter: logging.Formatter | None = None,
) -> LogEvent:
    """Build the event for a ``logging`` record (see the module docs for the fields read).

    ``context`` is the request context captured when the record was emitted; explicit record
    fields win over it. ``exception`` is pre-formatted exception text (else read from the record).
    ``extras=False`` leaves the record's extra fields out (the ``extra_fields`` setting);
    ``formatter`` is the handler's, whose processors a structlog record goes through.
    """
    item = _snapshot(record, context, exception, formatter)
    if record.levelname == "WARN":
        item = (*item[:3], "WARNING", *item[4:])  # the level as a name, not its number
    return _event_from_snapshot(item, service=service, env=env, extras=extras)


def _event_from_snapshot(item: _Snapshot, *, service: str, env: str | None,
                         extras: bool = True) -> LogEvent:
    (message, metadata, exception, actor, actor_id, trace_id, span_id, type_, timestamp_ns,
     original_time) = _fields(item, extras)
    return LogEvent.create(
        service=service,
        env=env,
        level=item[3],
        message=message,
        timestamp_ns=timestamp_ns,
        actor=actor,
        type=type_,
        actor_id=actor_id,
        trace_id=trace_id,
        span_id=span_id,
        logger=item[4],
        metadata=metadata,
        exception=exception,
        original_time=original_time,
    )


def _merged(base: Mapping[str, Any], metadata: Any) -> dict[str, Any]:
    """A record's metadata over ``base`` (the request context's: the record's keys win);
    metadata that is not a mapping, or one that cannot be read, is kept under ``value``."""
    merged = dict(base)
    if isinstance(metadata, Mapping):
        try:
            merged.update(metadata)
            return merged
        except Exception:
            pass
    if metadata is not None:
        merged["value"] = metadata
    return merged


def _trace_ids(otel_trace: Any, otel_span: Any, span: Any) -> tuple[str, str | None] | None:
    """The trace id and span id of a record without a trace id of its own: those
    opentelemetry-instrumentation-logging put on it, else the active span's (hex)."""
    trace_id = hex_id(otel_trace, TRACE_ID_DIGITS)
    if trace_id is not None:
        return trace_id, hex_id(otel_span, SPAN_ID_DIGITS)
    return span_ids(span) if span is not None else None


def _fields(item: _Snapshot, extras: bool = True,
            ) -> tuple[str, Any, str | None, Any, Any, Any, Any, Any, int, str | None]:
    """What a snapshot says, before normalisation: message, metadata, exception text, actor,
    actor id, trace id, span id, type, the timestamp in ns and the original time when Loki
    could not take it (the one reading both :func:`event_from_record` and the handler's
    direct conversion share). With ``extras``, the record's extra fields join its metadata,
    under its own keys (:func:`shipper.extras.spread_tags`)."""
    (message, context, exception, _, _, created, exc_text, stack_info, metadata, actor,
     actor_id, trace_id, type_, rare, span) = item
    (original_level, actor_id2, actor_id3, trace_id2, trace_id3, trace_id4, span_id,
     otel_trace, otel_span, event_time, extra) = rare
    if extra is not None and extras:
        base, tagged = spread_tags(extra)
        text = base.get("exception")
        if text.__class__ is str:  # structlog's format_exc_info wrote it: the exception
            if not exception and not exc_text:
                exception = base.pop("exception")
            elif text.strip() == (exception or exc_text or "").strip():
                del base["exception"]  # the record's own, written twice
        metadata = _merged(base, metadata)
        if tagged:  # the tags' event fields, where the record gives none
            actor = actor if actor is not None else tagged.get("actor")
            actor_id = actor_id if actor_id is not None else tagged.get("actor_id")
            trace_id = trace_id if trace_id is not None else tagged.get("trace_id")
            type_ = type_ if type_ is not None else tagged.get("type")
    if context is not None and context.metadata:
        metadata = _merged(context.metadata, metadata)
    if original_level is not None:
        metadata = _merged({}, metadata)
        metadata.setdefault("original_level", original_level)
    if exception is None and exc_text:
        exception = exc_text
    if stack_info:
        exception = f"{exception}\n{stack_info}" if exception else stack_info
    if not actor_id:
        actor_id = (actor_id2 if actor_id2 is not None and actor_id2 != "" else
                    actor_id3 if actor_id3 is not None and actor_id3 != "" else None)
    if not trace_id:
        trace_id = _first((trace_id2, trace_id3, trace_id4))
    if span_id is not None and span_id == "":
        span_id = None
    if trace_id is None and (span is not None or otel_trace is not None):
        ids = _trace_ids(otel_trace, otel_span, span)
        if ids is not None:
            trace_id = ids[0]
            span_id = ids[1] if span_id is None else span_id
    if context is not None:
        actor = actor if actor is not None else context.actor
        actor_id = actor_id if actor_id is not None else context.actor_id
        trace_id = trace_id if trace_id is not None else context.trace_id
    timestamp_ns, original_time = _timestamp(created, event_time)
    return (message, metadata, exception, actor, actor_id, trace_id, span_id, type_,
            timestamp_ns, original_time)


#: the values the worker reads as they are; anything else in a field read as text is made
#: text before the careful conversion
_PLAIN = frozenset({str, int, float, bool, type(None), Level, Actor})


def _plain(value: Any) -> Any:
    return value if value.__class__ in _PLAIN else text_of(value)


def _plain_snapshot(item: _Snapshot) -> _Snapshot:
    """The snapshot with every field read as text made text (:func:`_plain`): an actor, type
    or id whose hash, ``==`` or ``str`` raises cannot fail the careful conversion. The
    metadata and the times are left as they are: the event contract takes anything there."""
    (message, context, exception, levelno, name, created, exc_text, stack_info, metadata, actor,
     actor_id, trace_id, type_, rare, span) = item
    if context is not None:
        context = dataclasses.replace(context, trace_id=_plain(context.trace_id),
                                      actor=_plain(context.actor),
                                      actor_id=_plain(context.actor_id))
    *names, event_time, extra = rare
    return (_plain(message), context, _plain(exception), _plain(levelno), _plain(name), created,
            _plain(exc_text), _plain(stack_info), metadata, _plain(actor), _plain(actor_id),
            _plain(trace_id), _plain(type_), (*map(_plain, names), event_time, extra), span)


_LabelKey = tuple[int, Any, Any]
_Labels = tuple[tuple[str, str], ...]


class _RecordConverter:
    """A queued ``(record, context, exception)`` → the wire :class:`~shipper.event.Entry`, in
    one step on the worker: the same entry as
    ``to_entry(redactor.redact_event(event_from_record(...)))`` without building the event
    in between, with the labels built once per distinct (level, actor, type), an empty
    metadata dict never walked, and the line written by orjson."""

    def __init__(self, config: ShipperConfig, redactor: Redactor, type_guard: TypeGuard) -> None:
        self._service = service_label(config.service)
        self._env = env_label(config.env) if config.env else None
        self._redactor = redactor
        self._redact = redactor.redact_parts
        self._clean_texts = redactor.clean_texts
        self._guard = type_guard
        self._max_line_bytes = config.max_line_bytes
        self._extras = config.extra_fields
        #: (levelno, actor, type) as found on the record -> labels and the originals that
        #: normalisation replaced (kept in metadata)
        self._labels: dict[_LabelKey, tuple[_Labels, tuple[tuple[str, str], ...]]] = {}

    def _label_set(self, levelno: int, actor: Any, type_: Any,
                   ) -> tuple[_Labels, tuple[tuple[str, str], ...]]:
        key = (levelno, actor, type_)
        try:
            found = self._labels.get(key)
        except TypeError:  # an unhashable actor or type: normalised below, not cached
            found, key = None, None  # type: ignore[assignment]
        if found is not None:
            return found
        level, level_original = normalize_level(levelno)
        act, actor_original = normalize_actor(actor)
        normal_type = normalize_type(type_)
        admitted = self._guard.admit(normal_type, self._service)
        extra: list[tuple[str, str]] = []
        if level_original is not None:
            extra.append(("original_level", level_original))
        if actor_original is not None:
            extra.append(("original_actor", actor_original))
        if admitted != normal_type:
            extra.append(("type", normal_type))
        found = (stream_labels(self._service, self._env, level, act, admitted), tuple(extra))
        # an overflowed type is admitted again on every event (the guard counts them)
        if key is not None and admitted == normal_type and len(self._labels) < 4096:
            self._labels[key] = found
        return found

    def __call__(self, item: _Snapshot) -> Entry:
        entries: list[Entry] = []
        self.many([item], entries, _raise)
        return entries[0]

    def many(self, items: Sequence[_Snapshot], entries: list[Entry],
             failed: Callable[[Exception], None]) -> None:
        """Append the entry of each queued snapshot to ``entries``; an item the fast path
        cannot convert is converted carefully (:meth:`careful`), and passed (its exception)
        to ``failed`` only should even that fail. One loop for a whole batch: what every
        event needs is looked up once."""
        append = entries.append
        labels_get = self._labels.get
        label_set = self._label_set
        redact = self._redact
        max_line_bytes = self._max_line_bytes
        fields = _fields
        extras = self._extras
        # messages known to hold nothing to mask, by groups of CLEAN_GROUP
        clean = self._clean_texts([item[0] for item in items])
        for index, item in enumerate(items):
            try:
                (message, context, exception, levelno, name, created, exc_text, stack_info,
                 metadata, actor, actor_id, trace_id, type_, rare, span) = item
                if (context is None and rare is _NO_RARE and span is None and not exc_text
                        and not stack_info and -_MAX_CREATED < created < _MAX_CREATED):
                    # the usual record: _fields without the call
                    timestamp_ns = round(created * 1e6) * 1000
                    original_time = span_id = None
                    if not actor_id:
                        actor_id = None
                    if not trace_id:
                        trace_id = None
                else:
                    (message, metadata, exception, actor, actor_id, trace_id, span_id, type_,
                     timestamp_ns, original_time) = fields(item, extras)
                try:
                    found = labels_get((levelno, actor, type_))
                except TypeError:  # unhashable actor or type
                    found = None
                labels, extra = found if found is not None else label_set(levelno, actor, type_)
                if metadata is None:
                    metadata = _EMPTY
                elif not isinstance(metadata, Mapping):
                    metadata = {"value": metadata}
                if extra:
                    metadata = dict(metadata)
                    for key, value in extra:
                        if key == "type":  # the type the guard replaced
                            keep_original_type(metadata, value)
                        else:
                            metadata.setdefault(key, value)
                if metadata or exception or not clean[index // CLEAN_GROUP]:
                    message, metadata, exception = redact(message, metadata, exception or None)
                append(make_entry(
                    labels,
                    timestamp_ns,
                    entry_line(message, metadata, exception, max_line_bytes),
                    structured_metadata(
                        None if actor_id is None or actor_id == ""
                        else metadata_value(actor_id),
                        None if trace_id is None or trace_id == ""
                        else metadata_value(trace_id),
                        name,
                        original_time,
                        None if span_id is None else metadata_value(span_id),
                    ),
                ))
            except Exception:
                try:
                    append(self.careful(item))
                except Exception as exc:
                    failed(exc)

    def careful(self, item: _Snapshot) -> Entry:
        """The entry of a snapshot the fast path could not convert, through the event
        contract (:class:`~shipper.event.LogEvent`, redaction, :func:`~shipper.event.to_entry`),
        every field read as text made text first."""
        event = _event_from_snapshot(_plain_snapshot(item), service=self._service, env=self._env,
                                     extras=self._extras)
        return to_entry(self._redactor.redact_event(event), type_guard=self._guard,
                        max_line_bytes=self._max_line_bytes)


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _raise(exc: Exception) -> None:
    raise exc


class LokiHandler(logging.Handler):
    """Ships records to Loki through the shared pipeline.

    ``LokiHandler("http://loki:3100", service="checkout", env="prod")``; any
    :class:`~shipper.config.ShipperConfig` setting may be passed as a keyword (plain strings and
    numbers work, so it fits ``logging.config.dictConfig``), and unset ones come from the
    environment (``LOKI_URL``, ``SHIPPER_SERVICE``, ...). Without a URL anywhere the handler
    writes to the spool only, to be pushed later with ``shipper spool push``.
    python-logging-loki's and loki-logger-handler's arguments are understood where they map
    cleanly (``auth=(user, password)``, ``tags={"application": ...}``) and refused, saying
    what to write instead, where not (:mod:`shipper.compat`).
    """

    def __init__(
        self,
        url: str | None = None,
        service: str | None = None,
        env: str | None = None,
        level: int | str = logging.NOTSET,
        *,
        config: ShipperConfig | None = None,
        transport: Transport | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(level)
        # python-logging-loki's and loki-logger-handler's arguments (docs/migrating.md)
        settings, service, env = translate_arguments(settings, service, env)
        if config is None:
            config = ShipperConfig.load(url=url, service=service, env=env, **settings)
        elif url or service or env or settings:
            config = config.replace(
                **{k: v for k, v in dict(settings, url=url, service=service, env=env).items()
                   if v is not None}
            )
        self.config = config
        self._ignored = tuple(INTERNAL_LOGGERS) + tuple(config.ignore_loggers)
        self._ignore_cache: dict[str, bool] = {}
        redactor = Redactor.from_config(config)
        types = TypeGuard(config.type_limit)
        self._pipeline = Pipeline(config, transport=transport, convert=self._convert,
                                  convert_entry=_RecordConverter(config, redactor, types),
                                  redactor=redactor, type_guard=types)
        # queued: a snapshot of the record (message, request context, exception text, fields);
        # emit talks to the queue directly: every attribute lookup counts on the hot path
        self._batcher = self._pipeline.batcher
        self._put = self._batcher.put
        self._own_idents = self._pipeline.own_idents

    # ------------------------------------------------------------------ hot path

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the pipeline's queue is thread-safe, and logging's lock would make
        # every app thread wait on every other one.
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = record.name
            ignored = self._ignore_cache.get(name)
            if ignored is None:
                ignored = name.startswith(self._ignored) and any(
                    name == p or name.startswith(p + ".") for p in self._ignored
                )
                if len(self._ignore_cache) < 4096:
                    self._ignore_cache[name] = ignored
            if ignored or _get_ident() in self._own_idents:
                return  # the worker's own records (urllib3 ...) would loop back
            item = _snapshot(record, current_context(), None, self.formatter)
            size = len(item[0]) + SNAPSHOT_OVERHEAD
            if item[8] is not None or item[13] is not _NO_RARE:
                # a metadata mapping or extra fields: a rough guess of what they hold
                size += METADATA_OVERHEAD
            if not self._put(item, size):
                self._pipeline.overflow(item)
        except Exception as exc:
            self._pipeline.report("emit", exc)

    def _convert(self, item: _Snapshot) -> LogEvent:
        return _event_from_snapshot(item, service=self.config.service, env=self.config.env,
                                    extras=self.config.extra_fields)

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Deliver everything emitted so far; True only when Loki has answered every event
        emitted before the call (stored, or refused with a 400 and counted) and the spool
        segments this process wrote or found at start-up are delivered too, within
        ``timeout`` seconds (default: the config's ``shutdown_timeout``). False otherwise, at
        the deadline (or as soon as Loki is unreachable past it): the rest is safe in the
        spool and the worker goes on delivering it. Without a URL: True once everything is in
        the spool. See :meth:`shipper.delivery.pipeline.Pipeline.flush`.

        Called without arguments by ``logging.shutdown`` and friends: it never holds logging's
        locks while it waits."""
        return self._pipeline.flush(self.config.shutdown_timeout if timeout is None else timeout)

    def close(self) -> None:
        """Deliver the queue and the spool for up to ``shutdown_timeout``, write what is left
        to the spool, stop the worker; when events are left on disk, say on stderr how many,
        where, and the ``shipper spool push`` command that sends them."""
        try:
            self._pipeline.close(self.config.shutdown_timeout)
        finally:
            super().close()

    def stats(self) -> dict[str, Any]:
        """Counters: accepted, sent, retried, spooled, replayed (events); refused (requests Loki
        answered 400, by reason: their valid entries were stored) and refused_events (the
        events in them); dropped (events, by reason); send_rate_limit (bytes/s while Loki
        pushes back, else None); push_seconds, sent_bytes, loki_answer, ... (see
        docs/delivery.md, "The counters")."""
        return self._pipeline.stats()

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    def __repr__(self) -> str:
        target = hide_url_credentials(self.config.url or "spool only")
        level = logging.getLevelName(self.level)
        return f"<LokiHandler {self.config.service} -> {target} ({level})>"


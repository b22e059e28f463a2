"""The W3C trace context: the active OpenTelemetry span's ids, and a ``traceparent`` header read.

A log line joins its trace by the trace id (32 lower-case hex digits) and the span id (16).
Three places give them, and this module is the one reader of each:

* the span active on the emitting thread or task, when the app traces with OpenTelemetry
  (:func:`active_span`, on the app's thread; :func:`span_ids`, its ids as hex, later);
* the ``otelTraceID`` / ``otelSpanID`` attributes that opentelemetry-instrumentation-logging
  puts on every record (:func:`hex_id`: ``"0"`` and all-zero ids are no ids);
* an HTTP request's ``traceparent`` header (:func:`traceparent_ids`).

OpenTelemetry is never imported here: an app that has a span active has imported
``opentelemetry.trace`` already, so :func:`active_span` looks for that module among the loaded
ones and costs one dictionary look-up until it is there. Nothing here raises: a broken span, a
forged attribute or a malformed header is no id.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "OTEL_RECORD_ATTRS",
    "OTEL_TRACE_MODULE",
    "SPAN_ID_DIGITS",
    "TRACE_ID_DIGITS",
    "active_span",
    "hex_id",
    "span_ids",
    "traceparent_ids",
]

TRACE_ID_DIGITS = 32
#: the attributes opentelemetry-instrumentation-logging puts on every record: the trace
#: context, read as such (:func:`hex_id`), never the app's own fields
OTEL_RECORD_ATTRS = frozenset({"otelTraceID", "otelSpanID", "otelTraceSampled",
                               "otelServiceName"})
SPAN_ID_DIGITS = 16
_TRACE_ID_MAX = (1 << 128) - 1
_SPAN_ID_MAX = (1 << 64) - 1

#: the module an app that traces has loaded: while it is not in ``sys.modules`` no span can be
#: active (a caller on a hot path may test that before calling :func:`active_span`)
OTEL_TRACE_MODULE = "opentelemetry.trace"
_OTEL_CONTEXT = "opentelemetry.context"
_modules = sys.modules
#: ``opentelemetry.context.get_current`` and ``opentelemetry.trace.get_current_span``, once the
#: app has loaded them
_readers: tuple[Callable[[], Any], Callable[[Any], Any]] | None = None


def active_span() -> Any:
    """The context of the span active on this thread or task (an OpenTelemetry
    ``SpanContext``: read its ids with :func:`span_ids`), or None: OpenTelemetry not loaded,
    no span active, or the active span's context not valid. Called on the app's thread for
    every record: an empty OpenTelemetry context (nothing attached: no span) is told by one
    call, and the ids are made text later, on the worker."""
    readers = _readers
    if readers is None:
        readers = _loaded()
        if readers is None:
            return None
    try:
        context = readers[0]()
        if not context:
            return None
        span_context = readers[1](context).get_span_context()
        return span_context if span_context.is_valid is True else None
    except Exception:  # a span object of another make that does not answer as the API's do
        return None


def _loaded() -> tuple[Callable[[], Any], Callable[[Any], Any]] | None:
    """OpenTelemetry's two readers when the app has imported ``opentelemetry.trace``
    (remembered); None before (or while the module is still loading)."""
    global _readers
    trace, context = _modules.get(OTEL_TRACE_MODULE), _modules.get(_OTEL_CONTEXT)
    if trace is None or context is None:
        return None
    get_current = getattr(context, "get_current", None)
    get_current_span = getattr(trace, "get_current_span", None)
    if not callable(get_current) or not callable(get_current_span):
        return None
    _readers = (get_current, get_current_span)
    return _readers


def span_ids(context: Any) -> tuple[str, str] | None:
    """The trace id and span id of a span context taken by :func:`active_span`, as lower-case
    hex (32 and 16 digits), or None when either is not a valid id."""
    try:
        trace_id, span_id = context.trace_id, context.span_id
        if (trace_id.__class__ is int and span_id.__class__ is int
                and 0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX):
            return format(trace_id, "032x"), format(span_id, "016x")
    except Exception:
        pass
    return None


_HEX = frozenset("0123456789abcdef")


def hex_id(value: object, digits: int) -> str | None:
    """An id given as text (``otelTraceID``, ``otelSpanID``), as lower-case hex of exactly
    ``digits`` digits; None for anything else, ``"0"`` and all zeros (no span) included."""
    if value.__class__ is not str:
        return None
    text = str(value)
    if len(text) != digits:
        return None
    text = text.lower()
    if not _HEX.issuperset(text) or text.count("0") == digits:
        return None
    return text


#: version 00: exactly ``00-<32 hex>-<16 hex>-<2 hex>``; a later version: the same 55
#: characters, then the end or ``-`` and what that version adds (W3C Trace Context, 3.2.4)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                          re.DOTALL)
#: longer than this is not a header a tracer sent
_MAX_TRACEPARENT = 512


def traceparent_ids(value: str | bytes | None) -> tuple[str, str] | None:
    """The trace id and parent (span) id of a W3C ``traceparent`` header, or None when the
    header is absent or not valid: a version other than 2 lower-case hex digits, ``ff``, or
    ``00`` with anything after the flags; an id of the wrong length, not lower-case hex or
    all zeros; more than 512 characters. Surrounding spaces and tabs are ignored."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value.__class__ is not str or len(value) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id.count("0") == TRACE_ID_DIGITS or parent_id.count("0") == SPAN_ID_DIGITS:
        return None
    return trace_id, parent_id

"""A record's fields beyond the event contract, as the metadata and event fields they become.

Three conventions bring them: the record's extra attributes (``extra={"order_id": 42}``, what
loki-logger-handler and OpenTelemetry's ``LoggingHandler`` ship), python-logging-loki's
``extra={"tags": {...}}`` (and loki-logger-handler's ``loki_metadata``), and structlog's
event dict, which ``structlog.stdlib.ProcessorFormatter.wrap_for_formatter`` puts in
``record.msg``. :func:`extra_fields` takes the extras from a record's ``__dict__`` on the
emitting thread (a dict of the app's own values, as the ``metadata`` mapping is kept);
:func:`spread_tags` turns them into the metadata under the record's own ``metadata`` and the
event fields the tags name, on the worker; :func:`structlog_event_dict` reads a structlog
record. The order of precedence in the line's ``metadata`` (docs/events.md): the record's
``metadata`` keys, then its extra fields, then the keys of its ``tags``, then the request
context's metadata.

Nothing here raises: what cannot be read is kept as it is, for the line to write as it writes
any metadata (cut, cycles and depth marked, ``repr`` for what JSON cannot hold).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shipper.line import text_of

__all__ = [
    "STANDARD_ATTRS",
    "TAG_FIELDS",
    "TAG_KEYS",
    "drop_repeats",
    "extra_fields",
    "spread_tags",
    "structlog_event_dict",
]

#: the attributes ``logging`` itself gives a record: every record of this Python has them,
#: ``message`` and ``asctime`` once a formatter ran, ``taskName`` from Python 3.12
STANDARD_ATTRS: frozenset[str] = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

#: extra attributes whose mapping is spread into the metadata: python-logging-loki's ``tags``
#: (labels there) and loki-logger-handler's ``loki_metadata`` (structured metadata there)
TAG_KEYS: tuple[str, ...] = ("tags", "loki_metadata")

#: the keys of a ``tags`` mapping that are event fields here, not metadata (the record's own
#: field wins): ``type`` and ``actor`` are labels, ``actor_id`` and ``trace_id`` structured
#: metadata
TAG_FIELDS: frozenset[str] = frozenset({"type", "actor", "actor_id", "trace_id"})


def extra_fields(attrs: Mapping[Any, Any], known: frozenset[str]) -> dict[Any, Any] | None:
    """The items of ``attrs`` (a record's ``__dict__``, or an event dict) whose keys are not in
    ``known`` and are not private (a text key starting with ``_``, as structlog's
    ``_logger``); None when there is none. A ``level`` or ``logger`` that only repeats the
    record's (structlog's ``add_log_level`` and ``add_logger_name``) is left out. Never
    raises: a key that cannot be compared is kept, under its text when it cannot be hashed
    again."""
    try:
        found = {key: value for key, value in attrs.items()
                 if key not in known and not (key.__class__ is str and key[:1] == "_")}
    except Exception:  # a key whose hash or == raises: one key at a time
        found = {}
        try:
            for key, value in list(attrs.items()):
                try:
                    skip = key in known or (key.__class__ is str and key[:1] == "_")
                except Exception:
                    skip = False
                if not skip:
                    try:
                        found[key] = value
                    except Exception:  # a key that cannot be hashed again: by its text
                        found[text_of(key)] = value
        except Exception:  # a mapping that cannot be read at all
            return None
    if "level" in found or "logger" in found:
        drop_repeats(found, attrs.get("levelname"), attrs.get("name"))
    return found or None


def spread_tags(extras: Mapping[Any, Any]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """The metadata the extra fields give (a ``tags`` or ``loki_metadata`` mapping spread
    into it, the extra fields winning over its keys) and the event fields its keys name
    (:data:`TAG_FIELDS`). A tag value that is not a mapping, or one that cannot be read,
    stays in the metadata under its own name."""
    base: dict[Any, Any] = {}
    fields: dict[str, Any] = {}
    try:
        rest = _spread(extras, base, fields)
    except Exception:  # an extras mapping that cannot be read as one: kept as it is
        return {"extra": extras}, {}
    base.update(rest)
    return base, fields


def _spread(extras: Mapping[Any, Any], base: dict[Any, Any],
            fields: dict[str, Any]) -> Mapping[Any, Any]:
    rest = extras
    if any(key in extras for key in TAG_KEYS):
        rest = dict(extras)
        for name in TAG_KEYS:
            if name not in rest:
                continue
            tags = rest.pop(name)
            if not isinstance(tags, Mapping):
                base[name] = tags
                continue
            try:
                items = list(tags.items())
            except Exception:  # kept as given: the line writes what it can of it
                base[name] = tags
                continue
            for key, value in items:
                if key.__class__ is str and key in TAG_FIELDS:
                    fields.setdefault(key, value)
                else:
                    base[key] = value
    return rest


def drop_repeats(fields: dict[Any, Any], levelname: Any, name: Any) -> None:
    """Leave out of ``fields`` what structlog's stdlib processors add that the entry holds
    already: ``level`` (``add_log_level``: the ``level`` label) when it is the record's level
    name in any case, ``logger`` (``add_logger_name``) when it is the record's logger name."""
    for key, same in (("level", levelname), ("logger", name)):
        value = fields.get(key)
        if (value.__class__ is str and same.__class__ is str
                and value.upper() == same.upper()):
            del fields[key]


def structlog_event_dict(record: logging.LogRecord, formatter: Any) -> dict[Any, Any] | None:
    """The event dict of a record that structlog's ``ProcessorFormatter.wrap_for_formatter``
    made (None for any other record): ``record.msg``, run through the handler's
    ``ProcessorFormatter`` processors but the last one (the renderer, which makes text of
    it), as ``ProcessorFormatter.format`` would; the raw event dict when there is no such
    formatter, or one of its processors raises or gives something else than a dict.
    ``level`` and ``logger`` are left out when they only repeat the record's."""
    attrs = record.__dict__
    event = attrs.get("msg")
    if event.__class__ is not dict or "_logger" not in attrs or "_name" not in attrs:
        return None
    result: dict[Any, Any] = dict(event)
    processors = getattr(formatter, "processors", None)
    if (processors is not None and type(formatter).__module__.startswith("structlog")
            and isinstance(processors, Sequence) and len(processors) > 1):
        processed: Any = dict(event, _record=record, _from_structlog=True)
        try:
            logger = getattr(formatter, "logger", None) or attrs["_logger"]
            for processor in processors[:-1]:
                processed = processor(logger, attrs["_name"], processed)
            if isinstance(processed, dict):
                result = processed
        except Exception:  # a processor that fails: the event dict as structlog gave it
            pass
    drop_repeats(result, attrs.get("levelname"), attrs.get("name"))
    return result

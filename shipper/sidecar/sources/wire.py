"""Decoders for what clients push to the sidecar: Loki's push API (JSON, gzip JSON, protobuf
with snappy) and OTLP/HTTP JSON logs. They only decode, and check each part's type on the way:
what is wrong costs only its own part (a stream, an entry, a log record, a resource's records),
named by its place in the request (``streams[0].values[3]``,
``resourceLogs[0].resource: expected an object, got a string``).
shipper/sidecar/sources/http.py turns what they return into events.

The protobuf reader is a small wire-format decoder for Loki's ``logproto.PushRequest`` (the
message Promtail, Alloy and the Loki clients send): streams of ``{labels, entries}``, each entry
``{timestamp{seconds, nanos}, line, structuredMetadata[{name, value}]}``; the labels are text
(``{a="1", b="2"}``), read by :func:`shipper.delivery.labels.parse_labels`. Its field walker,
:func:`proto_fields`, also splits an OTLP request that protobuf cannot parse whole into its
parts (shipper/sidecar/sources/otlp.py, which decodes OTLP in protobuf into the
:class:`OtlpRecord` the JSON decoder here gives).

JSON reaches them already parsed by :func:`shipper.sidecar.boundedjson.load_json`: an OTLP value
nested deeper than the bound is a :class:`~shipper.sidecar.boundedjson.DeepJson` there, and is
kept as its text.
"""

from __future__ import annotations

import base64
import binascii
import re
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from shipper.delivery.labels import LabelSyntaxError, parse_labels
from shipper.sidecar.boundedjson import DeepJson, open_deep

__all__ = ["MAX_NS", "BodyTooLarge", "DecodeError", "OtlpRecord", "PushEntry", "TooManyEntries",
           "count_at_most", "decode_otlp_json", "decode_push_json", "decode_push_protobuf",
           "json_type", "not_read", "proto_fields", "shown"]

#: the latest time a push may carry: nanoseconds since the epoch in a signed 64-bit integer
MAX_NS = 2**63 - 1


@dataclass(frozen=True)
class PushEntry:
    labels: dict[str, str]
    timestamp_ns: int
    line: str
    metadata: dict[str, str]


class DecodeError(ValueError):
    """The request as a whole cannot be read."""


class TooManyEntries(ValueError):
    """A request holds more entries (or streams, resources, scopes) than
    ``max_entries_per_request``: it is refused whole, before any of it is mapped. ``count`` is
    exact unless ``at_least`` (a walker that stops counting once past the limit)."""

    def __init__(self, what: str, count: int, limit: int, *, at_least: bool = False) -> None:
        self.what, self.count, self.limit, self.at_least = what, count, limit, at_least
        held = f"more than {limit}" if at_least else str(count)
        super().__init__(f"{held} {what} in one request, over max_entries_per_request "
                         f"({limit}): nothing of it was taken; send at most {limit} per "
                         "request")


class BodyTooLarge(ValueError):
    """A body that would decompress past ``max_body_bytes`` (answered 413 like one sent so)."""


def count_at_most(what: str, count: int, limit: int) -> None:
    """Raise :class:`TooManyEntries` when ``count`` is over ``limit``."""
    if count > limit:
        raise TooManyEntries(what, count, limit)


def json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words (``a string``, ``an object``, ...)."""
    if value.__class__ is DeepJson:
        return f"an {value.kind} nested too deep"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist = 2, 4, 4


def shown(value: Any) -> str:
    """``repr(value)``, cut short (error messages stay small, whatever a client sends)."""
    return _REPR.repr(value)


class _FieldError(ValueError):
    """One part of a request is not what the protocol says: its place (built on the way out,
    so that a request that is right pays for no paths) and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def under(self, parent: str) -> _FieldError:
        """The same error, its place inside ``parent``."""
        if not self.path:
            return _FieldError(parent, self.reason)
        joint = "" if self.path[0] == "[" else "."
        return _FieldError(f"{parent}{joint}{self.path}", self.reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _expected(path: str, expected: str, value: Any) -> _FieldError:
    return _FieldError(path, f"expected {expected}, got {json_type(value)}")


def _object(value: Any, path: str, optional: bool = False) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if value.__class__ is not dict:
        raise _expected(path, "an object", value)
    return value


def _array(value: Any, path: str) -> list[Any]:
    """An array, or absent / null (nothing)."""
    if value is None:
        return []
    if value.__class__ is not list:
        raise _expected(path, "an array", value)
    return value


# --------------------------------------------------------------------------- protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 64 bits")


def proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message: ints for varints, bytes for the
    length-delimited fields; fixed-width fields are skipped. Raises :class:`DecodeError` when
    the message is cut short or holds a group or a wire type that does not exist."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise DecodeError("a field runs past the end of the message")
            yield number, buf[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        if pos > end:
            raise DecodeError("a field runs past the end of the message")


def _string(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise DecodeError("expected a string field")
    return value.decode("utf-8", "replace")


def decode_push_protobuf(body: bytes, max_entries: int, max_bytes: int,
                         ) -> tuple[list[PushEntry], list[str]]:
    """A snappy-compressed ``logproto.PushRequest`` → entries, and one error per stream that
    cannot be read (its labels); raises :class:`DecodeError` when the message itself cannot
    (needs cramjam), :class:`TooManyEntries` when it holds more than ``max_entries`` entries
    or streams (counted by the walk, before any entry is decoded), and
    :class:`BodyTooLarge` when it would un-snappy to more than ``max_bytes``."""
    try:
        import cramjam
    except ImportError:  # pragma: no cover - the sidecar extra installs it
        raise DecodeError("protobuf pushes need snappy: pip install 'shipper[sidecar]'") \
            from None
    try:  # snappy's raw format starts with the length it decompresses to
        size = _varint(body, 0)[0]
    except DecodeError:
        raise DecodeError("not snappy-compressed: no length at the start") from None
    if size > max_bytes:
        raise BodyTooLarge(f"the body would decompress to {size} bytes, over max_body_bytes "
                           f"({max_bytes})")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise DecodeError(f"not snappy-compressed: {exc}") from None
    streams: list[tuple[dict[str, str], list[bytes]]] = []
    errors: list[str] = []
    count = 0
    for i, (number, stream) in enumerate(proto_fields(raw)):
        if number != 1 or not isinstance(stream, bytes):
            continue
        if len(streams) + len(errors) >= max_entries:
            raise TooManyEntries("streams", max_entries + 1, max_entries, at_least=True)
        labels: dict[str, str] = {}
        raw_entries: list[bytes] = []
        bad_labels = None
        for snum, svalue in proto_fields(stream):
            if snum == 1:
                try:
                    labels = parse_labels(_string(svalue))
                except LabelSyntaxError as exc:
                    bad_labels = f"streams[{i}].labels: {exc}"
            elif snum == 2 and isinstance(svalue, bytes):
                raw_entries.append(svalue)
                count += 1
                if count > max_entries:
                    raise TooManyEntries("entries", count, max_entries, at_least=True)
        if bad_labels is not None:
            errors.append(f"{bad_labels} ({len(raw_entries)} entries not read)")
            continue
        streams.append((labels, raw_entries))
    entries: list[PushEntry] = []
    for labels, raw_entries in streams:
        for raw_entry in raw_entries:
            ts = 0
            line = ""
            meta: dict[str, str] = {}
            for enum_, evalue in proto_fields(raw_entry):
                if enum_ == 1 and isinstance(evalue, bytes):
                    parts = {n: v for n, v in proto_fields(evalue) if isinstance(v, int)}
                    ts = parts.get(1, 0) * 1_000_000_000 + parts.get(2, 0)
                elif enum_ == 2:
                    line = _string(evalue)
                elif enum_ == 3 and isinstance(evalue, bytes):
                    pair = dict(proto_fields(evalue))
                    meta[_string(pair.get(1, b""))] = _string(pair.get(2, b""))
            entries.append(PushEntry(labels, ts, line, meta))
    return entries, errors


# --------------------------------------------------------------------------- Loki's JSON


def decode_push_json(doc: Any, max_entries: int) -> tuple[list[PushEntry], list[str]]:
    """Loki's JSON PushRequest (parsed) → entries and one error per stream or entry that
    cannot be read; raises :class:`DecodeError` when there are no streams to read and
    :class:`TooManyEntries` when there are more than ``max_entries`` streams or entries."""
    streams = doc.get("streams") if doc.__class__ is dict else None
    if streams.__class__ is not list:
        raise DecodeError('expected {"streams": [{"stream": {...}, "values": [[ts, line]]}]}')
    count_at_most("streams", len(streams), max_entries)
    count_at_most("entries", sum(len(values) for stream in streams if stream.__class__ is dict
                                 and (values := stream.get("values")).__class__ is list),
                  max_entries)
    entries: list[PushEntry] = []
    errors: list[str] = []
    for i, stream in enumerate(streams):
        labels = stream.get("stream") if stream.__class__ is dict else None
        values = stream.get("values") if stream.__class__ is dict else None
        if labels.__class__ is not dict or values.__class__ is not list:
            errors.append(f"streams[{i}]: expected {{\"stream\": {{...}}, \"values\": [...]}}")
            continue
        bad = next((k for k, v in labels.items() if v.__class__ is not str), None)
        if bad is not None:
            errors.append(f"streams[{i}].stream.{bad}: expected a string, got "
                          f"{json_type(labels[bad])} ({len(values)} entries not read)")
            continue
        for j, value in enumerate(values):
            problem = None
            if value.__class__ is not list or len(value) not in (2, 3) or \
                    value[1].__class__ is not str:
                problem = 'expected ["<ns>", "<line>"(, {metadata})]'
            elif (ts := _nanoseconds(value[0])) is None:
                problem = f"timestamp {shown(value[0])} is not nanoseconds since the epoch"
            elif len(value) == 2:
                entries.append(PushEntry(labels, ts, value[1], {}))
                continue
            elif (meta := value[2]).__class__ is not dict:
                problem = f"structured metadata must be an object, got {json_type(meta)}"
            elif meta and (bad := next((k for k, v in meta.items()
                                        if v.__class__ is not str), None)) is not None:
                problem = (f"structured metadata {bad!r} must be a string, got "
                           f"{json_type(meta[bad])}")
            else:
                entries.append(PushEntry(labels, ts, value[1], meta))
                continue
            errors.append(f"streams[{i}].values[{j}]: {problem}")  # the place, only when wrong
    return entries, errors


def _nanoseconds(value: Any) -> int | None:
    """A push's or a record's time: nanoseconds in a string of digits (or a JSON number).

    A time past what Loki stores (more than :data:`MAX_NS`) is read as it is: the event
    contract ships such an event at its receipt time with the time it gave in
    ``original_time``, so it costs neither itself nor its neighbours."""
    if value.__class__ is str:
        return int(value) if 0 < len(value) <= 30 and value.isascii() and value.isdigit() \
            else None
    if value.__class__ is int and 0 <= value < 10**30:
        return value
    return None


# --------------------------------------------------------------------------- OTLP JSON


class OtlpRecord(NamedTuple):
    """One OTLP log record, its values plain Python (``body`` and attributes decoded)."""

    time_ns: int  # timeUnixNano, else observedTimeUnixNano; 0: neither
    severity_number: int | None
    severity_text: str | None
    body: Any
    attributes: dict[str, Any]
    trace_id: str | None
    span_id: str | None
    event_name: str | None
    resource: dict[str, Any]
    scope: str | None


def decode_otlp_json(doc: Any, max_entries: int) -> tuple[list[OtlpRecord], list[str], int]:
    """An ``ExportLogsServiceRequest`` in the JSON encoding (parsed) → its records, one error
    per record, scope or resource whose records cannot be read (naming the field), and how
    many log records those errors cost; raises :class:`DecodeError` when there is no
    ``resourceLogs`` array and :class:`TooManyEntries` when there are more than
    ``max_entries`` log records (or resources, or scopes)."""
    resource_logs = doc.get("resourceLogs") if doc.__class__ is dict else None
    if resource_logs.__class__ is not list:
        raise DecodeError('expected {"resourceLogs": [...]}')
    count_at_most("resourceLogs", len(resource_logs), max_entries)
    count_at_most("scopeLogs", sum(len(sl) for rl in resource_logs if rl.__class__ is dict
                                   and (sl := rl.get("scopeLogs")).__class__ is list),
                  max_entries)
    count_at_most("log records", sum(map(_count_records, resource_logs)), max_entries)
    records: list[OtlpRecord] = []
    errors: list[str] = []
    refused = 0
    for i, item in enumerate(resource_logs):
        try:
            rl = _object(item, "")
            resource = _object(rl.get("resource"), "resource", optional=True)
            attrs = _inside("resource.attributes", _attributes, resource.get("attributes"))
            scope_logs = _array(rl.get("scopeLogs"), "scopeLogs")
        except _FieldError as exc:
            lost = _count_records(item)
            errors.append(f"{exc.under(f'resourceLogs[{i}]')} ({not_read(lost)})")
            refused += lost
            continue
        for j, scope_item in enumerate(scope_logs):
            try:
                sl = _object(scope_item, "")
                scope = _object(sl.get("scope"), "scope", optional=True)
                name = scope.get("name")
                if name is not None and name.__class__ is not str:
                    raise _expected("scope.name", "a string", name)
                log_records = _array(sl.get("logRecords"), "logRecords")
            except _FieldError as exc:
                lost = _count_records({"scopeLogs": [scope_item]})
                errors.append(f"{exc.under(f'resourceLogs[{i}].scopeLogs[{j}]')} "
                              f"({not_read(lost)})")
                refused += lost
                continue
            for k, record in enumerate(log_records):
                try:
                    records.append(_record(record, attrs, name))
                except _FieldError as exc:
                    errors.append(str(exc.under(
                        f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]")))
                    refused += 1
    return records, errors, refused


def not_read(count: int) -> str:
    """What an error that costs a resource's or a scope's records says about them."""
    return f"its {count} log record{'' if count == 1 else 's'} not read"


def _count_records(resource_logs: Any) -> int:
    """How many log records a resourceLogs item that cannot be read holds, as far as its
    shape shows them (the count a partial success answers)."""
    scope_logs = resource_logs.get("scopeLogs") if resource_logs.__class__ is dict else None
    if scope_logs.__class__ is not list:
        return 0
    return sum(len(sl["logRecords"]) for sl in scope_logs
               if sl.__class__ is dict and sl.get("logRecords").__class__ is list)


_SEVERITY_NAMES = {f"SEVERITY_NUMBER_{name}{n if n > 1 else ''}": floor + n - 1
                   for name, floor in (("TRACE", 1), ("DEBUG", 5), ("INFO", 9), ("WARN", 13),
                                       ("ERROR", 17), ("FATAL", 21)) for n in range(1, 5)}
_SEVERITY_NAMES["SEVERITY_NUMBER_UNSPECIFIED"] = 0
_TEXT_FIELDS = ("severityText", "traceId", "spanId", "eventName")


def _record(record: Any, resource: dict[str, Any], scope: str | None) -> OtlpRecord:
    if record.__class__ is not dict:
        raise _expected("", "an object", record)
    ts = 0
    for key in ("timeUnixNano", "observedTimeUnixNano"):
        raw = record.get(key)
        if raw is None or raw in ("0", 0):
            continue
        found = _nanoseconds(raw)
        if found is None:
            raise _FieldError(key, f"{shown(raw)} is not nanoseconds since the epoch (a "
                                   "string of digits)")
        ts = found
        break
    number = record.get("severityNumber")
    if number is not None and number.__class__ is not int:
        number = _SEVERITY_NAMES.get(number) if number.__class__ is str else None
        if number is None:
            raise _expected("severityNumber", "a severity number (0 to 24)",
                            record["severityNumber"])
    get = record.get
    text, trace_id, span_id, event_name = texts = (
        get("severityText"), get("traceId"), get("spanId"), get("eventName"))
    for key, value in zip(_TEXT_FIELDS, texts, strict=True):
        if value is not None and value.__class__ is not str:
            raise _expected(key, "a string", value)
    body = get("body")
    attributes = get("attributes")
    return OtlpRecord(ts, number, text, None if body is None else _inside("body", _any_value, body),
                      {} if attributes is None else _inside("attributes", _attributes, attributes),
                      trace_id, span_id, event_name, resource, scope)


def _inside(place: str, read: Callable[[Any], Any], value: Any) -> Any:
    """``read(value)``, a wrong part placed inside ``place``."""
    try:
        return read(value)
    except _FieldError as exc:
        raise exc.under(place) from None


_INT = re.compile(r"-?[0-9]{1,19}")
_DOUBLE_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` → a plain Python value; one nested too deep → its text."""
    if value.__class__ is not dict:
        if value is None:
            return None
        if value.__class__ is DeepJson:
            return str(value)  # nested deeper than the bound: kept as the text that was sent
        raise _expected("", "an AnyValue object ({\"stringValue\": ...})", value)
    for key, item in value.items():
        if key == "stringValue":
            if item.__class__ is not str:
                raise _expected(key, "a string", item)
            return item
        if key == "intValue":
            if item.__class__ is int or (item.__class__ is str and _INT.fullmatch(item)):
                return int(item)
            raise _expected(key, "an integer (a number or a string of digits)", item)
        if key == "boolValue":
            if item.__class__ is not bool:
                raise _expected(key, "true or false", item)
            return item
        if key == "doubleValue":
            if item.__class__ is float or item.__class__ is int:
                return item
            if item.__class__ is str:
                try:
                    return _DOUBLE_WORDS.get(item) or float(item)
                except ValueError:
                    pass
            raise _expected(key, "a number", item)
        if key == "kvlistValue":
            values = _object(open_deep(item), key, optional=True).get("values")
            return _inside("kvlistValue.values", _attributes, values)
        if key == "arrayValue":
            values = _object(open_deep(item), key, optional=True).get("values")
            out = []
            for n, element in enumerate(_array(open_deep(values), "arrayValue.values")):
                try:
                    out.append(_any_value(element))
                except _FieldError as exc:
                    raise exc.under(f"arrayValue.values[{n}]") from None
            return out
        if key == "bytesValue":
            if item.__class__ is str:
                try:
                    return base64.b64decode(item, validate=True).hex()
                except (ValueError, binascii.Error):
                    pass
            raise _expected(key, "base64 text", item)
    return None  # an empty AnyValue, or only fields this reader does not know (ignored)


def _attributes(items: Any) -> dict[str, Any]:
    """OTLP ``[{key, value}]`` → a dict."""
    if items.__class__ is not list:
        items = _array(open_deep(items), "")
    out: dict[str, Any] = {}
    for n, item in enumerate(items):
        pair = item if item.__class__ is dict else open_deep(item)
        if pair.__class__ is not dict:
            raise _expected(f"[{n}]", '{"key": "...", "value": {...}}', pair)
        key = pair.get("key")
        if key.__class__ is not str:
            raise _expected(f"[{n}].key", "a string", key)
        value = pair.get("value")
        if value is not None:
            try:
                value = _any_value(value)
            except _FieldError as exc:
                raise exc.under(f"[{n}].value") from None
        out[key] = value
    return out

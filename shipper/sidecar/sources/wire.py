"""Decoders for what clients push to the sidecar: Loki's push API (JSON, gzip JSON, protobuf
with snappy) and OTLP/HTTP JSON logs. They only decode; shipper/sidecar/sources/http.py turns the
result into events.

The protobuf reader is a small wire-format decoder for Loki's ``logproto.PushRequest`` (the
message Promtail, Alloy and the Loki clients send): streams of ``{labels, entries}``, each entry
``{timestamp{seconds, nanos}, line, structuredMetadata[{name, value}]}``; the labels are text
(``{a="1", b="2"}``), read by :func:`shipper.delivery.labels.parse_labels`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shipper.delivery.labels import LabelSyntaxError, parse_labels

__all__ = ["PushEntry", "any_value", "decode_push_json", "decode_push_protobuf"]


@dataclass(frozen=True)
class PushEntry:
    labels: dict[str, str]
    timestamp_ns: int
    line: str
    metadata: dict[str, str]


class DecodeError(ValueError):
    pass


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


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one message: ints for varints, bytes for the others."""
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


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise DecodeError("expected a string field")
    return value.decode("utf-8", "replace")


def decode_push_protobuf(body: bytes) -> list[PushEntry]:
    """A snappy-compressed ``logproto.PushRequest`` → entries (needs cramjam)."""
    try:
        import cramjam
    except ImportError:  # pragma: no cover - the sidecar extra installs it
        raise DecodeError("protobuf pushes need snappy: pip install 'shipper[sidecar]'") \
            from None
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise DecodeError(f"not snappy-compressed: {exc}") from None
    entries: list[PushEntry] = []
    for number, stream in _fields(raw):
        if number != 1 or not isinstance(stream, bytes):
            continue
        labels: dict[str, str] = {}
        raw_entries: list[bytes] = []
        for snum, svalue in _fields(stream):
            if snum == 1:
                try:
                    labels = parse_labels(_text(svalue))
                except LabelSyntaxError as exc:
                    raise DecodeError(str(exc)) from None
            elif snum == 2 and isinstance(svalue, bytes):
                raw_entries.append(svalue)
        for raw_entry in raw_entries:
            ts = 0
            line = ""
            meta: dict[str, str] = {}
            for enum_, evalue in _fields(raw_entry):
                if enum_ == 1 and isinstance(evalue, bytes):
                    parts = {n: v for n, v in _fields(evalue) if isinstance(v, int)}
                    ts = parts.get(1, 0) * 1_000_000_000 + parts.get(2, 0)
                elif enum_ == 2:
                    line = _text(evalue)
                elif enum_ == 3 and isinstance(evalue, bytes):
                    pair = dict(_fields(evalue))
                    meta[_text(pair.get(1, b""))] = _text(pair.get(2, b""))
            entries.append(PushEntry(labels, ts, line, meta))
    return entries


# --------------------------------------------------------------------------- JSON


def decode_push_json(body: bytes) -> tuple[list[PushEntry], list[str]]:
    """Loki's JSON PushRequest → entries and one error per entry that cannot be read."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise DecodeError('expected {"streams": [{"stream": {...}, "values": [[ts, line]]}]}')
    entries: list[PushEntry] = []
    errors: list[str] = []
    for i, stream in enumerate(streams):
        labels = stream.get("stream") if isinstance(stream, dict) else None
        values = stream.get("values") if isinstance(stream, dict) else None
        if not isinstance(labels, dict) or not isinstance(values, list):
            errors.append(f"streams[{i}]: expected {{\"stream\": {{...}}, \"values\": [...]}}")
            continue
        labels = {str(k): str(v) for k, v in labels.items()}
        for j, value in enumerate(values):
            where = f"streams[{i}].values[{j}]"
            if not isinstance(value, list) or len(value) not in (2, 3) or \
                    not isinstance(value[1], str):
                errors.append(f"{where}: expected [\"<ns>\", \"<line>\"(, {{metadata}})]")
                continue
            try:
                ts = int(value[0])
            except (TypeError, ValueError):
                errors.append(f"{where}: timestamp {value[0]!r} is not nanoseconds")
                continue
            meta = value[2] if len(value) == 3 else {}
            if not isinstance(meta, dict):
                errors.append(f"{where}: structured metadata must be an object")
                continue
            entries.append(PushEntry(labels, ts, value[1],
                                     {str(k): str(v) for k, v in meta.items()}))
    return entries, errors


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` (JSON encoding) → a plain Python value."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "doubleValue" in value:
        return value["doubleValue"]
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"]).hex()
        except (ValueError, TypeError):
            return value["bytesValue"]
    return None


def attributes(items: Any) -> dict[str, Any]:
    """OTLP ``[{key, value}]`` → a dict."""
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                out[item["key"]] = any_value(item.get("value"))
    return out

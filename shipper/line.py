"""The entry's line: an event's message, metadata and exception as one JSON object, valid and
at most ``max_line_bytes`` long, whatever they hold.

:func:`entry_line` writes ``{"message", "metadata"[, "exception"]}`` with orjson for the usual
event and falls back, for what orjson refuses (NaN, ints past 64 bits, non-string keys, cycles,
deep nesting, objects whose ``repr`` raises), to a JSON-safe copy that never raises; a line
over the limit is cut, still valid JSON, with a marker naming its original size.
:func:`text_of` and :func:`clean_text` are the text of any object and valid Unicode, for the
rest of the event contract (:mod:`shipper.event`, which re-exports what sources use).
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["clean_text", "entry_line", "text_of"]

_TRUNCATION_MARKER = "...[truncated by shipper: {n} bytes]"


def text_of(value: object) -> str:
    """``str(value)``, for text that must exist whatever ``value`` is: its ``repr`` when
    ``str`` raises, a marker naming the type and the error when both do, and a marker with
    its size for an int too long to write in decimal (Python refuses more than 4,300
    digits). Never raises."""
    if value.__class__ is str:
        return value
    try:
        return str(value)
    except Exception as exc:
        error = exc
    if isinstance(value, int):
        return f"<int of {value.bit_length()} bits, too long to write in decimal>"
    try:
        return repr(value)
    except Exception:
        pass
    return f"<unprintable {type(value).__name__}: str() and repr() raised " \
           f"{type(error).__name__}>"


def clean_text(value: str) -> str:
    """Replace lone surrogates (invalid UTF-8 that slipped into a str) so encoding never fails."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


_MAX_DEPTH = 16
#: ints longer than this are written as text (Python writes at most 4,300 decimal digits)
_MAX_INT_BITS = 10_000


def _jsonable(value: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """A JSON-safe copy of ``value``: str keys, lists for tuples/sets, text for bytes, ``repr``
    for anything ``json`` cannot write (objects, NaN), a marker for cycles, deep nesting, ints
    too long to write and whatever raises while it is read. Never raises."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= _MAX_INT_BITS else text_of(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    try:
        if isinstance(value, enum.Enum):
            return _jsonable(value.value, depth + 1, seen)
        if isinstance(value, (_dt.date, _dt.time)):
            return value.isoformat()  # as orjson writes them (RFC 3339)
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, (Mapping, list, tuple, set, frozenset)):
            return _jsonable_container(value, depth, set() if seen is None else seen)
        return clean_text(repr(value))
    except Exception as exc:  # a broken __repr__, items() or isoformat must not lose the event
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _jsonable_container(value: Any, depth: int, seen: set[int]) -> Any:
    if id(value) in seen:
        return "<cycle>"
    seen.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {
                clean_text(k if isinstance(k, str) else text_of(k)): _jsonable(v, depth + 1, seen)
                for k, v in value.items()
            }
        items = value
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(value, key=repr)
            except Exception:  # a member's repr raises: the set's own order
                items = list(value)
        return [_jsonable(v, depth + 1, seen) for v in items]
    finally:
        seen.discard(id(value))


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
        if len(data) <= max_line_bytes:
            # searched as text: ``in`` on bytes first tries the operand as an int, and that
            # refusal costs more than the search
            line = data.decode("utf-8")
            if "null" not in line:
                return line
    except Exception:  # whatever orjson or _json_default refused: the careful path
        pass
    return _careful_line(body, max_line_bytes)


def _careful_line(body: dict[str, Any], max_line_bytes: int) -> str:
    """:func:`entry_line` for what orjson refused, and for lines to cut: the standard
    library's encoder, then the careful copy of every part (:func:`_jsonable`, which never
    raises) when even that fails. Never raises."""
    try:
        line = _dumps(body)
    except Exception:
        # NaN, non-string keys, cycles, depth, ints too long, a broken repr: the careful copy
        body = {key: text_of(value) if key != "metadata" else _jsonable(value)
                for key, value in body.items()}
        line = _dumps(body)
    if not line.isascii():
        line = clean_text(line)  # lone surrogates (undecodable bytes) → "?"
    if len(line) * 4 > max_line_bytes and len(line.encode("utf-8")) > max_line_bytes:
        return _truncated_line(body, line, max_line_bytes)
    return line


def _json_size(body: Mapping[str, Any]) -> int:
    return len(_dumps(body).encode("utf-8", "replace"))


def _truncated_line(body: dict[str, Any], line: str, max_line_bytes: int) -> str:
    """Fit a too-long line under ``max_line_bytes`` and keep it valid JSON: the largest of
    message, metadata and exception is cut first (metadata becomes the truncated text of its
    JSON), each cut ends with a marker naming the original size, and ``"truncated": true`` is set.
    ``body`` is one :data:`_dumps` writes (``line`` is what it wrote).
    """
    marker = _TRUNCATION_MARKER.format(n=len(line.encode("utf-8", "replace")))
    body = dict(body)
    body["truncated"] = True
    texts = {
        key: clean_text(value if isinstance(value, str) else _dumps(value))
        for key, value in body.items()
        if key in ("message", "metadata", "exception") and value is not None
    }
    for key in sorted(texts, key=lambda k: -len(texts[k])):
        text = texts[key]
        keep = len(text.encode("utf-8"))
        for _ in range(16):  # escaping makes the JSON size of a text larger than the text
            excess = _json_size(body) - max_line_bytes
            if excess <= 0:
                return clean_text(_dumps(body))
            keep = max(keep - excess - len(marker) - 8, 0)
            body[key] = _truncate_utf8(text, keep) + marker
            if keep == 0:
                break
    if _json_size(body) <= max_line_bytes:
        return clean_text(_dumps(body))
    return _truncated_line_fallback(marker, max_line_bytes)


def _truncated_line_fallback(marker: str, max_line_bytes: int) -> str:
    """The line when nothing of the event fits: the marker alone (cut for tiny limits)."""
    line = json.dumps({"message": marker, "metadata": {}, "truncated": True})
    if len(line) <= max_line_bytes:
        return line
    return json.dumps({"message": marker[:max(max_line_bytes - 50, 0)]})

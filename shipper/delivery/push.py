"""The Loki push client: encode entries, push them (one attempt, oversize split) and say what
Loki's answer *means* (:class:`PushOutcome`), following what Loki 3.7 really answers (see the
contract files):

* 204 → delivered.
* 400 → refused. The valid entries of the same request WERE stored, so the batch is never
  re-sent; Loki's message names the refused stream and reason (:func:`refused_entries`), and
  each outcome says which of its entries were refused (``PushOutcome.refused``).
* 400 that refuses the WHOLE push as unparsable (:func:`nothing_stored`: a timestamp past
  int64, labels Loki cannot parse): nothing was stored, so the batch is split in halves until
  the entries Loki refuses stand alone, and the rest is stored.
* 429, 5xx, no answer → retry later (honouring ``Retry-After``).
* 401, 403 → the credentials were refused and nothing was stored: kept like a Loki that is
  away (the spool), never dropped as refused.
* 500 with gRPC ``ResourceExhausted`` "message larger than max", or 413 → too large: split.

Retry timing lives in the pipeline. Reading Loki (queries, deletion, ``/config``) is
:mod:`shipper.loki`, whose client builds on :class:`PushClient`'s connection.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from shipper._units import NS, UnitError, parse_time
from shipper.config import LOKI_MAX_REQUEST_BYTES, ShipperConfig
from shipper.delivery.credentials import RequestHeaders, TokenFileError
from shipper.delivery.labels import LabelSyntaxError, parse_labels
from shipper.delivery.transport import HttpResponse, Transport, TransportError, Urllib3Transport
from shipper.event import Entry

__all__ = [
    "PUSH_PATH",
    "PushClient",
    "PushOutcome",
    "RefusedEntry",
    "encode_json",
    "encode_protobuf",
    "group_streams",
    "labels_string",
    "not_served_hint",
    "nothing_stored",
    "one_line",
    "refusal_reason",
    "refused_entries",
    "serving_target",
]

PUSH_PATH = "/loki/api/v1/push"
_OVERSIZE = re.compile(r"ResourceExhausted|message larger than max|request entity too large", re.I)



# Which target of a simple scalable Loki serves which API (measured on Loki 3.7.6): every other
# target answers 404 for it. /config, /ready and /metrics are served by all three.
_SERVED_BY: tuple[tuple[str, str, str], ...] = (
    ("/loki/api/v1/push", "pushing", "write"),
    ("/flush", "flushing", "write"),
    ("/loki/api/v1/delete", "deletion", "backend"),
    ("/loki/api/v1/", "querying", "read"),
)


def serving_target(path: str) -> tuple[str, str] | None:
    """``(what, target)`` for an API path that only one target of a simple scalable Loki
    serves: ``("deletion", "backend")`` for ``/loki/api/v1/delete``; None for paths every
    target serves (``/config``, ``/ready``)."""
    path = path.split("?", 1)[0]
    for prefix, what, target in _SERVED_BY:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return what, target
    return None


def not_served_hint(path: str) -> tuple[str, str | None]:
    """For a 404: the sentence naming the target that serves ``path``, and that target."""
    served = serving_target(path)
    if served is None:
        return "", None
    what, target = served
    return (f" ({what} is served by the {target} target (or the gateway) of a scalable Loki; "
            "point --url or LOKI_URL there)"), target


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."




def group_streams(entries: Iterable[Entry]) -> dict[tuple[tuple[str, str], ...], list[Entry]]:
    """Entries grouped by their label set, in order of first appearance and of arrival."""
    streams: dict[tuple[tuple[str, str], ...], list[Entry]] = {}
    last: tuple[tuple[str, str], ...] | None = None
    bucket: list[Entry] = []
    for entry in entries:
        labels = entry.labels
        # the worker shares one labels tuple among the entries of a stream, and neighbours
        # mostly belong to the same one: the same object needs no lookup (a tuple's hash is
        # computed anew at every lookup)
        if labels is not last:
            found = streams.get(labels)
            if found is None:
                found = streams[labels] = []
            bucket, last = found, labels
        bucket.append(entry)
    return streams


def encode_json(entries: Iterable[Entry], *, gzip_level: int | None = None) -> bytes:
    """Loki's JSON ``PushRequest``; timestamps are ns strings, structured metadata the third
    element of a value. ``gzip_level`` compresses (send with ``Content-Encoding: gzip``)."""
    streams = []
    for labels, bucket in group_streams(entries).items():
        # tuples (orjson writes them as arrays): the garbage collector stops tracking a tuple
        # of strings, where it keeps walking a list
        values: list[tuple[Any, ...]] = [
            (str(ts), line, dict(metadata)) if metadata else (str(ts), line)
            for _, ts, line, metadata in bucket
        ]
        streams.append({"stream": dict(labels), "values": values})
    request = {"streams": streams}
    try:
        body = orjson.dumps(request)  # the whole request in one call
    except orjson.JSONEncodeError:  # a lone surrogate in a hand-built entry: escape it
        body = json.dumps(request, separators=(",", ":")).encode()
    if gzip_level is not None:
        body = gzip.compress(body, compresslevel=gzip_level, mtime=0)
    return body


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint (values up to 16,383 from a table: lengths and most fields;
    the branches below cover a timestamp's nanoseconds without the loop)."""
    if value < 0x4000:
        return (_VARINTS or _varint_table())[value]
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80,
                      value >> 21))
    if value < 0x800000000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80,
                      value >> 21 & 0x7F | 0x80, value >> 28))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: the varints of 0 to 16,383, made at the first protobuf push: 16,384 objects that would
#: cost every start of a JSON-pushing process milliseconds of CPU
_VARINTS: list[bytes] = []


def _varint_table() -> list[bytes]:
    global _VARINTS
    if not _VARINTS:  # two threads may both make it: the same table either way
        _VARINTS = [bytes((n,)) for n in range(0x80)] + [
            bytes((n & 0x7F | 0x80, n >> 7)) for n in range(0x80, 0x4000)]
    return _VARINTS


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _prom_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels_string(labels: Sequence[tuple[str, str]]) -> str:
    """``{a="1", b="2"}`` with Prometheus escaping, as the protobuf format carries labels."""
    return "{" + ", ".join(f'{k}="{_prom_escape(v)}"' for k, v in labels) + "}"


def encode_protobuf(entries: Iterable[Entry]) -> bytes:
    """Loki's ``logproto.PushRequest`` with snappy block compression (as Promtail and Alloy
    send it). Needs the ``protobuf`` extra (cramjam) for snappy."""
    try:
        import cramjam
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise RuntimeError(
            "encoding='protobuf' needs snappy: pip install 'shipper[protobuf]'"
        ) from exc
    # Each entry's pieces go straight into its stream's list, and the lengths are added up
    # as they go: one join per stream and one for the request, no copy per nested message.
    parts: list[bytes] = []
    varint = _varint
    table = _varint_table()
    names = _METADATA_NAMES
    seconds_at: int | None = None  # no second written yet (-1 is a second: 1969)
    seconds_field = b""
    for labels, bucket in group_streams(entries).items():
        labels_field = _field_bytes(1, labels_string(labels).encode())
        stream: list[bytes] = [b"", labels_field]
        push = stream.append
        total = len(labels_field)
        for e in bucket:
            seconds, nanos = divmod(e.timestamp_ns, 1_000_000_000)
            if seconds != seconds_at:  # the entries of a batch share their seconds
                # int64: a time before 1970 is written as its 64-bit two's complement
                seconds_at, seconds_field = seconds, b"\x08" + varint(seconds % 2**64)
            ts = seconds_field + b"\x10" + varint(nanos) if nanos else seconds_field
            line = e.line.encode()
            n = len(line)
            # EntryAdapter: 1 timestamp, 2 line, 3 structured metadata (LabelPairAdapter:
            # 1 name, 2 value)
            head = b"\x0a" + table[len(ts)] + ts + b"\x12" + (
                table[n] if n < 0x4000 else varint(n))
            size = len(head) + n
            fields: list[bytes] = []
            for name, value in e.metadata:
                named = names.get(name) or _metadata_name(name)
                data = value.encode()
                k = len(data)
                length = table[k] if k < 0x4000 else varint(k)
                inner = len(named) + len(length) + k
                key = b"\x1a" + (table[inner] if inner < 0x4000 else varint(inner))
                fields += (key, named, length, data)
                size += len(key) + inner
            lead = b"\x12" + (table[size] if size < 0x4000 else varint(size))
            push(lead)
            push(head)
            push(line)
            if fields:
                stream += fields
            total += len(lead) + size
        stream[0] = b"\x0a" + varint(total)
        parts.append(b"".join(stream))
    return bytes(cramjam.snappy.compress_raw(b"".join(parts)))


#: a structured-metadata name's field key, the name, and the value's field key
_METADATA_NAMES: dict[str, bytes] = {}


def _metadata_name(name: str) -> bytes:
    raw = name.encode()
    named = b"\x0a" + _varint(len(raw)) + raw + b"\x12"
    if len(_METADATA_NAMES) < 1024:
        _METADATA_NAMES[name] = named
    return named


# --------------------------------------------------------------------------- outcomes


#: Loki's answers when it could not read the push at all, so it stored none of it (measured on
#: Loki 3.7.6): the JSON decoder's (a timestamp past int64, a value of the wrong type), the
#: labels parser's (it parses every stream's labels before storing anything), the body's
#: decoding (snappy, protobuf, gzip). Anchored at the start: the JSON decoder quotes part of the
#: body after it, and a validation message quotes label values, either of which may hold any
#: text.
_NOTHING_STORED = re.compile(
    r"^\s*(?:loghttp\.PushRequest|couldn't parse|snappy:|proto:|unexpected EOF|gzip:)", re.I)

_REFUSAL_PATTERNS = [
    ("invalid_labels", re.compile(r"^\s*couldn't parse labels", re.I)),
    ("bad_request", _NOTHING_STORED),
    ("line_too_long", re.compile(r"max entry size|line too long", re.I)),
    ("too_old", re.compile(r"timestamp too old", re.I)),
    ("too_far_behind", re.compile(r"too far behind|out of order", re.I)),
    ("too_new", re.compile(r"timestamp too new", re.I)),
    ("too_many_labels", re.compile(r"label names; limit", re.I)),
    ("label_name_too_long", re.compile(r"label name too long", re.I)),
    # "stream '{...}' has label value too long: ..." (Loki names the whole stream first)
    ("label_value_too_long", re.compile(r"label value too long|^stream '\{", re.I)),
    ("invalid_labels", re.compile(r"couldn't parse labels|invalid label", re.I)),
    ("structured_metadata", re.compile(r"structured metadata", re.I)),
    ("stream_limit", re.compile(r"stream limit|maximum active stream", re.I)),
    ("bad_request", re.compile(r"loghttp\.PushRequest|unmarshal", re.I)),
]


def nothing_stored(status: int, message: str) -> bool:
    """Whether Loki's answer says it refused the whole push unread (a 400 because the request
    could not be parsed), so that none of its entries was stored. Other 400s refuse single
    entries or streams and store the rest."""
    return status == 400 and _NOTHING_STORED.search(message) is not None


def refusal_reason(status: int, message: str) -> str:
    """A short, stable reason for a refused push, from Loki's message (for the counters)."""
    for reason, pattern in _REFUSAL_PATTERNS:
        if pattern.search(message):
            return reason
    return f"http_{status}"


@dataclass(frozen=True)
class RefusedEntry:
    """One entry of a refused push that Loki's answer names: its index in the request, Loki's
    own words about it, and whether the answer pins it down (``certain``) or only names its
    stream."""

    index: int
    reason: str
    certain: bool = True


_STREAM_TEXT = r"\{[^{}']*\}"
_TS_REFUSAL = re.compile(
    rf"entry for stream '({_STREAM_TEXT})' has timestamp too (?:old|new): (\S+?Z)"
    r"(?:, oldest acceptable timestamp is: \S+?Z)?(?=[,;\s]|$)")
_SIZE_REFUSAL = re.compile(
    rf"max entry size '\d+' bytes exceeded for stream '({_STREAM_TEXT})' while adding an "
    r"entry with length '(\d+)' bytes")
_IGNORED = re.compile(r"entry with timestamp (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})?) "
                      r"\+0000 UTC ignored, reason: '([^']*)'")
_IGNORED_STREAM = re.compile(rf"total ignored: (\d+) out of \d+ for stream: ({_STREAM_TEXT})")
_CUTOFF = re.compile(r"oldest acceptable timestamp is: (\S+?Z)")
_ANY_STREAM = re.compile(rf"stream '({_STREAM_TEXT})'")
_GROUP_SEPARATOR = re.compile(r"; (?=\d+ errors like: )")
_GROUP_PREFIX = re.compile(r"^\d+ errors like: ")


def _labels_of(text: str) -> frozenset[tuple[str, str]]:
    """The label set of a stream Loki names in its answer (none when it cannot be read)."""
    try:
        return frozenset(parse_labels(text).items())
    except LabelSyntaxError:
        return frozenset()


def _second(text: str) -> int | None:
    """A time Loki prints in RFC 3339 (``2026-10-13T02:45:36Z``) → whole Unix seconds."""
    try:
        return parse_time(text) // NS
    except UnitError:
        return None


def _go_time_ns(text: str) -> int:
    """An ingester's ``2026-01-01 12:00:00.123`` (Go's ``time.Time.String()``, whose
    ``+0000 UTC`` the pattern matched) → ns."""
    return parse_time(text + "Z")


def refused_entries(entries: Sequence[Entry], message: str) -> list[RefusedEntry]:
    """Which entries of a push answered 400 Loki refused, read from its answer.

    Loki validates every entry and answers all problems at once ("3 errors like: entry for
    stream '{...}' has timestamp too old: 2026-10-13T02:45:36Z, ..."; the ingester lists
    "entry with timestamp ... ignored, reason: '...'"); the other entries of the request were
    stored. An entry is matched by its stream and timestamp (seconds, as Loki prints them) or
    line length; a problem that names only a stream (labels, limits) marks every entry of that
    stream, and one that names nothing marks every entry, as not ``certain``.
    """
    streams = [frozenset(e.labels) for e in entries]
    found: dict[int, RefusedEntry] = {}

    def mark(index: int, reason: str, certain: bool = True) -> None:
        if index not in found or (certain and not found[index].certain):
            found[index] = RefusedEntry(index, one_line(reason), certain)

    for m in _TS_REFUSAL.finditer(message):
        labels, second = _labels_of(m.group(1)), _second(m.group(2))
        for i, e in enumerate(entries):
            if streams[i] == labels and e.timestamp_ns // NS == second:
                mark(i, m.group(0))
    for m in _SIZE_REFUSAL.finditer(message):
        labels, length = _labels_of(m.group(1)), int(m.group(2))
        for i, e in enumerate(entries):
            if streams[i] == labels and len(e.line.encode()) == length:
                mark(i, m.group(0))
    listed = [(_go_time_ns(m.group(1)), m.group(2)) for m in _IGNORED.finditer(message)]
    for m in _IGNORED_STREAM.finditer(message):
        labels, total = _labels_of(m.group(2)), int(m.group(1))
        in_stream = [i for i, st in enumerate(streams) if st == labels]
        for ts, reason in listed:
            for i in in_stream:
                if entries[i].timestamp_ns == ts:
                    mark(i, reason)
        cutoffs = [c for c in (_second(x) for x in _CUTOFF.findall(message)) if c is not None]
        marked = sum(1 for i in in_stream if i in found)
        if marked < total and cutoffs:  # Loki lists at most 10: the rest by the cutoff
            reason = listed[0][1] if listed else m.group(0)
            for i in in_stream:
                if entries[i].timestamp_ns // NS < max(cutoffs):
                    mark(i, reason, certain=False)
    hit = {streams[i] for i in found}
    named_any = False
    # a stream Loki names but no entry of it matched (labels, limits): all of it, with the
    # part of the answer about it; an answer that names no stream at all: every entry
    for part in _GROUP_SEPARATOR.split(message):
        named = {_labels_of(m.group(1)) for m in _ANY_STREAM.finditer(part)}
        named |= {_labels_of(m.group(2)) for m in _IGNORED_STREAM.finditer(part)}
        named_any = named_any or bool(named)
        for i, st in enumerate(streams):
            if st in named and st not in hit:
                mark(i, _GROUP_PREFIX.sub("", part), certain=False)
    if not named_any and not found:
        for i in range(len(entries)):
            mark(i, message, certain=False)
    return sorted(found.values(), key=lambda r: r.index)


@dataclass(frozen=True)
class PushOutcome:
    kind: Literal["ok", "refused", "retry", "too_large"]
    entries: int
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    #: refused pushes: a stable reason for the counters (``too_old``, ``line_too_long``, ...)
    reason: str = ""
    #: retry: Loki cannot be used now: no HTTP answer at all (connection refused or reset, DNS,
    #: TLS, timeout), or the credentials refused (401, 403)
    unreachable: bool = False
    #: refused: which entries of this request Loki refused (indices into the request), read
    #: from its answer (:func:`refused_entries`), or the one entry a split isolated
    refused: tuple[RefusedEntry, ...] = ()
    #: how long the request took, from sending to Loki's answer or the failure (None: no
    #: request was made, the body was too large to send)
    seconds: float | None = None
    #: the request body's bytes as sent (compressed when it was)
    body_bytes: int = 0

    @property
    def status_class(self) -> str:
        """``2xx``, ``4xx``, ``5xx`` (Loki's answer), or ``error`` (no answer at all)."""
        status = self.status
        if status is None or not 100 <= status < 600:
            return "error"
        return f"{status // 100}xx"


def _retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# --------------------------------------------------------------------------- read limits



class PushClient:
    """One Loki endpoint to push to. ``config.url`` is the base (``http://loki:3100``) or the
    full push URL."""

    def __init__(self, config: ShipperConfig, transport: Transport | None = None) -> None:
        if not config.url:
            raise ValueError("a Loki client needs a url (config.url is unset)")
        self.config = config
        parts = urlsplit(config.url)
        path = parts.path.rstrip("/")
        if path.endswith(PUSH_PATH):
            path = path[: -len(PUSH_PATH)]
        self.base_url = f"{parts.scheme}://{parts.netloc}{path}"
        self.push_url = self.base_url + PUSH_PATH
        self.transport: Transport = transport or Urllib3Transport(
            verify_tls=config.verify_tls, ca_bundle=config.ca_bundle,
            client_cert=config.client_cert, client_key=config.client_key,
            proxy_url=config.proxy_url, proxy_from_env=config.proxy_from_env,
        )
        self._headers = RequestHeaders(config)

    @property
    def headers(self) -> dict[str, str]:
        """The headers of a request to Loki now (auth, tenant, the configured ones); raises
        :class:`~shipper.delivery.credentials.TokenFileError` when the bearer-token file
        cannot be used."""
        return self._headers()

    # ------------------------------------------------------------------ push

    def encode(self, entries: Sequence[Entry]) -> tuple[bytes, dict[str, str]]:
        """The body of a push of ``entries`` and its headers (see :attr:`headers`)."""
        return self.body(entries), self._content_headers()

    def body(self, entries: Sequence[Entry]) -> bytes:
        """The body of a push of ``entries`` in the configured encoding, without its headers:
        what :meth:`push` takes as ``body`` when the entries were encoded beforehand."""
        if self.config.encoding == "protobuf":
            return encode_protobuf(entries)
        if self.config.encoding == "json+gzip":
            return encode_json(entries, gzip_level=1)
        return encode_json(entries)

    def _content_headers(self) -> dict[str, str]:
        """:attr:`headers` (read now: a token file may change) and the body's content type."""
        headers = self.headers
        if self.config.encoding == "protobuf":
            headers["Content-Type"] = "application/x-protobuf"
            return headers
        headers["Content-Type"] = "application/json"
        if self.config.encoding == "json+gzip":
            headers["Content-Encoding"] = "gzip"
        return headers

    def push_once(self, entries: Sequence[Entry], *, timeout: float | None = None,
                  body: bytes | None = None) -> PushOutcome:
        """One POST of ``entries``; classifies the answer. Never raises for HTTP trouble.
        ``timeout`` overrides the configured one (the pipeline shortens it at shutdown).
        ``body`` is :meth:`body` of ``entries`` when they were encoded beforehand."""
        try:
            headers = self._content_headers()
            if body is None:
                body = self.body(entries)
        except TokenFileError as exc:  # nothing sent: kept, like while Loki is away
            return PushOutcome("retry", len(entries), None, str(exc), unreachable=True)
        if len(body) > LOKI_MAX_REQUEST_BYTES and len(entries) > 1:
            return PushOutcome("too_large", len(entries), None, f"{len(body)} bytes encoded")
        started = time.monotonic()
        try:
            resp = self.transport.request(
                "POST", self.push_url, headers=headers, body=body,
                timeout=self.config.timeout if timeout is None else timeout,
            )
        except TransportError as exc:
            return PushOutcome("retry", len(entries), None, str(exc), unreachable=True,
                               seconds=time.monotonic() - started, body_bytes=len(body))
        return replace(self._classify(resp, len(entries)),
                       seconds=time.monotonic() - started, body_bytes=len(body))

    def probe(self, *, timeout: float | None = None) -> PushOutcome:
        """A push of nothing: one stream (``service_name`` of the config) holding no entry,
        through the same URL, tenant and credentials as every push. Loki 3.7.6 answers it 204
        and stores nothing (no stream appears); a push of no stream at all it answers 422.
        Unlike ``GET /ready``, a gateway or a hosted Loki that serves only the push API
        answers it too, and a wrong tenant or token shows."""
        body = orjson.dumps({"streams": [{"stream": {"service_name": self.config.service},
                                          "values": []}]})
        try:
            headers = self.headers
        except TokenFileError as exc:  # nothing sent: the token cannot be read
            return PushOutcome("retry", 0, None, str(exc), unreachable=True)
        headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            resp = self.transport.request(
                "POST", self.push_url, headers=headers, body=body,
                timeout=self.config.timeout if timeout is None else timeout)
        except TransportError as exc:
            return PushOutcome("retry", 0, None, str(exc), unreachable=True,
                               seconds=time.monotonic() - started, body_bytes=len(body))
        return replace(self._classify(resp, 0), seconds=time.monotonic() - started,
                       body_bytes=len(body))

    @staticmethod
    def _classify(resp: HttpResponse, count: int) -> PushOutcome:
        status, message = resp.status, resp.text.strip()
        if 200 <= status < 300:
            return PushOutcome("ok", count, status)
        if status == 413 or (status >= 500 and _OVERSIZE.search(message)):
            return PushOutcome("too_large", count, status, message)
        if status == 429 or status >= 500 or status == 408:
            return PushOutcome("retry", count, status, message, _retry_after(resp.headers))
        if status in (401, 403):
            # nothing of the request was stored: keep the events (the spool) until the
            # credentials are right, as while Loki is away
            return PushOutcome("retry", count, status, (
                f"Loki refused the credentials ({status}: {one_line(message, 200)}): check "
                "LOKI_USERNAME/LOKI_PASSWORD, LOKI_BEARER_TOKEN(_FILE) and LOKI_TENANT"),
                unreachable=True)
        if status == 404:
            message += not_served_hint(PUSH_PATH)[0]
        return PushOutcome("refused", count, status, message,
                           reason=refusal_reason(status, message))

    def push(self, entries: Sequence[Entry], *, timeout: float | None = None,
             body: bytes | None = None) -> list[PushOutcome]:
        """Push, splitting in halves whatever Loki (or the 4 MiB limit) finds too large, and
        whatever Loki refuses whole as unparsable (:func:`nothing_stored`), until the entries
        it refuses stand alone: k such entries among N cost at most 2·k·log2(N) more requests.

        Returns one outcome per request made, in the order of ``entries`` (each covers the
        next ``outcome.entries`` of them). A refused outcome names its refused entries
        (``refused``); a single entry that is still too large is refused (``too_large``)
        rather than retried forever.

        ``body`` is :meth:`body` of ``entries`` when they were encoded beforehand (the
        pipeline's worker encodes a batch while the one before it is being sent): the first
        request sends it as it is.
        """
        outcomes: list[PushOutcome] = []
        pending: list[Sequence[Entry]] = [entries]
        while pending:
            part = pending.pop(0)
            outcome = self.push_once(part, timeout=timeout,
                                     body=body if part is entries else None)
            whole = outcome.kind == "too_large" or (
                outcome.kind == "refused" and nothing_stored(outcome.status or 0,
                                                             outcome.message))
            if whole and len(part) > 1:
                mid = len(part) // 2
                pending[:0] = [part[:mid], part[mid:]]
                continue
            if outcome.kind == "too_large":
                outcome = PushOutcome("refused", 1, outcome.status, outcome.message,
                                      reason="too_large")
            if outcome.kind == "refused":
                refused = (RefusedEntry(0, one_line(outcome.message)),) if whole else tuple(
                    refused_entries(part, outcome.message))
                outcome = replace(outcome, refused=refused)
            outcomes.append(outcome)
            if outcome.kind == "retry":
                # the rest would meet the same trouble: report it as one retryable outcome
                rest = sum(len(p) for p in pending)
                if rest:
                    outcomes.append(PushOutcome("retry", rest, outcome.status, outcome.message,
                                                outcome.retry_after,
                                                unreachable=outcome.unreachable))
                pending.clear()
        return outcomes

    def close(self) -> None:
        self.transport.close()

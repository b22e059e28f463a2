"""Loki HTTP client: encode and push entries (one attempt, oversize split), query, delete, config.

Retry timing lives in the pipeline; this module decides what an answer *means*
(:class:`PushOutcome`), following what Loki 3.7 really answers (see the contract files):

* 204 → delivered.
* 400 → refused. The valid entries of the same request WERE stored, so the batch is never
  re-sent; Loki's message names the refused stream and reason.
* 429, 5xx, no answer → retry later (honouring ``Retry-After``).
* 500 with gRPC ``ResourceExhausted`` "message larger than max", or 413 → too large: split.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import orjson

from shipper import __version__
from shipper.config import LOKI_MAX_REQUEST_BYTES, ShipperConfig
from shipper.event import Entry
from shipper.transport import HttpResponse, Transport, TransportError, Urllib3Transport

__all__ = [
    "PUSH_PATH",
    "LokiClient",
    "LokiError",
    "PushOutcome",
    "encode_json",
    "encode_protobuf",
    "group_streams",
    "refusal_reason",
]

PUSH_PATH = "/loki/api/v1/push"
_OVERSIZE = re.compile(r"ResourceExhausted|message larger than max|request entity too large", re.I)


class LokiError(Exception):
    """A read/admin call got an answer it cannot use; carries the status and Loki's message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- encoding


def group_streams(entries: Iterable[Entry]) -> dict[tuple[tuple[str, str], ...], list[Entry]]:
    """Entries grouped by their label set, in order of first appearance and of arrival."""
    streams: dict[tuple[tuple[str, str], ...], list[Entry]] = {}
    for entry in entries:
        bucket = streams.get(entry.labels)
        if bucket is None:
            streams[entry.labels] = [entry]
        else:
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
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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
    out = bytearray()
    for labels, bucket in group_streams(entries).items():
        stream = bytearray(_field_bytes(1, labels_string(labels).encode()))
        for e in bucket:
            seconds, nanos = divmod(e.timestamp_ns, 1_000_000_000)
            ts = b"\x08" + _varint(seconds) + (b"\x10" + _varint(nanos) if nanos else b"")
            entry = bytearray(_field_bytes(1, ts))
            entry += _field_bytes(2, e.line.encode())
            for name, value in e.metadata:
                entry += _field_bytes(3, _field_bytes(1, name.encode()) +
                                      _field_bytes(2, value.encode()))
            stream += _field_bytes(2, bytes(entry))
        out += _field_bytes(1, bytes(stream))
    return bytes(cramjam.snappy.compress_raw(bytes(out)))


# --------------------------------------------------------------------------- outcomes


_REFUSAL_PATTERNS = [
    ("line_too_long", re.compile(r"max entry size|line too long", re.I)),
    ("too_old", re.compile(r"timestamp too old", re.I)),
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


def refusal_reason(status: int, message: str) -> str:
    """A short, stable reason for a refused push, from Loki's message (for the counters)."""
    for reason, pattern in _REFUSAL_PATTERNS:
        if pattern.search(message):
            return reason
    return f"http_{status}"


@dataclass(frozen=True)
class PushOutcome:
    kind: Literal["ok", "refused", "retry", "too_large"]
    entries: int
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    #: refused pushes: a stable reason for the counters (``too_old``, ``line_too_long``, ...)
    reason: str = ""
    #: retry: no HTTP answer at all (connection refused or reset, DNS, TLS, timeout)
    unreachable: bool = False


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


# --------------------------------------------------------------------------- client


class LokiClient:
    """One Loki endpoint. ``url`` is the base (``http://loki:3100``) or the full push URL."""

    def __init__(self, config: ShipperConfig, transport: Transport | None = None) -> None:
        if not config.url:
            raise ValueError("LokiClient needs a url (config.url is unset)")
        self.config = config
        parts = urlsplit(config.url)
        path = parts.path.rstrip("/")
        if path.endswith(PUSH_PATH):
            path = path[: -len(PUSH_PATH)]
        self.base_url = f"{parts.scheme}://{parts.netloc}{path}"
        self.push_url = self.base_url + PUSH_PATH
        self.transport: Transport = transport or Urllib3Transport(
            verify_tls=config.verify_tls, ca_bundle=config.ca_bundle
        )
        headers = {"User-Agent": f"shipper/{__version__}"}
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        if config.username:
            token = base64.b64encode(f"{config.username}:{config.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        self._headers = headers

    # ------------------------------------------------------------------ push

    def encode(self, entries: Sequence[Entry]) -> tuple[bytes, dict[str, str]]:
        headers = dict(self._headers)
        if self.config.encoding == "protobuf":
            headers["Content-Type"] = "application/x-protobuf"
            return encode_protobuf(entries), headers
        headers["Content-Type"] = "application/json"
        if self.config.encoding == "json+gzip":
            headers["Content-Encoding"] = "gzip"
            return encode_json(entries, gzip_level=1), headers
        return encode_json(entries), headers

    def push_once(self, entries: Sequence[Entry], *, timeout: float | None = None) -> PushOutcome:
        """One POST of ``entries``; classifies the answer. Never raises for HTTP trouble.
        ``timeout`` overrides the configured one (the pipeline shortens it at shutdown)."""
        body, headers = self.encode(entries)
        if len(body) > LOKI_MAX_REQUEST_BYTES and len(entries) > 1:
            return PushOutcome("too_large", len(entries), None, f"{len(body)} bytes encoded")
        try:
            resp = self.transport.request(
                "POST", self.push_url, headers=headers, body=body,
                timeout=self.config.timeout if timeout is None else timeout,
            )
        except TransportError as exc:
            return PushOutcome("retry", len(entries), None, str(exc), unreachable=True)
        return self._classify(resp, len(entries))

    @staticmethod
    def _classify(resp: HttpResponse, count: int) -> PushOutcome:
        status, message = resp.status, resp.text.strip()
        if 200 <= status < 300:
            return PushOutcome("ok", count, status)
        if status == 413 or (status >= 500 and _OVERSIZE.search(message)):
            return PushOutcome("too_large", count, status, message)
        if status == 429 or status >= 500 or status == 408:
            return PushOutcome("retry", count, status, message, _retry_after(resp.headers))
        return PushOutcome("refused", count, status, message,
                           reason=refusal_reason(status, message))

    def push(self, entries: Sequence[Entry], *, timeout: float | None = None,
             ) -> list[PushOutcome]:
        """Push, splitting in halves whatever Loki (or the 4 MiB limit) finds too large.

        Returns one outcome per request made. A single entry that is still too large is
        reported as refused (``too_large``) rather than retried forever.
        """
        outcomes: list[PushOutcome] = []
        pending: list[Sequence[Entry]] = [entries]
        while pending:
            part = pending.pop(0)
            outcome = self.push_once(part, timeout=timeout)
            if outcome.kind == "too_large":
                if len(part) > 1:
                    mid = len(part) // 2
                    pending[:0] = [part[:mid], part[mid:]]
                    continue
                outcome = PushOutcome("refused", 1, outcome.status, outcome.message,
                                      reason="too_large")
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

    # ------------------------------------------------------------------ reads and admin

    def _get(self, path: str, params: Mapping[str, object] | None = None,
             method: str = "GET") -> HttpResponse:
        url = self.base_url + path
        if params:
            url += "?" + urlencode({k: str(v) for k, v in params.items() if v is not None})
        try:
            resp = self.transport.request(method, url, headers=self._headers,
                                          timeout=self.config.timeout)
        except TransportError as exc:
            raise LokiError(str(exc)) from exc
        if resp.status >= 300:
            raise LokiError(f"{method} {path} answered {resp.status}: {resp.text.strip()}",
                            resp.status)
        return resp

    def _json(self, path: str, params: Mapping[str, object] | None = None) -> Any:
        resp = self._get(path, params)
        try:
            body = json.loads(resp.body)
        except ValueError as exc:
            raise LokiError(f"GET {path}: answer is not JSON: {resp.text[:200]!r}") from exc
        if isinstance(body, dict) and body.get("status") not in (None, "success"):
            raise LokiError(f"GET {path}: {body.get('error') or body}", resp.status)
        return body

    def ready(self) -> bool:
        try:
            return self._get("/ready").text.strip() == "ready"
        except LokiError:
            return False

    def query(self, query: str, time_ns: int | None = None, limit: int = 100) -> Any:
        return self._json("/loki/api/v1/query",
                          {"query": query, "time": time_ns, "limit": limit})["data"]

    def query_range(self, query: str, start_ns: int, end_ns: int, *, limit: int = 1000,
                    direction: str = "backward", step: str | None = None) -> Any:
        return self._json("/loki/api/v1/query_range", {
            "query": query, "start": start_ns, "end": end_ns, "limit": limit,
            "direction": direction, "step": step,
        })["data"]

    def labels(self, start_ns: int | None = None, end_ns: int | None = None) -> list[str]:
        data: list[str] = self._json("/loki/api/v1/labels",
                                     {"start": start_ns, "end": end_ns}).get("data", [])
        return data

    def label_values(self, name: str, start_ns: int | None = None,
                     end_ns: int | None = None) -> list[str]:
        data: list[str] = self._json(f"/loki/api/v1/label/{name}/values",
                                     {"start": start_ns, "end": end_ns}).get("data", [])
        return data

    def format_query(self, query: str) -> str:
        resp = self.transport.request(
            "GET", self.base_url + "/loki/api/v1/format_query?" + urlencode({"query": query}),
            headers=self._headers, timeout=self.config.timeout)
        body = json.loads(resp.body or b"{}")
        if resp.status != 200:
            raise LokiError(str(body.get("error") or resp.text), resp.status)
        return str(body["data"])

    def config_yaml(self) -> str:
        """``GET /config``: the effective configuration, as YAML text."""
        return self._get("/config").text

    def delete(self, query: str, start_s: int, end_s: int | None = None) -> str | None:
        """Request deletion of matching entries; returns the request id (Loki 3.6+)."""
        resp = self._get("/loki/api/v1/delete",
                         {"query": query, "start": start_s, "end": end_s}, method="POST")
        return resp.headers.get("x-delete-request-id")

    def delete_requests(self) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = self._json("/loki/api/v1/delete")
        return body

    def cancel_delete(self, request_id: str) -> None:
        self._get("/loki/api/v1/delete", {"request_id": request_id}, method="DELETE")

    def close(self) -> None:
        self.transport.close()

"""The HTTP source: apps and collectors POST events to the sidecar.

=====================  ========================================================================
``POST /v1/events``    one event or an array, in the seed apps' shape (``level, type, actor,
                       actorId, message, metadata, createdAt``). 202 ``{"accepted": n}``; when
                       some are invalid, 400 ``{"accepted": n, "rejected": [{"index", "error"}]}``
                       (the valid ones of the request ARE shipped, as Loki does with a push).
``POST /loki/api/v1/   Loki's push API: JSON (gzip allowed) or protobuf with snappy, so that
push``                 pino-loki, winston-loki, Promtail or Alloy can point at the sidecar and
                       gain its spool. 204 like Loki; 400 with Loki-style text for bad entries.
``POST /v1/logs``      OTLP/HTTP logs in the JSON encoding. 200 ``{}``, or ``partialSuccess``
                       with the number rejected and why; protobuf is answered 415.
=====================  ========================================================================

Every endpoint: ``Authorization: Bearer <token>`` when a token is set (401 otherwise); bodies
over ``max_body_bytes`` (before or after gzip) are answered 413 without being read whole; 429
with ``Retry-After`` while the pipeline's queue is over its high-water mark, 503 while the
sidecar drains for shutdown or too many requests are in progress.
"""

from __future__ import annotations

import dataclasses
import hmac
import http.server
import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shipper.event import Level, LogEvent, normalize_actor
from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.formats import LineParser, level_of, parse_timestamp
from shipper.sidecar.server import Server
from shipper.sidecar.sources.base import Sample, Source, Wiring
from shipper.sidecar.sources.wire import (
    DecodeError,
    PushEntry,
    any_value,
    attributes,
    decode_push_json,
    decode_push_protobuf,
)

__all__ = ["HttpSource"]

_MAX_IN_FLIGHT = 64
_LEVEL_NAMES = "DEBUG, INFO, WARNING, ERROR, CRITICAL (or TRACE, WARN, FATAL, ...; any case)"
_ACTOR_NAMES = "USER, CREATOR, ADMIN, SYSTEM, GUEST"
#: OTLP severityNumber ranges: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR,
#: 21-24 FATAL
_OTLP_SEVERITY = ((21, Level.CRITICAL), (17, Level.ERROR), (13, Level.WARNING),
                  (9, Level.INFO), (1, Level.DEBUG))


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class HttpSource(Source[HttpSourceConfig]):
    kind = "http"
    receiver = True

    def __init__(
        self,
        config: HttpSourceConfig,
        *,
        pipeline: Any,
        service: str,
        env: str | None,
        pressure: Callable[[], bool] = lambda: False,
        name: str = "http",
    ) -> None:
        self.config = config
        self.name = name
        self._submit: Callable[[LogEvent], None] = pipeline.submit
        self._pressure = pressure
        self._parser = LineParser(format="auto", timezone=config.timezone, service=service,
                                  env=env)
        token = config.token
        if config.token_file:
            token = Path(config.token_file).read_text(encoding="utf-8").strip()
        self._token = f"Bearer {token}".encode() if token else None
        self._in_flight = threading.BoundedSemaphore(_MAX_IN_FLIGHT)
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.lines_read = 0
        self._draining = False
        self.server = Server(config.listen, self._handler_class(), f"{name} listen")

    @classmethod
    def build(cls, config: HttpSourceConfig, wiring: Wiring) -> HttpSource:
        return cls(config, pipeline=wiring.pipeline, service=config.service or wiring.service,
                   env=wiring.env, pressure=wiring.overloaded, name=wiring.name)

    # ------------------------------------------------------------------ control

    def describe(self) -> str:
        auth = "bearer token required" if self._token else "no token (loopback only)"
        return f"listening on {self.server.url} ({auth})"

    def invalid_lines(self) -> int:
        return self._parser.invalid

    def start(self) -> None:
        self.server.start()

    def stop(self, deadline: float) -> None:
        self._draining = True
        self.server.stop()

    def close(self) -> None:
        self.server.stop()

    @property
    def alive(self) -> bool:
        return True

    def samples(self) -> Iterator[Sample]:
        for (path, code), n in sorted(self.requests.items()):
            yield "http_requests", (self.name, path, str(code)), n

    # ------------------------------------------------------------------ the server

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        source = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # seconds a connection may sit idle or trickle a body
            server_version = "shipper-sidecar"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                source._handle(self)

            def do_GET(self) -> None:
                source._answer(self, 405, {"error": "use POST on /v1/events, "
                                                    "/loki/api/v1/push or /v1/logs"},
                               {"Allow": "POST"})

        return Handler

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0].rstrip("/")
        handler = {
            "/v1/events": self._events,
            "/loki/api/v1/push": self._loki_push,
            "/v1/logs": self._otlp,
        }.get(path)
        if not self._in_flight.acquire(blocking=False):
            self._answer(req, 503, {"error": "too many requests in progress"},
                         {"Retry-After": "1"}, path, drain=True)
            return
        try:
            if handler is None:
                raise _Reply(404, {"error": f"no endpoint {path}: POST to /v1/events, "
                                            "/loki/api/v1/push or /v1/logs"})
            if self._token is not None:
                given = (req.headers.get("Authorization") or "").strip().encode()
                if not hmac.compare_digest(given, self._token):
                    why = "wrong bearer token" if given else "missing Authorization: Bearer"
                    raise _Reply(401, {"error": why}, {"WWW-Authenticate": "Bearer"})
            if self._draining:
                raise _Reply(503, {"error": "shutting down"}, {"Retry-After": "5"})
            body = self._body(req)
            if self._pressure():
                raise _Reply(429, {"error": "the sidecar's queue is full: retry later"},
                             {"Retry-After": "1"})
            status, answer, headers = handler(req, body)
            self._answer(req, status, answer, headers, path)
        except _Reply as reply:
            drain = reply.status in (401, 404, 411, 413, 429, 503)
            self._answer(req, reply.status, reply.body, reply.headers, path, drain=drain)
        except Exception as exc:  # a bug must not kill the connection thread silently
            self._answer(req, 500, {"error": f"{type(exc).__name__}: {exc}"}, None, path)
        finally:
            self._in_flight.release()

    def _body(self, req: http.server.BaseHTTPRequestHandler) -> bytes:
        limit = self.config.max_body_bytes
        too_big = _Reply(413, {"error": f"body over max_body_bytes ({limit} bytes)"})
        if "chunked" in (req.headers.get("Transfer-Encoding") or "").lower():
            body = bytearray()
            while True:
                size_line = req.rfile.readline(64)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _Reply(400, {"error": "bad chunked encoding"}) from None
                if size == 0:
                    while req.rfile.readline(1024).strip():
                        pass
                    break
                if len(body) + size > limit:
                    raise too_big
                body += req.rfile.read(size)
                req.rfile.readline(4)
            data = bytes(body)
        else:
            length_header = req.headers.get("Content-Length")
            if length_header is None:
                raise _Reply(411, {"error": "Content-Length (or chunked encoding) required"})
            try:
                length = int(length_header)
            except ValueError:
                raise _Reply(400, {"error": "bad Content-Length"}) from None
            if length > limit:
                raise too_big
            data = req.rfile.read(length)
        encoding = (req.headers.get("Content-Encoding") or "").lower().strip()
        if encoding in ("gzip", "deflate"):
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32 if encoding == "gzip" else 0)
            try:
                data = inflater.decompress(data, limit + 1)
            except zlib.error as exc:
                raise _Reply(400, {"error": f"bad {encoding} body: {exc}"}) from None
            if len(data) > limit:
                raise too_big
        elif encoding not in ("", "identity", "snappy"):
            raise _Reply(415, {"error": f"Content-Encoding {encoding} is not supported "
                                        "(gzip or none)"})
        return data

    def _answer(self, req: http.server.BaseHTTPRequestHandler, status: int, body: Any,
                headers: dict[str, str] | None, path: str = "", drain: bool = False) -> None:
        with self._lock:
            self.requests[(path if path in ("/v1/events", "/loki/api/v1/push", "/v1/logs")
                           else "other", status)] += 1
        if isinstance(body, bytes):
            data, content_type = body, "text/plain; charset=utf-8"
        elif isinstance(body, str):
            data, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        try:
            req.send_response(status)
            if drain:  # the body was not read: the connection cannot be reused
                req.send_header("Connection", "close")
                req.close_connection = True
            for key, value in (headers or {}).items():
                req.send_header(key, value)
            if status != 204:
                req.send_header("Content-Type", content_type)
                req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            if status != 204:
                req.wfile.write(data)
        except OSError:
            req.close_connection = True  # the client went away

    def _ship(self, events: list[LogEvent]) -> None:
        submit = self._submit
        for event in events:
            submit(event)
        self.lines_read += len(events)

    # ------------------------------------------------------------------ /v1/events

    def _events(self, req: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            return 400, {"accepted": 0, "error": f"body is not JSON: {exc}"}, {}
        items = doc if isinstance(doc, list) else [doc]
        now = time.time_ns()
        events: list[LogEvent] = []
        rejected: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            problem = _check_event(item, self._parser)
            if problem:
                rejected.append({"index": i, "error": problem})
                continue
            events.append(self._parser.from_fields(item, None, now + i))
        self._ship(events)
        if rejected:
            return 400, {"accepted": len(events), "rejected": rejected}, {}
        return 202, {"accepted": len(events)}, {}

    # ------------------------------------------------------------------ Loki push

    def _loki_push(self, req: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        content_type = (req.headers.get("Content-Type") or "").lower()
        errors: list[str] = []
        try:
            if "protobuf" in content_type:
                entries = decode_push_protobuf(body)
            else:
                entries, errors = decode_push_json(body)
        except DecodeError as exc:
            return 400, f"loghttp.PushRequest: {exc}\n", {}
        events = []
        for entry in entries:
            try:
                events.append(self._push_event(entry))
            except ValueError as exc:
                errors.append(str(exc))
        self._ship(events)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return 400, f"{errors[0]}{more}; {len(events)} entries accepted\n", {}
        return 204, b"", {}

    def _push_event(self, entry: PushEntry) -> LogEvent:
        if entry.timestamp_ns <= 0:
            raise ValueError(f"entry with timestamp {entry.timestamp_ns}: not nanoseconds "
                             "since the epoch")
        line = entry.line
        fields: dict[str, Any] | None = None
        if line[:1] == "{":
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                fields = parsed
        if fields is None:
            event = self._parser._text(line, None, entry.timestamp_ns)
            fields = {"message": line, "level": event.level}
        labels = entry.labels
        used: set[str] = set()
        for key in ("service_name", "service", "app", "job"):
            if labels.get(key):
                fields["service_name"] = labels[key]
                used.add(key)
                break
        for key in ("level", "detected_level", "severity", "lvl"):
            if labels.get(key) and level_of(labels[key]) is not None:
                fields["level"] = labels[key]
                used.add(key)
                break
        for key, value in labels.items():
            if key in ("actor", "type", "env"):
                fields[key] = value
            elif key not in used:  # other stream labels (job, filename, host): metadata
                fields.setdefault(key, value)
        for key, value in entry.metadata.items():
            fields.setdefault(key, value)
        return _at(self._parser.from_fields(fields, None, entry.timestamp_ns),
                   entry.timestamp_ns)

    # ------------------------------------------------------------------ OTLP

    def _otlp(self, req: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        content_type = (req.headers.get("Content-Type") or "").lower()
        if "protobuf" in content_type:
            return 415, {"code": 3, "message": "only the OTLP/HTTP JSON encoding is accepted: "
                                               "set the exporter's protocol to http/json"}, {}
        try:
            doc = json.loads(body)
        except ValueError as exc:
            return 400, {"code": 3, "message": f"body is not JSON: {exc}"}, {}
        resource_logs = doc.get("resourceLogs") if isinstance(doc, dict) else None
        if not isinstance(resource_logs, list):
            return 400, {"code": 3, "message": 'expected {"resourceLogs": [...]}'}, {}
        events: list[LogEvent] = []
        errors: list[str] = []
        now = time.time_ns()
        for rl in resource_logs:
            if not isinstance(rl, dict):
                errors.append("a resourceLogs item is not an object")
                continue
            resource = attributes((rl.get("resource") or {}).get("attributes"))
            service = resource.pop("service.name", None)
            env = resource.pop("deployment.environment.name", None) or \
                resource.pop("deployment.environment", None)
            for key in [k for k in resource if k.startswith("telemetry.")]:
                del resource[key]
            for sl in rl.get("scopeLogs") or []:
                scope = (sl.get("scope") or {}) if isinstance(sl, dict) else {}
                for record in (sl.get("logRecords") or []) if isinstance(sl, dict) else []:
                    try:
                        events.append(self._otlp_event(record, resource, service, env,
                                                       scope.get("name"), now))
                    except (ValueError, TypeError, AttributeError) as exc:
                        errors.append(str(exc))
        self._ship(events)
        if errors:
            return 200, {"partialSuccess": {"rejectedLogRecords": len(errors),
                                            "errorMessage": "; ".join(errors[:5])}}, {}
        return 200, {}, {}

    def _otlp_event(self, record: dict[str, Any], resource: dict[str, Any], service: Any,
                    env: Any, scope: Any, now: int) -> LogEvent:
        if not isinstance(record, dict):
            raise ValueError("a logRecord is not an object")
        ts = 0
        for key in ("timeUnixNano", "observedTimeUnixNano"):
            raw = record.get(key)
            if raw not in (None, "", "0", 0):
                try:
                    ts = int(raw)
                except (TypeError, ValueError):
                    raise ValueError(f"{key} {raw!r} is not nanoseconds") from None
                break
        body = any_value(record.get("body"))
        fields: dict[str, Any] = dict(body) if isinstance(body, dict) else {
            "message": body if isinstance(body, str) else
            ("" if body is None else json.dumps(body))}
        for key, value in attributes(record.get("attributes")).items():
            if key == "exception.stacktrace":
                fields.setdefault("exception", value)
            elif key in ("event.name",):
                fields.setdefault("type", value)
            elif key == "enduser.id":
                fields.setdefault("actor_id", value)
            else:
                fields.setdefault(key, value)
        level = None
        text = record.get("severityText")
        if isinstance(text, str) and level_of(text) is not None:
            level = level_of(text)
        number = record.get("severityNumber")
        if level is None and isinstance(number, int) and number > 0:
            level = next((lvl for floor, lvl in _OTLP_SEVERITY if number >= floor), None)
        if level is not None:
            fields.setdefault("level", level)
        elif isinstance(text, str) and text:
            fields.setdefault("level", text)
        if record.get("traceId"):
            fields.setdefault("trace_id", record["traceId"])
        if record.get("spanId"):
            fields.setdefault("span_id", record["spanId"])
        if service:
            fields.setdefault("service_name", str(service))
        if env:
            fields.setdefault("env", str(env))
        if scope:
            fields.setdefault("logger", str(scope))
        if resource:
            fields.setdefault("resource", resource)
        return _at(self._parser.from_fields(fields, None, ts or now), ts or now)


def _at(event: LogEvent, ts: int) -> LogEvent:
    """The event at the time the protocol gave (a push's own timestamp wins over the line's)."""
    return event if event.timestamp_ns == ts else dataclasses.replace(event, timestamp_ns=ts)


def _check_event(item: Any, parser: LineParser) -> str | None:
    """Why a /v1/events item cannot be shipped (None: it can)."""
    if not isinstance(item, dict):
        return f"expected an object, got {type(item).__name__}"
    message = item.get("message")
    if not isinstance(message, str):
        return "'message' (a string) is required" if message is None else \
            f"'message' must be a string, got {type(message).__name__}"
    level = item.get("level")
    if level is not None and level_of(level) is None:
        return f"unknown level {level!r}: expected one of {_LEVEL_NAMES}"
    actor = item.get("actor")
    if actor is not None and normalize_actor(actor)[1] is not None:
        return f"unknown actor {actor!r}: expected one of {_ACTOR_NAMES}"
    for key in ("createdAt", "created_at", "timestamp"):
        if item.get(key) is not None and parse_timestamp(item[key]) is None:
            return f"{key} {item[key]!r} is not an ISO-8601 time or an epoch number"
    metadata = item.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return f"'metadata' must be an object, got {type(metadata).__name__}"
    kind = item.get("type")
    if kind is not None and not isinstance(kind, str):
        return f"'type' must be a string, got {type(kind).__name__}"
    return None

"""The HTTP source: apps and collectors POST events to the sidecar.

=====================  ========================================================================
``POST /v1/events``    one event or an array, in the seed apps' shape (``level, type, actor,
                       actorId, message, metadata, createdAt``). 202 ``{"accepted": n}``; when
                       some are invalid, 400 ``{"accepted": n, "rejected": [{"index", "error"}],
                       "rejected_count": m}`` (the valid ones of the request ARE shipped, as Loki
                       does with a push).
``POST /loki/api/v1/   Loki's push API: JSON (gzip allowed) or protobuf with snappy, so that
push``                 pino-loki, winston-loki, Promtail or Alloy can point at the sidecar and
                       gain its spool. 204 like Loki; 400 with Loki-style text naming each bad
                       stream or entry and how many entries were accepted (those are shipped).
``POST /v1/logs``      OTLP/HTTP logs, in protobuf (``application/x-protobuf``, the SDKs'
                       default) or JSON, gzip allowed; answered in the request's encoding, as
                       the OTLP specification says: 200 ``ExportLogsServiceResponse``, with
                       ``partial_success`` (how many records were refused and a message naming
                       each bad field) when some were refused and the others shipped; 400 with
                       a ``google.rpc.Status`` when nothing could be taken.
=====================  ========================================================================

``otlp_grpc_listen`` adds OTLP/gRPC (``LogsService/Export``) on its own address, served by
shipper/sidecar/sources/otlpgrpc.py with the same token, limits and mapping.

Every endpoint: ``Authorization: Bearer <token>`` when a token is set (401 otherwise); bodies
over ``max_body_bytes`` (before or after gzip) are answered 413 without being read whole; 429
with ``Retry-After`` while the pipeline's queue is over its high-water mark, 503 while the
sidecar drains for shutdown. JSON nested deeper than ``max_json_depth`` is kept as its text: a
pushed line as a text line, a deeper value as a string. Connections, deadlines and the body's
framing are shipper/sidecar/server.py's.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shipper.event import Level, LogEvent, metadata_value, normalize_actor
from shipper.sidecar.boundedjson import DeepJson, NestedTooDeep, load_json
from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.formats import LineParser, level_of, parse_timestamp
from shipper.sidecar.server import HttpError, RequestHandler, Server
from shipper.sidecar.sources.base import Sample, Source, Wiring
from shipper.sidecar.sources.otlp import (
    OtlpOutcome,
    decode_otlp_protobuf,
    export_response,
    status_protobuf,
)
from shipper.sidecar.sources.otlpgrpc import OtlpGrpcServer
from shipper.sidecar.sources.wire import (
    BodyTooLarge,
    DecodeError,
    OtlpRecord,
    PushEntry,
    TooManyEntries,
    count_at_most,
    decode_otlp_json,
    decode_push_json,
    decode_push_protobuf,
    json_type,
    shown,
)

__all__ = ["HttpSource"]

_ENDPOINTS = ("/v1/events", "/loki/api/v1/push", "/v1/logs")
_LEVEL_NAMES = "DEBUG, INFO, WARNING, ERROR, CRITICAL (or TRACE, WARN, FATAL, ...; any case)"
_ACTOR_NAMES = "USER, CREATOR, ADMIN, SYSTEM, GUEST"
#: OTLP severityNumber ranges: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR,
#: 21-24 FATAL
_OTLP_SEVERITY = ((21, Level.CRITICAL), (17, Level.ERROR), (13, Level.WARNING),
                  (9, Level.INFO), (1, Level.DEBUG))
#: reasons listed in one answer; the others are counted
_MAX_REASONS = 20
#: an answer's Status code for a request that is not valid (google.rpc.Code INVALID_ARGUMENT)
_INVALID_ARGUMENT = 3
#: the Status code of an OTLP answer by its HTTP status, as OTLP/gRPC would answer: 401
#: UNAUTHENTICATED, 408 DEADLINE_EXCEEDED, 413 RESOURCE_EXHAUSTED, 429 and 503 UNAVAILABLE
_RPC_CODES = {401: 16, 408: 4, 413: 8, 429: 14, 503: 14}
_PROTOBUF = "application/x-protobuf"
#: clients named on stderr when their request is over max_entries_per_request (once each);
#: past this many, the next are counted in /metrics only
_MAX_CLIENTS_SAID = 256

Answer = tuple[int, Any, dict[str, str]]


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
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.config = config
        self.name = name
        self._report = report
        self._max_entries = config.max_entries_per_request
        self._clients_said: set[str] = set()
        self._submit: Callable[[LogEvent], None] = pipeline.submit
        self._pressure = pressure
        self._parser = LineParser(format="auto", timezone=config.timezone, service=service,
                                  env=env)
        self._depth = config.max_json_depth
        token = config.token
        if config.token_file:
            token = Path(config.token_file).read_text(encoding="utf-8").strip()
        self._token = f"Bearer {token}".encode() if token else None
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int | str]] = Counter()
        self.lines_read = 0
        self._draining = False
        self.server = Server(config.listen, self._handler_class(), f"{name} listen",
                             max_connections=config.max_connections,
                             request_timeout=config.request_timeout)
        self.grpc: OtlpGrpcServer | None = None
        if config.otlp_grpc_listen:  # grpcio is imported only then
            try:
                self.grpc = OtlpGrpcServer(
                    config.otlp_grpc_listen, f"{name} otlp_grpc_listen",
                    export=self.export_otlp, token=self._token, refusal=self._refusal,
                    max_message_bytes=config.max_body_bytes,
                    max_connections=config.max_connections,
                    idle_timeout=config.request_timeout, count=self._count_grpc,
                    too_many=self._too_many)
            except BaseException:
                self.server.stop()
                raise

    @classmethod
    def build(cls, config: HttpSourceConfig, wiring: Wiring) -> HttpSource:
        return cls(config, pipeline=wiring.pipeline, service=config.service or wiring.service,
                   env=wiring.env, pressure=wiring.overloaded, name=wiring.name,
                   report=wiring.report)

    # ------------------------------------------------------------------ control

    def describe(self) -> str:
        auth = "bearer token required" if self._token else "no token (loopback only)"
        grpc = f", OTLP/gRPC on {self.grpc.address}" if self.grpc is not None else ""
        return f"listening on {self.server.url}{grpc} ({auth})"

    def invalid_lines(self) -> int:
        return self._parser.invalid

    def start(self) -> None:
        self.server.start()
        if self.grpc is not None:
            self.grpc.start()

    def stop(self, deadline: float) -> None:
        self._draining = True
        if self.grpc is not None:
            self.grpc.stop(deadline)  # calls in progress finish, until the deadline
        self.server.stop()

    def close(self) -> None:
        if self.grpc is not None:
            self.grpc.stop(0)
        self.server.stop()

    @property
    def alive(self) -> bool:
        return self._draining or self.server.alive

    def samples(self) -> Iterator[Sample]:
        for (path, code), n in sorted(self.requests.items()):
            yield "http_requests", (self.name, path, str(code)), n
        yield "http_connections_refused", (self.name,), self.server.refused
        yield "http_requests_timed_out", (self.name,), self.server.timed_out

    # ------------------------------------------------------------------ the server

    def _handler_class(self) -> type[RequestHandler]:
        source = self

        class Handler(RequestHandler):
            def do_POST(self) -> None:
                source._handle(self)

            def do_GET(self) -> None:
                source._answer(self, "", 405, {"error": "use POST on /v1/events, "
                                                        "/loki/api/v1/push or /v1/logs"},
                               {"Allow": "POST"}, close=True)

        return Handler

    def _handle(self, req: RequestHandler) -> None:
        path = req.path.split("?", 1)[0].rstrip("/")
        endpoint = {
            "/v1/events": self._events,
            "/loki/api/v1/push": self._loki_push,
            "/v1/logs": self._otlp,
        }.get(path)
        close = False
        try:
            if endpoint is None:
                raise HttpError(404, f"no endpoint {shown(path)}: POST to /v1/events, "
                                     "/loki/api/v1/push or /v1/logs", close=True)
            if self._token is not None:
                given = (req.headers.get("Authorization") or "").strip().encode(
                    "latin-1", "replace")
                if not hmac.compare_digest(given, self._token):
                    why = "wrong bearer token" if given else "missing Authorization: Bearer"
                    raise HttpError(401, why, close=True,
                                    headers={"WWW-Authenticate": "Bearer"})
            if self._draining:
                raise HttpError(503, "shutting down", close=True, headers={"Retry-After": "5"})
            body = req.read_body(self.config.max_body_bytes)
            if self._pressure():
                raise HttpError(429, "the sidecar's queue is full: retry later",
                                headers={"Retry-After": "1"})
            status, answer, headers = endpoint(req, body)
        except HttpError as err:
            status, close = err.status, err.close
            answer, headers = _error(path, err.message, status, _is_protobuf(req), err.headers)
        except (TooManyEntries, BodyTooLarge) as exc:  # the body was read whole: keep-alive
            status = 413
            answer, headers = _error(path, str(exc), 413, _is_protobuf(req), {})
            if isinstance(exc, TooManyEntries):
                self._too_many(str(req.client_address[0]), f"POST {path}", str(exc))
        except Exception as exc:  # a bug must not kill the connection thread silently
            status, close = 500, True
            answer, headers = _error(path, f"{type(exc).__name__}: {exc}", 500,
                                     _is_protobuf(req), {})
        self._answer(req, path, status, answer, headers, close=close)

    def _refusal(self) -> str | None:
        """Why a request is not taken now (the gRPC server asks before it reads one)."""
        if self._draining:
            return "shutting down"
        if self._pressure():
            return "the sidecar's queue is full: retry later"
        return None

    def _too_many(self, client: str, where: str, why: str) -> None:
        """A request over max_entries_per_request, said on stderr once per client."""
        with self._lock:
            said = self._clients_said
            if client in said or len(said) > _MAX_CLIENTS_SAID:
                return
            said.add(client)
            full = len(said) > _MAX_CLIENTS_SAID
        more = (f"; more than {_MAX_CLIENTS_SAID} clients were refused so: the next are "
                "counted in /metrics only") if full else ""
        self._report(f"{self.name}: refused {where} from {client}: {why} (said once per "
                     f"client{more})")

    def _count_grpc(self, code: str) -> None:
        with self._lock:
            self.requests[("otlp-grpc", code)] += 1

    def _answer(self, req: RequestHandler, path: str, status: int, body: Any,
                headers: dict[str, str], *, close: bool = False) -> None:
        with self._lock:
            self.requests[(path if path in _ENDPOINTS else "other", status)] += 1
        if "Content-Type" in headers:  # an answer in protobuf
            headers = dict(headers)
            data, content_type = body, headers.pop("Content-Type")
        elif isinstance(body, bytes):
            data, content_type = body, "text/plain; charset=utf-8"
        elif isinstance(body, str):
            data, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        req.respond(status, data, content_type, headers, close=close)

    def _ship(self, events: list[LogEvent]) -> None:
        submit = self._submit
        for event in events:
            submit(event)
        self.lines_read += len(events)

    # ------------------------------------------------------------------ /v1/events

    def _events(self, req: Any, body: bytes) -> Answer:
        try:
            doc = load_json(body, self._depth)
        except ValueError as exc:
            return 400, {"accepted": 0, "error": f"body is not JSON: {exc}"}, {}
        items = doc if doc.__class__ is list else [doc]
        count_at_most("events", len(items), self._max_entries)
        now = time.time_ns()
        events: list[LogEvent] = []
        rejected: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            try:
                problem = _check_event(item)
                if problem is None:
                    events.append(self._parser.from_fields(item, None, now + i))
                    continue
            except Exception as exc:  # one event's surprise costs only that event
                problem = f"cannot be read: {type(exc).__name__}: {exc}"
            rejected.append({"index": i, "error": problem})
        self._ship(events)
        if rejected:
            return 400, {"accepted": len(events), "rejected": rejected[:_MAX_REASONS],
                         "rejected_count": len(rejected)}, {}
        return 202, {"accepted": len(events)}, {}

    # ------------------------------------------------------------------ Loki push

    def _loki_push(self, req: Any, body: bytes) -> Answer:
        content_type = (req.headers.get("Content-Type") or "").lower()
        try:
            if "protobuf" in content_type:
                entries, errors = decode_push_protobuf(body, self._max_entries,
                                                       self.config.max_body_bytes)
            else:
                try:  # decode_push_json takes only strings: no walk for the depth
                    doc = load_json(body, self._depth, walk=False)
                except ValueError as exc:
                    raise DecodeError(f"not JSON: {exc}") from None
                entries, errors = decode_push_json(doc, self._max_entries)
        except DecodeError as exc:
            return 400, f"loghttp.PushRequest: {exc}\n", {}
        events = []
        empties: dict[tuple[int, int], LogEvent] = {}
        for entry in entries:
            try:
                if not entry.line and not entry.metadata:  # identical empty entries: once
                    key = (id(entry.labels), entry.timestamp_ns)
                    event = empties.get(key)
                    if event is None:
                        event = empties[key] = self._push_event(entry)
                    events.append(event)
                    continue
                events.append(self._push_event(entry))
            except ValueError as exc:
                errors.append(str(exc))
            except Exception as exc:  # one entry's surprise costs only that entry
                errors.append(f"an entry cannot be read: {type(exc).__name__}: {exc}")
        self._ship(events)
        if errors:
            return 400, "".join(f"{e}\n" for e in _listed(errors)) + \
                f"{len(events)} entries accepted, {len(errors)} refused\n", {}
        return 204, b"", {}

    def _push_event(self, entry: PushEntry) -> LogEvent:
        if entry.timestamp_ns <= 0:
            raise ValueError(f"entry with timestamp {entry.timestamp_ns}: not nanoseconds "
                             "since the epoch")
        line = entry.line
        fields: dict[str, Any] | None = None
        deep = False
        if line[:1] == "{":
            try:
                parsed = load_json(line, self._depth, None)
            except NestedTooDeep:
                parsed, deep = None, True
            except ValueError:
                parsed = None
            if parsed.__class__ is dict:
                fields = parsed
        if fields is None:
            event = self._parser._text(line, None, entry.timestamp_ns)
            fields = {"message": line, "level": event.level}
            if deep:
                fields["parse_error"] = (f"json: nested deeper than max_json_depth "
                                         f"({self._depth}): shipped as text")
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

    def _otlp(self, req: Any, body: bytes) -> Answer:
        protobuf = _is_protobuf(req)
        outcome = self.export_otlp(body, protobuf=protobuf)
        if outcome.message is not None and not outcome.accepted:
            return 400, *_error("/v1/logs", outcome.message, 400, protobuf, {})
        if protobuf:
            return 200, export_response(outcome.refused, outcome.message), \
                {"Content-Type": _PROTOBUF}
        if outcome.message is None:
            return 200, {}, {}
        return 200, {"partialSuccess": {"rejectedLogRecords": str(outcome.refused),
                                        "errorMessage": outcome.message}}, {}

    def export_otlp(self, body: bytes, *, protobuf: bool) -> OtlpOutcome:
        """An OTLP ``ExportLogsServiceRequest`` (protobuf or JSON) to events, shipped: what
        was accepted and refused. One path for OTLP/HTTP in both encodings and OTLP/gRPC.
        Raises :class:`~shipper.sidecar.sources.wire.TooManyEntries` (nothing shipped) for a
        request over ``max_entries_per_request``."""
        try:
            if protobuf:
                records, errors, refused = decode_otlp_protobuf(body, self._depth,
                                                                self._max_entries)
            else:
                try:
                    doc = load_json(body, self._depth, DeepJson)
                except ValueError as exc:
                    raise DecodeError(f"body is not JSON: {exc}") from None
                records, errors, refused = decode_otlp_json(doc, self._max_entries)
        except DecodeError as exc:
            return OtlpOutcome(0, 0, str(exc))
        events: list[LogEvent] = []
        now = time.time_ns()
        resources: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
        empties: dict[tuple[Any, ...], LogEvent] = {}
        for record in records:
            try:
                if record.body is None and not record.attributes and not record.event_name:
                    # an empty record's event depends on these alone: identical ones (a body
                    # of millions of empty records) are mapped once
                    key = (id(record.resource), record.scope, record.time_ns,
                           record.severity_number, record.severity_text, record.trace_id,
                           record.span_id)
                    event = empties.get(key)
                    if event is None:
                        event = empties[key] = self._otlp_event(record, now, resources)
                    events.append(event)
                    continue
                events.append(self._otlp_event(record, now, resources))
            except Exception as exc:  # one record's surprise costs only that record
                errors.append(f"a log record cannot be read: {type(exc).__name__}: {exc}")
                refused += 1
        self._ship(events)
        if errors:
            return OtlpOutcome(len(events), refused, f"{len(events)} log records accepted, "
                               f"{refused} refused: " + "; ".join(_listed(errors)))
        return OtlpOutcome(len(events), 0, None)

    def _otlp_event(self, record: OtlpRecord, now: int,
                    resources: dict[int, tuple[Any, Any, dict[str, Any]]]) -> LogEvent:
        known = resources.get(id(record.resource))
        if known is None:  # once per resource: its service, env and the attributes kept
            resource = dict(record.resource)
            service = resource.pop("service.name", None)
            env = resource.pop("deployment.environment.name", None) or \
                resource.pop("deployment.environment", None)
            for key in [k for k in resource if k.startswith("telemetry.")]:
                del resource[key]
            known = resources[id(record.resource)] = (service, env, resource)
        service, env, resource = known
        body = record.body
        fields: dict[str, Any] = dict(body) if body.__class__ is dict else {
            "message": body if body.__class__ is str else
            ("" if body is None else json.dumps(body))}
        for key, value in record.attributes.items():
            if key == "exception.stacktrace":
                fields.setdefault("exception", value)
            elif key == "event.name":
                fields.setdefault("type", value)
            elif key == "enduser.id":
                fields.setdefault("actor_id", value)
            else:
                fields.setdefault(key, value)
        if record.event_name:
            fields.setdefault("type", record.event_name)
        level = None
        text = record.severity_text
        if text is not None and level_of(text) is not None:
            level = level_of(text)
        number = record.severity_number
        if level is None and number:
            level = next((lvl for floor, lvl in _OTLP_SEVERITY if number >= floor), None)
        if level is not None:
            fields.setdefault("level", level)
        elif text:
            fields.setdefault("level", text)
        if record.trace_id:
            fields.setdefault("trace_id", record.trace_id)
        if service:
            fields.setdefault("service_name", str(service))
        if env:
            fields.setdefault("env", str(env))
        if record.scope:
            fields.setdefault("logger", record.scope)
        if resource:
            fields.setdefault("resource", resource)
        ts = record.time_ns or now
        event = self._parser.from_fields(fields, None, ts)
        # the span id is structured metadata, as the handler ships it (an attribute of that
        # name wins over the record's own field, as it does for the trace id)
        span_id = record.attributes.get("span_id", record.span_id)
        if span_id is None or span_id == "":
            return _at(event, ts)
        meta = event.metadata
        if "span_id" in meta:
            meta = {k: v for k, v in meta.items() if k != "span_id"}
        return dataclasses.replace(event, timestamp_ns=ts, metadata=meta,
                                   span_id=metadata_value(span_id))


def _error(path: str, message: str, status: int, protobuf: bool,
           headers: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """An error's answer in the endpoint's own form (Loki's text, OTLP's Status in the
    request's encoding, else JSON), and its headers."""
    if path == "/loki/api/v1/push":
        return f"{message}\n", headers
    if path == "/v1/logs":
        code = _RPC_CODES.get(status, _INVALID_ARGUMENT)
        if protobuf:
            try:
                return status_protobuf(code, message), {**headers, "Content-Type": _PROTOBUF}
            except DecodeError:  # no opentelemetry-proto: the Status in JSON, as before
                pass
        return {"code": code, "message": message}, headers
    return {"error": message}, headers


def _is_protobuf(req: Any) -> bool:
    return "protobuf" in (req.headers.get("Content-Type") or "").lower()


def _listed(reasons: list[str]) -> list[str]:
    """At most :data:`_MAX_REASONS` reasons, and how many more there were."""
    if len(reasons) <= _MAX_REASONS:
        return reasons
    return [*reasons[:_MAX_REASONS], f"and {len(reasons) - _MAX_REASONS} more"]


def _at(event: LogEvent, ts: int) -> LogEvent:
    """The event at the time the protocol gave (a push's own timestamp wins over the line's)."""
    return event if event.timestamp_ns == ts else dataclasses.replace(event, timestamp_ns=ts)


def _check_event(item: Any) -> str | None:
    """Why a /v1/events item cannot be shipped (None: it can)."""
    if item.__class__ is not dict:
        return f"expected an object, got {json_type(item)}"
    message = item.get("message")
    if message.__class__ is not str:
        return "'message' (a string) is required" if message is None else \
            f"'message' must be a string, got {json_type(message)}"
    level = item.get("level")
    if level is not None and level_of(level) is None:
        return f"unknown level {shown(level)}: expected one of {_LEVEL_NAMES}"
    actor = item.get("actor")
    if actor is not None and normalize_actor(actor)[1] is not None:
        return f"unknown actor {shown(actor)}: expected one of {_ACTOR_NAMES}"
    for key in ("createdAt", "created_at", "timestamp"):
        if item.get(key) is not None and parse_timestamp(item[key]) is None:
            return f"{key} {shown(item[key])} is not an ISO-8601 time or an epoch number"
    metadata = item.get("metadata")
    if metadata is not None and metadata.__class__ is not dict:
        return f"'metadata' must be an object, got {json_type(metadata)}"
    kind = item.get("type")
    if kind is not None and kind.__class__ is not str:
        return f"'type' must be a string, got {json_type(kind)}"
    return None

"""The HTTP source on a real server on 127.0.0.1: /v1/events, Loki's push API (JSON and
protobuf), OTLP/HTTP JSON, tokens, body caps, backpressure."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from shipper.delivery.labels import parse_labels
from shipper.delivery.push import encode_json, encode_protobuf
from shipper.event import Actor, Entry, Level, LogEvent
from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.sources.http import HttpSource
from shipper.sidecar.sources.wire import decode_push_protobuf

TOKEN = "0123456789abcdef-token"


class Pipeline:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        self.lock = threading.Lock()

    def submit(self, event: LogEvent) -> None:
        with self.lock:
            self.events.append(event)


class Running:
    def __init__(self, **settings: Any) -> None:
        self.full = False
        self.pipeline = Pipeline()
        config = HttpSourceConfig(listen="127.0.0.1:0", **settings)
        self.source = HttpSource(config, pipeline=self.pipeline, service="shop", env="prod",
                                 pressure=lambda: self.full)
        self.source.start()
        self.http = urllib3.PoolManager(retries=False)

    def post(self, path: str, body: bytes | str | Any, headers: dict[str, str] | None = None,
             ) -> urllib3.BaseHTTPResponse:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        return self.http.request("POST", f"{self.source.server.url}{path}", body=data,
                                 headers={"Content-Type": "application/json",
                                          **(headers or {})})


@pytest.fixture
def server() -> Iterator[Running]:
    running = Running()
    yield running
    running.source.close()


def test_v1_events_accepts_one_event_or_an_array(server: Running) -> None:
    resp = server.post("/v1/events", {"level": "ERROR", "type": "paymentFailed",
                                      "actor": "USER", "actorId": "usr_1", "message": "declined",
                                      "metadata": {"amount": 12},
                                      "createdAt": "2026-11-20T09:15:02.5Z"})
    assert resp.status == 202 and resp.json() == {"accepted": 1}
    resp = server.post("/v1/events", [{"message": "a"}, {"message": "b", "level": "warn"}])
    assert resp.status == 202 and resp.json() == {"accepted": 2}
    first, a, b = server.pipeline.events
    assert (first.level, first.type, first.actor, first.actor_id, first.metadata) == \
        (Level.ERROR, "PAYMENT_FAILED", Actor.USER, "usr_1", {"amount": 12})
    assert first.timestamp_ns == 1_795_166_102_500_000_000
    assert (first.service, first.env) == ("shop", "prod")
    assert (a.level, b.level) == (Level.INFO, Level.WARNING)


def test_bad_events_get_400_with_a_reason_each_and_the_rest_is_shipped(
        server: Running) -> None:
    resp = server.post("/v1/events", [
        {"message": "good"},
        {"message": "x", "level": "LOUD"},
        "not an object",
        {"level": "INFO"},
        {"message": "x", "actor": "ROBOT"},
        {"message": "x", "createdAt": "yesterday"},
        {"message": "x", "metadata": [1]},
        {"message": "also good", "level": "fatal"},
    ])
    assert resp.status == 400
    body = resp.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4, 5, 6]
    errors = [r["error"] for r in body["rejected"]]
    assert errors[0].startswith("unknown level 'LOUD': expected one of DEBUG, INFO")
    assert errors[1] == "expected an object, got a string"
    assert errors[2] == "'message' (a string) is required"
    assert errors[3].startswith("unknown actor 'ROBOT'")
    assert errors[4].startswith("createdAt 'yesterday' is not an ISO-8601 time")
    assert errors[5] == "'metadata' must be an object, got an array"
    assert [e.message for e in server.pipeline.events] == ["good", "also good"]
    assert server.pipeline.events[1].level == Level.CRITICAL


def test_malformed_json_and_wrong_paths(server: Running) -> None:
    resp = server.post("/v1/events", '{"message": "cut')
    assert resp.status == 400 and "body is not JSON" in resp.json()["error"]
    assert server.post("/v2/nothing", {}).status == 404
    assert server.http.request("GET", f"{server.source.server.url}/v1/events").status == 405
    assert server.pipeline.events == []


def test_token_required_when_set() -> None:
    running = Running(token=TOKEN)
    try:
        assert running.post("/v1/events", {"message": "x"}).status == 401
        wrong = running.post("/v1/events", {"message": "x"}, {"Authorization": "Bearer nope"})
        assert wrong.status == 401 and wrong.json() == {"error": "wrong bearer token"}
        ok = running.post("/v1/events", {"message": "x"}, {"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 202
        assert len(running.pipeline.events) == 1
    finally:
        running.source.close()


def test_an_oversize_body_is_refused_before_and_after_gzip() -> None:
    running = Running(max_body_bytes=10_000)
    try:
        big = json.dumps([{"message": "x" * 100}] * 200).encode()
        assert running.post("/v1/events", big).status == 413
        bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
        resp = running.post("/v1/events", bomb, {"Content-Encoding": "gzip"})
        assert resp.status == 413
        small = gzip.compress(json.dumps({"message": "zipped"}).encode())
        assert running.post("/v1/events", small, {"Content-Encoding": "gzip"}).status == 202
        assert [e.message for e in running.pipeline.events] == ["zipped"]
    finally:
        running.source.close()


def test_a_chunked_body_is_read_and_capped(server: Running) -> None:
    def chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i:i + size]

    body = json.dumps([{"message": "in pieces"}, {"message": "two"}]).encode()
    resp = server.http.request("POST", f"{server.source.server.url}/v1/events",
                               body=chunks(body), chunked=True,
                               headers={"Content-Type": "application/json"})
    assert resp.status == 202 and resp.json() == {"accepted": 2}
    assert [e.message for e in server.pipeline.events] == ["in pieces", "two"]
    big = json.dumps([{"message": "x" * 1000}] * 5000).encode()  # 5 MB > 4 MiB default cap
    resp = server.http.request("POST", f"{server.source.server.url}/v1/events",
                               body=chunks(big, 65536), chunked=True)
    assert resp.status == 413


def test_a_full_queue_answers_429_with_retry_after(server: Running) -> None:
    server.full = True
    resp = server.post("/v1/events", {"message": "x"})
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    server.full = False
    assert server.post("/v1/events", {"message": "x"}).status == 202


def _entries() -> list[Entry]:
    labels = (("service_name", "web"), ("level", "ERROR"), ("actor", "USER"),
              ("type", "API_ERROR"), ("job", "nodeapp"))
    return [
        Entry(labels, 1_795_166_102_000_000_001,
              json.dumps({"message": "POST /pay failed", "metadata": {"status": 502}}),
              (("actor_id", "usr_9"), ("trace_id", "abc"))),
        Entry((("app", "worker"),), 1_795_166_102_000_000_002, "plain WARN line"),
    ]


@pytest.mark.parametrize("encoding", ["json", "json+gzip", "protobuf"])
def test_loki_push_in_json_gzip_and_protobuf(server: Running, encoding: str) -> None:
    entries = _entries()
    if encoding == "protobuf":
        body, headers = encode_protobuf(entries), {"Content-Type": "application/x-protobuf"}
    elif encoding == "json+gzip":
        body, headers = encode_json(entries, gzip_level=1), {"Content-Encoding": "gzip"}
    else:
        body, headers = encode_json(entries), {}
    resp = server.post("/loki/api/v1/push", body, headers)
    assert resp.status == 204, resp.data
    first, second = server.pipeline.events
    assert (first.service, first.level, first.actor, first.type) == \
        ("web", Level.ERROR, Actor.USER, "API_ERROR")
    assert (first.actor_id, first.trace_id) == ("usr_9", "abc")
    assert first.message == "POST /pay failed"
    assert first.metadata == {"status": 502, "job": "nodeapp"}
    assert first.timestamp_ns == 1_795_166_102_000_000_001
    assert (second.service, second.level, second.message) == ("worker", Level.WARNING,
                                                              "plain WARN line")
    assert second.timestamp_ns == 1_795_166_102_000_000_002


def test_loki_push_errors_are_answered_like_loki(server: Running) -> None:
    resp = server.post("/loki/api/v1/push", b"\x00garbage", {"Content-Type":
                                                             "application/x-protobuf"})
    assert resp.status == 400 and resp.data.startswith(b"loghttp.PushRequest: ")
    mixed = {"streams": [{"stream": {"app": "a"}, "values": [["1795166102000000000", "ok"],
                                                             ["soon", "bad ts"]]}]}
    resp = server.post("/loki/api/v1/push", mixed)
    assert resp.status == 400
    assert b"timestamp 'soon' is not nanoseconds" in resp.data
    assert b"1 entries accepted" in resp.data
    assert [e.message for e in server.pipeline.events] == ["ok"]


def test_protobuf_decoder_reads_what_promtail_sends() -> None:
    entries = _entries()
    decoded, errors = decode_push_protobuf(encode_protobuf(entries), 100_000, 1 << 22)
    assert errors == []
    assert [(d.labels, d.timestamp_ns, d.line, d.metadata) for d in decoded] == [
        (dict(e.labels), e.timestamp_ns, e.line, dict(e.metadata)) for e in entries]
    assert parse_labels(r'{a="x\"y", b="line\nbreak"}') == {"a": 'x"y',
                                                                    "b": "line\nbreak"}
    with pytest.raises(ValueError):
        parse_labels("{a=unquoted}")


def test_otlp_http_json_logs(server: Running) -> None:
    body = {"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "deployment.environment.name", "value": {"stringValue": "staging"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "nodejs"}},
            {"key": "host.name", "value": {"stringValue": "web-1"}}]},
        "scopeLogs": [{"scope": {"name": "orders"}, "logRecords": [
            {"timeUnixNano": "1795166102000000005", "severityNumber": 17,
             "severityText": "ERROR", "body": {"stringValue": "order failed"},
             "traceId": "5b8efff798038103d269b633813fc60c",
             "attributes": [{"key": "actor", "value": {"stringValue": "USER"}},
                            {"key": "actorId", "value": {"stringValue": "usr_3"}},
                            {"key": "type", "value": {"stringValue": "ORDER_FAILED"}},
                            {"key": "order", "value": {"intValue": "42"}},
                            {"key": "exception.stacktrace",
                             "value": {"stringValue": "Error: x\n at y"}}]},
            {"observedTimeUnixNano": "1795166102000000006", "severityNumber": 13,
             "body": {"kvlistValue": {"values": [
                 {"key": "msg", "value": {"stringValue": "structured"}},
                 {"key": "n", "value": {"doubleValue": 1.5}}]}}},
            {"timeUnixNano": "not-a-number", "body": {"stringValue": "bad"}},
        ]}]}]}
    resp = server.post("/v1/logs", body)
    assert resp.status == 200  # a partial success, as the OTLP specification answers it
    assert resp.json() == {"partialSuccess": {"rejectedLogRecords": "1", "errorMessage": (
        "2 log records accepted, 1 refused: resourceLogs[0].scopeLogs[0].logRecords[2]."
        "timeUnixNano: 'not-a-number' is not nanoseconds since the epoch (a string of digits)")}}
    first, second = server.pipeline.events
    assert (first.service, first.env, first.level, first.actor, first.actor_id, first.type) == \
        ("checkout", "staging", Level.ERROR, Actor.USER, "usr_3", "ORDER_FAILED")
    assert (first.message, first.logger, first.exception) == ("order failed", "orders",
                                                              "Error: x\n at y")
    assert first.trace_id == "5b8efff798038103d269b633813fc60c"
    assert first.metadata == {"order": 42, "resource": {"host.name": "web-1"}}
    assert first.timestamp_ns == 1_795_166_102_000_000_005
    assert (second.level, second.message, second.metadata["n"]) == (Level.WARNING,
                                                                    "structured", 1.5)


def test_a_push_built_by_googles_protobuf_library_as_promtail_sends_it(
        server: Running) -> None:
    """An independent encoder: Google's protobuf library, with the stream hash Promtail sets."""
    import cramjam

    from tests.delivery.test_push_client import _push_request_class

    request = _push_request_class()()
    stream = request.streams.add(labels='{job="varlogs", filename="/var/log/app.log", '
                                        'level="warn", service_name="legacy"}',
                                 hash=0xDEADBEEF)
    entry = stream.entries.add(line="disk 91% full")
    entry.timestamp.seconds, entry.timestamp.nanos = 1_795_166_102, 7
    entry.structuredMetadata.add(name="trace_id", value="t-1")
    second = stream.entries.add(line='{"msg":"json line","level":"error","actorId":"usr_2"}')
    second.timestamp.seconds = 1_795_166_103
    body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
    resp = server.post("/loki/api/v1/push", body, {"Content-Type": "application/x-protobuf"})
    assert resp.status == 204, resp.data
    first, other = server.pipeline.events
    assert (first.service, first.level, first.message, first.trace_id) == \
        ("legacy", Level.WARNING, "disk 91% full", "t-1")
    assert first.metadata == {"job": "varlogs", "filename": "/var/log/app.log"}
    assert first.timestamp_ns == 1_795_166_102_000_000_007
    assert (other.level, other.message, other.actor_id) == (Level.WARNING, "json line", "usr_2")

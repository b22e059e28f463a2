"""OTLP/HTTP logs in protobuf on the HTTP source (a real server on 127.0.0.1): the same events
as the same request in the JSON encoding, answers in protobuf, partial success, and bodies built
to hurt (cut short, garbage, wrong wire types, huge lengths, nesting past protobuf's limit,
strings that are not UTF-8, gzip bombs, a million tiny records)."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from shipper.event import Actor, Level, LogEvent
from tests.sidecar.test_http import TOKEN, Running

PROTOBUF = {"Content-Type": "application/x-protobuf"}
TS = 1_795_166_102_000_000_000


@pytest.fixture
def server() -> Iterator[Running]:
    running = Running()
    yield running
    running.source.close()


def value(v: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (None: an empty one)."""
    if v is None:
        return AnyValue()
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(value(x) for x in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(attributes(v))
        return out
    return AnyValue(string_value=v)


def attributes(items: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in items.items()]


def nested(depth: int) -> Any:
    """Arrays of arrays ``depth`` deep, with a string at the bottom."""
    v: Any = "bottom"
    for _ in range(depth):
        v = [v]
    return v


def rich_request() -> ExportLogsServiceRequest:
    """Every kind of value and field the mapping reads, in two resources."""
    request = ExportLogsServiceRequest()
    first = request.resource_logs.add()
    first.resource.attributes.extend(attributes({
        "service.name": "checkout", "deployment.environment.name": "staging",
        "telemetry.sdk.language": "python", "host.name": "web-1",
        "k8s": {"pod": "web-1-abc", "ports": [80, 443]}}))
    scope = first.scope_logs.add()
    scope.scope.name = "orders"
    scope.log_records.add(
        time_unix_nano=TS + 5, severity_number=17, severity_text="ERROR",
        body=value("order failed"), trace_id=bytes(range(16)), span_id=bytes(range(8)),
        attributes=attributes({
            "actor": "USER", "actorId": "usr_3", "type": "ORDER_FAILED", "order": 42,
            "big": -(2**63), "exception.stacktrace": "Error: x\n at y", "ratio": 0.5,
            "ok": True, "raw": b"\x00\xff", "tags": [1, "a", 2.5, False],
            "deep": {"a": {"b": [1, {"c": None}]}}, "empty": AnyValue()}))
    scope.log_records.add(observed_time_unix_nano=TS + 6, severity_number=13,
                          body=value({"msg": "structured", "n": 1.5, "nested": {"x": [1]}}))
    scope.log_records.add(time_unix_nano=TS + 7, event_name="order.paid", severity_text="warn",
                          attributes=attributes({"enduser.id": "usr_9"}))
    scope.log_records.add(time_unix_nano=TS + 8, severity_number=9,
                          body=value(nested(40)))  # past max_json_depth: kept as its text
    second = request.resource_logs.add()  # no resource, a scope without a name
    second.scope_logs.add().log_records.add(time_unix_nano=TS + 9, body=value([1, "two"]),
                                            severity_text="FATAL")
    second.scope_logs.add().log_records.add(time_unix_nano=TS + 10, body=value(b"\x01\x02"))
    return request


def as_json(request: ExportLogsServiceRequest) -> dict[str, Any]:
    """The OTLP JSON encoding of a request: protobuf's JSON with the ids in hex, as OTLP says."""
    doc = MessageToDict(request)
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for record in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return doc


def events_of(server: Running) -> list[LogEvent]:
    events = list(server.pipeline.events)
    server.pipeline.events.clear()
    return events


def post_protobuf(server: Running, body: bytes, **headers: str) -> Any:
    return server.post("/v1/logs", body, {**PROTOBUF, **headers})


# --------------------------------------------------------------------------- the mapping


def test_protobuf_gives_the_same_events_as_the_same_request_in_json(server: Running) -> None:
    request = rich_request()
    resp = post_protobuf(server, request.SerializeToString())
    assert resp.status == 200, resp.data
    assert resp.headers["Content-Type"] == "application/x-protobuf"
    assert ExportLogsServiceResponse.FromString(resp.data) == ExportLogsServiceResponse()
    from_protobuf = events_of(server)
    resp = server.post("/v1/logs", json.dumps(as_json(request)))
    assert resp.status == 200 and resp.json() == {}
    from_json = events_of(server)
    assert len(from_protobuf) == 6
    assert from_protobuf == from_json
    first, second, third, deep, fifth, sixth = from_protobuf
    assert (first.service, first.env, first.level, first.actor, first.actor_id, first.type) == \
        ("checkout", "staging", Level.ERROR, Actor.USER, "usr_3", "ORDER_FAILED")
    assert (first.message, first.logger, first.exception, first.timestamp_ns) == \
        ("order failed", "orders", "Error: x\n at y", TS + 5)
    assert first.trace_id == bytes(range(16)).hex()
    assert first.span_id == bytes(range(8)).hex() and "span_id" not in first.metadata
    assert first.metadata["raw"] == "00ff" and first.metadata["big"] == -(2**63)
    assert first.metadata["tags"] == [1, "a", 2.5, False]
    assert first.metadata["deep"] == {"a": {"b": [1, {"c": None}]}}
    assert first.metadata["resource"] == {"host.name": "web-1",
                                          "k8s": {"pod": "web-1-abc", "ports": [80, 443]}}
    assert (second.level, second.message, second.timestamp_ns) == \
        (Level.WARNING, "structured", TS + 6)
    assert (third.type, third.level, third.actor_id) == ("ORDER_PAID", Level.WARNING, "usr_9")
    inner = json.loads(deep.message)
    levels = 0
    while isinstance(inner, list):
        inner, levels = inner[0], levels + 1
    assert levels == 31  # the body is level 8 of the JSON encoding; each array takes 3
    assert json.loads(inner) == MessageToDict(value(nested(40 - 31)))
    assert (fifth.level, fifth.service, fifth.logger) == (Level.CRITICAL, "shop", None)
    assert json.loads(fifth.message) == [1, "two"] and sixth.message == "0102"


def test_an_empty_request_is_a_success_with_nothing_shipped(server: Running) -> None:
    resp = post_protobuf(server, b"")
    assert resp.status == 200
    assert ExportLogsServiceResponse.FromString(resp.data) == ExportLogsServiceResponse()
    assert server.pipeline.events == []


def test_a_gzipped_protobuf_request_is_read(server: Running) -> None:
    body = gzip.compress(rich_request().SerializeToString())
    resp = post_protobuf(server, body, **{"Content-Encoding": "gzip"})
    assert resp.status == 200, resp.data
    assert len(server.pipeline.events) == 6


# --------------------------------------------------------------------------- hand-built bodies


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def message_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def record(message: str) -> bytes:
    return LogRecord(time_unix_nano=TS, body=AnyValue(string_value=message)).SerializeToString()


def request_of(*records: bytes) -> bytes:
    """An ExportLogsServiceRequest of one resource and one scope holding ``records``."""
    scope_logs = b"".join(message_field(2, r) for r in records)
    return message_field(1, message_field(2, scope_logs))


def too_deep_record(levels: int) -> bytes:
    """A LogRecord whose body nests ``levels`` arrays (AnyValue > ArrayValue > AnyValue ...):
    built by hand, since protobuf itself will not build what it will not read."""
    any_value = message_field(1, b"bottom")
    for _ in range(levels):
        any_value = message_field(5, message_field(1, any_value))
    return message_field(5, any_value)


def answer(resp: Any) -> ExportLogsServiceResponse:
    assert resp.headers["Content-Type"] == "application/x-protobuf"
    return ExportLogsServiceResponse.FromString(resp.data)


def refusal(resp: Any) -> Status:
    assert resp.headers["Content-Type"] == "application/x-protobuf"
    return Status.FromString(resp.data)


def test_a_record_nested_past_protobufs_limit_costs_only_itself(server: Running) -> None:
    body = request_of(record("first"), too_deep_record(200), record("last"))
    resp = post_protobuf(server, body)
    assert resp.status == 200, resp.data
    partial = answer(resp).partial_success
    assert partial.rejected_log_records == 1
    assert partial.error_message == (
        "2 log records accepted, 1 refused: resourceLogs[0].scopeLogs[0].logRecords[1]: "
        "nested deeper than protobuf reads (about 100 messages inside each other)")
    assert [e.message for e in server.pipeline.events] == ["first", "last"]


def test_a_string_that_is_not_utf8_costs_only_its_record(server: Running) -> None:
    bad = record("lost") + varint(3 << 3 | 2) + b"\x02\xff\xfe"  # severity_text
    resp = post_protobuf(server, request_of(record("first"), bad, record("last")))
    assert resp.status == 200, resp.data
    partial = answer(resp).partial_success
    assert partial.rejected_log_records == 1
    assert "logRecords[1]: not a LogRecord in protobuf (damaged, or a string that is not " \
        "UTF-8)" in partial.error_message
    assert [e.message for e in server.pipeline.events] == ["first", "last"]


def test_a_damaged_record_is_named_with_what_is_wrong(server: Running) -> None:
    cut = record("lost") + varint(5 << 3 | 2) + varint(50) + b"short"  # body runs past its end
    resp = post_protobuf(server, request_of(record("first"), cut))
    assert resp.status == 200, resp.data
    assert "logRecords[1]: not a LogRecord in protobuf: a field runs past the end of the " \
        "message" in answer(resp).partial_success.error_message
    assert [e.message for e in server.pipeline.events] == ["first"]


def test_a_damaged_resource_costs_its_records_and_says_how_many(server: Running) -> None:
    bad_resource = message_field(1, message_field(1, b"\x0a\x02\xff\xfe"))  # a key not UTF-8
    scope = message_field(2, message_field(2, record("lost")) + message_field(2, record("x")))
    body = request_of(record("first")) + message_field(1, bad_resource + scope)
    resp = post_protobuf(server, body)
    assert resp.status == 200, resp.data
    partial = answer(resp).partial_success
    assert partial.rejected_log_records == 2
    assert "resourceLogs[1].resource: not a Resource in protobuf" in partial.error_message
    assert "(its 2 log records not read)" in partial.error_message
    assert [e.message for e in server.pipeline.events] == ["first"]


def test_when_every_record_is_refused_the_answer_is_400_with_a_status(server: Running) -> None:
    resp = post_protobuf(server, request_of(too_deep_record(200)))
    assert resp.status == 400
    status = refusal(resp)
    assert status.code == 3
    assert status.message.startswith("0 log records accepted, 1 refused: resourceLogs[0]")
    assert server.pipeline.events == []


@pytest.mark.parametrize(("body", "named"), [
    (request_of(record("a"), record("b"))[:-1], "a field runs past the end of the message"),
    (b"\xff" * 20, "varint longer than 64 bits"),
    (b"\x0a" + varint(2**62) + b"x", "a field runs past the end of the message"),
    (b"\x0a\x80", "truncated varint"),
    (b"\x0b\x0a\x00", "unsupported wire type 3"),  # a group that never ends
    (b"\x08\x05", "no resource_logs (field 1)"),  # field 1 as a varint: unknown to protobuf
    (b'{"resourceLogs": []}', "not an ExportLogsServiceRequest in protobuf"),
])
def test_a_body_that_is_not_a_request_is_400_naming_why_and_nothing_ships(
        server: Running, body: bytes, named: str) -> None:
    resp = post_protobuf(server, body)
    assert resp.status == 400, resp.data
    status = refusal(resp)
    assert status.code == 3 and named in status.message, status.message
    assert server.pipeline.events == []


def test_a_field_of_a_wrong_wire_type_is_skipped_as_protobuf_skips_unknown_fields(
        server: Running) -> None:
    odd = record("kept") + varint(6 << 3 | 0) + varint(7)  # attributes as a varint
    resp = post_protobuf(server, request_of(odd))
    assert resp.status == 200, resp.data
    (event,) = server.pipeline.events
    assert event.message == "kept" and event.metadata == {}


def test_a_gzip_bomb_is_413_in_protobuf_without_being_inflated_whole() -> None:
    small = Running(max_body_bytes=64 * 1024)
    try:
        bomb = gzip.compress(request_of(record("x" * 50_000_000)), 9)
        assert len(bomb) < 100_000
        resp = small.post("/v1/logs", bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert resp.status == 413
        status = refusal(resp)
        assert status.code == 8 and "max_body_bytes (65536 bytes)" in status.message
        assert small.pipeline.events == []
    finally:
        small.source.close()


def test_a_missing_token_is_401_with_a_status_in_protobuf() -> None:
    guarded = Running(token=TOKEN)
    try:
        resp = guarded.post("/v1/logs", request_of(record("x")), PROTOBUF)
        assert resp.status == 401
        assert refusal(resp).code == 16
        resp = guarded.post("/v1/logs", request_of(record("x")),
                            {**PROTOBUF, "Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 200
        assert [e.message for e in guarded.pipeline.events] == ["x"]
    finally:
        guarded.source.close()


def test_a_million_tiny_records_are_refused_whole_naming_the_count_and_the_limit(
        server: Running) -> None:
    body = request_of(*[b""] * 1_000_000)  # two bytes a record: 2 MB
    resp = post_protobuf(server, body)
    assert resp.status == 413, resp.data
    status = refusal(resp)
    assert status.code == 8  # RESOURCE_EXHAUSTED
    assert status.message.startswith("more than 100000 log records in one request, over "
                                     "max_entries_per_request (100000)")
    assert server.pipeline.events == []


@pytest.mark.slow
def test_as_many_tiny_records_as_the_cap_are_each_shipped_and_counted(
        server: Running) -> None:
    body = request_of(*[b""] * 100_000)
    resp = post_protobuf(server, body)
    assert resp.status == 200, resp.data
    assert len(server.pipeline.events) == 100_000
    assert {e.message for e in server.pipeline.events} == {""}


def test_a_json_request_nothing_of_which_can_be_taken_is_400_with_a_status(
        server: Running) -> None:
    resp = server.post("/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "soon"}]}]}]})
    assert resp.status == 400
    assert resp.json()["code"] == 3
    assert resp.json()["message"].startswith("0 log records accepted, 1 refused: ")


def test_events_from_both_encodings_compare_field_by_field() -> None:
    """LogEvent compares every field (the equality the mapping test relies on)."""
    names = {f.name for f in dataclasses.fields(LogEvent) if f.compare}
    assert {"service", "level", "message", "metadata", "timestamp_ns", "trace_id"} <= names


# --------------------------------------------------------------------------- fuzz

_MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]),
                                st.integers(0, 10**6), st.integers(0, 255)), max_size=4)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[Running]:
    running = Running()
    yield running
    running.source.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=_MUTATIONS)
def test_fuzz_damaged_protobuf_never_500_and_the_answer_tells_what_shipped(
        fuzz_server: Running, mutations: list[tuple[str, int, int]]) -> None:
    body = bytearray(request_of(record("a"), record("b")) + rich_request().SerializeToString())
    for kind, where, byte in mutations:
        at = where % (len(body) + 1)
        if kind == "flip" and at < len(body):
            body[at] ^= byte or 1
        elif kind == "cut":
            del body[at:]
        elif kind == "insert":
            body[at:at] = bytes([byte])
        elif kind == "delete" and at < len(body):
            del body[at]
    fuzz_server.pipeline.events.clear()
    resp = post_protobuf(fuzz_server, bytes(body))
    shipped = len(fuzz_server.pipeline.events)
    assert resp.status in (200, 400), resp.data
    if resp.status == 400:
        assert shipped == 0 and refusal(resp).code == 3
        return
    partial = answer(resp).partial_success
    if partial.error_message:
        assert partial.error_message.startswith(f"{shipped} log records accepted, "
                                                f"{partial.rejected_log_records} refused: ")

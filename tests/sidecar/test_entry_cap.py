"""``max_entries_per_request``: a request holding more entries than the HTTP source's cap (events,
Loki push entries or streams, OTLP log records, resources or scopes) is refused whole, before
any of it is mapped, on every endpoint and encoding and on OTLP/gRPC; one at the cap is stored
completely; the refusal names the count and the limit, is counted in the metrics and said once
per client. Requests go over raw sockets where a client library would hide what is sent."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import cramjam
import grpc
import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

from shipper.sidecar.config import HttpSourceConfig, load_config
from shipper.sidecar.sources.http import HttpSource
from shipper.sidecar.sources.otlp import decode_otlp_protobuf
from shipper.sidecar.sources.wire import TooManyEntries
from tests.sidecar.test_http import Pipeline, Running
from tests.sidecar.test_http_hostile import Raw, post
from tests.sidecar.test_otlp_grpc import Client
from tests.sidecar.test_otlp_protobuf import message_field, record, request_of, varint

pytestmark = pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")

CAP = 10
TS = "1795166102000000000"
JSON = "Content-Type: application/json"
PROTOBUF = "Content-Type: application/x-protobuf"


class Capped(Running):
    """The HTTP source with a small cap, what it says on stderr kept in :attr:`said`."""

    def __init__(self, **settings: Any) -> None:  # Running's, with a report to read
        self.full = False
        self.said: list[str] = []
        self.pipeline = Pipeline()
        config = HttpSourceConfig(listen="127.0.0.1:0", **settings)
        self.source = HttpSource(config, pipeline=self.pipeline, service="shop", env="prod",
                                 report=self.said.append)
        self.source.start()

    def raw(self, path: str, body: bytes, *headers: str) -> tuple[int, dict[str, str], bytes]:
        conn = Raw(self.source.server.port)
        try:
            conn.send(post(path, body, *headers))
            answer = conn.response()
            assert answer is not None
            return answer
        finally:
            conn.close()


@pytest.fixture
def capped() -> Iterator[Capped]:
    running = Capped(max_entries_per_request=CAP, otlp_grpc_listen="127.0.0.1:0")
    yield running
    running.source.close()


# --------------------------------------------------------------------------- the bodies


def events(n: int) -> bytes:
    return json.dumps([{"message": f"e{i}"} for i in range(n)]).encode()


def push_json(n: int, streams: int = 1) -> bytes:
    per = [n // streams + (1 if s < n % streams else 0) for s in range(streams)]
    return json.dumps({"streams": [
        {"stream": {"app": f"a{s}"}, "values": [[TS, f"p{s}.{i}"] for i in range(k)]}
        for s, k in enumerate(per)]}).encode()


def push_protobuf(n: int, streams: int = 1) -> bytes:
    """A snappy ``logproto.PushRequest`` of ``n`` entries over ``streams`` streams."""
    out = b""
    for s in range(streams):
        count = n // streams + (1 if s < n % streams else 0)
        entries = b"".join(
            message_field(2, message_field(1, varint(1 << 3) + varint(1_795_166_102))
                          + message_field(2, f"p{s}.{i}".encode()))
            for i in range(count))
        out += message_field(1, message_field(1, f'{{app="a{s}"}}'.encode()) + entries)
    return bytes(cramjam.snappy.compress_raw(out))


def otlp_json(n: int) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": TS, "body": {"stringValue": f"o{i}"}} for i in range(n)]}]}]}).encode()


def otlp_protobuf(n: int) -> bytes:
    return request_of(*[record(f"o{i}") for i in range(n)])


#: (path, encoding header, body of n entries, the words the refusal names them by)
ENDPOINTS: dict[str, tuple[str, str, Callable[[int], bytes], str]] = {
    "events": ("/v1/events", JSON, events, "events"),
    "push-json": ("/loki/api/v1/push", JSON, push_json, "entries"),
    "push-protobuf": ("/loki/api/v1/push", PROTOBUF, push_protobuf, "entries"),
    "otlp-json": ("/v1/logs", JSON, otlp_json, "log records"),
    "otlp-protobuf": ("/v1/logs", PROTOBUF, otlp_protobuf, "log records"),
}


def message_of(path: str, headers: dict[str, str], body: bytes) -> str:
    """The refusal's text, in the endpoint's own form."""
    if path == "/loki/api/v1/push":
        return body.decode()
    if headers.get("content-type") == "application/x-protobuf":
        from google.rpc.status_pb2 import Status

        return str(Status.FromString(body).message)
    doc = json.loads(body)
    return str(doc.get("message") or doc.get("error"))


# --------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("name", ENDPOINTS)
def test_one_entry_over_the_cap_is_413_naming_the_count_and_the_limit_and_nothing_is_shipped(
        capped: Capped, name: str) -> None:
    path, header, body_of, what = ENDPOINTS[name]
    status, headers, body = capped.raw(path, body_of(CAP + 1), header)
    assert status == 413, body
    said = message_of(path, headers, body)
    exact = "protobuf" not in name  # the walkers stop counting past the limit
    held = f"{CAP + 1}" if exact else f"more than {CAP}"
    assert f"{held} {what} in one request, over max_entries_per_request ({CAP})" in said
    assert capped.pipeline.events == []


@pytest.mark.parametrize("name", ENDPOINTS)
def test_as_many_entries_as_the_cap_are_stored_completely(capped: Capped, name: str) -> None:
    path, header, body_of, _ = ENDPOINTS[name]
    status, _, body = capped.raw(path, body_of(CAP), header)
    assert status in (200, 202, 204), body
    assert len(capped.pipeline.events) == CAP
    assert len({e.message for e in capped.pipeline.events}) == CAP


def test_an_otlp_json_refusal_is_a_status_with_resource_exhausted(capped: Capped) -> None:
    status, _, body = capped.raw("/v1/logs", otlp_json(CAP + 1), JSON)
    assert status == 413
    assert json.loads(body)["code"] == 8


def test_many_tiny_streams_are_refused_like_many_entries(capped: Capped) -> None:
    empty = json.dumps({"streams": [{"stream": {"app": "a"}, "values": []}] * (CAP + 1)})
    status, _, body = capped.raw("/loki/api/v1/push", empty.encode(), JSON)
    assert status == 413
    assert f"{CAP + 1} streams in one request" in body.decode()
    status, _, body = capped.raw("/loki/api/v1/push", push_protobuf(CAP + 1, CAP + 1), PROTOBUF)
    assert status == 413
    assert f"more than {CAP} streams in one request" in body.decode()
    status, _, body = capped.raw("/loki/api/v1/push", push_protobuf(CAP, CAP), PROTOBUF)
    assert status == 204, body
    assert len(capped.pipeline.events) == CAP


def test_many_empty_otlp_resources_or_scopes_are_refused(capped: Capped) -> None:
    resources = json.dumps({"resourceLogs": [{}] * (CAP + 1)}).encode()
    status, _, body = capped.raw("/v1/logs", resources, JSON)
    assert status == 413 and f"{CAP + 1} resourceLogs in one request" in message_of(
        "/v1/logs", {}, body)
    scopes = ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(scope_logs=[ScopeLogs()] * (CAP + 1))]).SerializeToString()
    status, headers, body = capped.raw("/v1/logs", scopes, PROTOBUF)
    assert status == 413
    assert f"more than {CAP} scopeLogs in one request" in message_of("/v1/logs", headers, body)


def test_a_damaged_otlp_body_is_counted_by_the_walker_before_any_part_is_read() -> None:
    damaged = request_of(*[record("x")] * (CAP + 1), b"\xff")  # the last record cannot parse
    with pytest.raises(TooManyEntries, match=f"more than {CAP} log records"):
        decode_otlp_protobuf(damaged, 100, CAP)
    records, errors, refused = decode_otlp_protobuf(request_of(*[record("x")] * CAP, b"\xff"),
                                                    100, CAP + 1)
    assert (len(records), refused) == (CAP, 1) and len(errors) == 1
    # a damaged scope first does not stop the count of what follows it
    broken_first = message_field(1, message_field(2, b"\x0a\xff")) + request_of(
        *[record("x")] * (CAP + 1))
    with pytest.raises(TooManyEntries, match=f"more than {CAP} log records"):
        decode_otlp_protobuf(broken_first, 100, CAP)


def test_after_a_refusal_the_connection_serves_the_next_request(capped: Capped) -> None:
    conn = Raw(capped.source.server.port)
    try:
        conn.send(post("/v1/events", events(CAP + 1), JSON))
        first = conn.response()
        conn.send(post("/v1/events", events(1), JSON))
        second = conn.response()
    finally:
        conn.close()
    assert first is not None and first[0] == 413
    assert second is not None and second[0] == 202
    assert len(capped.pipeline.events) == 1


def test_a_refusal_is_counted_and_said_once_per_client(capped: Capped) -> None:
    for _ in range(3):
        assert capped.raw("/v1/logs", otlp_protobuf(CAP + 1), PROTOBUF)[0] == 413
    assert capped.raw("/v1/events", events(CAP + 1), JSON)[0] == 413
    samples = {values: n for family, values, n in capped.source.samples()
               if family == "http_requests"}
    assert samples[(capped.source.name, "/v1/logs", "413")] == 3
    assert samples[(capped.source.name, "/v1/events", "413")] == 1
    (line,) = capped.said
    assert "from 127.0.0.1" in line and "POST /v1/logs" in line
    assert f"more than {CAP} log records in one request, over max_entries_per_request ({CAP})" \
        in line


def test_a_snappy_body_that_would_decompress_past_max_body_bytes_is_413() -> None:
    running = Capped(max_body_bytes=10_000)
    try:
        bomb = bytes(cramjam.snappy.compress_raw(b"\x00" * 200_000))
        assert len(bomb) < 10_000
        status, _, body = running.raw("/loki/api/v1/push", bomb, PROTOBUF)
        assert status == 413
        assert b"decompress to 200000 bytes, over max_body_bytes (10000)" in body
    finally:
        running.source.close()


def test_a_4_mib_body_of_empty_records_answers_413_with_the_default_cap() -> None:
    running = Capped()
    try:
        assert running.source.config.max_entries_per_request == 100_000
        n = 2_000_000
        empty = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[
            ScopeLogs(log_records=[LogRecord()] * n)])]).SerializeToString()
        assert len(empty) <= 4 * 1024 * 1024
        status, headers, body = running.raw("/v1/logs", empty, PROTOBUF)
        assert status == 413
        assert message_of("/v1/logs", headers, body).startswith(
            "more than 100000 log records in one request, over max_entries_per_request (100000)")
        tiny = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b",".join(
            [b"{}"] * 1_300_000) + b"]}]}]}"
        status, headers, body = running.raw("/v1/logs", tiny, JSON)
        assert status == 413 and "1300000 log records" in message_of("/v1/logs", headers,
                                                                     body)
        lines = json.dumps({"streams": [{"stream": {"a": "b"}, "values": [["1", ""]] * 400_000}]},
                           separators=(",", ":")).encode()
        assert len(lines) <= 4 * 1024 * 1024
        status, _, body = running.raw("/loki/api/v1/push", lines, JSON)
        assert status == 413 and b"400000 entries in one request" in body
        assert running.pipeline.events == []
    finally:
        running.source.close()


# --------------------------------------------------------------------------- OTLP/gRPC


def test_grpc_over_the_cap_is_resource_exhausted_naming_the_numbers(capped: Capped) -> None:
    client = Client(capped)
    try:
        error = client.refused(otlp_protobuf(CAP + 1))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (error.details() or "").startswith(
            f"more than {CAP} log records in one request, over max_entries_per_request ({CAP})")
        assert capped.pipeline.events == []
        client.call(otlp_protobuf(CAP))
        assert len(capped.pipeline.events) == CAP
    finally:
        client.channel.close()
    assert capped.source.requests[("otlp-grpc", "RESOURCE_EXHAUSTED")] == 1
    (line,) = capped.said
    assert "LogsService/Export from 127.0.0.1" in line


# --------------------------------------------------------------------------- clients


def test_the_sdks_batches_at_their_default_size_pass_a_cap_of_that_size() -> None:
    """The OpenTelemetry SDK's BatchLogRecordProcessor exports 512 records a request by
    default: with the cap at 512 (the default cap is far above), every record arrives."""
    running = Capped(max_entries_per_request=512)
    provider = LoggerProvider()
    processor = BatchLogRecordProcessor(HttpLogExporter(
        endpoint=f"{running.source.server.url}/v1/logs", timeout=10), max_queue_size=4096)
    provider.add_log_record_processor(processor)
    logger = logging.getLogger("shop.batches")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        for i in range(2048):
            logger.warning("batched %d", i)
        assert provider.force_flush(30_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
        running.source.close()
    assert len(running.pipeline.events) == 2048
    assert running.source.requests[("/v1/logs", 200)] >= 2048 // 512
    assert running.source.requests.get(("/v1/logs", 413), 0) == 0


def test_the_setting_is_read_from_yaml_and_must_be_a_positive_number(tmp_path: Any) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("loki: {url: http://127.0.0.1:3100}\nsources:\n"
                    "  - {type: http, max_entries_per_request: 5000}\n")
    (source,) = load_config(path).sources
    assert isinstance(source, HttpSourceConfig) and source.max_entries_per_request == 5000
    path.write_text("loki: {url: http://127.0.0.1:3100}\nsources:\n"
                    "  - {type: http, max_entries_per_request: -1}\n")
    with pytest.raises(Exception, match="max_entries_per_request"):
        load_config(path)


# --------------------------------------------------------------------------- empty entries


def test_identical_empty_records_are_each_shipped_and_differing_ones_keep_their_own_fields(
        capped: Capped) -> None:
    empty = LogRecord().SerializeToString()
    timed = [LogRecord(time_unix_nano=int(TS) + i, severity_number=17).SerializeToString()
             for i in range(2)]
    status, _, body = capped.raw("/v1/logs", request_of(empty, empty, empty, *timed), PROTOBUF)
    assert status == 200, body
    first, second, third, late, later = capped.pipeline.events
    assert first == second == third and first.message == ""
    assert (late.timestamp_ns, later.timestamp_ns) == (int(TS), int(TS) + 1)
    assert late.level.name == later.level.name == "ERROR"


def test_identical_empty_loki_entries_are_each_shipped_in_their_own_stream(
        capped: Capped) -> None:
    body = json.dumps({"streams": [
        {"stream": {"app": "a"}, "values": [[TS, ""], [TS, ""], [TS, "x"]]},
        {"stream": {"app": "b"}, "values": [[TS, ""], [TS, "", {"k": "v"}]]}]}).encode()
    status, _, answer = capped.raw("/loki/api/v1/push", body, JSON)
    assert status == 204, answer
    a1, a2, ax, b1, b2 = capped.pipeline.events
    assert a1 == a2 and a1.service == "a" and ax.message == "x"
    assert b1.service == "b" and b1.metadata == {} and b2.metadata == {"k": "v"}

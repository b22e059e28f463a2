"""The real OpenTelemetry Python SDK's OTLP log exporters pointed at a running sidecar (a child
process) with a token: OTLP/HTTP in protobuf (the SDK's default), OTLP/gRPC with gzip, and a
JSON request as the JSON exporters send it. What reaches the (fake) Loki carries the contract's
labels, and the sidecar stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tests.sidecar.test_http import TOKEN
from tests.support.fakeloki import FakeLoki, Stored, free_port
from tests.support.sidecar_process import SidecarProcess, wait_until

# the SDK's own bridge from logging, as apps use it today (its successor lives in another
# package, opentelemetry-instrumentation-logging)
pytestmark = pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")


class Stack:
    def __init__(self, loki: FakeLoki, sidecar: SidecarProcess, http: int, grpc: int) -> None:
        self.loki, self.sidecar, self.http_port, self.grpc_port = loki, sidecar, http, grpc

    def stored(self, n: int) -> list[Stored]:
        assert wait_until(lambda: self.loki.count() >= n, 20), self.loki.stored()
        return sorted(self.loki.stored(), key=lambda s: s.ts)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeLoki(rate_limit=False) as loki:
        http, grpc_port = free_port(), free_port()
        sidecar = SidecarProcess(tmp_path, [
            {"type": "http", "listen": f"127.0.0.1:{http}", "token": TOKEN,
             "otlp_grpc_listen": f"127.0.0.1:{grpc_port}"}], loki_url=loki.url,
            service="sidecar-test")
        sidecar.start()
        yield Stack(loki, sidecar, http, grpc_port)
        assert sidecar.finish(signal.SIGTERM) == 0, sidecar.stderr
        assert "OTLP/gRPC on 127.0.0.1:" in sidecar.stderr


def log_through(exporter: LogRecordExporter) -> None:
    """An app's logging, bridged to OpenTelemetry: one event inside a span, one error."""
    provider = LoggerProvider(resource=Resource.create({
        "service.name": "checkout", "deployment.environment.name": "staging"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("shop.orders")
    # the logger is shared with other tests' code: put back what it was
    old_propagate, old_level = logger.propagate, logger.level
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    tracer = TracerProvider().get_tracer("shop")
    try:
        with tracer.start_as_current_span("checkout"):
            logger.info("order placed", extra={"type": "ORDER_PLACED", "actor": "USER",
                                               "actorId": "usr_42", "order": 7})
        try:
            raise ValueError("card declined")
        except ValueError:
            logger.exception("payment failed", extra={"type": "PAYMENT_FAILED"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        logger.setLevel(old_level)
        provider.shutdown()


def check(first: Stored, second: Stored) -> None:
    assert dict(first.labels) == {"service_name": "checkout", "env": "staging",
                                  "level": "INFO", "actor": "USER", "type": "ORDER_PLACED"}
    meta = dict(first.metadata)
    assert meta["actor_id"] == "usr_42" and meta["logger"] == "shop.orders"
    assert len(meta["trace_id"]) == 32 and int(meta["trace_id"], 16) != 0
    line = json.loads(first.line)
    assert line["message"] == "order placed" and line["metadata"]["order"] == 7
    assert dict(second.labels)["level"] == "ERROR"
    assert dict(second.labels)["type"] == "PAYMENT_FAILED"
    error = json.loads(second.line)
    assert error["message"] == "payment failed"
    assert "ValueError: card declined" in error["exception"]


def test_the_sdks_otlp_http_exporter_in_protobuf_with_gzip(stack: Stack) -> None:
    log_through(HttpLogExporter(endpoint=f"http://127.0.0.1:{stack.http_port}/v1/logs",
                                headers={"Authorization": f"Bearer {TOKEN}"},
                                compression=Compression.Gzip, timeout=10))
    check(*stack.stored(2))


def test_the_sdks_otlp_grpc_exporter_with_gzip(stack: Stack) -> None:
    log_through(GrpcLogExporter(endpoint=f"127.0.0.1:{stack.grpc_port}", insecure=True,
                                headers={"authorization": f"Bearer {TOKEN}"},
                                compression=grpc.Compression.Gzip, timeout=10))
    check(*stack.stored(2))


def test_a_json_request_as_the_json_exporters_send_it(stack: Stack) -> None:
    body: dict[str, Any] = {"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "scopeLogs": [{"scope": {"name": "shop.orders"}, "logRecords": [{
            "timeUnixNano": str(time.time_ns()), "severityNumber": 9,
            "severityText": "INFO", "body": {"stringValue": "order placed"},
            "traceId": "5b8efff798038103d269b633813fc60c",
            "attributes": [{"key": "type", "value": {"stringValue": "ORDER_PLACED"}}]}]}]}]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.http_port}/v1/logs", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read()) == {}
    (event,) = stack.stored(1)
    assert dict(event.labels) == {"service_name": "checkout", "level": "INFO",
                                  "actor": "SYSTEM", "type": "ORDER_PLACED"}
    assert dict(event.metadata)["trace_id"] == "5b8efff798038103d269b633813fc60c"


def test_a_wrong_token_is_refused_and_nothing_stored(stack: Stack) -> None:
    exporter = GrpcLogExporter(endpoint=f"127.0.0.1:{stack.grpc_port}", insecure=True,
                               headers={"authorization": "Bearer wrong-token-wrong-token"},
                               timeout=5)
    log_through(exporter)
    stack.sidecar.finish(signal.SIGTERM)  # what was taken is delivered before it exits
    assert stack.loki.count() == 0
    stack.sidecar.start()  # the fixture's own stop and checks

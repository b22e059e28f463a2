"""The OpenTelemetry Python SDK's OTLP/HTTP (protobuf) and OTLP/gRPC log exporters through a
``shipper sidecar`` process into a real Loki 3.7: what they send is stored with the contract's
labels, and a protobuf request with one record past protobuf's limit stores its neighbours."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path

import pytest
import urllib3
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.live.conftest import query_range, wait_for
from tests.sidecar.test_http import TOKEN
from tests.sidecar.test_otlp_protobuf import message_field, too_deep_record
from tests.support.fakeloki import free_port
from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")


def _ship(exporter: LogRecordExporter, service: str, message: str) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"live.{message}")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        logger.warning(message, extra={"type": "OTLP_LIVE", "actorId": "usr_1"})
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def _record(message: str) -> bytes:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    return LogRecord(time_unix_nano=time.time_ns(), severity_text="ERROR",
                     body=AnyValue(string_value=message)).SerializeToString()


def test_the_sdks_otlp_exporters_reach_a_real_loki(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager,
        unique_service: str) -> None:
    http_port, grpc_port = free_port(), free_port()
    sidecar = SidecarProcess(tmp_path, [{
        "type": "http", "listen": f"127.0.0.1:{http_port}", "token": TOKEN,
        "otlp_grpc_listen": f"127.0.0.1:{grpc_port}"}],
        loki_url=loki_url, service=unique_service).start()
    try:
        auth = {"authorization": f"Bearer {TOKEN}"}
        _ship(HttpLogExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/logs", headers=auth,
                              timeout=10), unique_service, "over http protobuf")
        _ship(GrpcLogExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, headers=auth,
                              timeout=10), unique_service, "over grpc")
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage

        resource = ResourceMessage()
        resource.attributes.add(key="service.name").value.string_value = unique_service
        scope = b"".join(message_field(2, r) for r in (
            _record("first neighbour"), too_deep_record(200), _record("last neighbour")))
        body = message_field(1, message_field(1, resource.SerializeToString())
                             + message_field(2, scope))
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/logs", data=body,
            headers={"Content-Type": "application/x-protobuf",
                     "Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = ExportLogsServiceResponse.FromString(resp.read())
        assert answer.partial_success.rejected_log_records == 1

        expected = {"over http protobuf", "over grpc", "first neighbour", "last neighbour"}

        def stored() -> dict[str, dict[str, str]]:
            """message -> the labels and structured metadata Loki answers with it"""
            now = time.time_ns()
            result = query_range(loki_http, loki_url, f'{{service_name="{unique_service}"}}',
                                 now - 3600 * 10**9, now + 60 * 10**9)["data"]["result"]
            return {json.loads(line)["message"]: s["stream"]
                    for s in result for _, line in s["values"]}

        assert wait_for(lambda: set(stored()) == expected, 60), stored()
        grpc = stored()["over grpc"]
        assert (grpc["level"], grpc["type"], grpc["actor_id"]) == ("WARNING", "OTLP_LIVE", "usr_1")
        assert stored()["first neighbour"]["level"] == "ERROR"
    finally:
        assert sidecar.finish() == 0, sidecar.stderr

"""OTLP/gRPC on the HTTP source's ``otlp_grpc_listen`` (a real grpcio server on 127.0.0.1):
the same events as OTLP/HTTP, the same token and limits, gzip, partial success, the refusals
the exporters retry, and the configuration that turns it on."""

from __future__ import annotations

import gzip
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from shipper.event import LogEvent
from shipper.sidecar.config import HttpSourceConfig, SidecarConfigError, load_config
from shipper.sidecar.server import StartupError
from shipper.sidecar.sources.http import HttpSource
from shipper.sidecar.sources.otlpgrpc import SERVICE
from tests.sidecar.test_http import TOKEN, Running
from tests.sidecar.test_otlp_protobuf import record, request_of, rich_request, too_deep_record

METHOD = f"/{SERVICE}/Export"


class Client:
    """A raw gRPC client of the Export method: bytes in, the response or the error out."""

    def __init__(self, running: Running) -> None:
        self.channel = grpc.insecure_channel(running.source.grpc.address)
        self.export = self.channel.unary_unary(METHOD)

    def call(self, body: bytes, *, token: str | None = None,
             compression: Any = None) -> ExportLogsServiceResponse:
        metadata = [("authorization", f"Bearer {token}")] if token else None
        return ExportLogsServiceResponse.FromString(
            self.export(body, metadata=metadata, compression=compression, timeout=30))

    def refused(self, body: bytes, **kwargs: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            self.call(body, **kwargs)
        return info.value


@pytest.fixture
def served() -> Iterator[tuple[Running, Client]]:
    running = Running(otlp_grpc_listen="127.0.0.1:0")
    client = Client(running)
    yield running, client
    client.channel.close()
    running.source.close()


def test_grpc_gives_the_same_events_as_otlp_http_in_protobuf(
        served: tuple[Running, Client]) -> None:
    running, client = served
    body = rich_request().SerializeToString()
    assert client.call(body) == ExportLogsServiceResponse()
    over_grpc = list(running.pipeline.events)
    running.pipeline.events.clear()
    resp = running.post("/v1/logs", body, {"Content-Type": "application/x-protobuf"})
    assert resp.status == 200
    assert len(over_grpc) == 6 and over_grpc == running.pipeline.events
    assert running.source.requests[("otlp-grpc", "OK")] == 1


def test_a_gzip_compressed_call_is_read(served: tuple[Running, Client]) -> None:
    running, client = served
    client.call(request_of(record("zipped")), compression=grpc.Compression.Gzip)
    assert [e.message for e in running.pipeline.events] == ["zipped"]


def test_some_records_refused_is_ok_with_partial_success(
        served: tuple[Running, Client]) -> None:
    running, client = served
    response = client.call(request_of(record("first"), too_deep_record(200), record("last")))
    assert response.partial_success.rejected_log_records == 1
    assert response.partial_success.error_message.startswith(
        "2 log records accepted, 1 refused: resourceLogs[0].scopeLogs[0].logRecords[1]: nested")
    assert [e.message for e in running.pipeline.events] == ["first", "last"]


@pytest.mark.parametrize(("body", "named"), [
    (b"\xff" * 20, "varint longer than 64 bits"),
    (request_of(too_deep_record(200)), "0 log records accepted, 1 refused"),
    (request_of(record("a"))[:-1], "a field runs past the end of the message"),
])
def test_a_request_nothing_of_which_can_be_taken_is_invalid_argument(
        served: tuple[Running, Client], body: bytes, named: str) -> None:
    running, client = served
    error = client.refused(body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.details()
    assert running.pipeline.events == []


def test_a_message_over_max_body_bytes_is_refused_compressed_or_not() -> None:
    running = Running(otlp_grpc_listen="127.0.0.1:0", max_body_bytes=64 * 1024)
    client = Client(running)
    try:
        big = request_of(record("x" * 100_000))
        assert client.refused(big).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        bomb = request_of(record("x" * 20_000_000))  # gzip makes it about 20 kB on the wire
        assert len(gzip.compress(bomb)) < 64 * 1024
        error = client.refused(bomb, compression=grpc.Compression.Gzip)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert running.pipeline.events == []
        client.call(request_of(record("small")))  # the server still serves
        assert [e.message for e in running.pipeline.events] == ["small"]
    finally:
        client.channel.close()
        running.source.close()


def test_the_token_comes_from_the_authorization_metadata() -> None:
    running = Running(otlp_grpc_listen="127.0.0.1:0", token=TOKEN)
    client = Client(running)
    try:
        missing = client.refused(request_of(record("x")))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing authorization" in missing.details()
        wrong = client.refused(request_of(record("x")), token="not-the-token-at-all")
        assert (wrong.code(), wrong.details()) == (grpc.StatusCode.UNAUTHENTICATED,
                                                   "wrong bearer token")
        assert running.pipeline.events == []
        client.call(request_of(record("ok")), token=TOKEN)
        assert [e.message for e in running.pipeline.events] == ["ok"]
        assert running.source.requests[("otlp-grpc", "UNAUTHENTICATED")] == 2
    finally:
        client.channel.close()
        running.source.close()


def test_a_full_queue_is_unavailable_which_exporters_retry(
        served: tuple[Running, Client]) -> None:
    running, client = served
    running.full = True
    error = client.refused(request_of(record("later")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "queue is full" in error.details()
    assert running.pipeline.events == []


def test_after_stop_no_call_is_taken(served: tuple[Running, Client]) -> None:
    running, client = served
    client.call(request_of(record("before")))
    running.source.stop(0)
    assert client.refused(request_of(record("after"))).code() == grpc.StatusCode.UNAVAILABLE
    assert [e.message for e in running.pipeline.events] == ["before"]


class HeldPipeline:
    """A pipeline that holds the first submit until it is released."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.events: list[LogEvent] = []

    def submit(self, event: LogEvent) -> None:
        self.entered.set()
        assert self.release.wait(30)
        self.events.append(event)


def test_stop_lets_a_call_in_progress_finish_and_takes_no_new_one() -> None:
    pipeline = HeldPipeline()
    source = HttpSource(HttpSourceConfig(listen="127.0.0.1:0", otlp_grpc_listen="127.0.0.1:0"),
                        pipeline=pipeline, service="shop", env=None)
    source.start()
    channel = grpc.insecure_channel(source.grpc.address)
    export = channel.unary_unary(METHOD)
    answers: list[bytes] = []
    try:
        call = threading.Thread(target=lambda: answers.append(
            export(request_of(record("in flight")), timeout=30)))
        call.start()
        assert pipeline.entered.wait(30)
        server = source.grpc._server  # the grpcio server: see that its stop has begun
        stop_called = threading.Event()
        real_stop = server.stop

        def stop(grace: float) -> Any:
            event = real_stop(grace)
            stop_called.set()
            return event

        server.stop = stop
        stopping = threading.Thread(target=source.stop, args=(time.monotonic() + 30,))
        stopping.start()  # SIGTERM: the runner stops the receivers first
        assert stop_called.wait(30)
        pipeline.release.set()  # only now may the call in flight finish
        call.join(30)
        stopping.join(30)
        assert not stopping.is_alive()
        assert [ExportLogsServiceResponse.FromString(a) for a in answers] == \
            [ExportLogsServiceResponse()]
        assert [e.message for e in pipeline.events] == ["in flight"]
        with pytest.raises(grpc.RpcError) as refused:
            export(request_of(record("too late")), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        pipeline.release.set()
        channel.close()
        source.close()


def test_a_port_in_use_fails_start_up() -> None:
    running = Running(otlp_grpc_listen="127.0.0.1:0")
    try:
        with pytest.raises(StartupError, match="otlp_grpc_listen: cannot listen on"):
            Running(otlp_grpc_listen=running.source.grpc.address)
    finally:
        running.source.close()


# --------------------------------------------------------------------------- configuration


def _load(tmp_path: Path, **http: Any) -> Any:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump({"sources": [{"type": "http", **http}]}))
    return load_config(path, environ={})


def test_otlp_grpc_is_off_unless_configured(tmp_path: Path) -> None:
    assert _load(tmp_path).sources[0].otlp_grpc_listen is None
    on = _load(tmp_path, otlp_grpc_listen="127.0.0.1:4317")
    assert on.sources[0].otlp_grpc_listen == "127.0.0.1:4317"


@pytest.mark.parametrize(("http", "named"), [
    ({"listen": "127.0.0.1:3500", "otlp_grpc_listen": "127.0.0.1:3500"},
     "an address not already used by sources[0].listen"),
    ({"otlp_grpc_listen": "0.0.0.0:4317"}, "a loopback address unless token"),
    ({"otlp_grpc_listen": "4317"}, "sources[0].otlp_grpc_listen"),
])
def test_a_wrong_otlp_grpc_listen_is_a_config_error(tmp_path: Path, http: dict[str, Any],
                                                    named: str) -> None:
    with pytest.raises(SidecarConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, **http)


def test_without_grpcio_the_config_error_says_which_extra_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "grpc" else real(name, *a))
    with pytest.raises(SidecarConfigError) as info:
        _load(tmp_path, otlp_grpc_listen="127.0.0.1:4317")
    assert "sources[0].otlp_grpc_listen" in str(info.value)
    assert "pip install 'shipper[otlp-grpc]'" in str(info.value)

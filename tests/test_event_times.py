"""Every source gets the event contract's time rule: a time Loki cannot take (outside 64-bit
nanoseconds: after 2262, before 1677) is shipped at receipt time with the original kept in
``original_time``, so one such entry never makes Loki refuse the push of its neighbours.
SystemLog, the sidecar's JSON lines, HTTP ``/v1/events``, Loki push and OTLP, each through
the same pipeline into the fake Loki."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from shipper import LokiHandler, SystemLog
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.push import encode_protobuf
from shipper.event import Entry, Level
from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.formats import LineParser
from shipper.sidecar.sources.http import HttpSource
from tests.support.fakeloki import FakeLoki

YEAR_2300_NS = 10_413_792_000_000_000_000
YEAR_2300 = "2300-01-01T00:00:00Z"


def _stored(fake: FakeLoki) -> dict[str, tuple[int, dict[str, str]]]:
    """Each stored entry's message: its timestamp and structured metadata."""
    out = {}
    for stored in fake.stored():
        line = stored.line
        message = json.loads(line)["message"] if line.startswith("{") else line
        out[message] = (stored.ts, dict(stored.metadata))
    return out


def _assert_shipped_at_receipt(fake: FakeLoki, since_ns: int, original: str,
                               good: tuple[str, ...] = ("good",)) -> None:
    stored = _stored(fake)
    assert set(stored) == {*good, "year 2300"}, stored
    ts, metadata = stored["year 2300"]
    assert since_ns <= ts <= time.time_ns()
    assert metadata["original_time"] == original


@pytest.fixture()
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server


@pytest.fixture()
def pipeline(fake: FakeLoki) -> Iterator[Pipeline]:
    running = Pipeline(ShipperConfig(url=fake.url, service="sidecar", spool=False,
                                     batch_max_wait=1.0))
    yield running
    running.close(2)


@pytest.fixture()
def http_source(pipeline: Pipeline) -> Iterator[HttpSource]:
    source = HttpSource(HttpSourceConfig(listen="127.0.0.1:0"), pipeline=pipeline,
                        service="shop", env=None)
    source.start()
    yield source
    source.close()


def _post(source: HttpSource, path: str, body: Any, headers: dict[str, str] | None = None,
          ) -> urllib3.BaseHTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return urllib3.PoolManager(retries=False).request(
        "POST", f"{source.server.url}{path}", body=data,
        headers={"Content-Type": "application/json", **(headers or {})})


def test_systemlog_events_of_year_2300_reach_loki_with_their_neighbours(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = LokiHandler(fake.url, service="shop", spool=False, batch_max_wait=1.0,
                          spool_dir=str(tmp_path))
    logger = logging.getLogger(f"test.times.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    since = time.time_ns()
    try:
        slog = SystemLog(logger)
        slog.info("ORDER", "USER", "good", "u1")
        logger.info("year 2300", extra={"event_time": YEAR_2300_NS})
        assert handler.flush(timeout=10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    _assert_shipped_at_receipt(fake, since, str(YEAR_2300_NS))


def test_json_lines_of_the_sidecar(fake: FakeLoki, pipeline: Pipeline) -> None:
    parser = LineParser(format="json", service="web")
    since = time.time_ns()
    for line in ('{"message": "good"}', json.dumps({"message": "year 2300",
                                                     "createdAt": YEAR_2300})):
        pipeline.submit(parser.parse(line, None, time.time_ns()))
    assert pipeline.flush(10)
    _assert_shipped_at_receipt(fake, since, YEAR_2300)


def test_http_v1_events(fake: FakeLoki, pipeline: Pipeline, http_source: HttpSource) -> None:
    since = time.time_ns()
    answer = _post(http_source, "/v1/events", [
        {"message": "good"}, {"message": "year 2300", "createdAt": YEAR_2300}])
    assert answer.status == 202 and answer.json() == {"accepted": 2}
    assert pipeline.flush(10)
    _assert_shipped_at_receipt(fake, since, YEAR_2300)


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_loki_push(fake: FakeLoki, pipeline: Pipeline, http_source: HttpSource,
                   encoding: str) -> None:
    since = time.time_ns()
    labels = (("service_name", "web"), ("level", "INFO"))
    entries = [Entry(labels, since, "good"), Entry(labels, YEAR_2300_NS, "year 2300")]
    if encoding == "json":
        body: Any = {"streams": [{"stream": dict(labels), "values": [
            [str(e.timestamp_ns), e.line] for e in entries]}]}
        headers = None
    else:
        body, headers = encode_protobuf(entries), {"Content-Type": "application/x-protobuf"}
    assert _post(http_source, "/loki/api/v1/push", body, headers).status == 204
    assert pipeline.flush(10)
    _assert_shipped_at_receipt(fake, since, YEAR_2300)


def test_otlp_logs(fake: FakeLoki, pipeline: Pipeline, http_source: HttpSource) -> None:
    since = time.time_ns()
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": str(since), "body": {"stringValue": "good"}},
        {"timeUnixNano": str(YEAR_2300_NS), "body": {"stringValue": "year 2300"}},
    ]}]}]}
    assert _post(http_source, "/v1/logs", body).status == 200
    assert pipeline.flush(10)
    _assert_shipped_at_receipt(fake, since, YEAR_2300)


def test_a_level_label_survives_the_replaced_time() -> None:
    """The time rule changes the timestamp and adds ``original_time``: nothing else."""
    event = LineParser(format="json", service="web").parse(
        json.dumps({"message": "m", "level": "error", "createdAt": YEAR_2300}), None, 1)
    assert (event.level, event.message, event.original_time) == (Level.ERROR, "m", YEAR_2300)

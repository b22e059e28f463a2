"""Against a real Loki 3.7: records Loki could not take as they were (a time past 2262, a NaN
time, a message over the line limit, an int too long to write) arrive as entries, and the
entries pushed with them are stored too."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import urllib3

from shipper import LokiHandler
from tests.live.conftest import query_range, wait_for


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_year_2300_and_nan_times_reach_loki_with_their_neighbours(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
    encoding: str,
) -> None:
    start = time.time_ns() - 10**9
    # one batch: a long wait, so every record below goes out in the same push
    handler = LokiHandler(loki_url, service=unique_service, env="it", encoding=encoding,
                          spool_dir=str(tmp_path / "spool"), batch_max_wait=2.0,
                          max_line_bytes=4_096)
    log = logging.getLogger(f"it.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    records: dict[str, logging.LogRecord] = {}

    def emit(message: str, **extra: Any) -> None:
        record = log.makeRecord(log.name, logging.INFO, __file__, 1, message, (), None,
                                extra=extra)
        records[message] = record
        log.handle(record)

    emit("before")
    emit("year 2300", event_time=dt.datetime(2300, 1, 1, tzinfo=dt.UTC))
    emit("nan time", event_time=math.nan)
    emit("x" * 10_000)
    emit("huge int", metadata={"n": 10**5000})
    emit("after")
    assert handler.flush(timeout=20)
    stats = handler.stats()
    handler.close()
    assert stats["refused"] == {} and stats["dropped"] == {}, stats

    def fetch() -> list[dict[str, Any]] | None:
        body = query_range(loki_http, loki_url, f'{{service_name="{unique_service}"}}', start,
                           time.time_ns() + 60 * 10**9)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result if sum(len(s["values"]) for s in result) >= len(records) else None

    streams = wait_for(fetch, timeout=30)
    assert streams, f"Loki did not return {len(records)} entries for {unique_service}"
    stored = {json.loads(line)["message"][:20]: (int(ts), stream["stream"])
              for stream in streams for ts, line in stream["values"]}
    assert sorted(stored) == sorted(m[:20] for m in records)
    for message, original in (("year 2300", "2300-01-01T00:00:00+00:00"), ("nan time", "nan")):
        ts, labels = stored[message]
        assert ts == round(records[message].created * 1e6) * 1000
        assert labels["original_time"] == original
    assert "original_time" not in stored["before"][1]


def test_a_year_2300_event_of_the_sidecar_reaches_loki_with_its_neighbours(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
) -> None:
    from shipper.config import ShipperConfig
    from shipper.delivery.pipeline import Pipeline
    from shipper.sidecar.config import HttpSourceConfig
    from shipper.sidecar.sources.http import HttpSource

    start = time.time_ns() - 10**9
    pipeline = Pipeline(ShipperConfig(url=loki_url, service=unique_service, spool=False,
                                      batch_max_wait=2.0))
    source = HttpSource(HttpSourceConfig(listen="127.0.0.1:0"), pipeline=pipeline,
                        service=unique_service, env=None)
    source.start()
    try:
        answer = urllib3.PoolManager(retries=False).request(
            "POST", f"{source.server.url}/v1/events", headers={"Content-Type": "application/json"},
            body=json.dumps([{"message": "before"},
                             {"message": "year 2300", "createdAt": "2300-01-01T00:00:00Z"},
                             {"message": "after"}]).encode())
        assert answer.status == 202
        assert pipeline.flush(20)
        stats = pipeline.stats()
    finally:
        source.close()
        pipeline.close(5)
    assert stats["refused"] == {} and stats["dropped"] == {}, stats

    def fetch() -> list[dict[str, Any]] | None:
        body = query_range(loki_http, loki_url, f'{{service_name="{unique_service}"}}', start,
                           time.time_ns() + 60 * 10**9)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result if sum(len(s["values"]) for s in result) >= 3 else None

    streams = wait_for(fetch, timeout=30)
    assert streams, f"Loki did not return 3 entries for {unique_service}"
    stored = {json.loads(line)["message"]: stream["stream"]
              for stream in streams for _, line in stream["values"]}
    assert sorted(stored) == ["after", "before", "year 2300"]
    assert stored["year 2300"]["original_time"] == "2300-01-01T00:00:00Z"

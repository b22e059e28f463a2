"""Against a real Loki 3.7: what the handler sends comes back exactly as sent."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import urllib3

from shipper import LokiHandler, SystemLog
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient
from tests.live.conftest import query_range, wait_for


def _handler(loki_url: str, service: str, tmp_path: Path, **kw: Any) -> LokiHandler:
    return LokiHandler(loki_url, service=service, env="it", spool_dir=str(tmp_path / "spool"),
                       batch_max_wait=0.1, **kw)


def _streams(pool: urllib3.PoolManager, loki_url: str, service: str, start_ns: int,
             expect: int) -> list[dict[str, Any]]:
    def fetch() -> list[dict[str, Any]] | None:
        body = query_range(pool, loki_url, f'{{service_name="{service}"}}', start_ns,
                           time.time_ns() + 60 * 10**9)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result if sum(len(s["values"]) for s in result) >= expect else None

    result = wait_for(fetch, timeout=30)
    assert result, f"Loki did not return {expect} entries for {service}"
    return list(result)


@pytest.mark.parametrize("encoding", ["json", "json+gzip", "protobuf"])
def test_labels_metadata_line_and_timestamp_come_back_exactly(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
    encoding: str,
) -> None:
    start = time.time_ns() - 10**9
    handler = _handler(loki_url, unique_service, tmp_path, encoding=encoding)
    log = logging.getLogger(f"it.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1, "User login failed é", (),
                            None, extra={"actor": "USER", "type": "AUTH_LOGIN",
                                         "actor_id": "user_42", "trace_id": "trace-abc",
                                         "metadata": {"ip": "203.0.113.9", "success": False}})
    log.handle(record)
    assert handler.flush(timeout=20)
    handler.close()
    [stream] = _streams(loki_http, loki_url, unique_service, start, 1)
    labels = stream["stream"]
    assert {k: labels[k] for k in ("service_name", "env", "level", "actor", "type")} == {
        "service_name": unique_service, "env": "it", "level": "WARNING", "actor": "USER",
        "type": "AUTH_LOGIN"}
    # structured metadata comes back merged into the stream, beside Loki's detected_level
    assert (labels["actor_id"], labels["trace_id"], labels["logger"]) == (
        "user_42", "trace-abc", log.name)
    [(ts, line)] = [(v[0], v[1]) for v in stream["values"]]
    assert int(ts) == round(record.created * 1e6) * 1000
    assert json.loads(line) == {"message": "User login failed é",
                                "metadata": {"ip": "203.0.113.9", "success": False}}
    assert handler.stats()["sent"] == 1


def test_systemlog_events_are_queryable_by_contract_labels(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path
) -> None:
    start = time.time_ns() - 10**9
    handler = _handler(loki_url, unique_service, tmp_path)
    logger = logging.getLogger(f"it.{uuid.uuid4().hex[:6]}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    slog = SystemLog(logger)
    slog.critical("DATA_CORRUPTION", "SYSTEM", "Integrity check failed", None,
                  {"table": "payments"})
    slog.webhook("stripe", "payout.failed", False)
    handler.close()
    _streams(loki_http, loki_url, unique_service, start, 2)
    client = LokiClient(ShipperConfig(url=loki_url, spool=False))
    data = client.query_range(
        f'{{service_name="{unique_service}", level="CRITICAL"}} | json', start,
        time.time_ns() + 10**9)
    [stream] = data["result"]
    assert stream["stream"]["metadata_table"] == "payments"
    assert stream["stream"]["type"] == "DATA_CORRUPTION"


def test_refused_entries_are_reported_and_the_rest_stored(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path
) -> None:
    start = time.time_ns() - 10**9
    handler = _handler(loki_url, unique_service, tmp_path)
    log = logging.getLogger(f"it.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)  # else root's WARNING applies and nothing is emitted
    log.info("fresh")
    log.info("three weeks old", extra={"event_time": time.time() - 21 * 86400})
    handler.close()
    [stream] = _streams(loki_http, loki_url, unique_service, start, 1)
    assert [json.loads(v[1])["message"] for v in stream["values"]] == ["fresh"]
    assert handler.stats()["refused"] == {"too_old": 1}

"""Against a real Loki 3.7 at its default limits: flush means delivered.

* a 20,000-event burst draws 429s (4 MB/s): flush returns True only once Loki holds every
  event, and nothing went to the spool;
* the spool of a predecessor killed with SIGKILL is delivered by the next process's flush.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from shipper import LokiHandler
from shipper.delivery.spool import spool_status
from tests.delivery.test_delivery import spool_then_sigkill
from tests.live.conftest import wait_for
from tests.support.fakeloki import free_port


def _count(pool: urllib3.PoolManager, loki_url: str, service: str) -> int:
    resp = pool.request("GET", f"{loki_url}/loki/api/v1/query", fields={
        "query": f'sum(count_over_time({{service_name="{service}"}}[1h]))',
        "time": str(time.time_ns() + 60 * 10**9),
    })
    assert resp.status == 200, resp.data[:300]
    result = resp.json()["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def _wait_count(pool: urllib3.PoolManager, loki_url: str, service: str, n: int) -> int:
    found = wait_for(lambda: _count(pool, loki_url, service) >= n, timeout=30)
    del found
    return _count(pool, loki_url, service)


def test_a_20000_event_burst_at_default_limits_is_all_stored_when_flush_returns(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    handler = LokiHandler(loki_url, service=unique_service, spool_dir=str(spool_dir))
    log = logging.getLogger(f"it.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        for i in range(20_000):
            log.info("burst event %05d %s", i, "x" * 420,
                     extra={"type": "BURST", "actor_id": f"u{i % 50}"})
        assert handler.flush(timeout=240) is True
        stats = handler.stats()
    finally:
        handler.close()
    assert (stats["sent"], stats["spooled"], stats["dropped_total"]) == (20_000, 0, 0)
    assert spool_status(spool_dir).records == 0
    assert _wait_count(loki_http, loki_url, unique_service, 20_000) == 20_000


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_next_process_delivers_a_sigkilled_predecessors_spool_before_flush_returns(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    # the first process runs while Loki is down (nothing listens on that port)
    spool_then_sigkill(f"http://127.0.0.1:{free_port()}", unique_service, spool_dir, 20_000)
    successor = LokiHandler(loki_url, service=unique_service, spool_dir=str(spool_dir))
    try:
        assert successor.flush(timeout=120) is True
    finally:
        successor.close()
    assert spool_status(spool_dir).records == 0
    assert _wait_count(loki_http, loki_url, unique_service, 20_000) == 20_000

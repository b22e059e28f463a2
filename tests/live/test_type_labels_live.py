"""The ``type`` label against a real Loki 3.7: one service's made-up types never fold another's
AUTH_FAILED, and an app's LOGS_DELETED is stored as APP_LOGS_DELETED, inside what a deletion
matches."""

from __future__ import annotations

import json
import logging
import time
import uuid

import urllib3

from shipper import LokiHandler
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.loki.logql import Filters, log_query
from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.sources.http import HttpSource
from tests.live.conftest import wait_for

NS = 1_000_000_000


def _count(pool: urllib3.PoolManager, loki_url: str, selector: str) -> int:
    resp = pool.request("GET", f"{loki_url}/loki/api/v1/query", fields={
        "query": f"sum(count_over_time({selector}[1h]))", "time": str(time.time_ns())})
    assert resp.status == 200, resp.data[:300]
    result = json.loads(resp.data)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def _types(pool: urllib3.PoolManager, loki_url: str, service: str) -> dict[str, int]:
    resp = pool.request("GET", f"{loki_url}/loki/api/v1/query", fields={
        "query": f'sum by (type) (count_over_time({{service_name="{service}"}}[1h]))',
        "time": str(time.time_ns())})
    assert resp.status == 200, resp.data[:300]
    return {r["metric"]["type"]: int(float(r["value"][1]))
            for r in json.loads(resp.data)["data"]["result"]}


def test_a_noisy_services_made_up_types_leave_another_services_auth_failed_alone(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str) -> None:
    noisy, shop = f"{unique_service}-noisy", f"{unique_service}-shop"
    pipeline = Pipeline(ShipperConfig(url=loki_url, service="sidecar", spool=False,
                                      batch_max_wait=0.05))
    source = HttpSource(HttpSourceConfig(listen="127.0.0.1:0"), pipeline=pipeline,
                        service="default", env=None)
    source.start()
    http = urllib3.PoolManager(retries=False)

    def push(service: str, type_: str, ts: int) -> None:
        body = {"streams": [{"stream": {"service_name": service, "type": type_},
                             "values": [[str(ts), json.dumps({"message": type_})]]}]}
        resp = http.request("POST", f"{source.server.url}/loki/api/v1/push",
                            body=json.dumps(body).encode(),
                            headers={"Content-Type": "application/json"})
        assert resp.status == 204, resp.data

    now = time.time_ns() - 30 * NS
    try:
        for i in range(150):
            push(noisy, f"MADE_UP_{i}", now + i)
        push(shop, "AUTH_FAILED", now + 1000)
        assert pipeline.flush(30)
    finally:
        source.close()
        pipeline.close(10)
    assert wait_for(lambda: _types(loki_http, loki_url, shop) == {"AUTH_FAILED": 1}), \
        _types(loki_http, loki_url, shop)
    noisy_types = wait_for(lambda: (t := _types(loki_http, loki_url, noisy))
                           and sum(t.values()) == 150 and t)
    assert noisy_types["OTHER"] == 50 and len(noisy_types) == 101


def test_an_apps_logs_deleted_is_stored_renamed_and_a_deletion_matches_it(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str) -> None:
    handler = LokiHandler(loki_url, service=unique_service, spool=False, batch_max_wait=0.05)
    log = logging.getLogger(f"it.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.critical("I deleted the logs", extra={"type": "logs_deleted"})
        assert handler.flush(timeout=30)
    finally:
        log.removeHandler(handler)
        handler.close()
    service = f'service_name="{unique_service}"'
    assert wait_for(lambda: _count(loki_http, loki_url, f'{{{service}, type="APP_LOGS_DELETED"}}')
                    == 1)
    assert _count(loki_http, loki_url, f'{{{service}, type="LOGS_DELETED"}}') == 0
    # the query `shipper delete --service <it>` deletes with matches it
    deletion = log_query(Filters.create(services=[unique_service]), keep_audit=True)
    assert _count(loki_http, loki_url, deletion) == 1

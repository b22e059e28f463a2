"""The heartbeats, the Shipping health dashboard and its alert rules on a real Loki 3.7.

Four services get 30 minutes of SHIPPER_HEALTH heartbeats, one a minute, built by the shipper's
own :class:`~shipper.delivery.health.Heartbeat` and stamped over the last half hour: a healthy
one; a troubled one (events dropped, entries refused, a spool growing, a sidecar file 50 MiB
behind); one that went silent 15 minutes ago without a last heartbeat; one that stopped cleanly
15 minutes ago (its last heartbeat final). Every rule of the ``shipper-health`` group is
evaluated as Grafana evaluates it (A at the evaluation time, B = last, C = the threshold) at
each minute of its ``for``: it fires where the data was made to trip it, and stays quiet on the
healthy run. A real pipeline with heartbeats on fills every panel of the dashboard.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from shipper.config import ShipperConfig
from shipper.delivery.health import Heartbeat, counters
from shipper.delivery.pipeline import Pipeline
from shipper.event import LogEvent
from tests.live.conftest import wait_for
from tests.live.test_alert_rules_on_demo_data import _at, assert_rule, wait_queryable
from tests.live.test_grafana_queries import _get, _instant, _range, _vector
from tests.support import _grafana as g

NS = 1_000_000_000
MINUTES = 30
MIB = 2**20
HEALTH_RULES = ("shipper-events-dropped", "shipper-entries-refused", "shipper-spool-growing",
                "shipper-heartbeats-stopped", "shipper-sidecar-lag")
#: which rules each run was made to trip
TRIPS = {
    "healthy": set(),
    "troubled": {"shipper-events-dropped", "shipper-entries-refused", "shipper-spool-growing",
                 "shipper-sidecar-lag"},
    "silent": {"shipper-heartbeats-stopped"},
    "stopped": set(),
}


@dataclasses.dataclass(frozen=True)
class Run:
    service: str
    beats: int


def _beats(kind: str, service: str, now_ns: int) -> list[LogEvent]:
    """A minute of heartbeats each, as one process of ``service`` ships them."""
    beat = Heartbeat(60, service=service, env=None, now=0.0)
    beat.host = f"{kind}-host"
    last_minute = MINUTES if kind in ("healthy", "troubled") else MINUTES - 15
    events = []
    counts = {"accepted": 0, "sent": 0, "heartbeats": 0}
    dropped: dict[str, int] = {}
    refused: dict[str, int] = {}
    for minute in range(last_minute + 1):
        counts = {"accepted": counts["accepted"] + 100, "sent": counts["sent"] + 100,
                  "heartbeats": counts["heartbeats"] + 1}
        state: dict[str, Any] = {"queued": 0, "spool_bytes": 0, "spool_oldest_age_s": 0.0,
                                 "offline": False}
        if kind == "troubled":
            dropped = {"queue_full": dropped.get("queue_full", 0) + 2}
            refused = {"too_old": refused.get("too_old", 0) + 1}
            state.update(spool_bytes=minute * MIB, spool_oldest_age_s=float(minute * 60),
                         role="sidecar", lag_bytes=60 * MIB, lag_files=2,
                         lag_max_path="/var/log/app/big.log", lag_max_bytes=50 * MIB)
        at = now_ns - (MINUTES - minute) * 60 * NS - 30 * NS
        final = kind == "stopped" and minute == last_minute
        events.append(beat.event(counters(counts, dropped, refused), state, final=final,
                                 now=float(minute * 60), timestamp_ns=at))
    return events


@pytest.fixture(scope="module")
def runs(loki_http: urllib3.PoolManager, loki_url: str) -> Iterator[dict[str, Run]]:
    now = time.time_ns()
    out: dict[str, Run] = {}
    for kind in TRIPS:
        service = f"it28-{kind}-{uuid.uuid4().hex[:10]}"
        events = _beats(kind, service, now)
        pipeline = Pipeline(ShipperConfig(url=loki_url, service=service, spool=False,
                                          health_interval=0))
        try:
            for event in events:
                pipeline.submit(event)
            assert pipeline.flush(60)
            stats = pipeline.stats()
            assert stats["sent"] == len(events) and stats["dropped_total"] == 0, stats
        finally:
            pipeline.close()
        out[kind] = Run(service, len(events))
    for run in out.values():
        wait_queryable(loki_http, loki_url, run.service, run.beats, "1h")
    yield out


@pytest.mark.parametrize("uid", HEALTH_RULES)
def test_health_rule_fires_where_tripped_for_its_whole_wait_and_stays_quiet_elsewhere(
    uid: str, runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    rule = next(r for r in g.alert_rules() if r["uid"] == uid)
    now = time.time_ns()
    for kind, run in runs.items():
        assert_rule(loki_http, loki_url, rule, run.service, fires=uid in TRIPS[kind],
                    now_ns=now, what=kind)


def test_the_rules_name_the_service_and_host_they_fire_for(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    by_uid = {r["uid"]: r for r in g.alert_rules()}
    run = runs["troubled"]
    now = time.time_ns()
    dropped = _at(loki_http, loki_url, g.scope_rule_expr(
        g.rule_expr(by_uid["shipper-events-dropped"]), run.service), now, "dropped")
    # five heartbeats of the last 5 minutes, 2 dropped each
    assert dropped == {(("host", "troubled-host"), ("service_name", run.service)): 10.0}
    lag = _at(loki_http, loki_url, g.scope_rule_expr(
        g.rule_expr(by_uid["shipper-sidecar-lag"]), run.service), now, "lag")
    assert list(lag.values()) == [50.0 * MIB]


def _panel_queries(service: str) -> list[g.PanelQuery]:
    dash = g.dashboards()["shipper-shipping-health"]
    variables = g.dashboard_variables(dash)
    builtins = {**g.BUILTIN_VALUES, "__range": "1h", "__auto": "1m"}
    return [dataclasses.replace(q, expr=g.interpolate(q.expr, variables,
                                                      {"service": [service]}, builtins))
            for q in g.panel_queries(dash)]


def test_every_panel_answers_and_the_troubled_run_fills_every_one(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    start = time.time_ns() - 3600 * NS
    for q in _panel_queries(runs["troubled"].service):
        what = f"{q.panel} / {q.ref}"
        _get(loki_http, loki_url, "/loki/api/v1/format_query", {"query": q.expr}, what)
        body = (_instant(loki_http, loki_url, q.expr, what) if q.instant
                else _range(loki_http, loki_url, q.expr, start, what))
        assert body["status"] == "success", what
        assert body["data"]["result"], f"{what} is empty on the troubled run"


def test_last_seen_lists_every_process_with_its_last_heartbeat(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    for kind in ("healthy", "silent"):
        (q,) = [q for q in _panel_queries(runs[kind].service) if q.panel == "Processes: last seen"]
        rows = _vector(_instant(loki_http, loki_url, q.expr, q.panel))
        ((labels, seen_ms),) = rows.items()
        assert dict(labels)["host"] == f"{kind}-host" and dict(labels)["role"] == "app"
        age_min = (time.time_ns() / 1e6 - seen_ms) / 60000
        assert (age_min < 2) if kind == "healthy" else (14 < age_min < 17), (kind, age_min)


def test_a_real_pipelines_heartbeats_reach_loki_and_fill_the_dashboard(
    loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    service = f"it28-live-{uuid.uuid4().hex[:10]}"
    pipeline = Pipeline(ShipperConfig(url=loki_url, service=service, spool=False,
                                      health_interval=1))
    try:
        for i in range(10):
            pipeline.submit(LogEvent.create(service=service, level="INFO", message=f"e{i}",
                                            timestamp_ns=time.time_ns()))
        assert wait_for(lambda: pipeline.stats()["heartbeats"] >= 3, timeout=30)
    finally:
        pipeline.close()
    beats = f'sum(count_over_time({{service_name="{service}", type="SHIPPER_HEALTH"}}[10m]))'
    accepted = (f'sum(sum_over_time({{service_name="{service}", type="SHIPPER_HEALTH"}} '
                f'| json a="metadata.accepted" | unwrap a | __error__="" [10m]))')
    assert wait_for(lambda: list(_vector(_instant(loki_http, loki_url, accepted, "a")).values())
                    == [10.0], timeout=60)
    assert next(iter(_vector(_instant(loki_http, loki_url, beats, "beats")).values())) >= 4
    start = time.time_ns() - 600 * NS
    for q in _panel_queries(service):
        if q.panel in ("Sidecar lag per file", "Heartbeats with trouble"):
            continue  # an app process has no files, and nothing went wrong
        body = (_instant(loki_http, loki_url, q.expr, q.panel) if q.instant
                else _range(loki_http, loki_url, q.expr, start, q.panel))
        assert body["data"]["result"], f"{q.panel} / {q.ref} is empty"

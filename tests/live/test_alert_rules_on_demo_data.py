"""The Performance dashboard and the seeds' alert rules on demo traffic, in a real Loki 3.7.

Two services get 12 minutes of ``shipper demo`` traffic at 5 events/s, stamped over the last
12 minutes, and the same stretch one day earlier (what ``shipper demo --scenario incident``
writes before its live part): one normal, one with ``--scenario incident``. Every panel query of
the Performance dashboard (and the Overview's Top error types) runs on both and shows the
incident; every alert rule's query is evaluated as Grafana evaluates it - A at the evaluation
time, B = last, C = the threshold - at each minute of the rule's ``for``: above the threshold
for the incident, below it for normal traffic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from shipper import LokiHandler
from shipper.cli.demo import DemoEmitter, EventTimeFilter, live_events, yesterday_events
from tests.live.conftest import wait_for
from tests.live.test_grafana_queries import _get, _instant, _range, _vector
from tests.support import _grafana as g

NS = 1_000_000_000
SPAN_S = 720
RATE = 5.0
#: the rules this issue adds; each must fire on the incident and stay quiet on normal traffic
NEW_RULES = ("shipper-p95-latency", "shipper-http-5xx-share", "shipper-error-rate-elevated",
             "shipper-payment-failures", "shipper-user-activity-drop")


@dataclasses.dataclass(frozen=True)
class Run:
    service: str
    start_ns: int
    live: int


def _write(loki_url: str, scenario: str, seed: int) -> Run:
    """Demo traffic of one scenario, as ``shipper demo`` logs it, under a service of its own."""
    service = f"it-{scenario}-{uuid.uuid4().hex[:10]}"
    rng = random.Random(seed)
    start = time.time_ns() - SPAN_S * NS
    day_before = yesterday_events(rng, start_ns=start, seconds=SPAN_S + 60, rate=RATE)
    count = int(SPAN_S * RATE)
    live = [dataclasses.replace(e, time_ns=start + int(i * NS / RATE))
            for i, e in enumerate(live_events(rng, count, rate=RATE, scenario=scenario))]
    base = f"it16_{scenario}_{seed}"
    logger = logging.getLogger(base)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = LokiHandler(loki_url, service=service, spool=False)
    handler.addFilter(EventTimeFilter())
    logger.addHandler(handler)
    try:
        emitter = DemoEmitter(base)
        for event in day_before:  # a stream takes no entries far behind its newest one
            emitter.emit(event)
        assert handler.flush(60)
        for event in live:
            emitter.emit(event)
        assert handler.flush(60)
        stats = handler.stats()
        assert stats["refused_total"] == 0 and stats["dropped_total"] == 0, stats
    finally:
        logger.removeHandler(handler)
        handler.close()
    return Run(service, start, len(live))


def wait_queryable(pool: urllib3.PoolManager, loki_url: str, service: str, events: int,
                   window: str) -> None:
    """Until a count over the last ``window`` finds exactly ``events`` of ``service``."""
    count = f'sum(count_over_time({{service_name="{service}"}}[{window}]))'

    def queryable() -> bool:
        return list(_vector(_instant(pool, loki_url, count, "count")).values()) == [
            float(events)]

    assert wait_for(queryable, timeout=60), f"{service}: the events never all arrived"


@pytest.fixture(scope="module")
def runs(loki_http: urllib3.PoolManager, loki_url: str) -> Iterator[dict[str, Run]]:
    out = {"normal": _write(loki_url, "normal", 20), "incident": _write(loki_url, "incident", 21)}
    for run in out.values():
        wait_queryable(loki_http, loki_url, run.service, run.live, "15m")
    yield out


def _at(pool: urllib3.PoolManager, loki_url: str, query: str, at_ns: int,
        what: str) -> dict[tuple[tuple[str, str], ...], float]:
    return _vector(_get(pool, loki_url, "/loki/api/v1/query",
                        {"query": query, "time": str(at_ns)}, what))


def _evaluations(rule: dict[str, Any]) -> list[int]:
    """Minutes back from now at which the rule must hold to fire: now, and each minute of its
    ``for``."""
    wait = rule["for"]
    minutes = int(wait[:-1]) * (60 if wait.endswith("h") else 1) if wait.endswith(("m", "h")) \
        else 0
    return list(range(minutes + 1))


def assert_rule(pool: urllib3.PoolManager, loki_url: str, rule: dict[str, Any], service: str,
                *, fires: bool, now_ns: int, what: str) -> None:
    """Evaluate the rule for ``service`` as Grafana does - A at the evaluation time, B = last
    of A's instant value per series, C = the threshold - now and at each minute of its
    ``for``: one series above the threshold every time when it ``fires``; else every series
    at or below it, or no data (which is OK)."""
    uid, threshold = rule["uid"], g.rule_threshold(rule)
    expr = g.scope_rule_expr(g.rule_expr(rule), service)
    for minutes in _evaluations(rule):
        series = _at(pool, loki_url, expr, now_ns - minutes * 60 * NS,
                     f"{uid} {what} -{minutes}m")
        values = list(series.values())
        if fires:
            assert len(values) == 1, (uid, what, minutes, series)
            assert values[0] > threshold, (uid, what, f"-{minutes}m", values[0], threshold)
        else:
            assert all(v <= threshold for v in values), (uid, what, f"-{minutes}m", values)


@pytest.mark.parametrize("uid", NEW_RULES)
def test_rule_fires_on_the_incident_for_its_whole_wait_and_never_on_normal_traffic(
    uid: str, runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    rule = next(r for r in g.alert_rules() if r["uid"] == uid)
    now = time.time_ns()
    for scenario, run in runs.items():
        # normal traffic: below the threshold, or no data (too few requests or payments)
        assert_rule(loki_http, loki_url, rule, run.service, fires=scenario == "incident",
                    now_ns=now, what=scenario)


def test_the_incident_keeps_the_seeds_older_rules_meaningful(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    by_uid = {r["uid"]: r for r in g.alert_rules()}
    now = time.time_ns()

    def value(uid: str, scenario: str) -> list[float]:
        expr = g.scope_rule_expr(g.rule_expr(by_uid[uid]), runs[scenario].service)
        return list(_at(loki_http, loki_url, expr, now, uid).values())

    # the acute error-rate rule (5%) fires on the incident too, and neither does on normal days
    assert value("shipper-error-rate", "incident")[0] > g.rule_threshold(
        by_uid["shipper-error-rate"])
    assert value("shipper-error-rate", "normal")[0] < g.rule_threshold(
        by_uid["shipper-error-rate-elevated"])


def _filled(uid: str, service: str) -> list[g.PanelQuery]:
    dash = g.dashboards()[uid]
    variables = g.dashboard_variables(dash)
    builtins = {**g.BUILTIN_VALUES, "__range": "15m", "__auto": "1m"}
    return [g.PanelQuery(q.dashboard, q.panel, q.ref,
                         g.interpolate(q.expr, variables, {"service": [service]}, builtins),
                         q.instant, q.source)
            for q in g.panel_queries(dash)]


def _answer(pool: urllib3.PoolManager, loki_url: str, q: g.PanelQuery,
            run: Run) -> dict[str, Any]:
    what = f"{q.dashboard} / {q.panel} / {q.ref}"
    _get(pool, loki_url, "/loki/api/v1/format_query", {"query": q.expr}, what)
    if q.instant:
        return _instant(pool, loki_url, q.expr, what)
    return _range(pool, loki_url, q.expr, run.start_ns, what)


def test_every_performance_panel_answers_and_the_incident_fills_every_one(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    queries = [*_filled("shipper-performance", runs["incident"].service),
               *[q for q in _filled("shipper-overview", runs["incident"].service)
                 if q.panel == "Top error types"]]
    assert len(queries) >= 15
    for q in queries:
        body = _answer(loki_http, loki_url, q, runs["incident"])
        assert body["status"] == "success"
        assert body["data"]["result"], f"{q.panel} / {q.ref} is empty on the incident"
    for q in _filled("shipper-performance", runs["normal"].service):
        assert _answer(loki_http, loki_url, q, runs["normal"])["status"] == "success"


def test_latency_panels_read_routes_and_the_slow_requests_carry_trace_ids(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    queries = {(q.panel, q.ref): q for q in _filled("shipper-performance",
                                                   runs["incident"].service)}
    run = runs["incident"]
    p95 = _vector(_answer(loki_http, loki_url, queries[("Slowest routes", "A")], run))
    routes = {dict(labels)["route"]: value for labels, value in p95.items()}
    assert "/api/bookings" in routes and "/api/search" in routes
    assert "(no route)" in routes  # the 404 probes matched no route
    assert max(routes.values()) > 2000
    failing = _vector(_answer(loki_http, loki_url, queries[("Failing routes", "A")], run))
    assert 1 <= len(failing) <= 10
    assert all(dict(labels)["route"] for labels in failing)
    slow = _answer(loki_http, loki_url, queries[("Slow requests", "A")], run)
    entries = [(s["stream"], v[1]) for s in slow["data"]["result"] for v in s["values"]]
    assert entries
    for labels, line in entries:
        assert len(labels["trace_id"]) == 32 and float(labels["duration_ms"]) > 1000
        assert line.startswith(labels["method"] + " /")


def test_the_digest_reports_the_incident_with_the_dashboards_numbers(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shipper.cli.main import main
    from shipper.cli.report import QUERIES, fill

    run = runs["incident"]
    code = main(["report", "--url", loki_url, "--service", run.service, "--since", "1h",
                 "--json"])
    assert code == 0
    digest = json.loads(capsys.readouterr().out)
    assert sum(digest["levels"].values()) == run.live  # the day before is out of the hour
    assert digest["levels"]["ERROR"] > 0.05 * run.live
    assert digest["p95_ms"][run.service] > 2000
    assert digest["failing_routes"] and digest["error_types"]
    assert "PAYMENT_FAILED" in [t for t, _ in digest["error_types"]]
    # the same numbers as the panels, whose queries the digest fills in the way Grafana does
    panel = {q.panel: q for q in _filled("shipper-overview", run.service)}["Top error types"]
    assert panel.expr.replace("[15m]", "[1h]") == fill(
        QUERIES["error_types"].expr, services=[run.service], span_s=3600)
    by_type = {dict(k)["type"]: v for k, v in _vector(_instant(
        loki_http, loki_url, panel.expr.replace("[15m]", "[1h]"), "top error types")).items()}
    assert {t: float(n) for t, n in digest["error_types"]} == by_type


def test_a_slow_requests_trace_id_opens_every_event_of_that_request_in_system_logs(
    runs: dict[str, Run], loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    run = runs["incident"]
    slow = _answer(loki_http, loki_url, {(q.panel, q.ref): q for q in _filled(
        "shipper-performance", run.service)}[("Slow requests", "A")], run)
    trace_ids = {s["stream"]["trace_id"] for s in slow["data"]["result"]}
    assert trace_ids
    dash = g.dashboards()["shipper-system-logs"]
    variables = g.dashboard_variables(dash)
    events = next(q for q in g.panel_queries(dash) if q.panel == "Events")
    for trace_id in sorted(trace_ids)[:5]:
        # what the link sets: var-service and var-trace_id; every other filter stays "All"
        values: dict[str, g.Value] = {
            name: ("" if var.type == "textbox" else g.ALL) for name, var in variables.items()}
        values.update(service=[run.service], trace_id=trace_id)
        expr = g.interpolate(events.expr, variables, values,
                             {**g.BUILTIN_VALUES, "__range": "15m", "__auto": "1m"})
        body = _range(loki_http, loki_url, expr, run.start_ns, "System logs / Events")
        found = [(s["stream"]["type"], s["stream"]["trace_id"])
                 for s in body["data"]["result"] for _ in s["values"]]
        assert {t for _, t in found} == {trace_id}
        types = [t for t, _ in found]
        assert "HTTP_REQUEST" in types and "SLOW_REQUEST" in types

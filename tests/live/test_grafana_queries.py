"""Every Grafana panel query and alert-rule query, run against a real Loki 3.7 at LOKI_URL.

A known set of events is pushed under a service name of its own. The dashboard queries are
filled in as Grafana fills them (service = that service, every other filter "All" unless a test
sets it) and the rule queries are limited to that service, so parallel runs do not see each
other. Every query must parse in Loki (``/loki/api/v1/format_query``), answer 200, and give the
numbers the pushed events imply.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import urllib3

from tests.live.conftest import push_raw, wait_for
from tests.support import _grafana as g

#: A message made of everything that breaks naively built queries.
ODD_MESSAGE = 'He said "hi" and `tick` (a+b)*[x] \\path 100% {{ .x }} ünï'
ATTACKER = "u-attacker"
ATTACKER_IP = "203.0.113.9"


@dataclass(frozen=True)
class Event:
    level: str
    actor: str
    type: str
    message: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    actor_id: str | None = None
    trace_id: str | None = None
    exception: str | None = None
    logger: str | None = None


def _known_events() -> list[Event]:
    events = [
        Event("INFO", "SYSTEM", "HTTP_REQUEST", "GET /health 200",
              {"method": "GET", "path": "/health", "status": 200, "duration_ms": 3}),
        Event("INFO", "USER", "PROFILE_UPDATED", "user updated profile", actor_id="u-1"),
    ]
    events += [
        Event("WARNING", "USER", "AUTH_LOGIN", "Auth login failed",
              {"ip": ATTACKER_IP, "success": False}, actor_id=ATTACKER,
              logger="shop.auth.login")
        for _ in range(11)
    ]
    events += [
        Event("INFO", "USER", "AUTH_LOGIN", "Auth login succeeded",
              {"ip": "198.51.100.7", "success": True}, actor_id="u-1", logger="shop.auth")
        for _ in range(2)
    ]
    webhook = {"provider": "stripe", "event_type": "payment_intent.succeeded"}
    events += [
        Event("ERROR", "SYSTEM", "WEBHOOK_PAYMENT_INTENT_SUCCEEDED",
              "Webhook stripe payment_intent.succeeded failed", {**webhook, "success": False})
        for _ in range(6)
    ]
    events += [
        Event("INFO", "SYSTEM", "WEBHOOK_PAYMENT_INTENT_SUCCEEDED",
              "Webhook stripe payment_intent.succeeded processed", {**webhook, "success": True}),
        Event("ERROR", "SYSTEM", "API_ERROR", "/api/orders: boom",
              {"endpoint": "/api/orders", "error_type": "ValueError"},
              exception="Traceback (most recent call last):\nValueError: boom"),
        Event("INFO", "ADMIN", "USER_BANNED", "Admin banned user u-9", {"target": "u-9"},
              actor_id="admin-1", logger="shop.authz"),
        # what `shipper delete` logs (shipper/admin/delete.py)
        Event("WARNING", "ADMIN", "LOGS_DELETED", "admin-2 deleted 3 log entries",
              {"query": '{service_name=~"x", type!="LOGS_DELETED"}', "count": 3,
               "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z",
               "request_id": "ecba278e"}, actor_id="admin-2", logger="shipper.cli.admin"),
        Event("INFO", "SYSTEM", "LOG", ODD_MESSAGE, trace_id="t-odd"),
    ]
    return events


def _line(ev: Event) -> str:
    body: dict[str, Any] = {"message": ev.message, "metadata": dict(ev.metadata)}
    if ev.exception is not None:
        body["exception"] = ev.exception
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _push(pool: urllib3.PoolManager, loki_url: str, service: str,
          events: Sequence[Event], start_ns: int, step_ns: int = 10_000_000) -> list[int]:
    """Push events as the shipper does (contract labels, structured metadata, JSON line)."""
    streams: dict[tuple[str, str, str], list[list[Any]]] = {}
    stamps = []
    for i, ev in enumerate(events):
        ts = start_ns + i * step_ns
        stamps.append(ts)
        metadata = {k: v for k, v in (("actor_id", ev.actor_id), ("trace_id", ev.trace_id),
                                      ("logger", ev.logger)) if v is not None}
        value: list[Any] = [str(ts), _line(ev)]
        if metadata:
            value.append(metadata)
        streams.setdefault((ev.level, ev.actor, ev.type), []).append(value)
    push_raw(pool, loki_url, [
        {"stream": {"service_name": service, "level": level, "actor": actor, "type": type_},
         "values": values}
        for (level, actor, type_), values in streams.items()
    ])
    return stamps


def _get(pool: urllib3.PoolManager, loki_url: str, path: str, fields: Mapping[str, str],
         what: str) -> dict[str, Any]:
    resp = pool.request("GET", f"{loki_url}{path}", fields=dict(fields))
    assert resp.status == 200, f"{what}: {path} answered {resp.status}: {resp.data[:500]!r}"
    body: dict[str, Any] = json.loads(resp.data)
    return body


def _instant(pool: urllib3.PoolManager, loki_url: str, query: str, what: str) -> dict[str, Any]:
    return _get(pool, loki_url, "/loki/api/v1/query",
                {"query": query, "time": str(time.time_ns())}, what)


def _range(pool: urllib3.PoolManager, loki_url: str, query: str, start_ns: int,
           what: str) -> dict[str, Any]:
    return _get(pool, loki_url, "/loki/api/v1/query_range", {
        "query": query, "start": str(start_ns), "end": str(time.time_ns()),
        "limit": "5000", "direction": "backward",
    }, what)


def _vector(body: Mapping[str, Any]) -> dict[tuple[tuple[str, str], ...], float]:
    assert body["data"]["resultType"] == "vector", body["data"]["resultType"]
    return {tuple(sorted(r["metric"].items())): float(r["value"][1])
            for r in body["data"]["result"]}


def _by(body: Mapping[str, Any], label: str) -> dict[str, float]:
    return {dict(k).get(label, ""): v for k, v in _vector(body).items()}


def _entries(body: Mapping[str, Any]) -> list[tuple[dict[str, str], str]]:
    assert body["data"]["resultType"] == "streams", body["data"]["resultType"]
    return [(s["stream"], v[1]) for s in body["data"]["result"] for v in s["values"]]


def _series_values(body: Mapping[str, Any], label: str) -> dict[str, list[float]]:
    assert body["data"]["resultType"] == "matrix", body["data"]["resultType"]
    return {s["metric"].get(label, ""): [float(v[1]) for v in s["values"]]
            for s in body["data"]["result"]}


@dataclass(frozen=True)
class Dataset:
    service: str
    start_ns: int
    events: tuple[Event, ...]


@pytest.fixture(scope="module")
def dataset(loki_http: urllib3.PoolManager, loki_url: str) -> Dataset:
    service = f"it-{uuid.uuid4().hex[:12]}"
    events = tuple(_known_events())
    start = time.time_ns() - 5 * 10**9
    _push(loki_http, loki_url, service, events, start)
    count = f'sum(count_over_time({{service_name="{service}"}}[10m]))'

    def all_queryable() -> bool:
        values = _vector(_instant(loki_http, loki_url, count, "count")).values()
        return list(values) == [float(len(events))]

    assert wait_for(all_queryable), f"the {len(events)} pushed events never became queryable"
    return Dataset(service, start, events)


class _Dashboards:
    """The dashboards' queries filled in for one service, with optional filter values."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.dashboards = g.dashboards()

    def fill(self, q: g.PanelQuery, **values: g.Value) -> g.PanelQuery:
        dash = self.dashboards[q.dashboard]
        variables = g.dashboard_variables(dash)
        filled: dict[str, g.Value] = {
            name: ("" if var.type == "textbox" else g.ALL) for name, var in variables.items()
        }
        filled["service"] = [self.service]
        filled.update(values)
        expr = g.interpolate(q.expr, variables, filled,
                             {**g.BUILTIN_VALUES, "__range": "10m", "__auto": "1m"})
        return g.PanelQuery(q.dashboard, q.panel, q.ref, expr, q.instant, q.source)

    def query(self, uid: str, panel: str, ref: str = "A", **values: g.Value) -> g.PanelQuery:
        for q in g.panel_queries(self.dashboards[uid]):
            if q.panel == panel and q.ref == ref and q.source == "target":
                return self.fill(q, **values)
        raise KeyError(f"{uid} has no panel {panel!r} query {ref}")

    def all_queries(self) -> list[g.PanelQuery]:
        """Every panel target and Explore link, filled in."""
        return [self.fill(q) for dash in self.dashboards.values() for q in g.panel_queries(dash)]


def _run(pool: urllib3.PoolManager, loki_url: str, q: g.PanelQuery,
         start_ns: int) -> dict[str, Any]:
    what = f"{q.dashboard} / {q.panel} / {q.ref}"
    if q.instant:
        return _instant(pool, loki_url, q.expr, what)
    return _range(pool, loki_url, q.expr, start_ns - 60 * 10**9, what)


# ---------------------------------------------------------------------------- alert rules


def _rule(uid: str) -> dict[str, Any]:
    return next(r for r in g.alert_rules() if r["uid"] == uid)


def _evaluate(pool: urllib3.PoolManager, loki_url: str, uid: str,
              service: str) -> dict[tuple[tuple[str, str], ...], tuple[float, bool]]:
    """A (the query, limited to one service) -> B (last) -> C (threshold), per series."""
    rule = _rule(uid)
    expr = g.scope_rule_expr(g.rule_expr(rule), service)
    _get(pool, loki_url, "/loki/api/v1/format_query", {"query": expr}, f"format_query {uid}")
    threshold = g.rule_threshold(rule)
    return {labels: (value, value > threshold)
            for labels, value in _vector(_instant(pool, loki_url, expr, uid)).items()}


# First in the module: the failed-logins spike rule looks at the last minute only.
def test_trend_rules_fire_on_the_pushed_events(
    dataset: Dataset, loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    svc = dataset.service
    errors = sum(1 for ev in dataset.events if ev.level in ("ERROR", "CRITICAL"))

    rate = _evaluate(loki_http, loki_url, "shipper-error-rate", svc)
    assert list(rate) == [(("service_name", svc),)]
    value, firing = rate[(("service_name", svc),)]
    assert abs(value - errors / len(dataset.events)) < 1e-9 and firing

    per_actor = _evaluate(loki_http, loki_url, "shipper-failed-logins-actor", svc)
    assert per_actor == {(("actor_id", ATTACKER), ("service_name", svc)): (11.0, True)}

    total = _evaluate(loki_http, loki_url, "shipper-failed-logins-total", svc)
    assert total == {(("service_name", svc),): (11.0, False)}  # 11 is not a spike of > 100

    webhooks = _evaluate(loki_http, loki_url, "shipper-webhook-failures", svc)
    assert webhooks == {(("metadata_provider", "stripe"), ("service_name", svc)): (6.0, True)}

    # No CRITICAL event in the set: no data, which the rule treats as OK.
    assert _evaluate(loki_http, loki_url, "shipper-critical-event", svc) == {}


def test_critical_rule_is_empty_before_and_one_series_per_type_after(
    loki_http: urllib3.PoolManager, loki_url: str, unique_service: str,
) -> None:
    svc = unique_service
    start = time.time_ns() - 10 * 10**9
    _push(loki_http, loki_url, svc, [
        Event("INFO", "SYSTEM", "LOG", "all good"),
        Event("ERROR", "SYSTEM", "API_ERROR", "not critical"),
    ], start)
    count = f'sum(count_over_time({{service_name="{svc}"}}[10m]))'
    assert wait_for(lambda: _vector(_instant(loki_http, loki_url, count, "count")))
    assert _evaluate(loki_http, loki_url, "shipper-critical-event", svc) == {}

    stamps = _push(loki_http, loki_url, svc, [
        Event("CRITICAL", "SYSTEM", "DATA_CORRUPTION", "checksum mismatch in orders"),
        Event("CRITICAL", "USER", "DATA_CORRUPTION", "orders table corrupted", {"table": "orders"},
              actor_id="u-7", trace_id="tr-9"),
        Event("CRITICAL", "SYSTEM", "PAYMENT_LOST", "payment lost"),
    ], time.time_ns() - 3 * 10**9, step_ns=100_000_000)

    def two_series() -> dict[tuple[tuple[str, str], ...], tuple[float, bool]]:
        result = _evaluate(loki_http, loki_url, "shipper-critical-event", svc)
        return result if len(result) == 2 else {}

    result = wait_for(two_series)
    assert result, "the CRITICAL events never showed up in the rule's query"
    by_type = {dict(labels)["type"]: (dict(labels), value, firing)
               for labels, (value, firing) in result.items()}
    labels, value, firing = by_type["DATA_CORRUPTION"]
    # The latest of the two DATA_CORRUPTION events, with what the notification shows.
    assert labels["message"] == "orders table corrupted"
    assert labels["actor"] == "USER" and labels["actor_id"] == "u-7"
    assert labels["trace_id"] == "tr-9" and labels["level"] == "CRITICAL"
    assert labels["service_name"] == svc
    assert value == stamps[1] // 1_000_000 and firing
    labels, value, firing = by_type["PAYMENT_LOST"]
    assert labels["message"] == "payment lost" and "actor_id" not in labels
    assert value == stamps[2] // 1_000_000 and firing


# ------------------------------------------------------------------------------ dashboards


def test_every_dashboard_query_parses_in_loki_and_answers(
    dataset: Dataset, loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    queries = _Dashboards(dataset.service).all_queries()
    assert len(queries) >= 15
    for q in queries:
        formatted = _get(loki_http, loki_url, "/loki/api/v1/format_query",
                         {"query": q.expr}, f"format_query {q.dashboard} / {q.panel}")
        assert formatted["status"] == "success"
        body = _run(loki_http, loki_url, q, dataset.start_ns)
        assert body["status"] == "success", (q.dashboard, q.panel)


def test_system_logs_count_and_events_without_filters_see_every_event(
    dataset: Dataset, loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    d = _Dashboards(dataset.service)
    count = _run(loki_http, loki_url, d.query("shipper-system-logs", "Matching events"),
                 dataset.start_ns)
    assert list(_vector(count).values()) == [len(dataset.events)]
    events = _entries(_run(loki_http, loki_url, d.query("shipper-system-logs", "Events"),
                           dataset.start_ns))
    assert len(events) == len(dataset.events)
    # The line shown is the message; labels, metadata and parsed JSON are in the details.
    assert sorted(line for _, line in events) == sorted(ev.message for ev in dataset.events)
    by_message = {line: labels for labels, line in events}
    odd = by_message[ODD_MESSAGE]
    assert odd["trace_id"] == "t-odd" and odd["service_name"] == dataset.service
    failed_login = by_message["Auth login failed"]
    assert failed_login["actor_id"] == ATTACKER
    assert failed_login["metadata_ip"] == ATTACKER_IP
    assert failed_login["metadata_success"] == "false"
    assert "shipper_match" not in failed_login
    api_error = by_message["/api/orders: boom"]
    assert api_error["exception"].endswith("ValueError: boom")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"search": '"hi" and `tick`'}, [ODD_MESSAGE]),
        ({"search": "(a+b)*[x] \\path 100% {{ .x }}"}, [ODD_MESSAGE]),
        ({"search": "ÜNÏ"}, [ODD_MESSAGE]),
        ({"search": "AUTH LOGIN FAILED"}, ["Auth login failed"] * 11),
        ({"search": ATTACKER_IP}, ["Auth login failed"] * 11),
        ({"search": "valueerror: boom"}, ["/api/orders: boom"]),
        ({"search": "a.b"}, []),
        ({"actor_id": ATTACKER}, ["Auth login failed"] * 11),
        ({"actor_id": "u-attack"}, []),
        ({"actor_id": "u-1", "search": "succeeded"}, ["Auth login succeeded"] * 2),
        ({"level": ["ERROR"], "type": ["API_ERROR"]}, ["/api/orders: boom"]),
        ({"actor": ["ADMIN"]}, ["Admin banned user u-9", "admin-2 deleted 3 log entries"]),
        ({"logger": "shop.auth"}, ["Auth login failed"] * 11 + ["Auth login succeeded"] * 2),
        ({"logger": "shop.auth.login"}, ["Auth login failed"] * 11),
        ({"logger": "shop"}, ["Auth login failed"] * 11 + ["Auth login succeeded"] * 2
         + ["Admin banned user u-9"]),
        ({"logger": "shop.a"}, []),
        ({"logger": "shop.auth", "actor_id": "u-1"}, ["Auth login succeeded"] * 2),
    ],
    ids=["quotes-backticks", "regex-and-template-chars", "case-insensitive-unicode",
         "case-insensitive", "metadata-value", "exception-text", "dot-is-literal",
         "actor-id-exact", "actor-id-not-prefix", "actor-id-and-search", "level-and-type",
         "actor", "module-and-children", "module-exact", "module-parent", "module-not-prefix",
         "module-and-actor-id"],
)
def test_system_logs_filters_match_exactly_what_was_typed(
    dataset: Dataset, loki_http: urllib3.PoolManager, loki_url: str,
    values: dict[str, g.Value], expected: list[str],
) -> None:
    d = _Dashboards(dataset.service)
    events = _entries(_run(loki_http, loki_url,
                           d.query("shipper-system-logs", "Events", **values),
                           dataset.start_ns))
    assert sorted(line for _, line in events) == sorted(expected)
    count = _vector(_run(loki_http, loki_url,
                         d.query("shipper-system-logs", "Matching events", **values),
                         dataset.start_ns))
    assert sum(count.values()) == len(expected)


def test_overview_panels_show_the_pushed_volume(
    dataset: Dataset, loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    d = _Dashboards(dataset.service)

    def run(panel: str) -> dict[str, Any]:
        return _run(loki_http, loki_url, d.query("shipper-overview", panel), dataset.start_ns)

    top_types = _by(run("Top types"), "type")
    assert top_types["AUTH_LOGIN"] == 13
    assert top_types["WEBHOOK_PAYMENT_INTENT_SUCCEEDED"] == 7
    assert max(top_types, key=lambda t: top_types[t]) == "AUTH_LOGIN"
    top_actors = _by(run("Top actors"), "actor_id")
    assert top_actors[ATTACKER] == 11 and "" not in top_actors
    errors = sum(1 for ev in dataset.events if ev.level in ("ERROR", "CRITICAL"))
    rate = _series_values(run("Error rate (ERROR + CRITICAL / all, 5 min window)"),
                          "service_name")
    assert any(abs(v - errors / len(dataset.events)) < 1e-9 for v in rate[dataset.service])
    levels = _series_values(run("Events by level"), "level")
    assert set(levels) == {"INFO", "WARNING", "ERROR"}
    assert set(_series_values(run("Events per service"), "service_name")) == {dataset.service}
    assert _entries(run("Latest CRITICAL events")) == []


def test_security_panels_show_failed_logins_admin_actions_and_webhooks(
    dataset: Dataset, loki_http: urllib3.PoolManager, loki_url: str,
) -> None:
    d = _Dashboards(dataset.service)

    def run(panel: str, ref: str = "A") -> dict[str, Any]:
        return _run(loki_http, loki_url, d.query("shipper-security", panel, ref),
                    dataset.start_ns)

    assert _by(run("Failed logins by actor id"), "actor_id") == {ATTACKER: 11}
    assert _by(run("Failed logins by IP"), "metadata_ip") == {ATTACKER_IP: 11}
    failed = _series_values(run("Logins: failed vs successful", "A"), "")
    succeeded = _series_values(run("Logins: failed vs successful", "B"), "")
    assert max(failed[""]) == 11 and max(succeeded[""]) == 2
    assert set(_series_values(run("Webhook failures by provider"), "metadata_provider")) == {
        "stripe"}
    admin = _entries(run("Admin actions"))
    assert sorted((labels["actor_id"], line) for labels, line in admin) == [
        ("admin-1", "Admin banned user u-9"), ("admin-2", "admin-2 deleted 3 log entries")]
    (deletion,) = _entries(run("Log deletions"))
    labels, line = deletion
    assert line == "admin-2 deleted 3 log entries" and labels["actor_id"] == "admin-2"
    assert labels["metadata_count"] == "3" and labels["metadata_request_id"] == "ecba278e"
    assert labels["metadata_query"] == '{service_name=~"x", type!="LOGS_DELETED"}'

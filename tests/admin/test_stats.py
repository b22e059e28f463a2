"""`shipper stats`: the Overview dashboard's own expressions (held equal to overview.json here),
run against the fake Loki, with long ranges counted window by window."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shipper._units import NS
from shipper.cli.admin.stats import STATS, collect, error_rate_expression, stat_expression
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient, QueryLimits
from shipper.loki.logql import Filters
from shipper.loki.timerange import TimeRange
from tests.support import _grafana as g
from tests.support.fakeloki import FakeLoki

#: Overview panel → the stat that runs its expression
PANELS = {
    "Events by level": "by_level",
    "Top types": "top_types",
    "Top actors": "top_actors",
    "Events per service": "events_by_service",
}


def _overview_expr(title: str, service: str, window: str) -> str:
    dash = g.dashboards()["shipper-overview"]
    panel = next(p for p in g.iter_panels(dash) if p["title"].startswith(title))
    expr = panel["targets"][0]["expr"].replace("[5m]", "[$__range]")
    builtins = {**g.BUILTIN_VALUES, "__auto": window, "__range": window}
    return g.interpolate(expr, g.dashboard_variables(dash), {"service": [service]}, builtins)


@pytest.mark.parametrize("service", ["shop", "c++ worker", "billing/eu-1"])
def test_stats_run_the_overview_dashboards_expressions(service: str) -> None:
    """Same parse tree, same values: Grafana's ``${service:regex}`` in a backtick string and
    shipper's escaped double-quoted string decode to the same regex."""
    ours, theirs = [], []
    for title, name in PANELS.items():
        ours.append(stat_expression(STATS[name], Filters(services=(service,)), 3600))
        theirs.append(_overview_expr(title, service, "1h"))
    ours.append(error_rate_expression(Filters(services=(service,)), 3600))
    theirs.append(_overview_expr("Error rate", service, "1h"))
    results = g.parse_logql(ours + theirs)
    assert all(r["ok"] for r in results), g.describe_failures(results)
    n = len(ours)
    for i in range(n):
        assert results[i]["tree"] == results[n + i]["tree"], (ours[i], theirs[i])


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def _seed(fake: FakeLoki, now: int) -> None:
    rows: list[tuple[str, str, str, str, str | None]] = (
        [("shop", "INFO", "USER", "AUTH_LOGIN", "u1")] * 6
        + [("shop", "ERROR", "SYSTEM", "API_ERROR", None)] * 3
        + [("shop", "CRITICAL", "SYSTEM", "DATA_CORRUPTION", None)]
        + [("shop", "INFO", "ADMIN", "SETTINGS", "a1")] * 2
        + [("blog", "WARNING", "GUEST", "VIEW", None)] * 4
    )
    for i, (svc, level, actor, type_, actor_id) in enumerate(rows):
        labels = {"service_name": svc, "level": level, "actor": actor, "type": type_}
        md = {"actor_id": actor_id} if actor_id else {}
        # spread over 50 days: longer than one max_query_length window
        fake.add(labels, now - (i * 3 + 1) * 86400 * NS, json.dumps({"message": f"m{i}"}), md)


def test_stats_counts_over_several_windows(fake: FakeLoki) -> None:
    now = 1_760_000_000 * NS
    _seed(fake, now)
    client = LokiClient(ShipperConfig(url=fake.url))
    span = TimeRange(now - 60 * 86400 * NS, now)
    result: dict[str, Any] = collect(client, Filters(), span)
    assert result["total"] == 16
    assert result["by_level"] == {"INFO": 8, "WARNING": 4, "ERROR": 3, "CRITICAL": 1}
    assert result["by_actor"] == {"USER": 6, "GUEST": 4, "SYSTEM": 4, "ADMIN": 2}
    assert list(result["by_type"])[:2] == ["AUTH_LOGIN", "VIEW"]
    assert result["errors"] == 4 and result["error_rate"] == pytest.approx(0.25)
    assert result["error_rate_by_service"] == {"blog": 0.0, "shop": pytest.approx(4 / 12)}
    assert result["top_actors"] == [{"actor": "USER", "actor_id": "u1", "count": 6},
                                    {"actor": "ADMIN", "actor_id": "a1", "count": 2}]
    one_window = collect(client, Filters(services=("shop",)),
                         TimeRange(now - 20 * 86400 * NS, now),
                         QueryLimits(max_query_length_s=30 * 86400 + 3600))
    assert one_window["total"] == 7  # entries 0..6 are within 20 days
    client.close()


def test_stats_command_prints_json_when_piped(fake: FakeLoki,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import time

    now = time.time_ns()
    for i in range(3):
        fake.add({"service_name": "shop", "level": "ERROR", "actor": "USER", "type": "X"},
                 now - (i + 1) * NS, json.dumps({"message": "boom"}))
    assert main(["stats", "--url", fake.url, "--since", "1h"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"] == 3 and out["by_level"] == {"ERROR": 3} and out["error_rate"] == 1.0

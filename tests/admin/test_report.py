"""shipper report: the dashboards' LogQL, the digest from recorded Loki answers, the alerts from
Grafana's state history, the Slack post, and the daily schedule.

tests/support/data/report_loki_answers.json holds what a real Loki 3.7.6 answered to the
digest's five queries (see its ``recorded_with``). The Grafana answers are built in the shapes
Grafana's own source gives them: the ruler API's rule groups by folder, and a state-history data
frame of the annotation backend (time, text, prev, next, data) or of the Loki backend (time,
line, labels).
"""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.cli.main import main
from shipper.cli.report import (
    QUERIES,
    Digest,
    FiredAlert,
    GrafanaAlerts,
    ReportError,
    _next_run,
    _Options,
    collect,
    fill,
    post_to_slack,
    render_slack,
    render_text,
    run_report,
)
from tests.support import _grafana as g
from tests.support.fakeloki import FakeLoki, free_port

_DATA = Path(__file__).resolve().parents[1] / "support" / "data"
RECORDED = json.loads((_DATA / "report_loki_answers.json").read_text(encoding="utf-8"))
SERVICE = RECORDED["service"]
END = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
       + dt.timedelta(microseconds=int(RECORDED["time"]) // 1000))


# ----------------------------------------------------------------------- the same LogQL


def test_every_digest_query_is_the_expression_of_its_dashboard_panel() -> None:
    dashboards = g.dashboards()
    for name, q in QUERIES.items():
        exprs = [t.expr for t in g.panel_queries(dashboards[q.dashboard])
                 if t.panel == q.panel and t.source == "target"]
        assert exprs, f"{q.dashboard} has no panel {q.panel!r}"
        assert q.expr == exprs[0], name  # the panel's first (or only) query


def test_fill_is_grafanas_own_interpolation_of_the_panel() -> None:
    dashboards = g.dashboards()
    cases = [[], ["shop"], ["shop.api", "c++ worker", "billing/eu-1"]]
    filled = []
    for name, q in QUERIES.items():
        dash = dashboards[q.dashboard]
        variables = g.dashboard_variables(dash)
        for services in cases:
            ours = fill(q.expr, services=services, span_s=86400)
            value: g.Value = services if services else g.ALL
            grafana = g.interpolate(q.expr, variables, {"service": value},
                                    {**g.BUILTIN_VALUES, "__range": "1d", "__auto": "1d"})
            assert ours == grafana, (name, services)
            filled.append(ours)
    results = g.parse_logql(filled)
    assert all(r["ok"] for r in results), g.describe_failures(results)


def test_fill_refuses_a_service_name_that_would_end_the_string() -> None:
    with pytest.raises(ReportError, match="backtick"):
        fill(QUERIES["levels"].expr, services=["a`b"], span_s=3600)


def test_p95_stat_draws_the_latency_rules_threshold() -> None:
    dash = g.dashboards()["shipper-performance"]
    stat = next(p for p in g.iter_panels(dash) if p["title"] == QUERIES["p95"].panel)
    rule = next(r for r in g.alert_rules() if r["uid"] == "shipper-p95-latency")
    steps = [s["value"] for s in stat["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps[-1] == g.rule_threshold(rule)


# ----------------------------------------------------------------------- from recorded answers


@pytest.fixture()
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        fake.answer_queries(RECORDED["answers"])
        yield fake


def _recorded(name: str, label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1])
            for r in RECORDED["answers"][name]["body"]["data"]["result"]}


def _collect(loki: FakeLoki, **kw: Any) -> Digest:
    from shipper.config import ShipperConfig
    from shipper.loki.client import LokiClient

    client = LokiClient(ShipperConfig(url=loki.url, spool=False))
    try:
        return collect(client, span_s=3600, services=[SERVICE], end=END, **kw)
    finally:
        client.close()


def test_digest_reads_the_recorded_answers_into_numbers(loki: FakeLoki) -> None:
    digest = _collect(loki)
    levels = _recorded("levels", "level")
    assert digest.levels == {k: int(v) for k, v in levels.items()}
    assert list(digest.levels) == [lv for lv in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
                                   if lv in levels]  # most severe first
    errors = _recorded("error_types", "type")
    assert digest.error_types == sorted(((k, int(v)) for k, v in errors.items()),
                                        key=lambda kv: (-kv[1], kv[0]))
    assert digest.failing_routes[0][1] == max(_recorded("failing_routes", "route").values())
    assert digest.p95_ms == _recorded("p95", "service_name")
    slowest = _recorded("slowest_routes", "route")
    assert len(digest.slowest_routes) == 5
    assert digest.slowest_routes[0] == max(slowest.items(), key=lambda kv: kv[1])
    assert digest.alerts is None and digest.alerts_note == (
        "alerts: not available (SHIPPER_GRAFANA_URL unset)")
    # exactly the five filled-in queries reached Loki, at the report's end time
    asked = [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.path.split(" ", 1)[1]).query))
             for r in loki.requests]
    assert len(asked) == 5
    assert {a["query"] for a in asked} == {
        fill(q.expr, services=[SERVICE], span_s=3600) for q in QUERIES.values()}
    # a datetime keeps microseconds: the same instant as recorded, to the microsecond
    assert {int(a["time"]) // 1000 for a in asked} == {int(RECORDED["time"]) // 1000}


def test_terminal_digest_shows_every_section_with_the_recorded_numbers(loki: FakeLoki) -> None:
    text = render_text(_collect(loki))
    assert text.startswith(f"shipper digest · last 1h · {SERVICE} · ")
    for title in ("Events by level", "Top error types", "Failing routes (5xx)", "p95 latency",
                  "Alerts that fired"):
        assert f"\n{title}\n" in text
    levels = _recorded("levels", "level")
    assert f"ERROR    {int(levels['ERROR']):>10,}" in text
    share = (levels["ERROR"] + levels["CRITICAL"]) / sum(levels.values())
    assert f"ERROR + CRITICAL {share:.2%}" in text
    p95 = _recorded("p95", "service_name")[SERVICE]
    assert f"{p95 / 1000:.2f} s" in text
    assert "alerts: not available (SHIPPER_GRAFANA_URL unset)" in text


def test_slack_payload_is_block_kit_with_a_fallback_text(loki: FakeLoki) -> None:
    digest = _collect(loki)
    payload = render_slack(digest)
    assert payload["text"].startswith(f"shipper digest: {digest.total:,} events")
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header" and len(blocks) <= 50
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert [s.split("\n", 1)[0] for s in sections] == [
        "*Events by level*", "*Top error types*", "*Failing routes (5xx)*", "*p95 latency*",
        "*Alerts that fired*"]
    assert all(len(s) <= 3000 for s in sections)
    # Slack's three control characters are escaped (route templates carry braces, not these)
    assert "<" not in "".join(sections) and "&lt;" not in "".join(sections)


def test_a_loki_error_is_one_clear_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeLoki(rate_limit=False) as fake:  # answers no query: 404 for each
        code = main(["report", "--url", fake.url, "--since", "1h"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("shipper report: Loki at http://127.0.0.1:")
    assert err.count("\n") == 1


def test_no_loki_url_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOKI_URL", raising=False)
    monkeypatch.delenv("SHIPPER_CONFIG", raising=False)
    assert main(["report"]) == 2
    assert "no Loki URL: pass --url or set LOKI_URL" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "10s"], "--since must be between 1m and 30d"),
    (["--since", "soon"], "not a duration"),
    (["--daily-at", "25:00"], "--daily-at: expected HH:MM"),
])
def test_bad_options_are_named(args: list[str], message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------- fake Grafana and Slack


class _Server:
    """A threading HTTP server on 127.0.0.1 that answers from ``routes`` and records requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _do(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((method, self.path, dict(self.headers.items()), body))
                path = self.path.split("?", 1)[0]
                status, answer = server.routes.get(f"{method} {path}", (404, "not found"))
                if callable(answer):
                    answer = answer(self.path)
                data = answer if isinstance(answer, str) else json.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_GET(self) -> None:
                self._do("GET")

            def do_POST(self) -> None:
                self._do("POST")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture()
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _ms(d: dt.datetime) -> int:
    return int(d.timestamp() * 1000)


RULES = {  # GET /api/ruler/grafana/api/v1/rules: rule groups by folder
    "Shipper": [
        {"name": "shipper-performance", "interval": "1m", "rules": [
            {"expr": "", "for": "5m", "labels": {"severity": "HIGH"},
             "grafana_alert": {"uid": "shipper-p95-latency", "title": "p95 latency"}},
            {"expr": "", "for": "5m", "labels": {"severity": "LOW"},
             "grafana_alert": {"uid": "shipper-error-rate-elevated",
                               "title": "Error rate elevated"}}]},
        {"name": "shipper-critical", "interval": "1m", "rules": [
            {"expr": "", "for": "0s", "labels": {"severity": "CRITICAL"},
             "grafana_alert": {"uid": "shipper-critical-event", "title": "CRITICAL event"}}]},
    ],
}


def _annotation_frame(rows: list[tuple[dt.datetime, str, str, str]]) -> dict[str, Any]:
    """The annotation backend's frame: time, text, prev, next, data."""
    labels = {"from": "state-history", "ruleUID": "x"}
    return {"schema": {"name": "states", "fields": [
        {"name": n, "type": t, "labels": labels}
        for n, t in (("time", "time"), ("text", "string"), ("prev", "string"),
                     ("next", "string"), ("data", "string"))]},
        "data": {"values": [[_ms(r[0]) for r in rows], [r[1] for r in rows],
                            [r[2] for r in rows], [r[3] for r in rows],
                            ['{"values":{"B":2500,"C":1}}'] * len(rows)]}}


def _loki_frame(rows: list[tuple[dt.datetime, str, str, str]]) -> dict[str, Any]:
    """The Loki backend's frame: time, line (the transition), labels (the stream's)."""
    return {"schema": {"name": "states", "fields": [
        {"name": "time", "type": "time"}, {"name": "line", "type": "other"},
        {"name": "labels", "type": "other"}]},
        "data": {"values": [
            [_ms(r[0]) for r in rows],
            [{"schemaVersion": 1, "previous": r[2], "current": r[3], "values": {"B": 0.02},
              "condition": "C", "ruleTitle": "Error rate elevated",
              "ruleUID": "shipper-error-rate-elevated",
              "labels": {"alertname": "Error rate elevated", "service_name": r[1],
                         "severity": "LOW"}} for r in rows],
            [{"from": "state-history", "orgID": "1"}] * len(rows)]}}


def _history(path: str) -> dict[str, Any]:
    query = dict(p.split("=", 1) for p in path.split("?", 1)[1].split("&"))
    t = END - dt.timedelta(minutes=50)
    if query["ruleUID"] == "shipper-p95-latency":
        text = "p95 latency {alertname=p95 latency, service_name=shop, severity=HIGH} - B=2500"
        return _annotation_frame([
            (t, text, "Normal", "Pending"), (t + dt.timedelta(minutes=5), text, "Pending",
                                             "Alerting"),
            (t + dt.timedelta(minutes=20), text, "Alerting", "Normal"),
            (t + dt.timedelta(minutes=30), text, "Normal (MissingSeries)", "Alerting"),
        ])
    if query["ruleUID"] == "shipper-error-rate-elevated":
        return _loki_frame([(t, "billing", "Normal", "Alerting"),
                            (t + dt.timedelta(minutes=1), "billing", "Alerting", "Normal")])
    return _annotation_frame([])


def test_alerts_that_fired_come_from_the_state_history_of_every_rule(
    server: _Server,
) -> None:
    server.routes["GET /api/ruler/grafana/api/v1/rules"] = (200, RULES)
    server.routes["GET /api/v1/rules/history"] = (200, _history)
    start = END - dt.timedelta(hours=1)
    fired = GrafanaAlerts(server.url, "glsa_token")(start, END)
    assert [(a.severity, a.uid, a.times, a.services) for a in fired] == [
        ("HIGH", "shipper-p95-latency", 2, ("shop",)),
        ("LOW", "shipper-error-rate-elevated", 1, ("billing",)),
    ]
    assert fired[0].first == dt.datetime.fromtimestamp(
        _ms(END - dt.timedelta(minutes=45)) / 1000, dt.UTC)
    history = [r for r in server.requests if r[1].startswith("/api/v1/rules/history")]
    assert len(history) == 3  # one per rule: the annotation backend needs the rule uid
    for _, _, headers, _ in server.requests:
        assert headers["Authorization"] == "Bearer glsa_token"
    assert f"from={int(start.timestamp())}&to={int(END.timestamp())}" in history[0][1]


def test_digest_lists_fired_alerts_most_severe_first(loki: FakeLoki, server: _Server) -> None:
    server.routes["GET /api/ruler/grafana/api/v1/rules"] = (200, RULES)
    server.routes["GET /api/v1/rules/history"] = (200, _history)
    digest = _collect(loki, alerts=GrafanaAlerts(server.url, "t"))
    text = render_text(digest)
    section = text.split("Alerts that fired\n", 1)[1]
    lines = [line.strip() for line in section.strip().splitlines()]
    assert lines[0].startswith("HIGH p95 latency in shop: fired 2 times (")
    assert lines[1].startswith("LOW Error rate elevated in billing: fired once (")
    assert render_slack(digest)["text"].endswith(", 2 alert rule(s) fired")


def test_a_grafana_that_refuses_the_token_leaves_the_rest_of_the_digest(
    loki: FakeLoki, server: _Server,
) -> None:
    server.routes["GET /api/ruler/grafana/api/v1/rules"] = (403, {"message": "Forbidden"})
    digest = _collect(loki, alerts=GrafanaAlerts(server.url, "t"))
    assert digest.alerts is None
    assert digest.alerts_note is not None
    assert "answered 403" in digest.alerts_note and "Viewer role" in digest.alerts_note
    assert digest.levels  # the Loki part is all there


def test_a_grafana_url_without_a_token_is_named() -> None:
    with pytest.raises(ReportError, match="needs a token"):
        GrafanaAlerts("http://grafana:3000", "")


def test_posts_to_a_slack_webhook_and_reports_its_refusal(server: _Server) -> None:
    server.routes["POST /services/T0/B0/x"] = (200, "ok")
    post_to_slack(server.url + "/services/T0/B0/x", {"text": "hi", "blocks": []})
    method, path, headers, body = server.requests[-1]
    assert (method, path) == ("POST", "/services/T0/B0/x")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"text": "hi", "blocks": []}
    server.routes["POST /services/T0/B0/x"] = (400, "invalid_payload")
    with pytest.raises(ReportError, match="answered 400: invalid_payload"):
        post_to_slack(server.url + "/services/T0/B0/x", {"text": "hi"})


def test_the_command_prints_posts_and_exits_0(
    loki: FakeLoki, server: _Server, capsys: pytest.CaptureFixture[str],
) -> None:
    server.routes["POST /hook"] = (200, "ok")
    server.routes["GET /api/ruler/grafana/api/v1/rules"] = (200, RULES)
    server.routes["GET /api/v1/rules/history"] = (200, _history)
    opts = _Options(span_s=3600, services=(SERVICE,), loki_url=loki.url,
                    slack_webhook=server.url + "/hook", grafana_url=server.url,
                    grafana_token="t", as_json=False)
    out, err = io.StringIO(), io.StringIO()
    assert run_report(opts, out=out, err=err) == 0
    assert out.getvalue().startswith("shipper digest · last 1h · ")
    assert "posted to Slack" in err.getvalue()
    posted = json.loads(next(r[3] for r in server.requests if r[1] == "/hook"))
    assert posted["text"].endswith(", 2 alert rule(s) fired")
    assert posted["blocks"][0]["type"] == "header"
    assert "HIGH p95 latency in shop" in json.dumps(posted["blocks"])


def test_a_refused_slack_post_still_prints_and_exits_1(
    loki: FakeLoki, server: _Server,
) -> None:
    server.routes["POST /hook"] = (404, "no_service")
    opts = _Options(span_s=3600, services=(SERVICE,), loki_url=loki.url,
                    slack_webhook=server.url + "/hook", grafana_url=None, grafana_token=None,
                    as_json=True)
    out, err = io.StringIO(), io.StringIO()
    assert run_report(opts, out=out, err=err) == 1
    assert json.loads(out.getvalue())["levels"]
    assert "answered 404: no_service" in err.getvalue()


HOOK_SECRET = "T0ABC/B0DEF/hooksecret42"


@pytest.fixture
def hook(server: _Server) -> str:
    server.routes[f"POST /services/{HOOK_SECRET}"] = (200, "ok")
    return f"{server.url}/services/{HOOK_SECRET}"


def _digest_to_slack(argv: list[str], loki: FakeLoki, server: _Server,
                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                     env: str | None = None) -> tuple[int, bool, str]:
    """``shipper report`` with ``argv``: exit code, whether Slack got the digest, stderr."""
    monkeypatch.delenv("SHIPPER_SLACK_WEBHOOK_URL", raising=False)
    if env is not None:
        monkeypatch.setenv("SHIPPER_SLACK_WEBHOOK_URL", env)
    code = main(["report", "--url", loki.url, "--since", "1h", "--service", SERVICE, *argv])
    posted = any(r[1] == f"/services/{HOOK_SECRET}" for r in server.requests)
    return code, posted, capsys.readouterr().err


def test_the_webhook_comes_from_the_environment(
        loki: FakeLoki, server: _Server, hook: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _digest_to_slack([], loki, server, monkeypatch, capsys, env=hook)[:2] == (0, True)


def test_the_webhook_comes_from_a_file(
        loki: FakeLoki, server: _Server, hook: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secret = tmp_path / "slack-webhook"
    secret.write_text(hook + "\n")
    code, posted, _ = _digest_to_slack(["--slack-webhook-file", str(secret)], loki, server,
                                       monkeypatch, capsys, env="https://ignored.invalid/x")
    assert (code, posted) == (0, True)


def test_the_webhook_on_the_command_line_still_works(
        loki: FakeLoki, server: _Server, hook: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, posted, _ = _digest_to_slack(["--slack-webhook", hook], loki, server, monkeypatch,
                                       capsys)
    assert (code, posted) == (0, True)


def test_an_empty_webhook_in_the_environment_prints_without_posting(
        loki: FakeLoki, server: _Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, posted, err = _digest_to_slack([], loki, server, monkeypatch, capsys, env="")
    assert (code, posted) == (0, False)
    assert "the Slack webhook is empty: not posted" in err


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read it"),
    ("", "the file is empty"),
    (f"https://hooks.example/services/{HOOK_SECRET}\nsecond line", "expected one line"),
    ("x" * 5000, "expected one line"),
    (b"\xff\xfe" + HOOK_SECRET.encode(), "not UTF-8 text"),
])
def test_a_bad_webhook_file_exits_2_naming_the_file_never_its_content(
        loki: FakeLoki, server: _Server, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | bytes | None,
        problem: str) -> None:
    secret = tmp_path / "slack-webhook"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    code, posted, err = _digest_to_slack(["--slack-webhook-file", str(secret)], loki, server,
                                         monkeypatch, capsys)
    assert (code, posted) == (2, False)
    assert f"--slack-webhook-file {secret}: {problem}" in err
    assert HOOK_SECRET not in err


def test_the_webhook_given_two_ways_is_refused(
        loki: FakeLoki, server: _Server, hook: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secret = tmp_path / "slack-webhook"
    secret.write_text(hook)
    code, posted, err = _digest_to_slack(
        ["--slack-webhook", hook, "--slack-webhook-file", str(secret)], loki, server,
        monkeypatch, capsys)
    assert (code, posted) == (2, False)
    assert "give one" in err and HOOK_SECRET not in err


@pytest.mark.parametrize("webhook", [
    f"hooks.slack.com/services/{HOOK_SECRET}",  # no scheme
    f"https://127.0.0.1:{free_port()}/services/{HOOK_SECRET}",  # nothing listens
    f"https://[::1/services/{HOOK_SECRET}",  # not a URL
])
def test_slack_errors_name_the_webhooks_host_never_its_path(webhook: str) -> None:
    with pytest.raises(ReportError) as info:
        post_to_slack(webhook, {"text": "hi"}, timeout=2)
    assert HOOK_SECRET not in str(info.value)


# ----------------------------------------------------------------------- the daily schedule


def test_next_run_is_today_or_tomorrow_at_that_utc_time() -> None:
    now = dt.datetime(2026, 3, 1, 7, 30, tzinfo=dt.UTC)
    assert _next_run((8, 0), now) == dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    assert _next_run((7, 30), now) == dt.datetime(2026, 3, 2, 7, 30, tzinfo=dt.UTC)
    assert _next_run((0, 5), now) == dt.datetime(2026, 3, 2, 0, 5, tzinfo=dt.UTC)


def test_daily_runs_at_the_time_then_waits_for_the_next_day(loki: FakeLoki) -> None:
    # a clock one second before midnight, running at real speed
    base = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
    t0 = time.monotonic()
    opts = _Options(span_s=3600, services=(SERVICE,), loki_url=loki.url, slack_webhook=None,
                    grafana_url=None, grafana_token=None, as_json=False)
    out, err, stop = io.StringIO(), io.StringIO(), threading.Event()
    worker = threading.Thread(target=run_report, args=(opts,), kwargs={
        "daily_at": (0, 0), "out": out, "err": err, "stop": stop,
        "now": lambda: base + dt.timedelta(seconds=time.monotonic() - t0)})
    worker.start()
    deadline = time.monotonic() + 20
    while "next digest at 2026-03-03 00:00 UTC" not in err.getvalue():
        assert time.monotonic() < deadline, err.getvalue()
        time.sleep(0.05)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert err.getvalue().startswith("shipper report: next digest at 2026-03-02 00:00 UTC")
    assert out.getvalue().count("shipper digest · ") == 1


def test_the_scheduled_command_stops_cleanly_on_sigterm(loki: FakeLoki) -> None:
    env = {**os.environ, "LOKI_URL": loki.url}
    env.pop("SHIPPER_GRAFANA_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "report", "--daily-at",
                             "03:00"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("shipper report: next digest at ") and line.rstrip().endswith(
            "03:00 UTC")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_fired_alert_renders_its_window() -> None:
    t = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    a = FiredAlert("Failed payments", "shipper-payment-failures", "HIGH", 1, t, t, ("shop",))
    digest = Digest(start=t, end=t, services=(), levels={}, error_types=[], failing_routes=[],
                    p95_ms={}, slowest_routes=[], alerts=[a])
    text = render_text(digest)
    assert "HIGH Failed payments in shop: fired once (2026-03-01 09:00 UTC)" in text
    assert "no events" in text and "no HTTP_REQUEST events" in text


# ----------------------------------------------------------------------- docs and compose

DOCS = Path(__file__).resolve().parents[2] / "docs" / "grafana.md"
COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _parses(argv: list[str]) -> Any:
    from shipper.cli.main import build_parser

    return build_parser().parse_args(argv)


def test_every_report_command_in_the_docs_parses() -> None:
    import shlex

    text = DOCS.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if re.search(r"(^|[ /])shipper report ", line)
             and not line.startswith(("`", "|"))]
    assert len(lines) >= 4  # three examples and the cron line
    for line in lines:
        words = shlex.split(line)
        argv = words[words.index(next(w for w in words if w.endswith("shipper"))) + 1:]
        args = _parses(argv)
        assert args.command == "report", line


def test_compose_runs_the_digest_daily_against_loki_and_grafana() -> None:
    import yaml

    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    digest = compose["services"]["digest"]
    assert digest["depends_on"]["loki"]["condition"] == "service_healthy"
    env = digest["environment"]
    assert env["LOKI_URL"] == "http://loki:3100" and env["SHIPPER_GRAFANA_URL"] == "http://grafana:3000"
    assert env["SHIPPER_GRAFANA_TOKEN"] == "${GRAFANA_TOKEN:-}"
    # with compose's defaults filled in, the command is a valid `shipper` command line
    argv = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in digest["command"]]
    args = _parses(argv)
    assert args.command == "report" and args.daily_at == (8, 0) and args.since == 86400
    # the webhook is a secret: by environment, never on the command line (ps shows it)
    assert (args.slack_webhook, args.slack_webhook_file) == (None, None)
    assert not any("WEBHOOK" in a for a in digest["command"])
    assert env["SHIPPER_SLACK_WEBHOOK_URL"] == "${DIGEST_SLACK_WEBHOOK_URL:-}"
    # the docs show the same service
    docs = DOCS.read_text(encoding="utf-8")
    assert '"--daily-at", "${DIGEST_AT:-08:00}"' in docs
    assert "SHIPPER_SLACK_WEBHOOK_URL: ${DIGEST_SLACK_WEBHOOK_URL:-}" in docs


def test_the_documented_cronjob_runs_a_valid_report_daily() -> None:
    import yaml

    text = DOCS.read_text(encoding="utf-8")
    block = next(b for b in text.split("```yaml")[1:] if "kind: CronJob" in b).split("```")[0]
    job = yaml.safe_load(block)
    assert job["apiVersion"] == "batch/v1" and job["spec"]["schedule"] == "0 8 * * *"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert {"LOKI_URL", "LOKI_USERNAME", "LOKI_PASSWORD", "SHIPPER_GRAFANA_URL",
            "SHIPPER_GRAFANA_TOKEN", "SHIPPER_SLACK_WEBHOOK_URL"} <= set(env)
    for secret in ("LOKI_PASSWORD", "SHIPPER_GRAFANA_TOKEN", "SHIPPER_SLACK_WEBHOOK_URL"):
        assert "secretKeyRef" in env[secret]["valueFrom"], secret
    args = _parses(container["args"])
    assert args.command == "report" and args.since == 86400 and args.daily_at is None
    assert (args.slack_webhook, args.slack_webhook_file) == (None, None)

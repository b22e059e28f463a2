"""``shipper report``: the daily digest, on a terminal and in Slack.

For the last ``--since`` (24h by default): events by level, the top error types, the failing
routes, the p95 latency (per service, and the slowest routes), and the alerts that fired.

The numbers are the dashboards' own LogQL: each query below is the expression of a panel
(named next to it), written in Grafana's variable syntax and filled in the way Grafana fills it -
``${service:regex}`` with the chosen services, ``$__range`` and ``$__auto`` with the report's
span, evaluated once at its end. tests/test_report.py holds every expression equal to its panel,
so the digest and the dashboards cannot drift apart.

The alerts come from Grafana, when ``SHIPPER_GRAFANA_URL`` and a token (a service account with the
Viewer role) are given: the Grafana-managed rules (``GET /api/ruler/grafana/api/v1/rules``)
and each one's state history (``GET /api/v1/rules/history``), counting the transitions into
Alerting. LOW alerts are never sent to Slack by the notification policies; this is where they
are read.

``--daily-at HH:MM`` keeps the command running and makes the digest every day at that time
(UTC), so a container needs no cron; SIGTERM stops it between two digests.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from urllib.parse import urlencode, urlsplit

from shipper._units import format_seconds
from shipper._version import __version__
from shipper.cli.args import positive_duration_arg
from shipper.cli.formats import add_format_arg, resolve_format
from shipper.cli.help import Subparsers, add_command
from shipper.cli.signals import stop_on_sigterm
from shipper.config import ConfigError, ShipperConfig
from shipper.delivery.transport import Transport, TransportError, Urllib3Transport
from shipper.loki.client import LokiClient, LokiError
from shipper.loki.logql import regex_escape
from shipper.redact import hide_url_credentials

__all__ = [
    "QUERIES",
    "SEVERITIES",
    "WEBHOOK_ENV",
    "Digest",
    "FiredAlert",
    "GrafanaAlerts",
    "PanelQuery",
    "ReportError",
    "add_parser",
    "collect",
    "fill",
    "post_to_slack",
    "render_slack",
    "render_text",
    "run_report",
    "slack_webhook",
]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
#: the seed's alert scale, most urgent first (the rules' ``severity`` label)
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_TOP = 10
_SLOWEST = 5
#: a webhook URL is about 80 bytes; a file much larger is not one
_WEBHOOK_MAX_BYTES = 4096


class ReportError(Exception):
    """The report could not be made or sent; the message says what and where."""


class PanelQuery(NamedTuple):
    """A dashboard panel's LogQL, as the panel holds it."""

    dashboard: str
    panel: str
    expr: str


_S = "service_name=~`${service:regex}`"
_HTTP = "{" + _S + ', type="HTTP_REQUEST"}'
_ROUTE = '| label_format route=`{{ or .route "(no route)" }}`'

#: what the digest reads, each the expression of a dashboard panel
QUERIES: dict[str, PanelQuery] = {
    "levels": PanelQuery(
        "shipper-overview", "Events by level",
        "sum by (level) (count_over_time({" + _S + "} [$__auto]))"),
    "error_types": PanelQuery(
        "shipper-overview", "Top error types",
        "topk(10, sum by (type) (count_over_time({" + _S + ', level=~"ERROR|CRITICAL"} '
        "[$__range])))"),
    "failing_routes": PanelQuery(
        "shipper-performance", "Failing routes",
        f'topk(10, sum by (route) (count_over_time({_HTTP} | json status="metadata.status", '
        f'route="metadata.route" | __error__="" | status >= 500 {_ROUTE} [$__range])))'),
    "p95": PanelQuery(
        "shipper-performance", "p95 latency (time range)",
        f'quantile_over_time(0.95, {_HTTP} | json duration_ms="metadata.duration_ms" '
        '| unwrap duration_ms | __error__="" [$__range]) by (service_name)'),
    "slowest_routes": PanelQuery(
        "shipper-performance", "Slowest routes",
        f'quantile_over_time(0.95, {_HTTP} | json duration_ms="metadata.duration_ms", '
        f'route="metadata.route" {_ROUTE} | unwrap duration_ms | __error__="" [$__range]) '
        "by (route)"),
}

def fill(expr: str, *, services: Sequence[str], span_s: float) -> str:
    """A panel expression as Grafana sends it for these services and this time range:
    ``${service:regex}`` becomes the services (``.+``, Grafana's custom all value, for none),
    ``$__range`` and ``$__auto`` the span (the report evaluates each query once, over the whole
    span)."""
    if not services:
        selector = ".+"
    elif len(services) == 1:
        selector = regex_escape(services[0])
    else:
        selector = "(" + "|".join(regex_escape(s) for s in services) + ")"
    if "`" in selector:
        raise ReportError(f"--service: a service name cannot contain a backtick: {services!r}")
    span = format_seconds(round(span_s))
    return (expr.replace("${service:regex}", selector)
            .replace("[$__range]", f"[{span}]").replace("[$__auto]", f"[{span}]"))


# ----------------------------------------------------------------------------- the digest


@dataclass(frozen=True)
class FiredAlert:
    """One alert rule that went into Alerting during the report's span."""

    title: str
    uid: str
    severity: str
    times: int
    first: _dt.datetime
    last: _dt.datetime
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class Digest:
    """Everything one report says."""

    start: _dt.datetime
    end: _dt.datetime
    services: tuple[str, ...]
    levels: dict[str, int]
    error_types: list[tuple[str, int]]
    failing_routes: list[tuple[str, int]]
    p95_ms: dict[str, float]
    slowest_routes: list[tuple[str, float]]
    #: None when the alerts could not be read; ``alerts_note`` says why
    alerts: list[FiredAlert] | None
    alerts_note: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(self.levels.values())

    @property
    def error_share(self) -> float | None:
        errors = self.levels.get("ERROR", 0) + self.levels.get("CRITICAL", 0)
        return errors / self.total if self.total else None


def _vector(data: Any, label: str) -> list[tuple[str, float]]:
    """``[(label value, number)]`` of an instant vector answer, biggest first."""
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise ReportError(f"Loki answered {str(data)[:200]!r}, expected an instant vector")
    out = [(str(r["metric"].get(label, "")), float(r["value"][1])) for r in data["result"]]
    return sorted(out, key=lambda kv: (-kv[1], kv[0]))


def collect(client: LokiClient, *, span_s: float, services: Sequence[str] = (),
            end: _dt.datetime | None = None,
            alerts: Callable[[_dt.datetime, _dt.datetime], list[FiredAlert]] | None = None,
            alerts_unavailable: str = "not available (SHIPPER_GRAFANA_URL unset)") -> Digest:
    """Run the digest's queries at ``end`` (now) over ``span_s`` seconds and read the alerts
    that fired (``alerts(start, end)``; None: not asked). Loki trouble raises
    :class:`ReportError`; Grafana trouble becomes ``alerts_note``."""
    end = end or _dt.datetime.now(_dt.UTC)
    start = end - _dt.timedelta(seconds=span_s)
    at = (end - _EPOCH) // _dt.timedelta(microseconds=1) * 1000  # exact, unlike a float

    def run(name: str, label: str) -> list[tuple[str, float]]:
        expr = fill(QUERIES[name].expr, services=services, span_s=span_s)
        try:
            return _vector(client.query(expr, at), label)
        except LokiError as exc:
            raise ReportError(f"Loki at {client.base_url}: {exc}") from exc

    levels = {k: round(v) for k, v in run("levels", "level")}
    fired: list[FiredAlert] | None = None
    note: str | None = f"alerts: {alerts_unavailable}"
    if alerts is not None:
        try:
            fired = alerts(start, end)
            note = None
        except ReportError as exc:
            note = f"alerts: not available ({exc})"
    return Digest(
        start=start, end=end, services=tuple(services),
        levels=dict(sorted(levels.items(), key=lambda kv: _level_order(kv[0]))),
        error_types=[(k, round(v)) for k, v in run("error_types", "type")][:_TOP],
        failing_routes=[(k, round(v)) for k, v in run("failing_routes", "route")][:_TOP],
        p95_ms=dict(run("p95", "service_name")),
        slowest_routes=run("slowest_routes", "route")[:_SLOWEST],
        alerts=fired, alerts_note=note,
    )


def _level_order(level: str) -> int:
    return _LEVELS.index(level) if level in _LEVELS else len(_LEVELS)


def _severity_order(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


# ----------------------------------------------------------------------------- Grafana


class GrafanaAlerts:
    """The alerts that fired, from a Grafana's rules and their state history."""

    def __init__(self, url: str, token: str, *, transport: Transport | None = None,
                 timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ReportError(f"--grafana-url: expected http(s)://host[:port][/path], "
                              f"got {hide_url_credentials(url)!r}")
        if not token:
            raise ReportError("a Grafana URL needs a token (--grafana-token or "
                              "SHIPPER_GRAFANA_TOKEN): a service account token with the Viewer "
                              "role")
        # the token authenticates; a user:password@ in the URL is never sent nor shown
        self.url = hide_url_credentials(url).rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                         "User-Agent": f"shipper/{__version__}"}
        self._transport = transport or Urllib3Transport()
        self._timeout = timeout

    def _get(self, path: str, params: Mapping[str, object] | None = None) -> Any:
        url = self.url + path + ("?" + urlencode(params) if params else "")
        try:
            resp = self._transport.request("GET", url, headers=self._headers,
                                           timeout=self._timeout)
        except TransportError as exc:
            raise ReportError(f"Grafana at {self.url}: {exc}") from exc
        if resp.status in (401, 403):
            raise ReportError(f"Grafana at {self.url} answered {resp.status} to GET {path}: "
                              "the token needs the Viewer role (alert rules: read)")
        if resp.status != 200:
            raise ReportError(f"Grafana at {self.url} answered {resp.status} to GET {path}: "
                              f"{resp.text.strip()[:200]}")
        try:
            return json.loads(resp.body)
        except ValueError as exc:
            raise ReportError(f"Grafana at {self.url}: GET {path} did not answer JSON: "
                              f"{resp.text[:200]!r}") from exc

    def rules(self) -> list[tuple[str, str, str]]:
        """``(uid, title, severity)`` of every Grafana-managed rule the token can read."""
        body = self._get("/api/ruler/grafana/api/v1/rules")
        out = []
        if not isinstance(body, dict):
            raise ReportError(f"Grafana at {self.url}: unexpected rules answer {str(body)[:200]}")
        for groups in body.values():
            for group in groups or []:
                for rule in group.get("rules") or []:
                    alert = rule.get("grafana_alert") or {}
                    if alert.get("uid"):
                        severity = str((rule.get("labels") or {}).get("severity", ""))
                        out.append((str(alert["uid"]), str(alert.get("title", alert["uid"])),
                                    severity))
        return out

    def __call__(self, start: _dt.datetime, end: _dt.datetime) -> list[FiredAlert]:
        fired = []
        for uid, title, severity in self.rules():
            frame = self._get("/api/v1/rules/history", {
                "ruleUID": uid, "from": int(start.timestamp()), "to": int(end.timestamp()),
                "limit": 1000})
            times = list(_alerting_transitions(frame))
            if times:
                stamps = sorted(t for t, _ in times)
                services = sorted({s for _, s in times if s})
                fired.append(FiredAlert(title=title, uid=uid, severity=severity,
                                        times=len(times), first=stamps[0], last=stamps[-1],
                                        services=tuple(services)))
        return sorted(fired, key=lambda a: (_severity_order(a.severity), -a.times, a.title))


_TEXT_LABELS = re.compile(r"\{(.*?)\} - ")


def _alerting_transitions(frame: Any) -> Iterator[tuple[_dt.datetime, str]]:
    """``(when, service_name)`` of each transition into Alerting in a state-history frame:
    the annotation backend's fields (time, text, prev, next, data) or the Loki backend's
    (time, line with previous/current/labels, labels)."""
    try:
        names = [f["name"] for f in frame["schema"]["fields"]]
        columns = dict(zip(names, frame["data"]["values"], strict=True))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"unexpected state history answer: {str(frame)[:200]}") from exc
    for i, ms in enumerate(columns.get("time", [])):
        when = _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC)
        if "line" in columns:
            line = columns["line"][i]
            line = json.loads(line) if isinstance(line, str) else line
            previous, current = str(line.get("previous", "")), str(line.get("current", ""))
            service = str((line.get("labels") or {}).get("service_name", ""))
        else:
            previous, current = str(columns["prev"][i]), str(columns["next"][i])
            match = _TEXT_LABELS.search(str(columns.get("text", [""] * (i + 1))[i]))
            pairs = dict(p.split("=", 1) for p in match.group(1).split(", ") if "=" in p) \
                if match else {}
            service = pairs.get("service_name", "")
        if current.startswith("Alerting") and not previous.startswith("Alerting"):
            yield when, service


# ----------------------------------------------------------------------------- rendering


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _when(d: _dt.datetime) -> str:
    return d.strftime("%Y-%m-%d %H:%M UTC")


def _heading(d: Digest) -> str:
    who = ", ".join(d.services) if d.services else "all services"
    span = format_seconds(round((d.end - d.start).total_seconds()))
    return f"shipper digest · last {span} · {who} · {_when(d.start)} to {_when(d.end)}"


def _alert_line(a: FiredAlert) -> str:
    where = f" in {', '.join(a.services)}" if a.services else ""
    times = "once" if a.times == 1 else f"{a.times} times"
    span = _when(a.first) if a.times == 1 else f"{_when(a.first)} to {_when(a.last)}"
    return f"{a.severity or '-'} {a.title}{where}: fired {times} ({span})"


def _sections(d: Digest) -> list[tuple[str, list[str]]]:
    """The digest as (title, lines), shared by the terminal and Slack renderings."""
    share = d.error_share
    levels = [f"{level:<9}{count:>10,}" for level, count in d.levels.items()]
    levels.append(f"{'total':<9}{d.total:>10,}" + (
        f"   ERROR + CRITICAL {share:.2%}" if share is not None else ""))
    if not d.levels:
        levels = ["no events"]
    width = max([len(k) for k, _ in d.error_types + d.failing_routes] + [10])
    errors = [f"{t:<{width}} {n:>8,}" for t, n in d.error_types] or ["none"]
    routes = [f"{r:<{width}} {n:>8,}" for r, n in d.failing_routes] or ["none"]
    latency = [f"{s:<{width}} {_ms(v):>9}" for s, v in d.p95_ms.items()] or [
        "no HTTP_REQUEST events"]
    if d.slowest_routes:
        latency.append("slowest routes (p95): " + ", ".join(
            f"{r} {_ms(v)}" for r, v in d.slowest_routes))
    if d.alerts is None:
        alerts = [d.alerts_note or "alerts: not available"]
    else:
        alerts = [_alert_line(a) for a in d.alerts] or ["none fired"]
    return [("Events by level", levels), ("Top error types", errors),
            ("Failing routes (5xx)", routes), ("p95 latency", latency),
            ("Alerts that fired", alerts)] + ([("Notes", list(d.notes))] if d.notes else [])


def render_text(d: Digest) -> str:
    """The digest for a terminal (plain text, fixed columns)."""
    out = [_heading(d), ""]
    for title, lines in _sections(d):
        out.append(title)
        out.extend("  " + line for line in lines)
        out.append("")
    return "\n".join(out)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack(d: Digest) -> dict[str, Any]:
    """The digest as a Slack incoming-webhook payload: Block Kit sections, and ``text`` as
    the notification's fallback."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "shipper daily digest"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(_heading(d))}]},
    ]
    for title, lines in _sections(d):
        body = "\n".join(lines)
        if len(body) > 2800:  # a section's text is limited to 3000 characters
            body = body[:2800] + "\n…"
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": f"*{title}*\n```{_slack_escape(body)}```"}})
    fired = len(d.alerts) if d.alerts is not None else None
    summary = (f"{d.total:,} events, ERROR + CRITICAL {d.error_share:.2%}"
               if d.error_share is not None else "no events")
    summary += "" if fired is None else f", {fired} alert rule(s) fired"
    return {"text": f"shipper digest: {summary}", "blocks": blocks}


def post_to_slack(url: str, payload: Mapping[str, Any], *, transport: Transport | None = None,
                  timeout: float = 30.0) -> None:
    """POST ``payload`` to a Slack incoming webhook; anything but 200 raises
    :class:`ReportError` with Slack's answer (``invalid_payload``, ``no_service``, ...)."""
    # the webhook's path is its secret: messages name its host only
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced [ ]
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ReportError("the Slack webhook is not an http(s):// incoming-webhook URL (it "
                          "should look like https://hooks.slack.com/services/...)")
    shown = hide_url_credentials(url)
    host = urlsplit(shown).netloc
    own = transport is None
    transport = transport or Urllib3Transport()
    try:
        resp = transport.request("POST", url, headers={"Content-Type": "application/json"},
                                 body=json.dumps(payload).encode(), timeout=timeout)
    except TransportError as exc:
        reason = str(exc).replace(shown, f"{parts.scheme}://{host}/...")
        raise ReportError(f"Slack webhook at {host}: {reason}") from exc
    finally:
        if own:
            transport.close()
    if resp.status != 200:
        raise ReportError(f"Slack webhook at {host} answered {resp.status}: "
                          f"{resp.text.strip()[:200]}")


# ----------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class _Options:
    span_s: float
    services: tuple[str, ...]
    loki_url: str | None
    slack_webhook: str | None
    grafana_url: str | None
    grafana_token: str | None
    as_json: bool


def _make(opts: _Options, out: TextIO, err: TextIO, transport: Transport | None) -> int:
    """One report: 0 made (and posted), 1 made but a part failed, 2 not made."""
    try:
        config = ShipperConfig.load(url=opts.loki_url, spool=False)
    except ConfigError as exc:
        err.write(f"shipper report: {exc}\n")
        return 2
    if not config.url:
        err.write("shipper report: no Loki URL: pass --url or set LOKI_URL\n")
        return 2
    client = LokiClient(config, transport)
    grafana: GrafanaAlerts | None = None
    unavailable = "not available (SHIPPER_GRAFANA_URL unset)"
    code = 0
    try:
        if opts.grafana_url:
            try:
                grafana = GrafanaAlerts(opts.grafana_url, opts.grafana_token or "",
                                        transport=transport)
            except ReportError as exc:
                unavailable = f"not available ({exc})"
                code = 1
        digest = collect(client, span_s=opts.span_s, services=opts.services, alerts=grafana,
                         alerts_unavailable=unavailable)
    except ReportError as exc:
        err.write(f"shipper report: {exc}\n")
        return 2
    finally:
        client.close()
    if grafana is not None and digest.alerts is None:
        code = 1
    if opts.as_json:
        out.write(json.dumps(dataclasses.asdict(digest), indent=2, default=str) + "\n")
    else:
        out.write(render_text(digest))
    out.flush()
    if opts.slack_webhook:
        try:
            post_to_slack(opts.slack_webhook, render_slack(digest), transport=transport)
            err.write("shipper report: posted to Slack\n")
        except ReportError as exc:
            err.write(f"shipper report: {exc}\n")
            code = 1
    elif opts.slack_webhook is not None:
        err.write("shipper report: the Slack webhook is empty: not posted\n")
    return code


def _next_run(at: tuple[int, int], now: _dt.datetime) -> _dt.datetime:
    run = now.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    return run if run > now else run + _dt.timedelta(days=1)


def run_report(opts: _Options, *, daily_at: tuple[int, int] | None = None,
               out: TextIO | None = None, err: TextIO | None = None,
               transport: Transport | None = None, stop: threading.Event | None = None,
               now: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.UTC)) -> int:
    """Make the report once, or (``daily_at``) every day at that UTC time until ``stop`` is
    set (SIGTERM sets it)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if daily_at is None:
        return _make(opts, out, err, transport)
    stop = stop or threading.Event()
    restore = stop_on_sigterm(stop)
    try:
        while True:
            when = _next_run(daily_at, now())
            err.write(f"shipper report: next digest at {_when(when)}\n")
            err.flush()
            if stop.wait(max(0.0, (when - now()).total_seconds())):
                return 0
            _make(opts, out, err, transport)  # trouble is reported; the schedule goes on
    finally:
        restore()


def _span(text: str) -> float:
    seconds = positive_duration_arg(text)
    if not 60 <= seconds <= 30 * 86400:
        raise argparse.ArgumentTypeError(f"--since must be between 1m and 30d, got {text!r}")
    return seconds


def _clock(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"--daily-at: expected HH:MM (UTC), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def add_parser(sub: Subparsers) -> None:
    """``shipper report`` (see shipper/cli/report.py)."""
    import os

    report = add_command(
        sub, "report", help="the daily digest, printed and posted to Slack",
        description="The digest of the last --since: events by level, the top error types, "
        "the failing routes, the p95 latency and the alerts that fired. Reads Loki with the "
        "dashboards' own LogQL and, with SHIPPER_GRAFANA_URL and a token, the alerts that "
        "fired from Grafana's state history. Exit codes: 0 made (and posted), 1 made but "
        "Grafana or Slack failed, 2 bad options or Loki unreachable.",
        example_lines=(
            "shipper report --since 24h",
            "shipper report --since 7d --service shop --json",
            "shipper report --since 24h --slack-webhook https://hooks.slack.com/services/...",
            'shipper report --daily-at 08:00 --slack-webhook "$DIGEST_SLACK_WEBHOOK_URL"',
        ))
    report.add_argument("--since", type=_span, default="24h", metavar="SPAN",
                        help="how far back the digest looks (default 24h; e.g. 12h, 7d)")
    report.add_argument("--service", action="append", default=[], metavar="NAME",
                        help="only this service_name (repeatable; default every service)")
    report.add_argument("--url", help="Loki base URL (default $LOKI_URL)")
    report.add_argument("--slack-webhook", metavar="URL",
                        help="also post the digest to this Slack incoming webhook; prefer "
                             "$SHIPPER_SLACK_WEBHOOK_URL or --slack-webhook-file: a command "
                             "line is visible to every user of the machine (ps)")
    report.add_argument("--slack-webhook-file", metavar="FILE",
                        help="read the webhook from this file (a Docker or Kubernetes secret); "
                             "default: $SHIPPER_SLACK_WEBHOOK_URL")
    report.add_argument("--grafana-url", default=os.environ.get("SHIPPER_GRAFANA_URL") or None,
                        metavar="URL",
                        help="Grafana, for the alerts that fired (default $SHIPPER_GRAFANA_URL)")
    report.add_argument("--grafana-token", default=os.environ.get("SHIPPER_GRAFANA_TOKEN") or None,
                        metavar="TOKEN",
                        help="a Grafana service account token with the Viewer role (default "
                             "$SHIPPER_GRAFANA_TOKEN)")
    # the digest is a document for people (a terminal, cron mail, a container's log): text
    # wherever it goes unless JSON is asked for
    add_format_arg(report, ("auto", "table", "json"), piped="table",
                   auto_help="text, on a terminal and piped alike; --json for one JSON object")
    report.add_argument("--daily-at", type=_clock, metavar="HH:MM",
                        help="keep running and make the digest every day at this time (UTC), "
                             "e.g. in a container without cron; SIGTERM stops it")
    report.set_defaults(handler=_report)


#: where the digest's webhook comes from when no option names it
WEBHOOK_ENV = "SHIPPER_SLACK_WEBHOOK_URL"


def slack_webhook(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The Slack webhook: ``--slack-webhook``, else the first line of
    ``--slack-webhook-file``, else :data:`WEBHOOK_ENV`; None when none is given, "" when the
    one given is empty (printed, not posted). Raises :class:`ReportError` naming the option,
    never showing the webhook (its path is its secret)."""
    if args.slack_webhook is not None and args.slack_webhook_file is not None:
        raise ReportError("--slack-webhook and --slack-webhook-file: give one")
    if args.slack_webhook is not None:
        return str(args.slack_webhook).strip()
    if args.slack_webhook_file is not None:
        path = Path(args.slack_webhook_file)
        try:
            with path.open("rb") as file:
                head = file.read(_WEBHOOK_MAX_BYTES + 1)
        except OSError as exc:
            raise ReportError(f"--slack-webhook-file {path}: cannot read it "
                              f"({exc.strerror or exc})") from None
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            raise ReportError(f"--slack-webhook-file {path}: not UTF-8 text") from None
        lines = text.strip().splitlines()
        if len(head) > _WEBHOOK_MAX_BYTES or len(lines) > 1:
            raise ReportError(f"--slack-webhook-file {path}: expected one line, the webhook "
                              "URL")
        if not lines:
            raise ReportError(f"--slack-webhook-file {path}: the file is empty")
        return lines[0].strip()
    value = environ.get(WEBHOOK_ENV)
    return None if value is None else value.strip()


def _report(args: argparse.Namespace) -> int:
    import os

    try:
        webhook = slack_webhook(args, os.environ)
    except ReportError as exc:
        sys.stderr.write(f"shipper report: {exc}\n")
        return 2
    opts = _Options(span_s=args.since, services=tuple(args.service), loki_url=args.url,
                    slack_webhook=webhook, grafana_url=args.grafana_url,
                    grafana_token=args.grafana_token, as_json=resolve_format(args) == "json")
    return run_report(opts, daily_at=args.daily_at)

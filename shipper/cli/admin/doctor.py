"""``shipper doctor``: is everything in place? One line per check, OK or FAIL with the fix.

Checks: Loki is ready; a marker event goes through the pipeline and comes back from a query;
Loki's retention matches ``loki/retention.yaml`` (``shipper retention check``); structured
metadata is allowed and deletion is enabled; the spool is empty or draining; shipping is healthy
for every service and host, by its last ``SHIPPER_HEALTH`` heartbeats (:mod:`.heartbeats`); and,
when
``SHIPPER_GRAFANA_URL`` and ``SHIPPER_GRAFANA_TOKEN`` are set, Grafana has the datasource, the
five dashboards and the alert rules, through its HTTP API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from shipper._units import NS, format_seconds
from shipper.cli.admin import common
from shipper.cli.admin.heartbeats import read_health
from shipper.cli.args import duration_arg
from shipper.cli.formats import add_format_arg, resolve_format
from shipper.cli.help import Subparsers
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.transport import Transport, TransportError, Urllib3Transport
from shipper.event import Actor, Level, LogEvent
from shipper.loki.client import LokiClient, LokiError
from shipper.loki.logql import FilterError, Filters, log_query
from shipper.loki.read_api import LokiReader
from shipper.loki.reader import parse_streams
from shipper.redact import hide_url_credentials

__all__ = ["DASHBOARD_UIDS", "DATASOURCE_UID", "RULE_UIDS", "Check", "add_parser",
           "run_checks"]

#: what grafana/ provisions (tests/test_admin_doctor.py holds these equal to the files)
DATASOURCE_UID = "loki"
DASHBOARD_UIDS = ("shipper-system-logs", "shipper-overview", "shipper-security",
                  "shipper-performance", "shipper-shipping-health")
RULE_UIDS = ("shipper-critical-event", "shipper-error-rate", "shipper-failed-logins-actor",
             "shipper-failed-logins-total", "shipper-webhook-failures", "shipper-p95-latency",
             "shipper-http-5xx-share", "shipper-error-rate-elevated", "shipper-payment-failures",
             "shipper-user-activity-drop", "shipper-events-dropped", "shipper-entries-refused",
             "shipper-spool-growing", "shipper-heartbeats-stopped", "shipper-sidecar-lag")
DOCTOR_TYPE = "SHIPPER_DOCTOR"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL, SKIP
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name:<20}  {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.status == "FAIL" and self.fix else text


def _ok(name: str, detail: str) -> Check:
    return Check(name, "OK", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "FAIL", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "SKIP", detail)


# ---------------------------------------------------------------------------------- Loki


def check_ready(client: LokiClient) -> Check:
    try:
        client.check_ready()
    except LokiError as exc:
        return _fail("loki ready", str(exc), "start Loki, wait for /ready (about 15 s after "
                     "start), check LOKI_URL")
    return _ok("loki ready", f"{client.base_url}/ready answers ready")


def check_round_trip(client: LokiClient, config: ShipperConfig, wait: float) -> Check:
    name = "push and query"
    marker = uuid.uuid4().hex
    service = config.service if config.service != "unknown_service" else "shipper-doctor"
    now = time.time_ns()
    event = LogEvent.create(service=service, level=Level.DEBUG, actor=Actor.SYSTEM,
                            type=DOCTOR_TYPE, message=f"shipper doctor marker {marker}",
                            logger="shipper.doctor", timestamp_ns=now,
                            metadata={"marker": marker})
    pipeline = Pipeline(config.replace(service=service, spool=False), start_replay=False,
                        health=False)
    try:
        pipeline.submit(event)
        delivered = pipeline.flush(min(wait, 30.0))
        stats = pipeline.stats()
    finally:
        pipeline.close(1.0)
    if not delivered or stats["sent"] < 1:
        why = ", ".join(f"{k}: {v}" for k, v in {**stats["refused"], **stats["dropped"]}.items())
        return _fail(name, f"the marker event was not accepted ({why or 'no answer'})",
                     "check that LOKI_URL reaches Loki's push API and the credentials")
    query = log_query(Filters(services=(service,), type=DOCTOR_TYPE, search=marker))
    deadline = time.monotonic() + wait
    while True:
        try:
            data = client.query_range(query, now - 60 * NS, now + 60 * NS, limit=10)
        except LokiError as exc:
            return _fail(name, f"the marker was pushed but the query failed: {exc}",
                         "check Loki's querier (GET /loki/api/v1/query_range)")
        if parse_streams(data):
            took = (time.time_ns() - now) / 1e6
            return _ok(name, f"marker {marker[:8]} pushed and read back in {took:.0f} ms "
                       f"(service {service}, DEBUG {DOCTOR_TYPE})")
        if time.monotonic() >= deadline:
            return _fail(name, "the marker was pushed but not found after "
                         f"{format_seconds(wait)}",
                         "check Loki's ingester and querier logs; is the clock right?")
        time.sleep(0.5)


def _config(client: LokiClient) -> dict[str, Any] | Check:
    try:
        return client.loki_config()
    except LokiError as exc:
        return _fail("loki config", f"cannot read GET /config: {exc}",
                     "let the admin machine reach Loki's /config (a proxy may hide it)")


def check_retention(client: LokiClient, config_doc: dict[str, Any] | Check,
                    retention_file: str | None) -> Check:
    from shipper.cli.retention import RetentionError, RetentionPolicy, check, resolve_retention_file

    name = "retention"
    if isinstance(config_doc, Check):
        return _fail(name, config_doc.detail, config_doc.fix)
    try:
        path = resolve_retention_file(retention_file)
    except RetentionError as exc:
        return _skip(name, f"no policy to compare with ({exc})")
    try:
        policy = RetentionPolicy.load(path)
        rows = check(policy, config_doc)
    except RetentionError as exc:
        return _fail(name, str(exc), f"fix {path}")
    drift = [r for r in rows if not r.ok]
    if drift:
        names = ", ".join(r.selector for r in drift)
        return _fail(name, f"{len(drift)} of {len(rows)} rules differ from {path}: {names}",
                     "shipper retention render --write loki/config.yaml, restart Loki; "
                     "shipper retention check --url $LOKI_URL shows the rows")
    return _ok(name, f"Loki applies {path} ({len(rows)} rules)")


def check_structured_metadata(config_doc: dict[str, Any] | Check) -> Check:
    name = "structured metadata"
    if isinstance(config_doc, Check):
        return _fail(name, config_doc.detail, config_doc.fix)
    limits = config_doc.get("limits_config") or {}
    if limits.get("allow_structured_metadata") is True:
        return _ok(name, "allowed (actor_id, trace_id, logger)")
    return _fail(name, "limits_config.allow_structured_metadata is not true: actor_id, "
                 "trace_id and logger are refused", "set limits_config.allow_structured_"
                 "metadata: true (schema v13, tsdb) and restart Loki")


def check_deletion(client: LokiClient, config_doc: dict[str, Any] | Check) -> Check:
    name = "deletion"
    if isinstance(config_doc, Check):
        return _fail(name, config_doc.detail, config_doc.fix)
    mode = (config_doc.get("limits_config") or {}).get("deletion_mode", "")
    compactor = config_doc.get("compactor") or {}
    fix = ("set compactor.retention_enabled: true, compactor.delete_request_store (e.g. "
           "filesystem) and limits_config.deletion_mode: filter-and-delete, restart Loki")
    if mode == "disabled":
        return _fail(name, "limits_config.deletion_mode is disabled", fix)
    if not compactor.get("delete_request_store"):
        return _fail(name, "compactor.delete_request_store is not set", fix)
    try:
        pending = [r for r in client.delete_requests() if r.get("status") != "processed"]
    except LokiError as exc:
        return _fail(name, f"the deletion API does not answer: {exc}", fix)
    return _ok(name, f"deletion_mode {mode}; {len(pending)} request(s) waiting")


# ------------------------------------------------------------------------------- shipping


def check_shipping(client: LokiClient, since_s: float,
                   services: tuple[str, ...] = ()) -> list[Check]:
    """One check per service and host that sent heartbeats in the last ``since_s`` seconds:
    OK with its numbers, or FAIL with what is wrong and where to look."""
    name = "shipping"
    now = time.time_ns()
    try:
        found = read_health(LokiReader(client=client), since_s=since_s, now_ns=now,
                            services=services)
    except (LokiError, FilterError) as exc:
        return [_fail(name, f"cannot read the SHIPPER_HEALTH heartbeats: {exc}",
                      "check Loki's querier (GET /loki/api/v1/query_range)")]
    if not found:
        return [_skip(name, f"no SHIPPER_HEALTH heartbeat in the last {format_seconds(since_s)} "
                      "(health_interval 0, or nothing shipped through a pipeline)")]
    checks = []
    for health in found:
        where = f"{health.service} on {health.host}"
        if not health.processes:
            checks.append(_fail(name, f"{where}: no readable heartbeat; "
                                + "; ".join(health.notes),
                                "an app logs events of type SHIPPER_HEALTH itself: give them "
                                "another type"))
            continue
        summary = health.summary(since_s)
        notes = "".join(f"; {note}" for note in health.notes)
        if health.healthy:
            checks.append(_ok(name, f"{where}: {summary}{notes}"))
        else:
            checks.append(_fail(name, f"{where}: {'; '.join(health.problems)} ({summary}{notes})",
                                _SHIPPING_FIX))
    return checks


_SHIPPING_FIX = ("open the Shipping health dashboard for that service; read the stderr of its "
                 "processes (shipper [service] ...); docs: troubleshooting, Events are missing")


# ---------------------------------------------------------------------------------- spool


def check_spool(config: ShipperConfig, wait: float,
                sleep: Callable[[float], None] = time.sleep) -> Check:
    from shipper.delivery.spool import spool_status

    name = "spool"
    directory = config.resolved_spool_dir()
    if directory is None:
        return _ok(name, "off (SHIPPER_SPOOL=false)")
    if not directory.exists():
        return _ok(name, f"empty ({directory})")
    before = spool_status(directory)
    waiting = before.records or 0
    if waiting == 0:
        return _ok(name, f"empty ({directory})")
    sleep(wait)
    left = spool_status(directory).records or 0
    if left < waiting:
        return _ok(name, f"draining: {left} events left in {directory} (was {waiting} "
                   f"{format_seconds(wait)} ago)")
    age = before.oldest_segment_age_s
    since = f", oldest {age / 60:.0f} min old" if age else ""
    return _fail(name, f"{left} events waiting in {directory}, not draining{since}",
                 "shipper spool push (with LOKI_URL set), and check that the app that wrote "
                 "them reaches Loki")


# -------------------------------------------------------------------------------- Grafana


def _grafana_get(transport: Transport, base: str, token: str, path: str) -> tuple[int, Any]:
    resp = transport.request("GET", base + path, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json"}, timeout=10.0)
    try:
        body = json.loads(resp.body) if resp.body else None
    except ValueError:
        body = resp.text
    return resp.status, body


def check_grafana(url: str | None, token: str | None,
                  transport: Transport | None = None) -> list[Check]:
    if not url or not token:
        return [_skip("grafana", "SHIPPER_GRAFANA_URL and SHIPPER_GRAFANA_TOKEN (a service "
                      "account token) are not both set")]
    # the token authenticates; a user:password@ in the URL is never sent nor shown
    base = hide_url_credentials(url).rstrip("/")
    transport = transport or Urllib3Transport()
    checks: list[Check] = []
    fix_auth = "check SHIPPER_GRAFANA_TOKEN: a service account token with the Viewer role or more"
    try:
        status, body = _grafana_get(transport, base, token,
                                    f"/api/datasources/uid/{DATASOURCE_UID}")
        if status in (401, 403):
            return [_fail("grafana", f"{base} refused the token ({status})", fix_auth)]
        if status == 200 and isinstance(body, dict) and body.get("type") == "loki":
            health, hbody = _grafana_get(transport, base, token,
                                         f"/api/datasources/uid/{DATASOURCE_UID}/health")
            message = hbody.get("message", "") if isinstance(hbody, dict) else str(hbody)
            if health == 200:
                checks.append(_ok("grafana datasource", f"uid {DATASOURCE_UID} reaches Loki"))
            else:
                checks.append(_fail("grafana datasource", f"uid {DATASOURCE_UID} cannot reach "
                                    f"Loki: {message}", "set GRAFANA_LOKI_URL for Grafana to "
                                    "the URL Grafana reaches Loki at, restart Grafana"))
        else:
            checks.append(_fail("grafana datasource", f"no Loki datasource with uid "
                                f"{DATASOURCE_UID} ({status})", "provision grafana/provisioning/"
                                "datasources/loki.yaml and restart Grafana"))
        missing = []
        for uid in DASHBOARD_UIDS:
            status, _ = _grafana_get(transport, base, token, f"/api/dashboards/uid/{uid}")
            if status != 200:
                missing.append(f"{uid} ({status})")
        if missing:
            checks.append(_fail("grafana dashboards", f"missing: {', '.join(missing)}",
                                "provision grafana/provisioning/dashboards/shipper.yaml with "
                                "grafana/dashboards/*.json and restart Grafana"))
        else:
            checks.append(_ok("grafana dashboards", ", ".join(DASHBOARD_UIDS)))
        status, body = _grafana_get(transport, base, token, "/api/v1/provisioning/alert-rules")
        have = {r.get("uid") for r in body} if status == 200 and isinstance(body, list) else set()
        absent = [uid for uid in RULE_UIDS if uid not in have]
        if status != 200:
            checks.append(_fail("grafana alert rules", f"cannot list alert rules ({status})",
                                "give the token's service account the alerting read "
                                "permission (Viewer or more)"))
        elif absent:
            checks.append(_fail("grafana alert rules", f"missing: {', '.join(absent)}",
                                "provision grafana/provisioning/alerting/*.yaml and restart "
                                "Grafana"))
        else:
            checks.append(_ok("grafana alert rules", f"{len(RULE_UIDS)} rules provisioned"))
    except TransportError as exc:
        return [_fail("grafana", f"Grafana is unreachable at {base}: {exc}",
                      "check SHIPPER_GRAFANA_URL and that Grafana runs")]
    return checks


# ------------------------------------------------------------------------------- command


def run_checks(config: ShipperConfig, *, retention_file: str | None = None, wait: float = 15.0,
               spool_wait: float = 2.0, health_since: float = 3600.0,
               health_services: tuple[str, ...] = (), grafana_url: str | None = None,
               grafana_token: str | None = None,
               grafana_transport: Transport | None = None) -> list[Check]:
    client = LokiClient(config.replace(spool=False))
    try:
        ready = check_ready(client)
        checks = [ready]
        if ready.status == "OK":
            checks.append(check_round_trip(client, config, wait))
            doc = _config(client)
            checks += [check_retention(client, doc, retention_file),
                       check_structured_metadata(doc), check_deletion(client, doc)]
            checks += check_shipping(client, health_since, health_services)
        else:
            for name in ("push and query", "retention", "structured metadata", "deletion",
                         "shipping"):
                checks.append(_fail(name, "not checked: Loki is not ready", ready.fix))
    finally:
        client.close()
    checks.append(check_spool(config, spool_wait))
    checks += check_grafana(grafana_url, grafana_token, grafana_transport)
    return checks


def add_parser(sub: Subparsers) -> None:
    doctor = common.new_parser(
        sub, "doctor", help="check Loki, the pipeline, retention, the spool and Grafana",
        description="Check that everything is in place: Loki is ready; a marker event (DEBUG, "
        "type SHIPPER_DOCTOR) goes through the pipeline and is read back; Loki's retention "
        "matches the policy file (as shipper retention check); structured metadata is allowed "
        "and deletion is enabled; the spool of $SHIPPER_SERVICE is empty or draining; shipping "
        "is healthy for every service and host by its SHIPPER_HEALTH heartbeats of the last "
        "hour (--health-since): none silent, nothing dropped or refused, no spool growing, "
        "no sidecar file far behind, with the numbers; and, "
        "when SHIPPER_GRAFANA_URL and SHIPPER_GRAFANA_TOKEN are set, Grafana has the Loki "
        "datasource, the five dashboards and the alert rules. One line per check: OK, FAIL "
        "with the fix, or SKIP. Exit 1 if any check fails.",
        example_lines=(
            "shipper doctor",
            "SHIPPER_GRAFANA_URL=http://localhost:3000 SHIPPER_GRAFANA_TOKEN=glsa_... "
            "shipper doctor",
            "shipper doctor --retention-file loki/retention.yaml --json",
            "shipper doctor --service checkout --health-since 6h",
        ))
    doctor.add_argument("--retention-file", metavar="PATH",
                        help="the policy (default: $SHIPPER_RETENTION_FILE, else "
                        "loki/retention.yaml under the current directory)")
    doctor.add_argument("--wait", type=duration_arg, default=15.0, metavar="DURATION",
                        help="how long the marker may take to come back: 15, 15s, 1m "
                        "(default 15s)")
    doctor.add_argument("--spool-wait", type=duration_arg, default=2.0, metavar="DURATION",
                        help="how long to watch a non-empty spool drain (default 2s)")
    doctor.add_argument("--health-since", type=duration_arg, default=3600.0, metavar="DURATION",
                        help="how far back to read the SHIPPER_HEALTH heartbeats (default 1h)")
    doctor.add_argument("--service", action="append", default=[], metavar="NAME",
                        help="judge the shipping of these services only (repeatable; default: "
                        "every service that sent heartbeats)")
    doctor.add_argument("--grafana-url", help="default: $SHIPPER_GRAFANA_URL")
    add_format_arg(doctor, ("auto", "table", "json"),
                   auto_help="lines on a terminal, JSON when piped")
    common.add_connection_args(doctor)
    doctor.set_defaults(handler=common.run("doctor", _doctor))


def _doctor(args: argparse.Namespace) -> int:
    config = common.shipper_config(args)
    checks = run_checks(config, retention_file=args.retention_file, wait=args.wait,
                        spool_wait=args.spool_wait, health_since=args.health_since,
                        health_services=tuple(args.service),
                        grafana_url=args.grafana_url or os.environ.get("SHIPPER_GRAFANA_URL"),
                        grafana_token=os.environ.get("SHIPPER_GRAFANA_TOKEN"))
    if resolve_format(args) == "json":
        print(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        for check in checks:
            print(check.line())
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        print(f"{len(failed)} of {len(checks)} checks failed", file=sys.stderr)
        return common.EXIT_FAILED
    return common.EXIT_OK

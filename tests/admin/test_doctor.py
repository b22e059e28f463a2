"""`shipper doctor`: one line per check, OK or FAIL with the fix, exit 1 on any failure; the
Grafana checks against a small fake Grafana HTTP API."""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.cli.admin import doctor
from shipper.cli.admin.doctor import DASHBOARD_UIDS, DATASOURCE_UID, RULE_UIDS, run_checks
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.delivery.health import Heartbeat, counters
from shipper.delivery.spool import Spool
from shipper.event import LogEvent, to_entry
from tests.support import _grafana as g
from tests.support.fakeloki import FakeLoki, free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "glsa_test_token"


class FakeGrafana:
    """Grafana's HTTP API, the parts doctor reads: datasource by uid (and its health),
    dashboards by uid, provisioned alert rules. Bearer token required."""

    def __init__(self) -> None:
        self.datasources = {DATASOURCE_UID: {"uid": DATASOURCE_UID, "type": "loki"}}
        self.datasource_health = (200, {"status": "OK", "message": "Data source successfully "
                                                                  "connected."})
        self.dashboards = set(DASHBOARD_UIDS)
        self.rules = [{"uid": uid, "title": uid} for uid in RULE_UIDS]
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"message": "invalid API key"})
                path = self.path
                if path.startswith("/api/datasources/uid/"):
                    uid = path.split("/")[4]
                    if uid not in fake.datasources:
                        return self._send(404, {"message": "Data source not found"})
                    if path.endswith("/health"):
                        return self._send(*fake.datasource_health)
                    return self._send(200, fake.datasources[uid])
                if path.startswith("/api/dashboards/uid/"):
                    uid = path.rsplit("/", 1)[1]
                    if uid in fake.dashboards:
                        return self._send(200, {"dashboard": {"uid": uid}})
                    return self._send(404, {"message": "Dashboard not found"})
                if path == "/api/v1/provisioning/alert-rules":
                    return self._send(200, fake.rules)
                return self._send(404, {"message": "Not found"})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeLoki]:
    monkeypatch.chdir(REPO)  # loki/retention.yaml is found under the current directory
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    for var in ("SHIPPER_GRAFANA_URL", "SHIPPER_GRAFANA_TOKEN", "SHIPPER_SERVICE",
                "SHIPPER_RETENTION_FILE"):
        monkeypatch.delenv(var, raising=False)
    with FakeLoki(rate_limit=False) as loki:
        monkeypatch.setenv("LOKI_URL", loki.url)
        yield loki


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    yield server
    server.stop()


def statuses(fake: FakeLoki, tmp_path: Path, **kwargs: Any) -> dict[str, doctor.Check]:
    config = ShipperConfig(url=fake.url, spool_dir=str(tmp_path / "spool"))
    return {c.name: c for c in run_checks(config, wait=3, spool_wait=0.2, **kwargs)}


def test_the_provisioned_uids_doctor_expects_are_the_files_uids() -> None:
    assert set(DASHBOARD_UIDS) == set(g.dashboards())
    assert set(RULE_UIDS) == {r["uid"] for r in g.alert_rules()}
    (ds,) = g.load_yaml(g.PROVISIONING / "datasources" / "loki.yaml")["datasources"]
    assert ds["uid"] == DATASOURCE_UID


def test_everything_in_place_prints_one_ok_line_per_check_and_exits_0(
    fake: FakeLoki, grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SHIPPER_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("SHIPPER_GRAFANA_TOKEN", TOKEN)
    _seed(fake, "shop", "web-1", minutes=5)
    code = main(["doctor", "--wait", "15s", "--spool-wait", "0.1", "--format", "table"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    names = ["loki ready", "push and query", "retention", "structured metadata", "deletion",
             "shipping", "spool", "grafana datasource", "grafana dashboards",
             "grafana alert rules"]
    assert [re.findall(r"^(?:OK|FAIL|SKIP) +(.+?)  ", line)[0] for line in lines] == names
    assert all(line.startswith("OK") for line in lines)
    marker = [s for s in fake.stored() if dict(s.labels)["type"] == "SHIPPER_DOCTOR"]
    assert len(marker) == 1 and dict(marker[0].labels)["level"] == "DEBUG"


def test_each_problem_fails_its_check_with_the_fix(
    fake: FakeLoki, grafana: FakeGrafana, tmp_path: Path,
) -> None:
    limits = fake.config["limits_config"]
    limits["allow_structured_metadata"] = False
    limits["deletion_mode"] = "disabled"
    limits["retention_stream"][0]["period"] = "7d"
    grafana.dashboards.discard("shipper-security")
    grafana.rules = grafana.rules[1:]
    grafana.datasource_health = (400, {"status": "ERROR", "message": "connection refused"})
    spool = Spool(tmp_path / "spool")
    event = LogEvent.create(service="shop", level="INFO", message="stuck", timestamp_ns=1)
    from shipper.event import to_entry

    spool.append([(0, to_entry(event).to_json().encode())])
    spool.close()
    checks = statuses(fake, tmp_path, grafana_url=grafana.url, grafana_token=TOKEN)
    expect = {
        "loki ready": "OK", "push and query": "OK", "retention": "FAIL",
        "structured metadata": "FAIL", "deletion": "FAIL", "shipping": "SKIP", "spool": "FAIL",
        "grafana datasource": "FAIL", "grafana dashboards": "FAIL",
        "grafana alert rules": "FAIL",
    }
    assert {k: c.status for k, c in checks.items()} == expect
    assert "shipper retention render --write" in checks["retention"].fix
    assert "allow_structured_metadata: true" in checks["structured metadata"].fix
    assert "deletion_mode" in checks["deletion"].detail
    assert "1 events waiting" in checks["spool"].detail
    assert "shipper spool push" in checks["spool"].fix
    assert "connection refused" in checks["grafana datasource"].detail
    assert "shipper-security" in checks["grafana dashboards"].detail
    assert RULE_UIDS[0] in checks["grafana alert rules"].detail
    for check in checks.values():
        line = check.line()
        assert line.startswith(check.status)
        if check.status == "FAIL":
            assert "\n      fix: " in line


def test_loki_down_fails_every_loki_check_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("SHIPPER_GRAFANA_URL", raising=False)
    port = free_port()
    code = main(["doctor", "--url", f"http://127.0.0.1:{port}", "--format", "json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert checks["loki ready"]["status"] == "FAIL"
    assert f"unreachable at http://127.0.0.1:{port}" in checks["loki ready"]["detail"]
    assert checks["deletion"]["detail"] == "not checked: Loki is not ready"
    assert checks["spool"]["status"] == "OK"
    assert checks["grafana"]["status"] == "SKIP"


def test_a_wrong_grafana_token_is_one_failure(fake: FakeLoki, grafana: FakeGrafana,
                                              tmp_path: Path) -> None:
    checks = statuses(fake, tmp_path, grafana_url=grafana.url, grafana_token="wrong")
    assert checks["grafana"].status == "FAIL" and "refused the token (401)" in \
        checks["grafana"].detail


def test_a_draining_spool_is_ok(fake: FakeLoki, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    event = LogEvent.create(service="shop", level="INFO", message="x", timestamp_ns=1)
    from shipper.event import to_entry

    spool.append([(0, to_entry(event).to_json().encode())] * 3)
    spool.close()
    calls = []

    def drain(_: float) -> None:  # another process replays the spool meanwhile
        calls.append(1)
        for segment in (tmp_path / "spool").glob("*.seg"):
            segment.unlink()

    check = doctor.check_spool(ShipperConfig(spool_dir=str(tmp_path / "spool")), 1.0,
                               sleep=drain)
    assert check.status == "OK" and "draining: 0 events left" in check.detail and calls


# ------------------------------------------------------------------ shipping, by the heartbeats

NS = 1_000_000_000


def _seed(loki: FakeLoki, service: str, host: str, *, minutes: int, pid: int = 4711,
          silent_for: int = 0, final: bool = False, trouble: bool = False,
          extra: dict[str, Any] | None = None) -> None:
    """A heartbeat a minute for ``minutes`` minutes, the last one ``silent_for`` minutes ago,
    as one process ships them (built by the shipper's own Heartbeat)."""
    beat = Heartbeat(60, service=service, env=None, now=0.0)
    beat.host = host
    now = time.time_ns()
    for minute in range(minutes):
        n = minute + 1
        dropped = {"queue_full": 3 * n} if trouble else {}
        refused = {"too_old": 2 * n} if trouble else {}
        state: dict[str, Any] = {"queued": 0, "spool_bytes": (n * 2**20) if trouble else 0,
                                 "spool_oldest_age_s": 60.0 * n if trouble else 0.0,
                                 "offline": False, **(extra or {})}
        at = now - (silent_for + minutes - 1 - minute) * 60 * NS - NS
        event = beat.event(counters({"accepted": 50 * n, "sent": 50 * n}, dropped, refused),
                           state, final=final and minute == minutes - 1, now=60.0 * minute,
                           timestamp_ns=at)
        meta = dict(event.metadata, pid=pid)
        entry = to_entry(dataclasses.replace(event, metadata=meta))
        loki.add(dict(entry.labels), entry.timestamp_ns, entry.line)


def _shipping(loki: FakeLoki, **kwargs: Any) -> list[doctor.Check]:
    from shipper.loki.client import LokiClient

    client = LokiClient(ShipperConfig(url=loki.url, spool=False))
    try:
        return doctor.check_shipping(client, 3600.0, **kwargs)
    finally:
        client.close()


def test_shipping_is_ok_per_service_and_host_with_the_numbers(fake: FakeLoki) -> None:
    _seed(fake, "shop", "web-1", minutes=10)
    _seed(fake, "shop", "web-2", minutes=10, pid=12)
    (one, two) = _shipping(fake)
    assert (one.status, two.status) == ("OK", "OK")
    assert one.detail.startswith("shop on web-1: 1 process(es), 1 running")
    assert "accepted 500, sent 500, dropped 0, refused 0" in one.detail
    assert two.detail.startswith("shop on web-2:")


def test_shipping_fails_naming_drops_refusals_and_a_growing_spool_with_numbers(
        fake: FakeLoki) -> None:
    _seed(fake, "billing", "db-1", minutes=6, trouble=True)
    (check,) = _shipping(fake)
    assert check.status == "FAIL" and check.fix
    assert "18 events dropped (queue_full: 18)" in check.detail
    assert "12 entries refused by Loki (too_old: 12)" in check.detail
    assert "spool holds 6.0 MiB" in check.detail and "grew from 1.0 MiB" in check.detail


def test_a_silent_process_fails_and_a_clean_stop_does_not(fake: FakeLoki) -> None:
    _seed(fake, "worker", "w-1", minutes=5, silent_for=20)
    _seed(fake, "cron", "c-1", minutes=5, silent_for=20, final=True)
    checks = {c.detail.split(" on ")[0]: c for c in _shipping(fake)}
    assert checks["worker"].status == "FAIL" and "silent for 20m" in checks["worker"].detail
    assert checks["cron"].status == "OK" and "stopped cleanly 20m" in checks["cron"].detail


def test_a_sidecar_far_behind_and_an_offline_process_fail(fake: FakeLoki) -> None:
    _seed(fake, "logs", "node-1", minutes=3, extra={
        "offline": True, "lag_max_bytes": 64 * 2**20, "lag_max_path": "/var/log/big.log"})
    (check,) = _shipping(fake)
    assert check.status == "FAIL"
    assert "offline" in check.detail and "64.0 MiB behind in /var/log/big.log" in check.detail


@pytest.mark.parametrize("forged", [
    {"pid": "one", "dropped": 1},
    {"pid": 7, "dropped": -5},
    {"pid": 7, "dropped": 1e300},
    {"pid": 7, "accepted": "many"},
    {"pid": 7, "dropped_x": True},
    {"pid": 7, "spool_oldest_age_s": "NaN"},
])
def test_a_forged_heartbeat_is_left_out_and_said_never_trusted(
        fake: FakeLoki, forged: dict[str, Any]) -> None:
    _seed(fake, "shop", "web-1", minutes=3)
    line = json.dumps({"message": "not a heartbeat", "metadata": {"host": "web-1", **forged}})
    fake.add({"service_name": "shop", "level": "INFO", "actor": "SYSTEM",
              "type": "SHIPPER_HEALTH"}, time.time_ns() - NS, line)
    (check,) = _shipping(fake)
    assert check.status == "OK", check.detail
    assert "1 heartbeat(s) left out, not a shipper's: metadata." in check.detail
    assert "accepted 150" in check.detail


def test_only_forged_heartbeats_fail_naming_them(fake: FakeLoki) -> None:
    fake.add({"service_name": "app", "level": "INFO", "actor": "SYSTEM",
              "type": "SHIPPER_HEALTH"}, time.time_ns() - NS, '{"message": "x"}')
    (check,) = _shipping(fake)
    assert check.status == "FAIL" and "no readable heartbeat" in check.detail


def test_no_heartbeat_is_a_skip_and_another_type_is_not_read(fake: FakeLoki) -> None:
    fake.add({"service_name": "shop", "level": "INFO", "actor": "SYSTEM",
              "type": "APP_SHIPPER_HEALTH_X"}, time.time_ns() - NS, '{"message": "x"}')
    (check,) = _shipping(fake)
    assert check.status == "SKIP" and "no SHIPPER_HEALTH heartbeat" in check.detail


def test_doctor_service_flag_judges_only_that_service(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    _seed(fake, "shop", "web-1", minutes=3)
    _seed(fake, "billing", "db-1", minutes=3, trouble=True)
    main(["doctor", "--wait", "5s", "--spool-wait", "0.1", "--format", "json",
          "--service", "shop", "--health-since", "30m"])
    checks = [c for c in json.loads(capsys.readouterr().out) if c["name"] == "shipping"]
    assert [c["detail"].split(":")[0] for c in checks] == ["shop on web-1"]
    assert "in the last 30m" in checks[0]["detail"]


def test_a_heartbeat_with_a_thousand_reasons_names_the_largest_and_sums_the_rest(
        fake: FakeLoki) -> None:
    reasons = {f"dropped_r{i:04d}": i + 1 for i in range(1000)}
    _seed(fake, "shop", "web-1", minutes=1, extra={**reasons, "dropped_\nforged": 5})
    (check,) = _shipping(fake)
    assert check.status == "OK"  # the reasons alone, without a dropped total, drop nothing
    line = json.dumps({"message": "m", "metadata": {"pid": 9, "host": "web-1",
                                                    "dropped": 10**6, **reasons}})
    fake.add({"service_name": "shop", "level": "WARNING", "actor": "SYSTEM",
              "type": "SHIPPER_HEALTH"}, time.time_ns() - NS, line)
    (check,) = _shipping(fake)
    assert check.status == "FAIL"
    assert "r0999: 2000" in check.detail and "992 more reasons: " in check.detail
    assert "forged" not in check.detail and len(check.detail) < 1000

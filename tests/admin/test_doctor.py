"""`shipper doctor`: one line per check, OK or FAIL with the fix, exit 1 on any failure; the
Grafana checks against a small fake Grafana HTTP API."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.cli.admin import doctor
from shipper.cli.admin.doctor import DASHBOARD_UIDS, DATASOURCE_UID, RULE_UIDS, run_checks
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.delivery.spool import Spool
from shipper.event import LogEvent
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
    code = main(["doctor", "--wait", "15s", "--spool-wait", "0.1", "--format", "table"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    names = ["loki ready", "push and query", "retention", "structured metadata", "deletion",
             "spool", "grafana datasource", "grafana dashboards", "grafana alert rules"]
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
        "structured metadata": "FAIL", "deletion": "FAIL", "spool": "FAIL",
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

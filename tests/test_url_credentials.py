"""A Loki URL with ``user:password@`` in it: the credentials are sent as basic auth, and no
start line, ``--check``, ``doctor`` line, error message or log line ever shows them.

Every place that shows a URL shows it through :func:`shipper.redact.hide_url_credentials`;
each test here looks at one such place with a password no output may contain.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from shipper import LokiHandler
from shipper.cli.main import main
from shipper.config import ConfigError, ShipperConfig
from shipper.delivery.transport import TransportError, Urllib3Transport
from shipper.loki.client import LokiClient, LokiError
from shipper.redact import hide_url_credentials
from shipper.sidecar.config import SidecarConfigError, load_config
from tests.delivery.test_push_client import _entry
from tests.support.fakeloki import FakeLoki, free_port
from tests.support.sidecar_process import SidecarProcess, json_lines, wait_until

SECRET = "s3cret-Pa55"
REPO = Path(__file__).resolve().parents[1]


def _with_credentials(url: str, password: str = SECRET) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://shipper:{password}@{rest}"


def _dead_url() -> str:
    return _with_credentials(f"http://127.0.0.1:{free_port()}")  # nothing listens


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        yield fake


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ----------------------------------------------------------------------------- the helper


@pytest.mark.parametrize(("text", "shown"), [
    ("http://shipper:pw@loki:3100", "http://loki:3100"),
    ("https://shipper:p%40ss@loki.example.com/loki/api/v1/push",
     "https://loki.example.com/loki/api/v1/push"),
    # a careless password with @, ? or # unencoded is still all hidden
    ("http://shipper:p@ss#w?rd@loki:3100/x", "http://loki:3100/x"),
    ("https://glc_token1234@logs.example.com", "https://logs.example.com"),
    ("GET http://a:b@h1/x failed, then http://c:d@h2:80 too",
     "GET http://h1/x failed, then http://h2:80 too"),
])
def test_hide_url_credentials_removes_the_userinfo_of_every_url(text: str, shown: str) -> None:
    assert hide_url_credentials(text) == shown


@pytest.mark.parametrize("text", [
    "http://loki:3100", "mail bob@example.com", "http://loki:3100/x?to=bob@example.com",
    "no url at all", "",
])
def test_text_without_url_credentials_is_returned_as_it_is(text: str) -> None:
    assert hide_url_credentials(text) is text


# ----------------------------------------------------------------------------- the config


def test_credentials_in_the_url_become_basic_auth_and_leave_the_url() -> None:
    config = ShipperConfig(url="http://shipper:p%40ss%2Fword@loki:3100/")
    assert (config.url, config.username, config.password) == (
        "http://loki:3100/", "shipper", "p@ss/word")
    assert "p@ss" not in repr(config)
    assert config.replace(service="x").password == "p@ss/word"


def test_credentials_in_the_url_reach_loki_as_basic_auth(loki: FakeLoki) -> None:
    client = LokiClient(ShipperConfig(url=_with_credentials(loki.url), spool=False))
    assert [o.kind for o in client.push([_entry(1)])] == ["ok"]
    assert client.labels() is not None
    assert SECRET not in client.base_url + client.push_url
    for request in loki.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["authorization"] == _basic("shipper", SECRET), request.path


@pytest.mark.parametrize(("settings", "problem"), [
    ({"url": "http://shipper:" + SECRET + "@loki", "username": "other", "password": "x"},
     "username or bearer_token is set too"),
    ({"url": "http://shipper:" + SECRET + "@loki", "bearer_token": "t"},
     "username or bearer_token is set too"),
    ({"url": "http://shipper:@loki"}, "need a user and a password"),
    ({"url": "ftp://shipper:" + SECRET + "@loki"}, "got 'ftp://loki'"),
    ({"url": "shipper:" + SECRET + "@loki:3100"}, "without http:// or https://"),
    # an unencoded / in the password makes the rest look like a port: not valid, not shown
    ({"url": "http://shipper:" + SECRET + "/x@loki:3100"}, "must be percent-encoded"),
])
def test_a_bad_url_is_an_error_that_names_it_and_never_shows_the_password(
        settings: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        ShipperConfig(**settings)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("url: ") and problem in message
    assert SECRET not in message


# ----------------------------------------------------------------------------- errors


def test_transport_errors_never_show_the_credentials() -> None:
    url = _dead_url()
    with pytest.raises(TransportError) as info:
        Urllib3Transport().request("GET", url + "/ready", timeout=2)
    assert "cannot connect" in str(info.value)
    assert SECRET not in str(info.value) and "shipper@" not in str(info.value)


def test_loki_errors_name_the_loki_without_its_credentials() -> None:
    url = _dead_url()
    client = LokiClient(ShipperConfig(url=url, spool=False, timeout=2))
    with pytest.raises(LokiError) as info:
        client.labels()
    assert f"unreachable at {hide_url_credentials(url)}" in str(info.value)
    assert SECRET not in str(info.value)
    (outcome,) = client.push([_entry(1)])
    assert outcome.kind == "retry" and SECRET not in outcome.message


def test_the_handler_and_its_spool_notice_never_show_the_credentials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _dead_url()
    handler = LokiHandler(url, service="creds", spool_dir=str(tmp_path / "spool"), timeout=1,
                          shutdown_timeout=1)
    assert SECRET not in repr(handler)
    log = logging.getLogger("tests.url_credentials")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("kept")
        handler.flush(timeout=2)
    finally:
        log.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert f"--url {hide_url_credentials(url)}" in err
    assert SECRET not in err


# ----------------------------------------------------------------------------- the sidecar


def _sidecar_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump({
        "loki": {"url": url}, "service": "creds",
        "spool_dir": str(tmp_path / "spool"), "positions_file": str(tmp_path / "pos.json"),
        "sources": [{"type": "file", "paths": [str(tmp_path / "*.log")]}]}))
    return path


def test_sidecar_check_shows_the_url_without_credentials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _sidecar_file(tmp_path, "http://shipper:" + SECRET + "@loki:3100")
    assert main(["sidecar", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "Loki http://loki:3100" in out and SECRET not in out


def test_sidecar_config_errors_never_show_the_credentials(tmp_path: Path) -> None:
    path = _sidecar_file(tmp_path, "ftp://shipper:" + SECRET + "@loki:3100")
    with pytest.raises(SidecarConfigError) as info:
        load_config(path)
    assert "loki.url" in str(info.value) and SECRET not in str(info.value)


def test_the_sidecars_start_line_hides_the_credentials_it_sends(
        tmp_path: Path, loki: FakeLoki) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text(json_lines("a", 0, 3))
    proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(tmp_path / "logs/*.log")],
                                      "poll_interval": "20ms", "format": "json"}],
                          loki_url=_with_credentials(loki.url))
    try:
        proc.start()
        assert wait_until(lambda: loki.count() == 3, 30)
    finally:
        assert proc.finish(signal.SIGTERM) == 0
    assert f"shipping to {loki.url}" in proc.stderr
    assert SECRET not in proc.stderr
    pushes = [r for r in loki.requests if "push" in r.path]
    assert pushes and all({k.lower(): v for k, v in r.headers.items()}["authorization"]
                          == _basic("shipper", SECRET) for r in pushes)


# ----------------------------------------------------------------------------- the CLI


def test_doctor_shows_loki_without_its_credentials(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    for var in ("LOKI_USERNAME", "LOKI_PASSWORD", "LOKI_URL"):
        monkeypatch.delenv(var, raising=False)
    url = _dead_url()
    monkeypatch.setenv("SHIPPER_GRAFANA_URL", _with_credentials(f"http://127.0.0.1:{free_port()}"))
    monkeypatch.setenv("SHIPPER_GRAFANA_TOKEN", "glsa_x")
    assert main(["doctor", "--url", url, "--wait", "1s", "--format", "json"]) == 1
    out = capsys.readouterr().out
    checks = {c["name"]: c for c in json.loads(out)}
    assert f"unreachable at {hide_url_credentials(url)}" in checks["loki ready"]["detail"]
    assert "Grafana is unreachable at http://127.0.0.1:" in checks["grafana"]["detail"]
    assert SECRET not in out


def test_retention_check_and_spool_push_show_loki_without_its_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], loki: FakeLoki) -> None:
    monkeypatch.chdir(REPO)
    for var in ("LOKI_USERNAME", "LOKI_PASSWORD", "LOKI_URL"):
        monkeypatch.delenv(var, raising=False)
    assert main(["retention", "check", "--url", _dead_url()]) != 0
    assert main(["spool", "push", "--dir", str(tmp_path / "empty"), "--url",
                 _with_credentials(loki.url)]) == 0
    captured = capsys.readouterr()
    assert "cannot reach Loki at http://127.0.0.1:" in captured.err
    assert f"to {loki.url};" in captured.out
    assert SECRET not in captured.out + captured.err


def test_report_errors_show_grafana_without_its_credentials() -> None:
    from shipper.cli.report import GrafanaAlerts, ReportError

    grafana = _with_credentials(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ReportError) as info:
        GrafanaAlerts(grafana, "glsa_x", timeout=2).rules()
    assert str(info.value).startswith("Grafana at http://127.0.0.1:")
    assert SECRET not in str(info.value)


def test_admin_commands_send_the_credentials_of_their_url(
        loki: FakeLoki, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    for var in ("LOKI_USERNAME", "LOKI_PASSWORD", "LOKI_URL"):
        monkeypatch.delenv(var, raising=False)
    url = _with_credentials(loki.url)
    main(["retention", "check", "--url", url])
    main(["query", "--url", url, "--since", "1h", "--format", "json"])
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    asked = [r for r in loki.requests if r.path.startswith(("GET /config", "GET /loki/api/v1/"))]
    assert {r.path.split("?")[0] for r in asked} >= {"GET /config"}
    for request in asked:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers.get("authorization") == _basic("shipper", SECRET), request.path

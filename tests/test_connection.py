"""The connection to Loki, alike for the handler, the sidecar and every command: proxies
(the environment's, or ``proxy_url``), a client certificate for mutual TLS, a bearer-token
file read again when it is rotated, extra headers, and logcli's variable names.

Each runs against real local servers: a forward HTTP proxy (tests/support/httpproxy.py), an
HTTPS front that requires a client certificate (tests/support/tlsloki.py), both in front of
the fake Loki.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper import LokiHandler
from shipper.cli.main import main
from shipper.config import ConfigError, ShipperConfig
from shipper.delivery.credentials import MAX_TOKEN_BYTES, TokenFile, TokenFileError
from shipper.delivery.push import PushClient
from shipper.delivery.spool.status import spool_status
from shipper.delivery.transport import TransportError, Urllib3Transport, proxy_for
from shipper.loki.client import LokiClient, LokiError
from shipper.sidecar.config import load_config
from tests.delivery.test_push_client import _entry
from tests.support.fakeloki import FakeLoki, free_port
from tests.support.httpproxy import HttpProxy
from tests.support.sidecar_process import SidecarProcess, json_lines
from tests.support.tlsloki import Certs, TlsFront, make_certs
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
SECRET = "pr0xy-s3cret"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_or_loki_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without proxies and without Loki settings."""
    for var in list(os.environ):
        if var in PROXY_VARS or var.startswith(("LOKI_", "SHIPPER_")):
            monkeypatch.delenv(var)


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as loki:
        yield loki


@pytest.fixture
def proxy() -> Iterator[HttpProxy]:
    with HttpProxy() as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextlib.contextmanager
def _logging_to(tmp_path: Path, name: str, **settings: Any) -> Iterator[
        tuple[logging.Logger, LokiHandler]]:
    """A logger whose records go to a handler made from the environment and ``settings``
    (closed at the end)."""
    handler = LokiHandler(service="conn-test", batch_max_wait=0.05, backoff_min=0.05,
                          spool_dir=str(tmp_path / "spool"), **settings)
    log = logging.getLogger(f"conn.{name}")
    log.addHandler(handler)
    log.propagate = False
    try:
        yield log, handler
    finally:
        log.removeHandler(handler)
        handler.close()


def _ship(tmp_path: Path, message: str, **settings: Any) -> LokiHandler:
    """One event through a handler made from the environment and ``settings``; closed."""
    with _logging_to(tmp_path, message, **settings) as (log, handler):
        log.warning(message)
        handler.flush(timeout=5)
    return handler


def _messages(loki: FakeLoki) -> list[str]:
    return [json.loads(line)["message"] for line in loki.lines()]


# --------------------------------------------------------------------------- logcli's names


def test_logcli_variables_configure_the_connection() -> None:
    cfg = ShipperConfig.load(environ={
        "LOKI_ADDR": "http://logcli:3100", "LOKI_ORG_ID": "team-a",
        "LOKI_CA_CERT_PATH": "/etc/loki/ca.pem", "LOKI_TLS_SKIP_VERIFY": "true",
        "LOKI_CLIENT_CERT_PATH": "/etc/loki/c.pem", "LOKI_CLIENT_KEY_PATH": "/etc/loki/c.key",
        "LOKI_BEARER_TOKEN_FILE": "/var/run/token", "LOKI_HTTP_PROXY_URL": "http://px:3128"})
    assert (cfg.url, cfg.tenant, cfg.ca_bundle, cfg.verify_tls) == (
        "http://logcli:3100", "team-a", "/etc/loki/ca.pem", False)
    assert (cfg.client_cert, cfg.client_key, cfg.bearer_token_file, cfg.proxy_url) == (
        "/etc/loki/c.pem", "/etc/loki/c.key", "/var/run/token", "http://px:3128")


def test_shippers_own_variable_wins_over_logcli_s() -> None:
    cfg = ShipperConfig.load(environ={
        "LOKI_ADDR": "http://logcli:3100", "LOKI_URL": "http://shipper:3100",
        "LOKI_ORG_ID": "logcli", "LOKI_TENANT": "shipper",
        "LOKI_CA_CERT_PATH": "/logcli.pem", "LOKI_CA_BUNDLE": "/shipper.pem",
        "LOKI_TLS_SKIP_VERIFY": "true", "LOKI_VERIFY_TLS": "true"})
    assert (cfg.url, cfg.tenant, cfg.ca_bundle, cfg.verify_tls) == (
        "http://shipper:3100", "shipper", "/shipper.pem", True)


def test_a_bad_logcli_value_is_an_error_naming_its_variable() -> None:
    with pytest.raises(ConfigError, match="LOKI_TLS_SKIP_VERIFY: expected true or false"):
        ShipperConfig.load(environ={"LOKI_TLS_SKIP_VERIFY": "sometimes"})


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("text", ["X-Team=payments, X-Api-Key=k1", '{"X-Team": "payments", '
                                  '"X-Api-Key": "k1"}'])
def test_headers_are_read_as_pairs_or_json(text: str) -> None:
    cfg = ShipperConfig.load(environ={"SHIPPER_HEADERS": text})
    assert cfg.headers == (("X-Team", "payments"), ("X-Api-Key", "k1"))
    assert "k1" not in repr(cfg)


def test_a_mapping_of_headers_is_kept_through_replace_and_yaml() -> None:
    cfg = ShipperConfig(headers={"X-Team": "payments"})  # type: ignore[arg-type]
    assert cfg.replace(service="x").headers == (("X-Team", "payments"),)
    json_value = ShipperConfig.load(environ={"SHIPPER_HEADERS": '{"X-A": "1,2=3"}'})
    assert json_value.headers == (("X-A", "1,2=3"),)


@pytest.mark.parametrize(("headers", "problem"), [
    ("X-A=1\r\nX-Injected: yes", "X-A: the value holds a line break"),
    ({"X-A": "ok\nInjected: 1"}, "X-A: the value holds a line break"),
    ({"X-A\r\nB": "1"}, "is not a header name"),
    ({"Content-Type": "text/plain"}, "Content-Type cannot be set here: shipper sets it"),
    ({"content-encoding": "br"}, "content-encoding cannot be set here"),
    ({"X-Scope-OrgID": "other"}, "X-Scope-OrgID cannot be set here: set `tenant`"),
    ({"Host": "evil"}, "Host cannot be set here"),
    ({"X-A": "1", "x-a": "2"}, "x-a is given twice"),
    ({"X-A": "v" * 9000}, "X-A: the value is longer than 8192 bytes"),
    ({f"X-{i}": "1" for i in range(65)}, "65 headers, at most 64"),
    ({"X-A": {"nested": 1}}, "X-A: expected text, got dict"),
    ({"X-A": "日本"}, "X-A: the value holds characters an HTTP header cannot carry"),
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    ("X-A", "expected Name=value pairs"),
    ("{not json", "not a JSON object"),
    ('["X-A", "1"]', "expected a mapping of header names"),
])
def test_headers_that_would_break_or_override_a_request_are_refused(
        headers: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        ShipperConfig.from_mapping({"headers": headers})
    assert str(info.value).startswith("headers: ") and problem in str(info.value)


def test_an_authorization_header_is_refused_next_to_credentials_and_never_shown() -> None:
    with pytest.raises(ConfigError, match="Authorization is set by username") as info:
        ShipperConfig(bearer_token="t", headers={"Authorization": "Bearer other-secret"})  # type: ignore[arg-type]
    assert "other-secret" not in str(info.value)
    alone = ShipperConfig(headers={"Authorization": "Splunk abc"})  # type: ignore[arg-type]
    assert alone.headers == (("Authorization", "Splunk abc"),)


def test_a_tenant_or_token_http_cannot_carry_is_refused() -> None:
    with pytest.raises(ConfigError, match="tenant: holds characters an HTTP header cannot"):
        ShipperConfig(tenant="équipe-東京")
    with pytest.raises(ConfigError, match="bearer_token: holds characters"):
        ShipperConfig(bearer_token="tök€n")
    assert ShipperConfig(tenant="équipe").tenant == "équipe"  # Latin-1 is sent as it is


def test_a_header_http_cannot_send_fails_the_request_without_showing_it(
        fake: FakeLoki) -> None:
    with pytest.raises(TransportError) as info:
        Urllib3Transport().request("GET", fake.url + "/ready", timeout=5,
                                   headers={"X-Key": "secret-v4lue\r\nX-Injected: 1"})
    assert "a header holds what HTTP cannot carry" in str(info.value)
    assert "secret-v4lue" not in str(info.value)


@pytest.mark.parametrize("name", ["tenant", "username", "bearer_token"])
def test_a_line_break_in_a_credential_is_refused(name: str) -> None:
    settings = {name: "a\r\nX-Injected: 1"}
    if name == "username":
        settings["password"] = "p"
    with pytest.raises(ConfigError, match=f"{name}: must not hold a line break"):
        ShipperConfig(**settings)  # type: ignore[arg-type]


def test_extra_headers_reach_loki_on_pushes_and_reads(fake: FakeLoki, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPPER_HEADERS", "X-Team=payments")
    _ship(tmp_path, "with headers", url=fake.url, tenant="t1")
    push = fake.requests[0].headers
    assert (push["x-team"], push["x-scope-orgid"]) == ("payments", "t1")
    assert push["content-type"] == "application/json"
    LokiClient(ShipperConfig.load(url=fake.url, spool=False)).labels()
    assert fake.requests[-1].headers["X-Team"] == "payments"


def test_the_sidecar_reads_headers_from_its_file_with_environment_values(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump({
        "loki": {"url": "http://loki:3100", "headers": {"X-Api-Key": "${API_KEY}"}},
        "sources": [{"type": "file", "paths": ["/var/log/*.log"]}]}))
    config = load_config(path, environ={"API_KEY": "k-42"})
    assert config.loki.headers == (("X-Api-Key", "k-42"),)


# --------------------------------------------------------------------------- proxies


@pytest.mark.parametrize(("env", "url", "expected"), [
    ({"HTTP_PROXY": "http://px:3128"}, "http://loki:3100/x", "http://px:3128"),
    ({"http_proxy": "http://lower:3128"}, "http://loki:3100/x", "http://lower:3128"),
    ({"HTTP_PROXY": "px:3128"}, "http://loki:3100/x", "http://px:3128"),
    ({"HTTP_PROXY": "http://px:3128"}, "https://loki:3100/x", None),
    ({"HTTPS_PROXY": "http://spx:3128"}, "https://loki:3100/x", "http://spx:3128"),
    ({"ALL_PROXY": "http://all:3128"}, "http://loki:3100/x", "http://all:3128"),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "loki"}, "http://loki:3100/x", None),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "example.com"},
     "http://loki.example.com/x", None),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": ".example.com"},
     "http://loki.example.com/x", None),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "example.com"},
     "http://notexample.com/x", "http://px:3128"),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "loki:3100"}, "http://loki:3100/x", None),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "loki:9999"}, "http://loki:3100/x",
     "http://px:3128"),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "*"}, "http://loki:3100/x", None),
    ({"HTTP_PROXY": "http://px:3128", "no_proxy": "10.0.0.0/8"}, "http://10.1.2.3:3100/",
     None),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "10.0.0.0/8"}, "http://11.1.2.3:3100/",
     "http://px:3128"),
    ({"HTTP_PROXY": "http://px:3128", "NO_PROXY": "fd00::/8, bogus/99"},
     "http://[fd00::1]:3100/", None),
    ({}, "http://loki:3100/x", None),
])
def test_the_proxy_of_a_url_is_the_environments_as_curl_and_requests_read_it(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str,
        expected: str | None) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert proxy_for(url) == expected


def test_the_handler_pushes_through_the_proxy_the_environment_names(
        fake: FakeLoki, proxy: HttpProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    _ship(tmp_path, "via the proxy", url=fake.url)
    assert _messages(fake) == ["via the proxy"]
    [carried] = proxy.carried("/loki/api/v1/push")
    assert (carried.method, carried.url, carried.status) == (
        "POST", f"{fake.url}/loki/api/v1/push", 204)


def test_no_proxy_and_proxy_from_env_false_send_straight_to_loki(
        fake: FakeLoki, proxy: HttpProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.0/8")
    _ship(tmp_path / "a", "bypassed by NO_PROXY", url=fake.url)
    monkeypatch.delenv("no_proxy")
    _ship(tmp_path / "b", "direct by setting", url=fake.url, proxy_from_env=False)
    assert sorted(_messages(fake)) == ["bypassed by NO_PROXY", "direct by setting"]
    assert proxy.requests == []


def test_proxy_url_wins_over_the_environment_and_its_credentials_go_to_the_proxy_only(
        fake: FakeLoki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing there
    with HttpProxy(require_auth=("shipper", SECRET)) as proxy:
        monkeypatch.setenv("LOKI_HTTP_PROXY_URL", f"http://shipper:{SECRET}@127.0.0.1:{proxy.port}")
        _ship(tmp_path, "through an authenticating proxy", url=fake.url)
        [carried] = proxy.carried("/loki/api/v1/push")
    assert carried.status == 204 and carried.proxy_authorization
    assert _messages(fake) == ["through an authenticating proxy"]
    assert "proxy-authorization" not in fake.requests[0].headers


def test_a_proxy_that_is_down_is_an_error_naming_it_without_its_password() -> None:
    port = free_port()
    client = PushClient(ShipperConfig(url="http://loki.invalid:3100",
                                      proxy_url=f"http://shipper:{SECRET}@127.0.0.1:{port}"))
    outcome = client.push_once([_entry()])
    assert outcome.kind == "retry" and outcome.unreachable
    assert f"through the proxy http://127.0.0.1:{port}" in outcome.message
    assert SECRET not in outcome.message


@pytest.mark.parametrize(("url", "problem"), [
    ("socks5://127.0.0.1:1080", "socks5:// proxies are not supported"),
    ("proxy:3128", "got a value without http:// or https://"),
    (f"http://shipper:{SECRET}@px:notaport", "not a valid URL"),
])
def test_a_proxy_url_shipper_cannot_use_is_refused_without_its_password(
        url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        ShipperConfig(proxy_url=url)
    assert str(info.value).startswith("proxy_url: ") and problem in str(info.value)
    assert SECRET not in str(info.value)


def test_an_environment_proxy_shipper_cannot_use_keeps_the_events_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"socks5://u:{SECRET}@127.0.0.1:1080")
    outcome = PushClient(ShipperConfig(url="http://loki:3100")).push_once([_entry()])
    assert outcome.kind == "retry" and outcome.unreachable
    assert "only http:// and https:// proxies are supported" in outcome.message
    assert SECRET not in outcome.message


def test_the_sidecar_pushes_through_the_proxy_the_environment_names(
        fake: FakeLoki, proxy: HttpProxy, tmp_path: Path,
        processes: list[SidecarProcess]) -> None:
    (tmp_path / "logs").mkdir()
    sidecar = SidecarProcess(tmp_path, [{
        "type": "file", "paths": [str(tmp_path / "logs" / "*.log")], "poll_interval": "20ms",
        "scan_interval": "100ms", "format": "json"}], loki_url=fake.url)
    processes.append(sidecar)
    sidecar.start(env={"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost"})
    (tmp_path / "logs" / "app.log").write_text(json_lines("proxied-", 0, 3))
    assert wait_until(lambda: fake.count() == 3, 30), sidecar.finish()
    assert sidecar.finish() == 0
    assert proxy.carried("/loki/api/v1/push")
    assert all(r.status == 204 for r in proxy.carried("/loki/api/v1/push"))


def test_a_command_reads_through_the_proxy_with_logcli_s_variables(
        fake: FakeLoki, proxy: HttpProxy) -> None:
    fake.add({"service_name": "conn-test", "level": "INFO"}, time.time_ns() - 10**9, "x")
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(HTTP_PROXY=proxy.url, LOKI_ADDR=fake.url, LOKI_ORG_ID="team-a",
               PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "shipper", "labels", "--since", "30d",
                           "--json"], env=env, capture_output=True, text=True, timeout=60,
                          check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "service_name" in done.stdout
    [carried] = proxy.carried("/loki/api/v1/labels")
    assert carried.status == 200
    assert fake.requests[-1].headers["X-Scope-OrgID"] == "team-a"


# --------------------------------------------------------------------------- mutual TLS


def test_a_push_with_the_client_certificate_reaches_loki_behind_mutual_tls(
        fake: FakeLoki, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TlsFront(certs, fake.port) as front:
        monkeypatch.setenv("LOKI_ADDR", front.url)
        monkeypatch.setenv("LOKI_CA_CERT_PATH", str(certs.ca))
        monkeypatch.setenv("LOKI_CLIENT_CERT_PATH", str(certs.client_cert))
        monkeypatch.setenv("LOKI_CLIENT_KEY_PATH", str(certs.client_key))
        _ship(tmp_path, "over mutual TLS")
        assert front.peers and set(front.peers) == {"shipper-client"}
    assert _messages(fake) == ["over mutual TLS"]


def test_without_a_client_certificate_the_push_fails_with_an_error_that_says_so(
        fake: FakeLoki, certs: Certs) -> None:
    with TlsFront(certs, fake.port) as front:
        outcome = PushClient(ShipperConfig(url=front.url, ca_bundle=str(certs.ca))).push_once(
            [_entry()])
        stranger = PushClient(ShipperConfig(
            url=front.url, ca_bundle=str(certs.ca), client_cert=str(certs.stranger_cert),
            client_key=str(certs.stranger_key))).push_once([_entry(1)])
    assert outcome.kind == "retry" and outcome.unreachable
    assert "client certificate, set client_cert, LOKI_CLIENT_CERT_PATH" in outcome.message \
        or "asks for a client certificate: set client_cert" in outcome.message
    assert stranger.kind == "retry" and str(certs.stranger_cert) in stranger.message
    assert fake.count() == 0


def test_a_command_without_the_client_certificate_exits_with_the_reason(
        fake: FakeLoki, certs: Certs, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    fake.add({"service_name": "conn-test", "level": "INFO"}, time.time_ns() - 10**9, "x")
    with TlsFront(certs, fake.port) as front:
        monkeypatch.setenv("LOKI_URL", front.url)
        monkeypatch.setenv("LOKI_CA_BUNDLE", str(certs.ca))
        assert main(["labels", "--json"]) != 0
        refused = capsys.readouterr().err
        monkeypatch.setenv("LOKI_CLIENT_CERT_PATH", str(certs.client_cert))
        monkeypatch.setenv("LOKI_CLIENT_KEY_PATH", str(certs.client_key))
        assert main(["labels", "--json"]) == 0
    assert "service_name" in capsys.readouterr().out
    assert "client certificate" in refused and "LOKI_CLIENT_CERT_PATH" in refused


@pytest.mark.parametrize(("cert", "key", "problem"), [
    (".", None, ": not a regular file"),
    ("missing.pem", None, "missing.pem: cannot read it (No such file or directory)"),
    ("client.key", None, "client.key: cannot load it"),
    ("client.pem", "stranger.key", "cannot load it: [X509: KEY_VALUES_MISMATCH]"),
    ("client.pem", "missing.key", "missing.key: cannot read it"),
])
def test_a_client_certificate_that_cannot_be_used_is_an_error_naming_its_file(
        certs: Certs, cert: str, key: str | None, problem: str) -> None:
    folder = certs.ca.parent
    client = PushClient(ShipperConfig(url="https://127.0.0.1:1", client_cert=str(folder / cert),
                                      client_key=str(folder / key) if key else None))
    outcome = client.push_once([_entry()])
    assert outcome.kind == "retry" and problem in outcome.message


def test_a_client_key_needs_its_certificate() -> None:
    with pytest.raises(ConfigError, match="client_key: LOKI_CLIENT_KEY_PATH is set but"):
        ShipperConfig(client_key="/k.pem")


# --------------------------------------------------------------------------- token file


def _rotate(path: Path, token: str) -> None:
    """Replace the file as Kubernetes does: a new file renamed over the old one."""
    fresh = path.with_suffix(".new")
    fresh.write_text(token + "\n")
    os.replace(fresh, path)


def test_a_rotated_token_file_is_sent_from_the_next_push_on(
        fake: FakeLoki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    monkeypatch.setenv("LOKI_BEARER_TOKEN_FILE", str(token))
    with _logging_to(tmp_path, "rotate", url=fake.url) as (log, handler):
        log.warning("before rotation")
        handler.flush(timeout=5)
        _rotate(token, "second-token")
        log.warning("after rotation")
        handler.flush(timeout=5)
    assert [r.headers["authorization"] for r in fake.requests] == [
        "Bearer first-token", "Bearer second-token"]
    assert _messages(fake) == ["before rotation", "after rotation"]


def test_the_token_file_is_read_only_when_it_changes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("t1")
    reads: list[str] = []
    real = TokenFile._read

    def counted(self: TokenFile) -> str:
        reads.append(self.path)
        return real(self)

    monkeypatch.setattr(TokenFile, "_read", counted)
    token = TokenFile(str(path))
    assert [token.token() for _ in range(5)] == ["t1"] * 5
    _rotate(path, "t2")
    assert [token.token() for _ in range(5)] == ["t2"] * 5
    assert len(reads) == 2


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read it (No such file or directory)"),
    (b"", "it is empty"),
    (b"  \n", "it is empty"),
    (b"a" * (MAX_TOKEN_BYTES + 1), "larger than 64 KiB"),
    (b"tok\r\nX-Injected: 1", "the token holds a line break or another control character"),
    (b"\xff\xfe", "not UTF-8 text"),
    ("tök€n".encode(), "the token holds characters an HTTP header cannot carry"),
    ("directory", "not a regular file"),
    ("fifo", "not a regular file"),
])
def test_a_token_file_that_cannot_be_used_is_an_error_naming_it(
        tmp_path: Path, content: bytes | str | None, problem: str) -> None:
    path = tmp_path / "token"
    if content == "directory":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer forever
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(TokenFileError) as info:
        TokenFile(str(path)).token()
    assert str(info.value).startswith(f"bearer_token_file {path}: {problem}")


def test_an_unusable_token_file_keeps_the_events_and_never_raises_into_the_app(
        tmp_path: Path, fake: FakeLoki, capfd: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "secrets" / "token"
    handler = _ship(tmp_path, "kept while the token is missing", url=fake.url,
                    bearer_token_file=str(missing))
    assert fake.count() == 0
    assert spool_status(tmp_path / "spool").records == 1
    assert str(missing) in capfd.readouterr().err
    outcome = PushClient(handler.config).push_once([_entry()])
    assert outcome.kind == "retry" and outcome.unreachable and str(missing) in outcome.message


def test_a_command_with_an_unusable_token_file_says_which_file(
        fake: FakeLoki, tmp_path: Path) -> None:
    client = LokiClient(ShipperConfig(url=fake.url, spool=False,
                                      bearer_token_file=str(tmp_path / "gone")))
    with pytest.raises(LokiError) as info:
        client.labels()
    assert info.value.kind == "unauthorized"
    assert f"bearer_token_file {tmp_path / 'gone'}: cannot read it" in str(info.value)


def test_a_token_file_is_one_kind_of_credentials() -> None:
    with pytest.raises(ConfigError, match="bearer_token_file: set either it, bearer_token"):
        ShipperConfig(bearer_token="t", bearer_token_file="/var/run/token")
    with pytest.raises(ConfigError, match="url: it carries credentials"):
        ShipperConfig(url="http://u:p@loki:3100", bearer_token_file="/var/run/token")

"""docker-compose.scale.yml, loki/gateway/nginx.conf, loki/gateway/auth.sh and
deploy/sidecar/compose.scale.yaml, checked as files, plus the gateway run for real (nginx, when
installed) in front of three fake targets, with the user files auth.sh writes.

No Docker engine here: the compose file is read with PyYAML (and checked by `docker compose
config` when a compose-capable client exists) and held to what the deployment needs: MinIO with
its bucket created before Loki starts, two write, two read and one backend container from one
config on a network only the gateway joins, a gateway routing each API to the target that
serves it behind basic auth (deletion: the admin alone), Grafana, the demo and the sidecar on
the gateway with its client user.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient, LokiError
from tests.delivery.test_push_client import _entry
from tests.deploy.test_compose import (
    _BARE_VAR,
    _COMPOSE_VAR,
    _env,
    read_env_example,
    refused_by,
)
from tests.support.fakeloki import FakeLoki
from tests.support.lokicluster import (
    GATEWAY_ADMIN,
    GATEWAY_AUTH,
    GATEWAY_CONF,
    GATEWAY_USER,
    free_ports,
    gateway_conf,
    nginx_argv,
    with_login,
    write_gateway_auth,
)

REPO = Path(__file__).resolve().parents[2]
SCALE_COMPOSE = REPO / "docker-compose.scale.yml"
BASE_COMPOSE = REPO / "docker-compose.yml"
SCALE_CONFIG = REPO / "loki" / "config.scale.yaml"
SIDECAR_CONFIG = REPO / "deploy" / "sidecar" / "compose.scale.yaml"
LOKI_SERVICES = {
    "loki-write": ("write", 2), "loki-read": ("read", 2), "loki-backend": ("backend", 1)}
GATEWAY_URL = "http://loki-gateway:3100"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(SCALE_COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _svc(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of each short-syntax volume; anonymous volumes have source ''."""
    out = {}
    for item in service.get("volumes", []):
        parts = item.split(":")
        if len(parts) == 1:
            out[parts[0]] = ("", "rw")
        else:
            out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return out


def _nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None


# --------------------------------------------------------------------------- the compose file


def test_the_deployment_has_every_part(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "minio", "minio-init", *LOKI_SERVICES, "loki-gateway", "grafana", "demo", "shop",
        "sidecar"}
    assert "version" not in compose


@pytest.mark.parametrize("name", sorted(LOKI_SERVICES))
def test_each_loki_runs_the_one_scalable_config_with_its_target_by_flag(
        compose: dict[str, Any], name: str) -> None:
    service = _svc(compose, name)
    target, replicas = LOKI_SERVICES[name]
    assert service["image"] == "grafana/loki:3.7.6"
    assert service["command"] == ["-config.file=/etc/loki/config.yaml",
                                  "-config.expand-env=true", f"-target={target}"]
    assert _mounts(service)["/etc/loki/config.yaml"] == ("./loki/config.scale.yaml", "ro")
    assert service.get("deploy", {}).get("replicas", 1) == replicas
    # each container its own local state (two write containers must not share a WAL)
    assert _mounts(service)[_env(service)["LOKI_DATA_DIR"]] == ("", "rw")
    assert "loki-memberlist" in service["networks"]["loki"]["aliases"]
    assert service["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "-health" in service["healthcheck"]["test"]
    assert "ports" not in service, "only the gateway is published"


def test_every_setting_the_config_reads_is_given_and_points_at_a_service(
        compose: dict[str, Any]) -> None:
    wanted = set(re.findall(r"\$\{(LOKI_[A-Z0-9_]+)", SCALE_CONFIG.read_text(encoding="utf-8")))
    env = _env(_svc(compose, "loki-write"))
    # LOKI_INSTANCE_ADDR: each container's own address (eth0) is right
    assert wanted - set(env) == {"LOKI_INSTANCE_ADDR"}
    host = env["LOKI_S3_ENDPOINT"].split(":")[0]
    assert host in compose["services"]
    assert env["LOKI_COMPACTOR_ADDRESS"] == "http://loki-backend:3100"
    assert env["LOKI_MEMBERLIST_JOIN"] == "dns+loki-memberlist:7946"
    assert (env["LOKI_S3_FORCE_PATH_STYLE"], env["LOKI_S3_INSECURE"]) == ("true", "true")
    minio = _env(_svc(compose, "minio"))
    assert env["LOKI_S3_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["LOKI_S3_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert ":?" in minio["MINIO_ROOT_PASSWORD"], "no default password for MinIO"


def test_the_bucket_is_created_before_any_loki_starts(compose: dict[str, Any]) -> None:
    init = _svc(compose, "minio-init")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert _svc(compose, "minio")["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    script = " ".join(init["command"])
    assert "mc mb --ignore-existing" in script
    assert '"minio/$$LOKI_S3_BUCKET"' in script
    assert _env(init)["LOKI_S3_BUCKET"] == _env(_svc(compose, "loki-backend"))["LOKI_S3_BUCKET"]
    assert init["restart"] == "no"


def test_grafana_demo_and_sidecar_use_the_gateway(compose: dict[str, Any]) -> None:
    grafana = _svc(compose, "grafana")
    assert _env(grafana)["GRAFANA_LOKI_URL"] == GATEWAY_URL
    base = yaml.safe_load(BASE_COMPOSE.read_text(encoding="utf-8"))["services"]["grafana"]
    assert grafana["volumes"] == base["volumes"], "the same provisioning and dashboards"
    assert set(_env(base)) == set(_env(grafana))
    assert _env(_svc(compose, "demo"))["LOKI_URL"] == GATEWAY_URL
    for name in ("grafana", "demo", "sidecar"):
        depends = _svc(compose, name)["depends_on"]
        assert depends["loki-gateway"]["condition"] == "service_healthy"
    gateway = _svc(compose, "loki-gateway")
    assert all(gateway["depends_on"][n]["condition"] == "service_healthy" for n in LOKI_SERVICES)
    assert _mounts(gateway)["/etc/nginx/nginx.conf"] == ("./loki/gateway/nginx.conf", "ro")


def test_the_sidecar_tails_the_file_the_shop_writes(compose: dict[str, Any]) -> None:
    shop, sidecar = _svc(compose, "shop"), _svc(compose, "sidecar")
    command = sidecar["command"]
    assert command[:2] == ["sidecar", "--config"]
    source, mode = _mounts(sidecar)[command[2]]
    assert (REPO / source).resolve() == SIDECAR_CONFIG and mode == "ro"
    config = yaml.safe_load(SIDECAR_CONFIG.read_text(encoding="utf-8"))
    assert config["loki"]["url"] == GATEWAY_URL
    assert config["service"]
    (source_cfg,) = config["sources"]
    assert (source_cfg["type"], source_cfg["format"]) == ("file", "json")
    written = shop["command"][shop["command"].index("--file") + 1]
    assert any(fnmatch.fnmatch(written, pattern) for pattern in source_cfg["paths"])
    assert "LOKI_URL" not in _env(shop), "the shop's one output is its file"
    folder = str(Path(written).parent)
    assert _mounts(shop)[folder][0] == _mounts(sidecar)[folder][0] != ""
    for key in ("spool_dir", "positions_file"):
        path = Path(config[key])
        assert any(path.is_relative_to(t) and src and not src.startswith(".")
                   for t, (src, _) in _mounts(sidecar).items()), f"{key} is not on a volume"
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert folder in dockerfile, "the image must create the log folder for its user"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2]
        assert tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned"
        if image != "shipper:local":  # built here (demo's build:)
            assert re.search(r"\d+\.\d+\.\d+|RELEASE\.\d{4}-", tag), f"{name}: {image}"


def test_every_variable_is_documented_in_env_example() -> None:
    env_example = read_env_example()
    text = SCALE_COMPOSE.read_text(encoding="utf-8")
    assert not _BARE_VAR.findall(text.replace("$$", "")), "write ${VAR}, not $VAR"
    used = {m.group(1): m.group(2) for m in _COMPOSE_VAR.finditer(text)}
    assert not set(used) - set(env_example)


@pytest.mark.parametrize("path", [SCALE_COMPOSE, BASE_COMPOSE], ids=lambda p: p.name)
def test_docker_compose_config_accepts_a_filled_env_and_refuses_env_example(
        path: Path, tmp_path: Path) -> None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        try:
            probe = subprocess.run([*argv, "version"], check=False, capture_output=True,
                                   timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            break
    else:
        pytest.skip("no compose-capable docker client on this machine")
    filled = tmp_path / ".env"
    filled.write_text(re.sub(r"(?m)^([A-Z_]+_PASSWORD)=$", r"\1=checked-by-the-tests",
                             (REPO / ".env.example").read_text(encoding="utf-8")))
    for env_file, ok in ((filled, True), (REPO / ".env.example", False)):
        done = subprocess.run([*argv, "-f", str(path), "--env-file", str(env_file), "config",
                               "-q"], check=False, capture_output=True, text=True, timeout=60,
                              cwd=REPO)
        assert (done.returncode == 0) is ok, f"{env_file.name}: {done.stderr}"


# --------------------------------------------------------------------------- the gateway


def _locations(conf: str) -> dict[str, str]:
    """``location`` (with its modifier) -> the upstream it proxies to (or its return)."""
    out = {}
    for match in re.finditer(r"location\s+(=|\^~)?\s*(\S+)\s*\{(.*?)\}", conf, re.DOTALL):
        modifier, path, body = match.groups()
        proxy = re.search(r"proxy_pass\s+http://(\w+);", body)
        out[(f"{modifier} " if modifier else "") + path] = proxy.group(1) if proxy else "return"
    return out


def _location_body(conf: str, location: str) -> str:
    match = re.search(r"location\s+" + re.escape(location) + r"\s*\{(.*?)\}", conf, re.DOTALL)
    assert match, location
    return match.group(1)


def test_gateway_routes_each_api_to_the_target_that_serves_it() -> None:
    conf = GATEWAY_CONF.read_text(encoding="utf-8")
    routes = _locations(conf)
    assert routes["= /loki/api/v1/push"] == "loki_write"
    assert routes["^~ /loki/api/v1/delete"] == "loki_backend"
    assert routes["= /config"] == "loki_backend"
    assert routes["/loki/api/"] == "loki_read"
    assert routes["= /loki/api/v1/tail"] == "loki_read"
    assert routes["/"] == "return"
    for upstream, service in (("loki_write", "loki-write"), ("loki_read", "loki-read"),
                              ("loki_backend", "loki-backend")):
        block = re.search(rf"upstream {upstream}\s*\{{(.*?)\}}", conf, re.DOTALL)
        assert block and f"server {service}:3100;" in block.group(1)
    assert re.search(r"client_max_body_size\s+(\d+)m;", conf)


def test_gateway_asks_everyone_but_the_health_check_and_deletion_only_the_admin() -> None:
    conf = GATEWAY_CONF.read_text(encoding="utf-8")
    server = re.search(r"\n    server \{(.*)\n    \}", conf, re.DOTALL)
    assert server
    head = server.group(1).split("location", 1)[0]
    assert re.search(r"^\s*auth_basic \"[^\"]+\";", head, re.MULTILINE)
    assert "auth_basic_user_file /tmp/gateway-auth/users;" in head
    assert "auth_basic off;" in _location_body(conf, "= /ready")
    # set in deletion's own location, not inherited: opening the server leaves it closed
    delete = _location_body(conf, "^~ /loki/api/v1/delete")
    assert re.search(r"auth_basic \"[^\"]+\";", delete)
    assert "auth_basic_user_file /tmp/gateway-auth/admins;" in delete
    assert conf.count("auth_basic off;") == 1


def test_only_the_gateway_reaches_loki_and_minio(compose: dict[str, Any]) -> None:
    assert compose["networks"]["loki"]["internal"] is True
    for name in (*LOKI_SERVICES, "minio", "minio-init"):
        networks = _svc(compose, name)["networks"]
        assert set(networks) == {"loki"}, f"{name} must be on the internal network only"
    assert set(_svc(compose, "loki-gateway")["networks"]) == {"default", "loki"}
    for name in ("grafana", "demo", "shop", "sidecar"):
        assert "loki" not in _svc(compose, name).get("networks", ["default"]), name


def test_the_gateway_writes_its_users_from_required_passwords_at_start(
        compose: dict[str, Any]) -> None:
    gateway = _svc(compose, "loki-gateway")
    env = _env(gateway)
    for name in ("LOKI_GATEWAY_PASSWORD", "LOKI_GATEWAY_ADMIN_PASSWORD"):
        assert env[name] == f"${{{name}:?set {name} in .env}}"
    assert env["LOKI_GATEWAY_USER"].startswith("${LOKI_GATEWAY_USER:-")
    assert env["LOKI_GATEWAY_ADMIN_USER"].startswith("${LOKI_GATEWAY_ADMIN_USER:-")
    (target,) = [t for t, (src, _) in _mounts(gateway).items() if src == "./loki/gateway/auth.sh"]
    # the nginx image's entrypoint runs the executable *.sh of /docker-entrypoint.d/
    assert re.fullmatch(r"/docker-entrypoint\.d/[\w.-]+\.sh", target)
    assert os.access(GATEWAY_AUTH, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "-s", str(GATEWAY_AUTH)], cwd=REPO,
                          capture_output=True, text=True, check=False).stdout.split(" ")[0]
    assert mode in ("100755", ""), "commit loki/gateway/auth.sh executable"


def test_the_clients_log_in_as_the_gateways_user(compose: dict[str, Any]) -> None:
    gateway = _env(_svc(compose, "loki-gateway"))
    user, password = gateway["LOKI_GATEWAY_USER"], gateway["LOKI_GATEWAY_PASSWORD"]
    for name in ("demo", "sidecar"):
        env = _env(_svc(compose, name))
        assert (env["LOKI_USERNAME"], env["LOKI_PASSWORD"]) == (user, password), name
    grafana = _env(_svc(compose, "grafana"))
    assert (grafana["GRAFANA_LOKI_USER"], grafana["GRAFANA_LOKI_PASSWORD"]) == (user, password)
    # the admin's password goes to the gateway alone
    for name, service in compose["services"].items():
        if name != "loki-gateway":
            assert "LOKI_GATEWAY_ADMIN_PASSWORD" not in str(service.get("environment")), name


def test_compose_refuses_to_start_until_every_gateway_password_is_set() -> None:
    text = SCALE_COMPOSE.read_text(encoding="utf-8")
    refused = refused_by(text, read_env_example())
    assert {"LOKI_GATEWAY_PASSWORD", "LOKI_GATEWAY_ADMIN_PASSWORD"} <= set(refused)


# --------------------------------------------------------------------------- auth.sh


def _auth_env(**values: str) -> dict[str, str]:
    env = {"LOKI_GATEWAY_USER": GATEWAY_USER[0], "LOKI_GATEWAY_PASSWORD": GATEWAY_USER[1],
           "LOKI_GATEWAY_ADMIN_USER": GATEWAY_ADMIN[0],
           "LOKI_GATEWAY_ADMIN_PASSWORD": GATEWAY_ADMIN[1]}
    env.update(values)
    return env


@pytest.mark.parametrize(("values", "problem"), [
    ({"LOKI_GATEWAY_PASSWORD": ""}, "LOKI_GATEWAY_PASSWORD is empty"),
    ({"LOKI_GATEWAY_ADMIN_PASSWORD": ""}, "LOKI_GATEWAY_ADMIN_PASSWORD is empty"),
    ({"LOKI_GATEWAY_PASSWORD": "changeme"}, "shorter than 12 characters"),
    ({"LOKI_GATEWAY_ADMIN_PASSWORD": "two\nlines of it"}, "holds a line break"),
    ({"LOKI_GATEWAY_USER": ""}, "LOKI_GATEWAY_USER is empty"),
    ({"LOKI_GATEWAY_USER": "ship:per"}, "must not hold ':'"),
    ({"LOKI_GATEWAY_ADMIN_USER": "#admin"}, "nor start with '#'"),
    ({"LOKI_GATEWAY_ADMIN_USER": "ad min"}, "must not hold ':' or blanks"),
    ({"LOKI_GATEWAY_ADMIN_USER": GATEWAY_USER[0]}, "the same user"),
])
def test_auth_sh_stops_the_gateway_on_a_missing_or_unusable_value(
        tmp_path: Path, values: dict[str, str], problem: str) -> None:
    done = write_gateway_auth(tmp_path, **_auth_env(**values))
    assert done.returncode == 1
    assert problem in done.stderr
    assert not (tmp_path / "gateway-auth" / "users").exists(), "no user file: nginx never runs"
    for value in values.values():
        if len(value) > 3:
            assert value not in done.stderr + done.stdout, "a password is never printed"


def _ssha_matches(entry: str, password: str) -> bool:
    import hashlib

    scheme, _, data = entry.partition("}")
    raw = base64.b64decode(data)
    return scheme == "{SSHA" and hashlib.sha1(password.encode() + raw[20:]).digest() == raw[:20]


def _check_user_files(auth_dir: Path, user: tuple[str, str], admin: tuple[str, str]) -> None:
    users = dict(line.split(":", 1) for line in (auth_dir / "users").read_text().splitlines())
    admins = dict(line.split(":", 1) for line in (auth_dir / "admins").read_text().splitlines())
    assert set(users) == {user[0], admin[0]} and set(admins) == {admin[0]}
    assert _ssha_matches(users[user[0]], user[1])
    assert _ssha_matches(users[admin[0]], admin[1]) and _ssha_matches(admins[admin[0]], admin[1])
    assert user[1] not in (auth_dir / "users").read_text(), "kept hashed, never in clear"
    assert (auth_dir / "users").stat().st_mode & 0o007 == 0, "not readable by others"


def test_auth_sh_writes_salted_hashes_of_both_users(tmp_path: Path) -> None:
    odd = ("shipper", "p@ss w0rd:%s #\\ 'quoted' \"x\" ünï")
    done = write_gateway_auth(tmp_path, LOKI_GATEWAY_PASSWORD=odd[1])
    assert done.returncode == 0, done.stderr
    assert odd[1] not in done.stdout + done.stderr
    _check_user_files(tmp_path / "gateway-auth", odd, GATEWAY_ADMIN)
    first = (tmp_path / "gateway-auth" / "users").read_text()
    assert write_gateway_auth(tmp_path).returncode == 0
    assert (tmp_path / "gateway-auth" / "users").read_text() != first, "a new salt each start"


def test_auth_sh_runs_with_the_busybox_tools_of_the_nginx_alpine_image(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (apt-get install busybox): auth.sh was run with "
                    "this machine's sh and tools only")
    tools = tmp_path / "bin"
    tools.mkdir()
    for applet in ("sh", "od", "tr", "cut", "sha1sum", "base64", "grep", "id", "chgrp",
                   "chmod", "mkdir", "mv", "cat"):
        (tools / applet).symlink_to(busybox)
    env = {"PATH": str(tools), "LOKI_GATEWAY_AUTH_DIR": str(tmp_path / "auth"), **_auth_env()}
    done = subprocess.run([str(tools / "sh"), str(GATEWAY_AUTH)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    _check_user_files(tmp_path / "auth", GATEWAY_USER, GATEWAY_ADMIN)


# --------------------------------------------------------------------------- nginx, for real


def _start_gateway(tmp_path: Path, conf_text: str) -> tuple[subprocess.Popen[bytes], str]:
    nginx = _nginx()
    assert nginx is not None
    conf = tmp_path / "nginx.conf"
    conf.write_text(conf_text)
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
                             check=False, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    auth = write_gateway_auth(tmp_path)
    assert auth.returncode == 0, auth.stderr
    port = int(re.search(r"listen 127\.0\.0\.1:(\d+);", conf_text).group(1))  # type: ignore[union-attr]
    proc = subprocess.Popen(nginx_argv(nginx, tmp_path, conf), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    pool = urllib3.PoolManager()
    for _ in range(100):
        try:
            if pool.request("GET", url + "/ready", retries=False).status == 200:
                break
        except urllib3.exceptions.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    return proc, url


@pytest.fixture()
def targets() -> Iterator[dict[str, FakeLoki]]:
    fakes = {t: FakeLoki(target=t) for t in ("write", "read", "backend")}
    for target, fake in fakes.items():
        fake.routes["GET /config"] = (200, f"target: {target}\n", {})
        fake.routes["GET /loki/api/v1/labels"] = (
            200, '{"status":"success","data":["level"]}', {})
        fake.routes["POST /loki/api/v1/delete"] = (204, "", {"X-Delete-Request-ID": "abc"})
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


def _conf_for(fakes: dict[str, FakeLoki], run_dir: Path) -> str:
    (port,) = free_ports(1)
    return gateway_conf([f"127.0.0.1:{fakes['write'].port}"],
                        [f"127.0.0.1:{fakes['read'].port}"],
                        [f"127.0.0.1:{fakes['backend'].port}"], port, run_dir)


@pytest.fixture()
def gateway(tmp_path: Path, targets: dict[str, FakeLoki],
            ) -> Iterator[tuple[str, dict[str, FakeLoki]]]:
    if _nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): the gateway config "
                    "is checked as text only")
    proc, url = _start_gateway(tmp_path, _conf_for(targets, tmp_path))
    try:
        yield url, targets
    finally:
        proc.terminate()
        proc.wait(10)


def _client(url: str, login: tuple[str, str] | None = None, **settings: Any) -> LokiClient:
    return LokiClient(ShipperConfig(url=with_login(url, login) if login else url, spool=False,
                                    **settings))


def _status(url: str, method: str, path: str, login: tuple[str, str] | None = None) -> int:
    headers = {}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{login[0]}:{login[1]}".encode()).decode()
    return urllib3.PoolManager().request(method, url + path, headers=headers,
                                         retries=False).status


def test_nginx_accepts_the_gateway_config_and_routes_like_loki(
        gateway: tuple[str, dict[str, FakeLoki]]) -> None:
    url, fakes = gateway
    client = _client(url, GATEWAY_USER, tenant="team-a")
    assert [o.kind for o in client.push([_entry(1), _entry(2)])] == ["ok"]
    assert fakes["write"].count() == 2
    assert client.labels() == ["level"]
    assert client.loki_config() == {"target": "backend"}
    assert _client(url, GATEWAY_ADMIN, tenant="team-a").delete(
        '{service_name="x"}', 1, 2) == "abc"
    # the tenant header reaches the targets unchanged
    seen = [{k.lower(): v for k, v in r.headers.items()}.get("x-scope-orgid")
            for f in fakes.values() for r in f.requests]
    assert seen == ["team-a"] * 4
    resp = urllib3.PoolManager().request("GET", url + "/metrics", headers={
        "Authorization": _client(url, GATEWAY_USER).headers["Authorization"]})
    assert resp.status == 404 and b"routes the Loki API only" in resp.data


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/loki/api/v1/push"), ("POST", "/otlp/v1/logs"), ("GET", "/loki/api/v1/labels"),
    ("GET", "/loki/api/v1/query_range"), ("GET", "/loki/api/v1/tail"), ("GET", "/config"),
    ("POST", "/loki/api/v1/delete"), ("GET", "/loki/api/v1/delete"),
    ("DELETE", "/loki/api/v1/delete"),
])
def test_without_credentials_every_route_is_401_and_reaches_no_loki(
        gateway: tuple[str, dict[str, FakeLoki]], method: str, path: str) -> None:
    url, fakes = gateway
    assert _status(url, method, path) == 401
    assert _status(url, method, path, (GATEWAY_USER[0], "wrong-password-x")) == 401
    assert _status(url, method, path, ("nobody", GATEWAY_USER[1])) == 401
    assert [r for f in fakes.values() for r in f.requests] == []
    assert _status(url, "GET", "/ready") == 200
    assert _status(url, "GET", "/metrics") == 404  # not Loki's: answered by the gateway itself


def test_without_credentials_the_shippers_push_is_kept_for_later_not_refused(
        gateway: tuple[str, dict[str, FakeLoki]]) -> None:
    url, fakes = gateway
    (outcome,) = _client(url).push([_entry(1)])
    # nothing was stored: the events wait (the spool) as while Loki is away, never dropped
    assert (outcome.kind, outcome.status, outcome.unreachable) == ("retry", 401, True)
    assert "refused the credentials (401" in outcome.message
    assert "LOKI_USERNAME/LOKI_PASSWORD" in outcome.message
    assert fakes["write"].count() == 0


def test_events_sent_with_a_wrong_password_wait_in_the_spool_until_it_is_right(
        gateway: tuple[str, dict[str, FakeLoki]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from shipper import LokiHandler

    url, fakes = gateway
    spool = str(tmp_path / "spool")
    log = logging.getLogger("tests.gateway.password")
    log.propagate = False
    for password, expected in (("wrong-password-x", 0), (GATEWAY_USER[1], 30)):
        handler = LokiHandler(url, service="rotated", username=GATEWAY_USER[0],
                              password=password, spool_dir=spool, retry_budget=0.5,
                              shutdown_timeout=3)
        log.addHandler(handler)
        try:
            if expected == 0:
                for i in range(30):
                    log.warning("event %d", i)
            handler.flush(timeout=5)
            stats = handler.stats()
        finally:
            log.removeHandler(handler)
            handler.close()
        assert fakes["write"].count() == expected
        assert stats["dropped_total"] == 0 and stats["refused_total"] == 0, stats
    err = capsys.readouterr().err
    assert "refused the credentials (401" in err and "wrong-password-x" not in err


@pytest.mark.parametrize("path", ["/loki/api/v1/delete", "/loki/api/v1/delete/",
                                  "/loki/api/v1//delete", "/loki/api/v1/delet%65",
                                  "/loki/api/v1/delete?request_id=abc"])
def test_deletion_takes_the_admin_and_refuses_the_clients_user(
        gateway: tuple[str, dict[str, FakeLoki]], path: str) -> None:
    url, fakes = gateway
    for method in ("POST", "GET", "DELETE"):
        assert _status(url, method, path, GATEWAY_USER) == 401, (method, path)
    assert [r for f in fakes.values() for r in f.requests] == []
    assert _status(url, "POST", path, GATEWAY_ADMIN) in (204, 404)
    assert all(r.path.startswith("POST /loki/api/v1/") for r in fakes["backend"].requests)
    with pytest.raises(LokiError) as info:
        _client(url, GATEWAY_USER).delete('{service_name="x"}', 1, 2)
    assert info.value.status == 401


def test_a_gateway_that_opens_push_to_everyone_still_guards_deletion(
        tmp_path: Path, targets: dict[str, FakeLoki]) -> None:
    if _nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    conf = _conf_for(targets, tmp_path)
    # a deployment turns the server's auth off (push and queries open to the network)
    opened = re.sub(r'(\n        )auth_basic "Loki";\n', r"\1auth_basic off;\n", conf, count=1)
    assert opened != conf
    proc, url = _start_gateway(tmp_path, opened)
    try:
        assert [o.kind for o in _client(url).push([_entry(1)])] == ["ok"]
        assert _status(url, "GET", "/loki/api/v1/labels") == 200
        for login in (None, GATEWAY_USER):
            assert _status(url, "POST", "/loki/api/v1/delete", login) == 401
        assert targets["backend"].requests == []
        assert _client(url, GATEWAY_ADMIN).delete('{service_name="x"}', 1, 2) == "abc"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_full_size_batch_passes_the_gateway(gateway: tuple[str, dict[str, FakeLoki]]) -> None:
    # 1 MiB, the handler's batch size: bodies this large must not need the gateway's disk
    url, fakes = gateway
    entries = [_entry(i, line="x" * 500) for i in range(2000)]
    client = _client(url, GATEWAY_USER)
    assert [o.kind for o in client.push(entries)] == ["ok"]
    assert fakes["write"].count() == 2000

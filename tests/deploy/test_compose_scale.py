"""docker-compose.scale.yml, loki/gateway/nginx.conf and deploy/sidecar/compose.scale.yaml,
checked as files, plus the gateway run for real (nginx, when installed) in front of three fake
targets.

No Docker engine here: the compose file is read with PyYAML (and checked by `docker compose
config` when a compose-capable client exists) and held to what the deployment needs: MinIO with
its bucket created before Loki starts, two write, two read and one backend container from one
config, a gateway routing each API to the target that serves it, Grafana, the demo and the
sidecar on the gateway.
"""

from __future__ import annotations

import fnmatch
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
from shipper.loki.client import LokiClient
from tests.delivery.test_push_client import _entry
from tests.deploy.test_compose import _BARE_VAR, _COMPOSE_VAR, _env, read_env_example
from tests.support.fakeloki import FakeLoki
from tests.support.lokicluster import GATEWAY_CONF, free_ports, gateway_conf

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
    assert "loki-memberlist" in service["networks"]["default"]["aliases"]
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
    for name, op in used.items():
        if op in (":?", "?"):
            assert env_example[name], f"{name} is required; give .env.example a placeholder"


def test_docker_compose_config_accepts_the_file() -> None:
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
    done = subprocess.run([*argv, "-f", str(SCALE_COMPOSE), "--env-file",
                           str(REPO / ".env.example"), "config", "-q"],
                          check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- the gateway


def _locations(conf: str) -> dict[str, str]:
    """``location`` (with its modifier) -> the upstream it proxies to (or its return)."""
    out = {}
    for match in re.finditer(r"location\s+(=\s*)?(\S+)\s*\{(.*?)\}", conf, re.DOTALL):
        exact, path, body = match.groups()
        proxy = re.search(r"proxy_pass\s+http://(\w+);", body)
        out[("= " if exact else "") + path] = proxy.group(1) if proxy else "return"
    return out


def test_gateway_routes_each_api_to_the_target_that_serves_it() -> None:
    conf = GATEWAY_CONF.read_text(encoding="utf-8")
    routes = _locations(conf)
    assert routes["= /loki/api/v1/push"] == "loki_write"
    assert routes["= /loki/api/v1/delete"] == "loki_backend"
    assert routes["= /config"] == "loki_backend"
    assert routes["/loki/api/"] == "loki_read"
    assert routes["= /loki/api/v1/tail"] == "loki_read"
    assert routes["/"] == "return"
    for upstream, service in (("loki_write", "loki-write"), ("loki_read", "loki-read"),
                              ("loki_backend", "loki-backend")):
        block = re.search(rf"upstream {upstream}\s*\{{(.*?)\}}", conf, re.DOTALL)
        assert block and f"server {service}:3100;" in block.group(1)
    assert re.search(r"client_max_body_size\s+(\d+)m;", conf)


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[tuple[str, dict[str, FakeLoki]]]:
    nginx = _nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): the gateway config "
                    "is checked as text only")
    fakes = {t: FakeLoki(target=t) for t in ("write", "read", "backend")}
    for target, fake in fakes.items():
        fake.routes["GET /config"] = (200, f"target: {target}\n", {})
        fake.routes["GET /loki/api/v1/labels"] = (
            200, '{"status":"success","data":["level"]}', {})
        fake.routes["POST /loki/api/v1/delete"] = (204, "", {"X-Delete-Request-ID": "abc"})
    (port,) = free_ports(1)
    conf = tmp_path / "nginx.conf"
    conf.write_text(gateway_conf([f"127.0.0.1:{fakes['write'].port}"],
                                 [f"127.0.0.1:{fakes['read'].port}"],
                                 [f"127.0.0.1:{fakes['backend'].port}"], port, tmp_path))
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
                             check=False, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        pool = urllib3.PoolManager()
        for _ in range(100):
            try:
                if pool.request("GET", url + "/ready", retries=False).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        yield url, fakes
    finally:
        proc.terminate()
        proc.wait(10)
        for fake in fakes.values():
            fake.stop()


def test_nginx_accepts_the_gateway_config_and_routes_like_loki(
        gateway: tuple[str, dict[str, FakeLoki]]) -> None:
    url, fakes = gateway
    client = LokiClient(ShipperConfig(url=url, spool=False, tenant="team-a"))
    assert [o.kind for o in client.push([_entry(1), _entry(2)])] == ["ok"]
    assert fakes["write"].count() == 2
    assert client.labels() == ["level"]
    assert client.delete('{service_name="x"}', 1, 2) == "abc"
    assert client.loki_config() == {"target": "backend"}
    # the tenant header reaches the targets unchanged
    seen = [{k.lower(): v for k, v in r.headers.items()}.get("x-scope-orgid")
            for f in fakes.values() for r in f.requests]
    assert seen == ["team-a"] * 4
    resp = urllib3.PoolManager().request("GET", url + "/metrics")
    assert resp.status == 404 and b"routes the Loki API only" in resp.data


def test_a_full_size_batch_passes_the_gateway(gateway: tuple[str, dict[str, FakeLoki]]) -> None:
    # 1 MiB, the handler's batch size: bodies this large must not need the gateway's disk
    url, fakes = gateway
    entries = [_entry(i, line="x" * 500) for i in range(2000)]
    client = LokiClient(ShipperConfig(url=url, spool=False))
    assert [o.kind for o in client.push(entries)] == ["ok"]
    assert fakes["write"].count() == 2000

"""Loki in simple scalable mode, for real: moto as S3, the write, read and backend targets of
Loki 3.7 (``LOKI_BIN``) from loki/config.scale.yaml on free loopback ports, and the nginx
gateway from loki/gateway/nginx.conf when nginx is installed, with its basic auth.

The shipper's tools talk to it as users would: the handler pushes, queries go to the read path,
``shipper retention check`` reads /config from the backend, deletion requests go to the
backend; a tool pointed at the wrong target gets an error naming the right one. Through the
gateway they log in (a ``user:password@`` in the URL): the client user pushes and queries, the
admin alone deletes, and without credentials Loki is not reached.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import urllib3
import yaml

from shipper import LokiHandler
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient, LokiError
from tests.live.conftest import wait_for
from tests.support.lokicluster import (
    GATEWAY_ADMIN,
    GATEWAY_USER,
    SCALE_CONFIG,
    ScalableLoki,
    scalable_loki,
    with_login,
)
from tests.support.lokicluster import ROOT as REPO

pytestmark = [pytest.mark.loki_bin, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ScalableLoki]:
    with scalable_loki(os.environ["LOKI_BIN"]) as running:
        yield running
    assert not running.dir.exists(), "the deployment's directory was left behind"
    assert all(p.popen.poll() is not None for p in running.processes), "a process kept running"


def _client(url: str) -> LokiClient:
    return LokiClient(ShipperConfig.load(url=url, spool=False, timeout=30))


def _ship(url: str, service: str, messages: list[str]) -> None:
    """Log through the LokiHandler, as an app does, and wait until it has delivered."""
    handler = LokiHandler(url, service=service, env="it", spool=False)
    logger = logging.getLogger(f"scalable.{service}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for message in messages:
            logger.warning(message, extra={"type": "ORDER_PAID", "actor": "USER",
                                           "actor_id": "user_7"})
        assert handler.flush(timeout=30)
        stats = handler.stats()
        assert stats["sent"] == len(messages), stats
    finally:
        logger.removeHandler(handler)
        handler.close()


def _lines(client: LokiClient, service: str) -> list[str]:
    now = time.time_ns()
    data = client.query_range(f'{{service_name="{service}"}}', now - 3_600 * 10**9,
                              now + 60 * 10**9, direction="forward")
    return [json.loads(v[1])["message"] for s in data["result"] for v in s["values"]]


def _urls(cluster: ScalableLoki) -> list[tuple[str, str, str]]:
    """(name, push URL, query URL): straight to the targets, and via the gateway."""
    pairs = [("targets", cluster.write, cluster.read)]
    if cluster.gateway:
        gateway = with_login(cluster.gateway, GATEWAY_USER)
        pairs.append(("gateway", gateway, gateway))
    return pairs


def test_events_pushed_to_the_write_target_are_queried_from_the_read_target(
        cluster: ScalableLoki) -> None:
    for name, push_url, query_url in _urls(cluster):
        service = f"it-scale-{name}-{uuid.uuid4().hex[:8]}"
        sent = [f"order {i} paid" for i in range(50)]
        _ship(push_url, service, sent)
        client = _client(query_url)

        def all_there(c: LokiClient = client, s: str = service, n: int = len(sent)) -> bool:
            return len(_lines(c, s)) == n

        assert wait_for(all_there, timeout=30), f"via {name}: {_lines(client, service)}"
        assert _lines(client, service) == sent, f"via {name}"
        labels = client.label_values("type")
        assert "ORDER_PAID" in labels


def test_retention_check_reads_config_from_the_backend(
        cluster: ScalableLoki, capsys: pytest.CaptureFixture[str]) -> None:
    urls = [cluster.backend] + ([with_login(cluster.gateway, GATEWAY_USER)]
                                if cluster.gateway else [])
    for url in urls:
        assert main(["retention", "check", "--url", url, "--format", "table"]) == 0, \
            capsys.readouterr().err
        out = capsys.readouterr().out
        assert "DRIFT" not in out
        assert '{level="CRITICAL"}' in out
    config = _client(urls[-1]).loki_config()
    assert config["target"] == "backend"
    assert config["compactor"]["delete_request_store"] == "s3"


def test_a_deletion_request_is_submitted_and_listed_on_the_backend(
        cluster: ScalableLoki) -> None:
    service = f"it-scale-delete-{uuid.uuid4().hex[:8]}"
    _ship(cluster.write, service, ["to be deleted"])
    start = int(time.time()) - 600
    for url in [cluster.backend] + ([with_login(cluster.gateway, GATEWAY_ADMIN)]
                                    if cluster.gateway else []):
        client = _client(url)
        request_id = client.delete(f'{{service_name="{service}"}} |= "deleted"', start)
        assert request_id
        listed = {r["request_id"]: r for r in client.delete_requests()}
        assert listed[request_id]["status"] == "received"
        assert service in listed[request_id]["query"]
        client.cancel_delete(request_id)


@pytest.mark.parametrize(("target", "what", "serving"), [
    ("read", "deletion", "backend"),
    ("write", "querying", "read"),
    ("backend", "querying", "read"),
])
def test_the_wrong_target_answers_404_and_the_error_names_the_right_one(
        cluster: ScalableLoki, target: str, what: str, serving: str) -> None:
    client = _client(cluster.urls[target])
    with pytest.raises(LokiError) as info:
        if what == "deletion":
            client.delete('{service_name="x"}', int(time.time()) - 60)
        else:
            client.labels()
    assert info.value.status == 404
    assert info.value.target == serving
    assert f"{what} is served by the {serving} target" in str(info.value)


def test_a_push_to_the_read_target_is_refused_naming_the_write_target(
        cluster: ScalableLoki) -> None:
    from shipper.event import Entry

    entry = Entry(labels=(("service_name", "it-scale-wrong"), ("level", "INFO")),
                  timestamp_ns=time.time_ns(), line='{"message": "x"}', metadata=())
    (outcome,) = _client(cluster.read).push([entry])
    assert (outcome.kind, outcome.status) == ("refused", 404)
    assert "pushing is served by the write target" in outcome.message


def test_the_gateway_routes_only_the_loki_api(cluster: ScalableLoki) -> None:
    if not cluster.gateway:
        pytest.skip("nginx is not installed: the gateway was not started "
                    "(apt-get install nginx-light)")
    pool = urllib3.PoolManager()
    resp = pool.request("GET", f"{cluster.gateway}/metrics")
    assert resp.status == 404
    assert b"routes the Loki API only" in resp.data
    assert pool.request("GET", f"{cluster.gateway}/ready").status == 200


def test_the_gateway_lets_no_one_in_without_credentials_and_only_the_admin_delete(
        cluster: ScalableLoki) -> None:
    if not cluster.gateway:
        pytest.skip("nginx is not installed: the gateway was not started "
                    "(apt-get install nginx-light)")
    from shipper.event import Entry

    entry = Entry(labels=(("service_name", "it-scale-no-auth"), ("level", "INFO")),
                  timestamp_ns=time.time_ns(), line='{"message": "x"}', metadata=())
    (outcome,) = _client(cluster.gateway).push([entry])
    assert (outcome.kind, outcome.status) == ("retry", 401)  # kept for later, never dropped
    for url in (cluster.gateway, with_login(cluster.gateway, ("shipper", "not-the-password"))):
        with pytest.raises(LokiError) as info:
            _client(url).labels()
        assert info.value.status == 401
    start = int(time.time()) - 600
    for login in (None, GATEWAY_USER):
        url = with_login(cluster.gateway, login) if login else cluster.gateway
        with pytest.raises(LokiError) as info:
            _client(url).delete('{service_name="it-scale-no-auth"}', start)
        assert info.value.status == 401, login
    admin = _client(with_login(cluster.gateway, GATEWAY_ADMIN))
    assert admin.labels() is not None
    request_id = admin.delete('{service_name="it-scale-no-auth"}', start)
    assert request_id
    admin.cancel_delete(request_id)


@pytest.mark.parametrize("target", ["write", "read", "backend"])
def test_loki_accepts_the_scalable_config_with_the_compose_settings(target: str) -> None:
    """`loki -verify-config` with the environment docker-compose.scale.yml gives each target."""
    compose = yaml.safe_load((REPO / "docker-compose.scale.yml").read_text(encoding="utf-8"))
    service = compose["services"][f"loki-{target}"]
    env = {k: str(v) for k, v in service["environment"].items()}
    env["LOKI_S3_SECRET_ACCESS_KEY"] = "placeholder"  # ${MINIO_ROOT_PASSWORD:?...} in compose
    env["LOKI_S3_ACCESS_KEY_ID"] = "loki"
    flags = [f for f in service["command"] if not f.startswith("-config.file=")]
    done = subprocess.run([os.environ["LOKI_BIN"], f"-config.file={SCALE_CONFIG}", *flags,
                           "-verify-config"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "config is valid" in done.stdout + done.stderr

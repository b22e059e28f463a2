"""The Node snippets of docs/sidecar.md, run with Node against a running sidecar: pino to a
file, fetch to /v1/events, OpenTelemetry logs over OTLP (HTTP in protobuf and JSON, gRPC). What
reaches the (fake) Loki must carry the contract's labels."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakeloki import FakeLoki, Stored, free_port
from tests.support.sidecar_process import SidecarProcess, wait_until

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "tests" / "node" / "node_modules"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not NODE_MODULES.is_dir(),
    reason="needs Node.js and `npm ci --prefix tests/node` (.ci/run does both)")


def snippet(name: str) -> str:
    blocks = re.findall(r"```js\n(.*?)```", (REPO / "docs" / "sidecar.md").read_text(), re.S)
    (block,) = [b for b in blocks if b.startswith(f"// {name}")]
    return block


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[FakeLoki, SidecarProcess, int]]:
    with FakeLoki(rate_limit=False) as loki:
        (tmp_path / "logs").mkdir()
        port = free_port()
        proc = SidecarProcess(tmp_path, [
            {"type": "file", "paths": [str(tmp_path / "logs" / "*.log")], "format": "json",
             "poll_interval": "50ms", "scan_interval": "100ms"},
            {"type": "http", "listen": f"127.0.0.1:{port}",
             "otlp_grpc_listen": f"127.0.0.1:{free_port()}"}],
            loki_url=loki.url, service="shop")
        proc.start()
        yield loki, proc, port
        if proc.finish(signal.SIGTERM) != 0:
            raise AssertionError(proc.stderr)


def run_node(tmp_path: Path, name: str, **env: str) -> None:
    script = tmp_path / name
    script.write_text(snippet(name))
    link = tmp_path / "node_modules"
    if not link.exists():
        link.symlink_to(NODE_MODULES)
    done = subprocess.run(["node", str(script)], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "unreachable" not in done.stderr and "systemLog:" not in done.stderr, done.stderr


def stored(loki: FakeLoki, n: int) -> list[Stored]:
    assert wait_until(lambda: loki.count() >= n, 20), loki.stored()
    return sorted(loki.stored(), key=lambda s: s.ts)


def test_pino_to_a_file(tmp_path: Path, stack: tuple[FakeLoki, SidecarProcess, int]) -> None:
    loki, _, _ = stack
    run_node(tmp_path, "pino-to-file.mjs", LOG_FILE=str(tmp_path / "logs" / "app.log"))
    info, error = stored(loki, 2)
    assert dict(info.labels) == {"service_name": "shop", "level": "INFO", "actor": "USER",
                                 "type": "USER_LOGIN"}
    assert dict(info.metadata)["actor_id"] == "usr_42"
    assert json.loads(info.line)["message"] == "user logged in"
    assert dict(error.labels)["level"] == "ERROR"
    body = json.loads(error.line)
    assert body["message"] == "payment failed"
    assert body["exception"].startswith("Error: card declined\n    at ")
    assert {"pid", "hostname"} <= set(body["metadata"])


def test_fetch_to_v1_events(tmp_path: Path, stack: tuple[FakeLoki, SidecarProcess, int]) -> None:
    loki, _, port = stack
    run_node(tmp_path, "system-log.mjs",
             SHIPPER_EVENTS_URL=f"http://127.0.0.1:{port}/v1/events")
    (event,) = stored(loki, 1)
    assert dict(event.labels) == {"service_name": "shop", "level": "CRITICAL",
                                  "actor": "SYSTEM", "type": "DATA_CORRUPTION"}
    assert json.loads(event.line) == {"message": "ledger totals differ", "metadata": {
        "ledger": "2026-11", "expected": 1200, "found": 1100}}


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json", "grpc"])
def test_opentelemetry_logs_over_otlp(tmp_path: Path, protocol: str,
                                      stack: tuple[FakeLoki, SidecarProcess, int]) -> None:
    loki, proc, port = stack
    grpc_listen = next(s["otlp_grpc_listen"] for s in proc.config["sources"]
                       if s["type"] == "http")
    url = f"http://{grpc_listen}" if protocol == "grpc" else f"http://127.0.0.1:{port}/v1/logs"
    run_node(tmp_path, "otel-logs.mjs", OTLP_LOGS_URL=url,
             OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=protocol)
    (event,) = stored(loki, 1)
    assert dict(event.labels) == {"service_name": "shop", "env": "prod", "level": "ERROR",
                                  "actor": "USER", "type": "ORDER_FAILED"}
    assert dict(event.metadata) == {"actor_id": "usr_42", "logger": "orders"}
    body = json.loads(event.line)
    assert body["message"] == "order failed"
    assert body["metadata"]["orderId"] == "ord_7"

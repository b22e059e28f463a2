"""The deploy that lost every event (issue #15), against a real Loki: Starlette under uvicorn
with ShipperASGIMiddleware, 200 requests within one second, then SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import urllib3

from tests.live.conftest import query_range, wait_for
from tests.support.fakeloki import free_port
from tests.support.servers._run import BIN, burst_then_stop, server_env

pytestmark = pytest.mark.timeout(120)


def test_uvicorn_sigterm_right_after_a_burst_delivers_all_200_requests(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
        tmp_path: Path) -> None:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "tests.support.servers.asgi_app:app", "--port", str(port),
            "--no-access-log"]
    start_ns = time.time_ns() - 60 * 10**9
    # default batching (1 s): the burst is still queued when the signal comes
    env = server_env(loki_url, unique_service, tmp_path, SHIPPER_BATCH_MAX_WAIT="1")
    ids, code, output = burst_then_stop(argv, env, tmp_path / "uvicorn.log", port, 200)
    assert code == -signal.SIGTERM, output

    def traces(kind: str) -> list[str]:
        body = query_range(loki_http, loki_url, f'{{service_name="{unique_service}", '
                           f'type="{kind}"}}', start_ns, time.time_ns() + 60 * 10**9)
        # structured metadata comes back among the stream's labels
        return [s["stream"].get("trace_id", "") for s in body["data"]["result"]
                for _ in s["values"]]

    wait_for(lambda: len(traces("WORK")) >= 200 and len(traces("HTTP_REQUEST")) >= 200)
    assert sorted(traces("WORK")) == sorted(ids)
    assert sorted(t for t in traces("HTTP_REQUEST") if t != "health") == sorted(ids)

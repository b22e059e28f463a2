"""``shipper sidecar`` tailing a file into a real Loki 3.7, counted exactly with LogQL."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.live.conftest import query_range, wait_for
from tests.support.sidecar_process import SidecarProcess, wait_until


def _count(pool: urllib3.PoolManager, loki_url: str, service: str) -> int:
    resp = pool.request("GET", f"{loki_url}/loki/api/v1/query", fields={
        "query": f'sum(count_over_time({{service_name="{service}"}}[2h]))',
        "time": str(time.time_ns())})
    assert resp.status == 200, resp.data[:300]
    result = json.loads(resp.data)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def _distinct(pool: urllib3.PoolManager, loki_url: str, service: str) -> int:
    """Distinct (timestamp, line) entries a log query returns, paged forward."""
    seen: set[tuple[str, str]] = set()
    start = time.time_ns() - 3 * 3600 * 10**9
    end = time.time_ns()
    while True:
        body = query_range(pool, loki_url, f'{{service_name="{service}"}}', start, end,
                           limit=5000, direction="forward")
        values = [tuple(v[:2]) for s in body["data"]["result"] for v in s["values"]]
        before = len(seen)
        seen.update(values)  # type: ignore[arg-type]
        if len(values) < 5000 or len(seen) == before:
            return len(seen)
        start = max(int(v[0]) for v in values)  # the last page's newest time, inclusive


def _lines(start: int, stop: int, base_ms: int) -> str:
    out = []
    for i in range(start, stop):
        out.append(json.dumps({
            "level": 50 if i % 10 == 0 else 30, "time": base_ms + i, "msg": f"live {i}",
            "actor": "USER", "actorId": f"usr_{i % 7}", "type": "ORDER_PLACED",
            "reqId": f"req-{i}", "order": i}) + "\n")
    return "".join(out)


def _sidecar(work: Path, loki_url: str, service: str, workers: int) -> SidecarProcess:
    return SidecarProcess(work, [{"type": "file", "paths": [str(work / "logs" / "*.log")],
                                  "format": "json", "poll_interval": "50ms"}],
                          loki_url=loki_url, service=service, env="it", workers=workers)


# workers: 2 sends one stream's lines over two connections, not in file order: Loki 3.7's
# unordered writes (loki/config.yaml) take them all
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "2-workers"])
def test_tailing_a_file_into_loki_counts_exactly_across_sigterm_and_sigkill(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager,
        unique_service: str, workers: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "orders.log"
    base_ms = time.time_ns() // 1_000_000 - 30 * 60_000
    log.write_text(_lines(0, 20_000, base_ms))

    first = _sidecar(tmp_path, loki_url, unique_service, workers).start()
    assert wait_for(lambda: _count(loki_http, loki_url, unique_service) == 20_000, 120), \
        _count(loki_http, loki_url, unique_service)
    assert first.finish(signal.SIGTERM) == 0, first.stderr
    assert _count(loki_http, loki_url, unique_service) == 20_000
    assert _distinct(loki_http, loki_url, unique_service) == 20_000

    # written while it was away; then killed mid-file and started again
    log.write_text(log.read_text() + _lines(20_000, 60_000, base_ms))
    second = _sidecar(tmp_path, loki_url, unique_service, workers).start()
    assert wait_for(lambda: _count(loki_http, loki_url, unique_service) > 20_000, 60)
    wait_until(lambda: _count(loki_http, loki_url, unique_service) > 25_000, 120, 0.2)
    second.finish(signal.SIGKILL)
    third = _sidecar(tmp_path, loki_url, unique_service, workers).start()
    assert wait_for(lambda: _count(loki_http, loki_url, unique_service) >= 60_000, 180), \
        _count(loki_http, loki_url, unique_service)
    assert third.finish(signal.SIGTERM) == 0, third.stderr
    # Not one line lost, none shown twice: the lines read again after the SIGKILL carry the
    # same timestamp and line, and log queries return each once. (count_over_time may count
    # a re-read line twice when the two copies landed in different chunks; the SIGTERM
    # restart above re-read nothing, so its count was exact.)
    assert _distinct(loki_http, loki_url, unique_service) == 60_000
    assert _count(loki_http, loki_url, unique_service) >= 60_000

    now = time.time_ns()
    body: dict[str, Any] = query_range(
        loki_http, loki_url, f'{{service_name="{unique_service}", level="ERROR"}} '
                             '|= "live 10" | json', now - 3 * 3600 * 10**9, now, limit=5000)
    (stream,) = [s for s in body["data"]["result"]
                 if any(json.loads(v[1])["message"] == "live 10" for v in s["values"])]
    labels = stream["stream"]
    assert (labels["service_name"], labels["env"], labels["level"], labels["actor"],
            labels["type"]) == (unique_service, "it", "ERROR", "USER", "ORDER_PLACED")
    assert (labels["actor_id"], labels["trace_id"]) == ("usr_3", "req-10")
    line = next(json.loads(v[1]) for v in stream["values"]
                if json.loads(v[1])["message"] == "live 10")
    assert line == {"message": "live 10", "metadata": {"order": 10}}
    assert int(stream["values"][0][0]) == (base_ms + 10) * 1_000_000  # the line's own time


def test_a_hostile_log_directory_and_a_damaged_positions_file_stall_nothing(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager,
        unique_service: str) -> None:
    """Two links to '.' under '**' (the scan used to run for ever and ship nothing), a FIFO
    and a link to /proc/self/environ named like logs, and a positions file of 100,000 '['
    (a RecursionError at start-up, exit 1): every real line reaches Loki once, nothing else
    does, and /healthz is 200."""
    import os

    logs = tmp_path / "logs"
    (logs / "api").mkdir(parents=True)
    base_ms = time.time_ns() // 1_000_000 - 10 * 60_000
    (logs / "orders.log").write_text(_lines(0, 300, base_ms))
    (logs / "api" / "api.log").write_text(_lines(300, 500, base_ms))
    os.symlink(".", logs / "l1")
    os.symlink(".", logs / "l2")
    os.mkfifo(logs / "pipe.log")
    os.symlink("/proc/self/environ", logs / "environ.log")
    (tmp_path / "positions.json").write_bytes(b"[" * 100_000)
    proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(logs / "**" / "*.log")],
                                      "format": "json", "poll_interval": "50ms",
                                      "scan_interval": "200ms"}],
                          loki_url=loki_url, service=unique_service, env="it").start()
    assert wait_for(lambda: _count(loki_http, loki_url, unique_service) == 500, 60), \
        _count(loki_http, loki_url, unique_service)
    assert proc.healthy()
    assert proc.finish(signal.SIGTERM) == 0, proc.stderr
    assert _distinct(loki_http, loki_url, unique_service) == 500
    assert "Traceback" not in proc.stderr
    said = proc.stderr.splitlines()
    assert sum("is damaged" in line and "moved to" in line for line in said) == 1
    assert sum("pipe.log matches the globs but is a FIFO" in line for line in said) == 1
    assert sum("environ.log is /proc/" in line for line in said) == 1

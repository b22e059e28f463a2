"""``/ready`` and ``/metrics`` of a sidecar against a real Loki 3.7: the probe (a push of
nothing) is answered 204 and leaves no stream behind, and the push histogram counts real
answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import urllib3

from tests.support.sidecar_process import SidecarProcess, json_lines, wait_until


def _series(pool: urllib3.PoolManager, loki_url: str, service: str) -> list[object]:
    resp = pool.request("GET", f"{loki_url}/loki/api/v1/series", fields={
        "match[]": f'{{service_name="{service}"}}',
        "start": str(time.time_ns() - 3600 * 10**9), "end": str(time.time_ns())})
    assert resp.status == 200, resp.data[:300]
    return list(json.loads(resp.data)["data"])


def test_a_sidecar_without_a_spool_is_ready_once_real_loki_answers_its_probe(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
        processes: list[SidecarProcess]) -> None:
    (tmp_path / "logs").mkdir()
    proc = SidecarProcess(tmp_path, [{"type": "file", "name": "live-ready",
                                      "paths": [str(tmp_path / "logs" / "*.log")],
                                      "format": "json", "poll_interval": "50ms"}],
                          loki_url=loki_url, service=unique_service,
                          loki_settings={"spool": False})
    processes.append(proc)
    proc.start()
    _, body = wait_until(lambda: (a := proc.get("/ready"))[0] == 200 and a, 30)
    assert body.startswith("ready: Loki answered 204")
    time.sleep(1)
    assert _series(loki_http, loki_url, unique_service) == []  # the probe stored nothing

    (tmp_path / "logs" / "app.log").write_text(json_lines("live", 0, 20))
    metrics = wait_until(lambda: (m := proc.metrics()).get(
        "shipper_sidecar_events_sent_total") == 20 and m, 30)
    assert metrics['shipper_sidecar_push_duration_seconds_count{status_class="2xx"}'] >= 2
    assert metrics["shipper_sidecar_sent_bytes_total"] > 0
    assert metrics['shipper_sidecar_lines_read_total{source="live-ready"}'] == 20
    assert proc.finish() == 0

"""The sidecar's operations endpoint as an orchestrator and Prometheus use it: ``/ready``,
``/healthz`` (and ``/-/ready``, ``/-/healthy``) and ``/metrics`` of a real ``shipper sidecar``
process, against a fake Loki that answers as Loki 3.7.6 does."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from shipper._version import __version__
from shipper.sidecar.sources.file import FileStatus
from tests.support.fakeloki import FakeLoki, Request
from tests.support.sidecar_process import ROOT, SidecarProcess, json_lines, wait_until


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        yield fake


def file_sidecar(processes: list[SidecarProcess], work: Path, loki: FakeLoki,
                 **settings: Any) -> SidecarProcess:
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    sources = settings.pop("sources", None) or [
        {"type": "file", "name": "app-logs", "paths": [str(logs / "*.log")],
         "poll_interval": "20ms", "scan_interval": "100ms", "format": "json"}]
    proc = SidecarProcess(work, sources, loki_url=loki.url, **settings)
    processes.append(proc)
    return proc


def status_of(proc: SidecarProcess, path: str) -> int:
    return proc.get(path)[0]


# --------------------------------------------------------------------------- /ready


def test_ready_without_a_spool_waits_for_loki_to_answer_and_turns_503_when_it_goes(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    """/ready was a 404 and the manifests probed /healthz, which answered 200 while Loki was
    unreachable: a pod without a spool was ready with nowhere to send what it read."""
    loki.stop()
    proc = file_sidecar(processes, tmp_path, loki, loki_settings={"spool": False}).start()
    status, body = wait_until(lambda: (a := proc.get("/ready"))[0] == 503
                              and "no answer from Loki" in a[1] and a, 20)
    assert status == 503
    assert body.startswith("not ready: no answer from Loki (")
    assert "no spool to keep events meanwhile" in body
    assert proc.get("/-/ready") == (status, body)
    assert status_of(proc, "/healthz") == 200  # Loki away is not the sidecar stuck
    assert status_of(proc, "/-/healthy") == 200
    assert proc.get("/ready/") == (404, "not found: try /ready, /healthz or /metrics\n")

    loki.start()  # the probe (a push of nothing) finds it
    status, body = wait_until(lambda: (a := proc.get("/ready"))[0] == 200 and a, 30)
    assert body.startswith("ready: Loki answered 204")
    assert loki.count() == 0  # the probe stores nothing
    probes = [json.loads(r.body) for r in loki.requests]
    assert probes and all(p == {"streams": [{"stream": {"service_name": "sidecar-test"},
                                             "values": []}]} for p in probes)

    loki.stop()  # a push that finds no Loki turns it 503 at once
    (tmp_path / "logs" / "app.log").write_text(json_lines("r", 0, 5))
    status, body = wait_until(lambda: (a := proc.get("/ready"))[0] == 503 and a, 30)
    assert "no answer from Loki" in body
    assert proc.finish() == 0


def test_ready_before_loki_has_answered_says_so(tmp_path: Path, loki: FakeLoki,
                                                processes: list[SidecarProcess]) -> None:
    answer = {"go": False}

    def slow(request: Request) -> tuple[int, str, dict[str, str]] | None:
        while not answer["go"]:
            time.sleep(0.02)
        return None

    loki.hook = slow
    proc = file_sidecar(processes, tmp_path, loki, loki_settings={"spool": False}).start()
    status, body = proc.get("/ready")
    assert status == 503
    assert "Loki has not answered yet (probing), and no spool" in body
    answer["go"] = True
    assert wait_until(lambda: status_of(proc, "/ready") == 200, 30)
    assert proc.finish() == 0


def test_ready_with_a_spool_while_loki_is_down_the_spool_takes_the_events(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    loki.stop()
    proc = file_sidecar(processes, tmp_path, loki,
                        loki_settings={"retry_budget": "200ms"}).start()
    _, body = wait_until(lambda: (a := proc.get("/ready"))[0] == 200
                         and "no answer" in a[1] and a, 20)
    assert body.startswith("ready: no answer from Loki (")
    assert body.rstrip().endswith("events wait in the spool")
    (tmp_path / "logs" / "app.log").write_text(json_lines("s", 0, 50))
    assert wait_until(lambda: proc.metrics().get("shipper_sidecar_events_spooled_total")
                      == 50, 30)
    assert status_of(proc, "/ready") == 200
    assert proc.metrics()["shipper_sidecar_ready"] == 1
    assert proc.finish() == 0


# --------------------------------------------------------------------------- /healthz


def test_a_stalled_source_turns_healthz_and_ready_503_naming_it_in_a_running_sidecar(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    marker = tmp_path / "stall"
    proc = file_sidecar(processes, tmp_path, loki)
    proc.command = [sys.executable, str(ROOT / "tests" / "support" / "stalling_sidecar.py")]
    log = tmp_path / "logs" / "app.log"
    log.write_text(json_lines("h", 0, 3))
    proc.start(env={"STALL_MARKER": str(marker), "PYTHONPATH": str(ROOT)})
    assert wait_until(lambda: loki.count() == 3)
    assert wait_until(lambda: status_of(proc, "/ready") == 200, 20)

    marker.write_text("")  # the next read hangs
    _, body = wait_until(lambda: (a := proc.get("/healthz"))[0] == 503 and a, 20)
    assert body.startswith("app-logs is stalled: its loop has not come round for ")
    assert f"(at {log})" in body
    assert proc.get("/-/healthy")[0] == 503
    ready = proc.get("/ready")
    assert ready[0] == 503 and "app-logs is stalled" in ready[1]
    assert proc.proc is not None and proc.proc.poll() is None  # it may come round again

    marker.unlink()
    assert wait_until(lambda: status_of(proc, "/healthz") == 200, 20)
    assert wait_until(lambda: status_of(proc, "/ready") == 200, 20)
    assert proc.finish() == 0


# --------------------------------------------------------------------------- /metrics


def families(proc: SidecarProcess) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(proc.metrics_text())}


def value(family: Any, suffix: str = "", **labels: str) -> float:
    found = [s for s in family.samples if s.name == family.name + suffix
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family.name, suffix, labels, family.samples)
    return float(found[0].value)


WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "2-workers"])


@WORKERS
def test_metrics_operators_expect_after_pushing_lines(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], workers: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    n = 300
    (logs / "a.log").write_text(json_lines("a", 0, n))
    (logs / "b.log").write_text(json_lines("b", 0, 20) + json.dumps(
        {"level": 30, "time": 1_000_000, "msg": "from 1970"}) + "\n")  # too old for Loki
    failed = {"once": False}

    def a_500_first(request: Request) -> tuple[int, str, dict[str, str]] | None:
        if b'"values":[]' in request.body or failed["once"]:
            return None
        failed["once"] = True
        return 500, "empty ring\n", {}

    loki.hook = a_500_first
    proc = file_sidecar(processes, tmp_path, loki, workers=workers, sources=[
        {"type": "file", "name": "app-logs", "paths": [str(logs / "a.log")],
         "poll_interval": "20ms", "format": "json"},
        {"type": "file", "paths": [str(logs / "b.log")], "poll_interval": "20ms",
         "format": "json"}]).start()
    assert wait_until(lambda: loki.count() == n + 20, 30)
    got = wait_until(lambda: (f := families(proc))["shipper_sidecar_events_sent"].samples[0]
                     .value == n + 20 and f, 30)

    pushes = got["shipper_sidecar_push_duration_seconds"]
    assert pushes.type == "histogram"
    ok = value(pushes, "_count", status_class="2xx")
    assert ok >= 1 and value(pushes, "_sum", status_class="2xx") > 0  # the probe at least
    assert value(pushes, "_count", status_class="5xx") == 1
    assert value(pushes, "_count", status_class="4xx") >= 1  # the line from 1970
    buckets = [s for s in pushes.samples if s.name.endswith("_bucket")
               and s.labels["status_class"] == "2xx"]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)
    assert buckets[-1].value == ok
    assert got["shipper_sidecar_events_retried"].samples[0].value >= 1
    assert got["shipper_sidecar_sent_bytes"].samples[0].value > 0
    assert value(got["shipper_sidecar_events_refused"], "_total", reason="too_old") == 1
    assert value(got["shipper_sidecar_requests_refused"], "_total", reason="too_old") == 1
    assert got["shipper_sidecar_events_dropped"].type == "counter"
    assert value(got["shipper_sidecar_spool_bytes"]) == 0
    assert value(got["shipper_sidecar_spool_oldest_age_seconds"]) == 0

    for path, source in ((logs / "a.log", "app-logs"), (logs / "b.log", "file#1")):
        size = path.stat().st_size
        assert value(got["shipper_sidecar_file_read_bytes"], source=source,
                     path=str(path)) == size
        assert value(got["shipper_sidecar_file_size_bytes"], source=source,
                     path=str(path)) == size
        assert value(got["shipper_sidecar_files_followed"], source=source) == 1
    assert value(got["shipper_sidecar_lines_read"], "_total", source="app-logs") == n

    build = got["shipper_sidecar_build_info"]
    assert build.samples == [Sample("shipper_sidecar_build_info",
                                    {"version": __version__,
                                     "python": build.samples[0].labels["python"]}, 1.0)]
    assert build.samples[0].labels["python"] == ".".join(map(str, sys.version_info[:3]))
    assert value(got["process_resident_memory_bytes"]) > 0
    assert value(got["process_cpu_seconds"], "_total") > 0
    assert got["python_info"].samples and "python_gc_collections" in got
    assert value(got["shipper_sidecar_ready"]) == 1
    # docs/sidecar.md lists every family the sidecar shows
    table = (ROOT / "docs" / "sidecar.md").read_text()
    assert not [name for name in got if name.startswith("shipper_sidecar")
                and f"| `{name}" not in table]
    assert proc.finish() == 0


def test_a_file_behind_shows_its_offset_below_its_size(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    """Promtail's read_bytes against file_bytes, which its dashboards graph as lag."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text(json_lines("a", 0, 10))
    loki.stop()  # no Loki and no spool: the queue fills and the reader waits
    proc = file_sidecar(processes, tmp_path, loki, loki_settings={
        "spool": False, "retry_budget": "1h", "queue_max_events": 1000,
        "batch_max_events": 100}).start()
    assert wait_until(lambda: families(proc)["shipper_sidecar_file_read_bytes"].samples, 20)
    with (logs / "a.log").open("a") as f:
        f.write(json_lines("b", 0, 50_000))
    size = (logs / "a.log").stat().st_size
    got = wait_until(lambda: (f := families(proc)) and value(
        f["shipper_sidecar_file_size_bytes"], source="app-logs") == size and f, 20)
    offset = value(got["shipper_sidecar_file_read_bytes"], source="app-logs")
    assert 0 < offset < size
    assert value(got["shipper_sidecar_file_lag_bytes"], path=str(logs / "a.log")) == \
        size - offset
    proc.kill()


def test_sources_are_named_in_metrics_and_the_start_up_line(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text(json_lines("a", 0, 2))
    proc = file_sidecar(processes, tmp_path, loki, sources=[
        {"type": "file", "name": "nginx.access", "paths": [str(logs / "*.log")],
         "poll_interval": "20ms", "format": "json"},
        {"type": "http", "listen": "127.0.0.1:0"}]).start()
    assert wait_until(lambda: loki.count() == 2)
    metrics = proc.metrics()
    assert metrics['shipper_sidecar_lines_read_total{source="nginx.access"}'] == 2
    assert 'shipper_sidecar_lines_read_total{source="http#1"}' in metrics
    assert proc.finish() == 0
    assert "started: nginx.access tailing " in proc.stderr
    assert "; http#1 listening on http://127.0.0.1:" in proc.stderr


def in_process_sidecar(tmp_path: Path, loki: FakeLoki) -> tuple[Any, int]:
    import yaml

    from shipper.sidecar.config import load_config
    from shipper.sidecar.runner import Sidecar
    from tests.support.fakeloki import free_port

    port = free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "loki": {"url": loki.url}, "service": "ops", "spool_dir": str(tmp_path / "spool"),
        "positions_file": str(tmp_path / "pos.json"), "metrics_listen": f"127.0.0.1:{port}",
        "sources": [{"type": "file", "name": "many", "paths": [str(tmp_path / "logs" / "*")],
                     "poll_interval": "20ms", "format": "json"}]}))
    return Sidecar(load_config(str(config))), port


def scrape(port: int) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def test_per_file_series_are_capped_to_the_files_furthest_behind(
        tmp_path: Path, loki: FakeLoki) -> None:
    """Thousands of files must not become thousands of series each: past the cap only the
    files furthest behind have series of their own; files_followed counts them all."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(5):
        (logs / f"f{i}.log").write_text(json_lines(f"f{i}", 0, 1))
    sidecar, port = in_process_sidecar(tmp_path, loki)
    sidecar.start()
    try:
        source = sidecar.sources[0]
        source.metrics_files = 2  # type: ignore[attr-defined]
        assert wait_until(lambda: loki.count() == 5)
        got = scrape(port)
        assert value(got["shipper_sidecar_files_followed"], source="many") == 5
        assert len(got["shipper_sidecar_file_read_bytes"].samples) == 2
        assert len(got["shipper_sidecar_file_size_bytes"].samples) == 2
        assert len(got["shipper_sidecar_file_lag_bytes"].samples) == 2
        # which two: those furthest behind
        behind = [FileStatus(f"/l/{i}", lag, 0.0, 100 - lag, 100)
                  for i, lag in enumerate((5, 50, 0, 70, 1))]
        source.status = lambda: list(behind)  # type: ignore[method-assign]
        got = scrape(port)
        assert {s.labels["path"]: s.value for s in
                got["shipper_sidecar_file_read_bytes"].samples} == {"/l/3": 30, "/l/1": 50}
    finally:
        sidecar.shutdown(5)


def test_a_file_name_that_is_not_utf8_does_not_break_the_scrape(
        tmp_path: Path, loki: FakeLoki) -> None:
    import os

    logs = tmp_path / "logs"
    logs.mkdir()
    name = os.fsencode(str(logs)) + b"/caf\xe9.log"  # Latin-1, as an old system writes it
    with open(name, "wb") as f:
        f.write(json_lines("x", 0, 2).encode())
    sidecar, port = in_process_sidecar(tmp_path, loki)
    sidecar.start()
    try:
        assert wait_until(lambda: loki.count() == 2)
        got = scrape(port)
        (sample,) = got["shipper_sidecar_file_read_bytes"].samples
        assert sample.labels["path"] == f"{logs}/caf\\xe9.log"
        assert sample.value == os.path.getsize(name)
    finally:
        sidecar.shutdown(5)

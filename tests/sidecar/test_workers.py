"""``workers: N``: the sidecar's own process reads the files and N worker processes parse and
ship the lines (shipper/sidecar/workers.py). Real processes, a fake Loki that answers as Loki
3.7 does, and the signals a deploy or a crash sends. The behaviour every sidecar has (drain on
SIGTERM, SIGKILL mid-file, spool, positions) is checked with workers too in
tests/sidecar/test_process.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.fakeloki import FakeLoki
from tests.support.sidecar_process import ROOT, SidecarProcess, json_lines, wait_until


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        yield fake


def sidecar(processes: list[SidecarProcess], work: Path, loki: FakeLoki,
            source: dict[str, object] | None = None, **settings: object) -> SidecarProcess:
    source = source or {"format": "json"}
    sources = [{"type": "file", "paths": [str(work / "logs" / "*.log")],
                "poll_interval": "20ms", "scan_interval": "100ms", **source}]
    settings.setdefault("workers", 2)
    proc = SidecarProcess(work, sources, loki_url=loki.url, **settings)
    processes.append(proc)
    return proc


def messages(loki: FakeLoki) -> list[str]:
    return [json.loads(line)["message"] for line in loki.lines()]


def test_two_workers_ship_every_line_once_and_metrics_add_up_their_counters(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("w", 0, 20_000) + "{not json\n" + json_lines("w", 20_000, 20_500)
                   + "{still: not json}\n")
    proc = sidecar(processes, tmp_path, loki).start()
    assert len(proc.workers()) == 2
    assert wait_until(lambda: loki.count() == 20_502, 60), loki.count()
    assert wait_until(lambda: proc.metrics().get("shipper_sidecar_events_sent_total") == 20_502)
    metrics = proc.metrics()
    assert metrics['shipper_sidecar_lines_invalid_total{source="file#0"}'] == 2
    assert metrics['shipper_sidecar_lines_read_total{source="file#0"}'] == 20_502
    assert metrics["shipper_sidecar_events_accepted_total"] == 20_502
    assert proc.finish(signal.SIGTERM) == 0
    assert "started:" in proc.stderr and "by 2 worker processes" in proc.stderr
    assert "sent 20502, spooled 0" in proc.stderr
    assert proc.positions()["files"][0]["offset"] == log.stat().st_size
    assert loki.pushed_values == 20_502  # nothing sent twice
    got = messages(loki)
    assert sorted(m for m in got if m.startswith("w")) == sorted(f"w{i}" for i in range(20_500))
    assert {"{not json", "{still: not json}"} <= set(got)


def test_workers_join_multiline_records_as_one_process_does(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    trace = ("ERROR boom {n}\nTraceback (most recent call last):\n"
             "  File \"app.py\", line 1, in <module>\nValueError: {n}\n")
    (logs / "app.log").write_text("".join(trace.format(n=i) for i in range(300)))
    proc = sidecar(processes, tmp_path, loki, source={
        "format": "text", "multiline": {"start": r"^ERROR", "timeout": "200ms"}}).start()
    assert wait_until(lambda: loki.count() == 300, 30), (loki.count(), proc.finish())
    assert proc.finish(signal.SIGTERM) == 0
    assert {dict(s.labels).get("level") for s in loki.stored()} == {"ERROR"}
    records = sorted(loki.lines(), key=lambda line: int(line.split("boom ")[1].split('"')[0]))
    for n, line in enumerate(records):
        assert f"boom {n}" in line and f"ValueError: {n}" in line and "Traceback" in line


def test_a_killed_worker_stops_the_sidecar_and_a_restart_loses_nothing(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    """Its lines were handed over but not delivered: the positions saved before it died do
    not cover them, so the restart reads them again (Loki drops the exact duplicates)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("k", 0, 60_000))
    loki.delay = 0.05  # a slow Loki, so that the kill lands mid-file
    first = sidecar(processes, tmp_path, loki, loki_settings={"batch_max_events": 2000}).start()
    assert wait_until(lambda: loki.count() >= 6000, 60)
    victim = first.workers()[0]
    victim.send_signal(signal.SIGKILL)
    assert first.wait(30) == 1  # stops by itself
    assert "worker process 0 exited (killed by SIGKILL)" in first.stderr, first.stderr
    assert loki.count() < 60_000
    loki.delay = 0
    second = sidecar(processes, tmp_path, loki).start()
    assert wait_until(lambda: loki.count() >= 60_000, 60), loki.count()
    assert second.finish(signal.SIGTERM) == 0
    assert loki.count() == 60_000
    assert sorted(messages(loki)) == sorted(f"k{i}" for i in range(60_000))


def test_a_deploy_that_signals_every_process_drains_through_the_main_one(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    """systemd (KillMode=control-group) and a terminal's Ctrl-C signal every process of the
    sidecar: the workers ignore it, and the main process drains them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("d", 0, 30_000))
    loki.delay = 0.02
    proc = sidecar(processes, tmp_path, loki).start()
    assert wait_until(lambda: loki.count() > 0, 30)
    workers = proc.workers()
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        for worker in workers:
            worker.send_signal(signum)
    assert all(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    loki.delay = 0
    assert proc.finish(signal.SIGTERM) == 0
    assert "dropped 0" in proc.stderr
    assert loki.count() == 30_000
    assert proc.positions()["files"][0]["offset"] == log.stat().st_size
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_workers_spool_their_queue_and_exit_when_the_main_process_is_killed(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("o", 0, 5000))
    loki.stop()  # Loki is away: what the workers hold goes to the spool, not to Loki
    first = sidecar(processes, tmp_path, loki, loki_settings={"retry_budget": "60s"}).start()
    assert wait_until(lambda: first.metrics().get(
        'shipper_sidecar_lines_read_total{source="file#0"}') == 5000, 30)
    workers = first.workers()
    first.finish(signal.SIGKILL)
    assert wait_until(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE
                                      for w in workers), 30)
    spooled = list((tmp_path / "spool").rglob("*.seg"))
    assert spooled, "the workers closed their pipelines into the spool"
    loki.start()
    second = sidecar(processes, tmp_path, loki).start()  # replays the spool, reads again
    assert wait_until(lambda: loki.count() >= 5000, 60), loki.count()
    assert second.finish(signal.SIGTERM) == 0
    assert sorted(messages(loki)) == sorted(f"o{i}" for i in range(5000))


def test_workers_start_no_process_when_there_is_no_file_source(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    proc = SidecarProcess(tmp_path, [{"type": "http", "listen": "127.0.0.1:0"}],
                          loki_url=loki.url, workers=3)
    processes.append(proc)
    proc.start()
    assert proc.workers() == []
    assert proc.finish(signal.SIGTERM) == 0
    assert "worker processes" not in proc.stderr


def test_each_file_source_keeps_its_own_format_and_service_in_the_workers(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "api" / "api.log").write_text(json_lines("api", 0, 3000))
    (tmp_path / "jobs" / "jobs.log").write_text("".join(
        f"level=warn msg=job{i} queue=mail\n" for i in range(3000)))
    proc = SidecarProcess(tmp_path, [
        {"type": "file", "paths": [str(tmp_path / "api" / "*.log")], "format": "json",
         "poll_interval": "20ms"},
        {"type": "file", "paths": [str(tmp_path / "jobs" / "*.log")], "format": "logfmt",
         "service": "jobs", "poll_interval": "20ms"},
    ], loki_url=loki.url, workers=2)
    processes.append(proc)
    proc.start()
    assert wait_until(lambda: loki.count() == 6000, 30), loki.count()
    metrics = proc.metrics()
    assert metrics['shipper_sidecar_lines_invalid_total{source="file#0"}'] == 0
    assert metrics['shipper_sidecar_lines_invalid_total{source="file#1"}'] == 0
    assert proc.finish(signal.SIGTERM) == 0
    by_service: dict[str, set[str]] = {}
    for stored in loki.stored():
        labels = dict(stored.labels)
        record = json.loads(stored.line)
        by_service.setdefault(labels["service_name"], set()).add(
            f"{labels['level']} {record['message']} {record['metadata']}")
    assert by_service["sidecar-test"] == {f"INFO api{i} {{}}" for i in range(3000)}
    assert by_service["jobs"] == {f"WARNING job{i} {{'queue': 'mail'}}" for i in range(3000)}


def test_a_sidecar_that_exits_without_draining_does_not_hang_on_its_workers(
        tmp_path: Path, loki: FakeLoki) -> None:
    """An exit that skips the drain (an exception past it): the workers, which ignore SIGTERM,
    see their pipes close, ship or spool what they hold and exit, so the process ends instead
    of waiting for them in multiprocessing's exit handler."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("x", 0, 2000))
    proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(logs / "*.log")],
                                      "format": "json", "poll_interval": "20ms"}],
                          loki_url=loki.url, workers=2)
    proc.path.write_text(yaml.safe_dump(proc.config))
    script = (
        "import time\n"
        "from shipper.sidecar.config import load_config\n"
        "from shipper.sidecar.runner import Sidecar\n"
        f"sidecar = Sidecar(load_config({str(proc.path)!r}))\n"
        "sidecar.start()\n"
        "time.sleep(1.0)\n"
        "raise RuntimeError('an unexpected failure')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "RuntimeError: an unexpected failure" in done.stderr
    assert loki.count() == 2000  # read and handed over within the second, then shipped


def test_a_flush_that_timed_out_leaves_no_answer_behind(tmp_path: Path, loki: FakeLoki) -> None:
    """The checkpoint asks the workers to flush every positions_interval; while Loki is slow
    many of those time out, and their late answers must not pile up in the sidecar."""
    from shipper.config import ShipperConfig
    from shipper.sidecar.pressure import ReadAhead
    from shipper.sidecar.workers import WorkerPool

    loki.delay = 0.5
    config = ShipperConfig.load(url=loki.url, service="pool", spool_dir=str(tmp_path / "spool"),
                                batch_max_wait=0.05)
    pool = WorkerPool(1, config, [{"format": "json", "service": "pool"}],
                      ReadAhead.of(config))
    pool.start()
    try:
        ship = pool.shipper(0)
        for round_ in range(5):
            ship([json_lines("t", round_, round_ + 1).strip()], 1, None)
            assert pool.flush(0.01) is False  # Loki takes half a second
        assert wait_until(lambda: loki.count() == 5, 30)
        time.sleep(1.0)  # the late answers have come
        worker = pool._workers[0]
        assert worker.flushed == {} and worker.awaited == set()
        assert pool.flush(10) is True
    finally:
        assert pool.close(10) is True


def test_the_sidecar_process_switches_threads_every_half_millisecond_and_freezes_start_up(
) -> None:
    import gc

    from shipper.sidecar.workers import SWITCH_INTERVAL, tune_process

    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        tune_process()
        assert SWITCH_INTERVAL == 0.0005
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        assert gc.get_threshold()[0] == 100_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)

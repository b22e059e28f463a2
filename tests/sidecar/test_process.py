"""``shipper sidecar`` as it runs in production: a real process, a fake Loki that answers as
Loki 3.7 does, stopped with SIGTERM (a deploy) or SIGKILL (a crash)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakeloki import FakeLoki
from tests.support.sidecar_process import SidecarProcess, json_lines, wait_until


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        yield fake


def sidecar(processes: list[SidecarProcess], work: Path, loki: FakeLoki | None,
            **settings: object) -> SidecarProcess:
    sources = settings.pop("sources", None) or [
        {"type": "file", "paths": [str(work / "logs" / "*.log")], "poll_interval": "20ms",
         "scan_interval": "100ms", "format": "json"}]
    proc = SidecarProcess(work, sources, loki_url=loki.url if loki else None,  # type: ignore[arg-type]
                          **settings)
    processes.append(proc)
    return proc


#: the same behaviour with every line parsed and shipped in the sidecar's own process, and
#: with two worker processes doing it (``workers: 2``, shipper/sidecar/workers.py)
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "2-workers"])


def messages(loki: FakeLoki) -> list[str]:
    return [json.loads(line)["message"] for line in loki.lines()]


@WORKERS
def test_sigterm_drains_saves_positions_and_a_restart_neither_skips_nor_rereads(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], workers: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("a", 0, 3000))
    first = sidecar(processes, tmp_path, loki, workers=workers).start()
    wait_until(lambda: loki.count() > 0)
    started = time.monotonic()
    assert first.finish(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10  # within drain_timeout
    assert loki.count() == 3000
    assert first.positions()["files"][0]["offset"] == log.stat().st_size
    assert "stopped after" in first.stderr and "dropped 0" in first.stderr

    with log.open("a") as f:  # written while the sidecar was away
        f.write(json_lines("a", 3000, 3500))
    second = sidecar(processes, tmp_path, loki, workers=workers).start()
    assert wait_until(lambda: loki.count() == 3500)
    assert second.finish(signal.SIGTERM) == 0
    assert loki.pushed_values == 3500  # nothing was sent twice
    assert sorted(messages(loki)) == sorted(f"a{i}" for i in range(3500))


@WORKERS
def test_sigkill_mid_file_loses_nothing(tmp_path: Path, loki: FakeLoki,
                                        processes: list[SidecarProcess], workers: int) -> None:
    """At least once: after a SIGKILL the sidecar reads again from the last saved position;
    the lines read twice carry the same timestamp, and Loki stores them once."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("k", 0, 60_000))
    # a slow Loki, so that the kill lands mid-file
    loki.delay = 0.05
    first = sidecar(processes, tmp_path, loki, workers=workers,
                    loki_settings={"batch_max_events": 2000}).start()
    assert wait_until(lambda: loki.count() >= 6000, 60)
    first.finish(signal.SIGKILL)
    at_kill = loki.count()
    assert at_kill < 60_000
    loki.delay = 0
    second = sidecar(processes, tmp_path, loki, workers=workers).start()
    assert wait_until(lambda: loki.count() >= 60_000, 60), loki.count()
    assert second.finish(signal.SIGTERM) == 0
    assert loki.count() == 60_000
    assert sorted(messages(loki)) == sorted(f"k{i}" for i in range(60_000))


@WORKERS
def test_loki_down_the_spool_takes_the_lines_and_positions_advance(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], workers: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("s", 0, 500))
    loki.stop()
    first = sidecar(processes, tmp_path, loki, workers=workers,
                    loki_settings={"retry_budget": "200ms"}).start()
    assert wait_until(lambda: first.metrics().get("shipper_sidecar_events_spooled_total", 0)
                      >= 500, 30)
    assert first.finish(signal.SIGTERM) == 0
    assert (tmp_path / "positions.json").exists(), first.stderr
    assert first.positions()["files"][0]["offset"] == log.stat().st_size
    loki.start()
    second = sidecar(processes, tmp_path, loki, workers=workers).start()  # replays the spool
    assert wait_until(lambda: loki.count() == 500, 30)
    assert second.finish() == 0
    assert sorted(messages(loki)) == sorted(f"s{i}" for i in range(500))


@pytest.mark.parametrize(("damage", "why"), [(b"\x00" * 64, "NUL bytes"),
                                             (b"[" * 100_000, "nested too deep")],
                         ids=["nul-bytes", "100000-open-brackets"])
def test_a_damaged_positions_file_is_moved_aside_and_the_sidecar_starts_and_keeps_running(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], damage: bytes,
        why: str) -> None:
    """100,000 '[' used to end the start with a RecursionError traceback and exit 1."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("d", 0, 100))
    (tmp_path / "positions.json").write_bytes(damage)
    proc = sidecar(processes, tmp_path, loki).start()
    assert wait_until(lambda: loki.count() == 100)
    assert proc.healthy()
    assert proc.finish() == 0
    assert "Traceback" not in proc.stderr
    damaged = [line for line in proc.stderr.splitlines() if "is damaged" in line]
    aside = list(tmp_path.glob("positions.json.damaged-*"))
    assert len(damaged) == 1 and len(aside) == 1 and f"moved to {aside[0]}" in damaged[0]
    assert why in damaged[0]
    assert proc.positions()["files"][0]["offset"] > 0


def test_a_symlink_loop_under_double_star_stalls_nothing(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    """Two links to '.' under '**': the glob never finished, nothing was shipped from any
    file, and /healthz said 200 all along."""
    import os

    logs = tmp_path / "logs"
    (logs / "api").mkdir(parents=True)
    (logs / "app.log").write_text(json_lines("a", 0, 20))
    (logs / "api" / "api.log").write_text(json_lines("b", 0, 20))
    os.symlink(".", logs / "l1")
    os.symlink(".", logs / "l2")
    proc = sidecar(processes, tmp_path, loki, sources=[
        {"type": "file", "paths": [str(logs / "**" / "*.log")], "poll_interval": "20ms",
         "scan_interval": "100ms", "format": "json"}]).start()
    assert wait_until(lambda: loki.count() == 40)
    (logs / "api" / "api.log").open("a").write(json_lines("b", 20, 21))
    assert wait_until(lambda: loki.count() == 41)
    assert proc.healthy()
    assert proc.finish() == 0
    assert sorted(messages(loki)) == sorted([f"a{i}" for i in range(20)] +
                                            [f"b{i}" for i in range(21)])


def test_a_stalled_file_source_turns_healthz_503_naming_it_until_it_moves_again(
        tmp_path: Path) -> None:
    """A source whose loop stops coming round (a read that does not return: a hung
    filesystem) is a 503 on /healthz, not a 200; the sidecar does not stop for it, and
    /healthz is 200 again once the loop turns. A quiet file is not a stall."""
    import threading
    import urllib.error

    import yaml

    from shipper.sidecar.config import load_config
    from shipper.sidecar.runner import Sidecar
    from shipper.sidecar.sources.file import FileSource
    from tests.support.fakeloki import free_port

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("q", 0, 1))
    port = free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "loki": {"url": None}, "service": "shop", "spool_dir": str(tmp_path / "spool"),
        "positions_file": str(tmp_path / "pos.json"), "metrics_listen": f"127.0.0.1:{port}",
        "sources": [{"type": "file", "paths": [str(logs / "*.log")], "poll_interval": "20ms",
                     "format": "json"}]}))
    sidecar = Sidecar(load_config(str(config)))

    def healthz() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()

    sidecar.start()
    try:
        source = sidecar.sources[0]
        assert isinstance(source, FileSource)
        source.stalled_after = 0.5
        assert wait_until(lambda: source.lines_read == 1)
        time.sleep(1.0)  # quiet, longer than stalled_after
        assert healthz()[0] == 200
        release = threading.Event()
        real_poll = source._poll

        def hung(tail: object, now: float, draining: bool) -> bool:
            release.wait()
            return real_poll(tail, now, draining)  # type: ignore[arg-type]

        source._poll = hung  # type: ignore[method-assign]
        status, body = wait_until(lambda: (h := healthz())[0] == 503 and h, 10)
        assert status == 503
        assert body.startswith("file#0 is stalled: its loop has not come round for ")
        assert f"at {logs / 'app.log'}" in body
        assert sidecar.failures() == []  # it may come round again: no exit for it
        source._poll = real_poll  # type: ignore[method-assign]
        release.set()
        assert wait_until(lambda: healthz()[0] == 200, 10)
    finally:
        sidecar.shutdown(5)


@WORKERS
def test_healthz_metrics_and_sighup(tmp_path: Path, loki: FakeLoki,
                                    processes: list[SidecarProcess], workers: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text(json_lines("m", 0, 10) + "not json\n")
    proc = sidecar(processes, tmp_path, loki, workers=workers, sources=[
        {"type": "file", "paths": [str(logs / "*.log")], "poll_interval": "20ms",
         "scan_interval": "1h", "format": "json"}]).start()
    assert wait_until(lambda: loki.count() == 11)
    metrics = wait_until(lambda: (m := proc.metrics()).get(
        "shipper_sidecar_events_sent_total") == 11 and m)
    assert metrics['shipper_sidecar_lines_read_total{source="file#0"}'] == 11
    assert metrics['shipper_sidecar_lines_invalid_total{source="file#0"}'] == 1
    assert metrics[f'shipper_sidecar_file_lag_bytes{{path="{logs}/a.log"}}'] == 0
    assert metrics[f'shipper_sidecar_file_lag_seconds{{path="{logs}/a.log"}}'] == 0
    assert metrics["shipper_sidecar_spool_bytes"] == 0
    assert "shipper_sidecar_events_spooled_total" in metrics
    # SIGHUP: a file that appeared is found now, not at the next scan (an hour away)
    (logs / "b.log").write_text(json_lines("h", 0, 5))
    time.sleep(0.3)
    assert loki.count() == 11
    proc.send(signal.SIGHUP)
    assert wait_until(lambda: loki.count() == 16)
    assert proc.finish() == 0


def test_start_up_failures_exit_2_and_start_nothing(tmp_path: Path, loki: FakeLoki,
                                                    processes: list[SidecarProcess]) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    proc = sidecar(processes, tmp_path, loki,
                   positions_file=str(blocker / "positions.json")).start(wait=False)
    assert proc.wait() == 2
    assert "cannot start: positions_file:" in proc.stderr
    busy = sidecar(processes, tmp_path, loki).start()  # holds its metrics port
    clash = sidecar(processes, tmp_path, loki, metrics_listen=f"127.0.0.1:{busy.metrics_port}")
    assert clash.start(wait=False).wait() == 2
    assert "cannot listen on" in clash.stderr
    assert busy.finish() == 0


def test_http_source_in_a_running_sidecar_needs_its_token(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    from tests.support.fakeloki import free_port

    port = free_port()
    token = "t0ken-for-the-sidecar-test"
    proc = sidecar(processes, tmp_path, loki, sources=[
        {"type": "http", "listen": f"0.0.0.0:{port}", "token": token}]).start()

    def post(auth: str | None) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/events", method="POST",
            data=json.dumps({"message": "hi", "level": "ERROR"}).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": auth} if auth else {})})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert post(None) == 401
    assert post("Bearer wrong") == 401
    assert post(f"Bearer {token}") == 202
    assert wait_until(lambda: loki.count() == 1)
    assert proc.finish() == 0


def test_docker_source_in_a_running_sidecar_resumes_from_the_saved_timestamp(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    import shutil
    import tempfile

    from tests.support.fakedocker import FakeDocker

    directory = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))  # unix socket paths are short
    engine = FakeDocker(directory / "docker.sock")
    try:
        cid = engine.create("web-1", {"shipper.enable": "true",
                                      "com.docker.compose.service": "web"})
        engine.start(cid)
        engine.log(cid, '{"level":"warn","msg":"first"}', "second")
        sources = [{"type": "docker", "host": engine.url, "refresh_interval": "1m"}]
        first = sidecar(processes, tmp_path, loki, sources=sources).start()
        assert wait_until(lambda: loki.count() == 2)
        assert first.finish() == 0
        saved = first.positions()["containers"]
        assert saved == {cid: engine.containers[cid].logs[-1][0]}
        engine.log(cid, "third")  # while the sidecar is away
        second = sidecar(processes, tmp_path, loki, sources=sources).start()
        assert wait_until(lambda: loki.count() == 3)
        engine.restart(cid)
        engine.log(cid, "fourth")
        assert wait_until(lambda: loki.count() == 4)
        assert second.finish() == 0
        assert loki.pushed_values == 4  # nothing read twice
        assert sorted(messages(loki)) == ["first", "fourth", "second", "third"]
        assert {dict(s.labels)["service_name"] for s in loki.stored()} == {"web"}
    finally:
        engine.close()
        shutil.rmtree(directory, ignore_errors=True)


@WORKERS
def test_positions_never_run_ahead_of_what_loki_or_the_spool_took(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], workers: int) -> None:
    """No spool and Loki down: the lines are read and held in memory, retried, and their
    offsets are not saved; once Loki takes them, they are."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("p", 0, 200))
    loki.stop()
    proc = sidecar(processes, tmp_path, loki, workers=workers, loki_settings={
        "spool": False, "retry_budget": "60s"}).start()
    assert wait_until(lambda: proc.metrics().get(
        'shipper_sidecar_lines_read_total{source="file#0"}') == 200)
    time.sleep(1.0)  # five positions intervals
    positions = tmp_path / "positions.json"
    assert not positions.exists() or all(f["offset"] == 0 for f in proc.positions()["files"])
    loki.start()
    assert wait_until(lambda: loki.count() == 200, 30)
    assert wait_until(lambda: positions.exists() and proc.positions()["files"][0]["offset"]
                      == log.stat().st_size)
    assert proc.finish() == 0


@WORKERS
def test_sigterm_while_loki_pushes_back_drains_in_time_and_loses_nothing(
        tmp_path: Path, processes: list[SidecarProcess], workers: int) -> None:
    """Loki answers 429 to nearly everything: the queues stay full and the sidecar stops
    reading; SIGTERM still drains within drain_timeout (what Loki did not take goes to
    the spool), and the restart delivers every line, none cut in two: the deadline stops the
    reading mid-file, and the start of a line that the last read held is not a line."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("b", 0, 40_000))
    with FakeLoki(rate_bytes=30_000, burst_bytes=60_000) as slow:
        first = sidecar(processes, tmp_path, slow, drain_timeout="6s", workers=workers,
                        loki_settings={"batch_max_bytes": "16KiB"}).start()
        assert wait_until(lambda: slow.count() > 0, 30)
        assert wait_until(lambda: first.metrics().get(
            'shipper_sidecar_lines_read_total{source="file#0"}', 0) >= 10_000, 30)
        started = time.monotonic()
        assert first.finish(signal.SIGTERM, timeout=30) == 0, first.stderr
        assert time.monotonic() - started < 6 + 3
        assert "dropped 0" in first.stderr
        held = set(messages(slow))
    assert len(held) < 40_000  # the rest is in the spool or still in the file
    with FakeLoki(rate_limit=False) as loki:
        second = sidecar(processes, tmp_path, loki, workers=workers).start()
        assert wait_until(lambda: loki.count() >= 40_000 - len(held), 60), loki.count()
        assert second.finish(signal.SIGTERM) == 0
    # at least once: a request cut short by the deadline may have been stored as well
    assert held | set(messages(loki)) == {f"b{i}" for i in range(40_000)}


@WORKERS
def test_large_batches_never_leave_the_reader_and_the_worker_waiting_for_each_other(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], workers: int) -> None:
    """batch_max_bytes 4 MiB: a take of the worker is 10,000 events or 12 MiB of queue. The
    reader used to stop reading at about 5,000 events (its read-ahead took the smaller of two
    ratios for both bounds), short of a take: both waited for batch_max_wait, here a minute."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("L", 0, 30_000))
    # (no positions checkpoint either: its flush makes a take due, and would hide the wait)
    proc = sidecar(processes, tmp_path, loki, workers=workers, positions_interval="60s",
                   loki_settings={"batch_max_bytes": "4MiB", "batch_max_wait": "60s"}).start()
    assert wait_until(lambda: loki.count() >= 20_000, 30), loki.count()  # not a minute a take
    assert proc.finish(signal.SIGTERM) == 0
    assert loki.count() == 30_000

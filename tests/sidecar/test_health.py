"""The sidecar's heartbeats: its own, with how far behind each file is, and one per worker
process (``workers: N``) with the worker's pid."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from shipper.sidecar.config import load_config
from shipper.sidecar.runner import HEALTH_FILES, Sidecar
from shipper.sidecar.sources.file import FileSource
from tests.support.fakeloki import FakeLoki
from tests.support.sidecar_process import SidecarProcess, json_lines, wait_until


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        yield fake


def FileStatus(path: str, lag_bytes: int, lag_seconds: float) -> Any:
    """What FileSource.status() lists, as far as the heartbeat reads it (path, lag_bytes)."""
    return SimpleNamespace(path=path, lag_bytes=lag_bytes)


def _beats(loki: FakeLoki) -> list[dict[str, Any]]:
    return [json.loads(s.line)["metadata"] for s in sorted(loki.stored(), key=lambda s: s.ts)
            if dict(s.labels).get("type") == "SHIPPER_HEALTH"]


def _sidecar(tmp_path: Path, loki: FakeLoki) -> Sidecar:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("a", 0, 5))
    (logs / "db.log").write_text(json_lines("d", 0, 3))
    config = tmp_path / "sidecar.yaml"
    config.write_text(yaml.safe_dump({
        "loki": {"url": loki.url, "health_interval": "1s", "batch_max_wait": "50ms"},
        "service": "logs", "spool_dir": str(tmp_path / "spool"),
        "positions_file": str(tmp_path / "pos.json"), "metrics_listen": None,
        "sources": [{"type": "file", "paths": [str(logs / "*.log")], "poll_interval": "20ms",
                     "format": "json"}]}))
    return Sidecar(load_config(str(config)))


def test_sidecar_heartbeats_say_how_far_behind_each_file_is(
        tmp_path: Path, loki: FakeLoki) -> None:
    sidecar = _sidecar(tmp_path, loki)
    sidecar.start()
    try:
        assert wait_until(lambda: len(_beats(loki)) >= 2, 20)
        source = sidecar.sources[0]
        assert isinstance(source, FileSource)
        # a file far behind, as the source reports it (the health only reads path, lag_bytes)
        source.status = lambda: [FileStatus(str(tmp_path / "logs" / "app.log"), 0, 0.0),  # type: ignore[method-assign]
                                 FileStatus("/var/log/big.log", 50 << 20, 12.0),
                                 FileStatus("/var/log/some.log", 1000, 1.0)]
        assert wait_until(lambda: any(b.get("lag_max_bytes") for b in _beats(loki)), 20)
    finally:
        sidecar.shutdown(5)
    first, lagging = _beats(loki)[0], next(b for b in _beats(loki) if b.get("lag_max_bytes"))
    assert first["role"] == "sidecar" and first["lag_bytes"] == 0 and first["lag_files"] == 0
    assert sorted(f["path"] for f in first["files"]) == sorted(
        str(tmp_path / "logs" / name) for name in ("app.log", "db.log"))
    assert (lagging["lag_max_path"], lagging["lag_max_bytes"]) == ("/var/log/big.log", 50 << 20)
    assert lagging["lag_bytes"] == (50 << 20) + 1000 and lagging["lag_files"] == 2
    assert [f["path"] for f in lagging["files"]][:2] == ["/var/log/big.log", "/var/log/some.log"]


def test_a_heartbeat_lists_the_files_furthest_behind_and_counts_them_all(
        tmp_path: Path, loki: FakeLoki) -> None:
    sidecar = _sidecar(tmp_path, loki)
    sidecar.start()
    try:
        source = sidecar.sources[0]
        assert isinstance(source, FileSource)
        many = [FileStatus(f"/var/log/f{i:05d}.log", i, 0.0) for i in range(10_000)]
        source.status = lambda: many  # type: ignore[method-assign]
        details = sidecar.health_details()
    finally:
        sidecar.shutdown(5)
    assert len(details["files"]) == HEALTH_FILES
    assert details["files"][0] == {"path": "/var/log/f09999.log", "lag_bytes": 9999}
    assert details["lag_files"] == 9999 and details["lag_bytes"] == sum(range(10_000))
    assert len(json.dumps(details)) < 4096  # one heartbeat line stays small


def test_each_worker_process_heartbeats_with_its_pid(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("w", 0, 200))
    proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(logs / "*.log")],
                                      "poll_interval": "20ms", "format": "json"}],
                          loki_url=loki.url, workers=2,
                          loki_settings={"health_interval": "1s"})
    processes.append(proc)
    proc.start()
    workers = {p.pid for p in proc.workers()}
    assert len(workers) == 2
    assert wait_until(lambda: {b["pid"] for b in _beats(loki)
                               if b.get("role") == "sidecar-worker"} == workers, 30)
    assert proc.finish(signal.SIGTERM) == 0
    beats = _beats(loki)
    assert {b["worker"] for b in beats if b.get("role") == "sidecar-worker"} == {0, 1}
    assert any(b.get("role") == "sidecar" and b.get("final") for b in beats)
    assert sum(b["accepted"] for b in beats if b.get("role") == "sidecar-worker") == 200

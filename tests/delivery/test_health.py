"""Heartbeats: every pipeline ships a SHIPPER_HEALTH event every ``health_interval`` with what it
did since the last one, a last one when it closes, through its own pipeline (to the spool while
Loki is away), and a forked child heartbeats with its own pid."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from shipper._version import __version__
from shipper.config import ConfigError, ShipperConfig
from shipper.delivery.health import COUNTERS, Heartbeat, counters
from shipper.delivery.pipeline import Pipeline
from shipper.event import LogEvent
from tests.support.fakeloki import FakeLoki, free_port

HEALTH = "SHIPPER_HEALTH"


def _event(service: str, message: str) -> LogEvent:
    return LogEvent.create(service=service, level="INFO", message=message,
                           timestamp_ns=time.time_ns())


def _beats(loki: FakeLoki) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """The heartbeats Loki stored, oldest first: (stream labels, the line's metadata)."""
    out = []
    for stored in sorted(loki.stored(), key=lambda s: s.ts):
        labels = dict(stored.labels)
        if labels.get("type") == HEALTH:
            out.append((labels, json.loads(stored.line)["metadata"]))
    return out


def _wait(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _config(url: str | None, tmp_path: Path, **settings: Any) -> ShipperConfig:
    return ShipperConfig(url=url, service="hb-svc", env="test", spool_dir=str(tmp_path / "spool"),
                         batch_max_wait=0.05, retry_budget=0.5, timeout=1.0,
                         **{"health_interval": 1.0, **settings})


# ------------------------------------------------------------------------------ the setting


def test_health_interval_is_60s_by_default_and_read_from_its_environment_variable() -> None:
    import dataclasses

    field = next(f for f in dataclasses.fields(ShipperConfig) if f.name == "health_interval")
    assert field.default == 60.0
    assert ShipperConfig.load(environ={"SHIPPER_HEALTH_INTERVAL": "2m"}).health_interval == 120
    assert ShipperConfig.load(environ={"SHIPPER_HEALTH_INTERVAL": "0"}).health_interval == 0


@pytest.mark.parametrize("bad", ["-1", "0.5", "1ms", "nan", "inf", "sixty", "1e400"])
def test_a_bad_health_interval_is_refused_naming_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="health_interval"):
        ShipperConfig.load(environ={"SHIPPER_HEALTH_INTERVAL": bad})


def test_health_interval_zero_ships_no_heartbeat_not_even_at_close(tmp_path: Path) -> None:
    with FakeLoki() as loki:
        pipeline = Pipeline(_config(loki.url, tmp_path, health_interval=0))
        pipeline.submit(_event("hb-svc", "one"))
        assert pipeline.flush(10)
        pipeline.close()
        assert pipeline.heartbeat is None
        assert [json.loads(line)["message"] for line in loki.lines()] == ["one"]


# ------------------------------------------------------------------------------ the event


def test_heartbeat_metadata_is_flat_and_counts_each_reason_apart() -> None:
    beat = Heartbeat(60, service="svc", env=None, now=0.0)
    totals = counters({"accepted": 10, "sent": 7, "retried": 2, "spooled": 1},
                      {"queue_full": 3, "spool full/unwritable!": 1}, {"too_old": 2})
    event = beat.event(totals, {"queued": 4, "spool_bytes": 512, "spool_oldest_age_s": 9.5,
                                "offline": True}, now=0.0)
    meta = event.metadata
    assert {k: meta[k] for k in COUNTERS} == {"accepted": 10, "sent": 7, "retried": 2,
                                              "spooled": 1, "replayed": 0, "refused": 2,
                                              "dropped": 4}
    assert meta["dropped_queue_full"] == 3 and meta["dropped_spool_full_unwritable"] == 1
    assert meta["refused_too_old"] == 2
    assert (meta["queued"], meta["spool_bytes"], meta["spool_oldest_age_s"], meta["offline"]) == (
        4, 512, 9.5, True)
    assert meta["host"] == socket.gethostname() and meta["pid"] == os.getpid()
    assert meta["version"] == __version__ and "final" not in meta
    # flat: numbers, booleans and short texts, so `| json | unwrap metadata_<key>` reads each
    assert all(isinstance(v, (int, float, bool, str)) for v in meta.values())
    assert (event.level.name, event.actor.name, event.type) == ("WARNING", "SYSTEM", HEALTH)


def test_heartbeat_counts_since_the_last_one_and_leaves_out_the_heartbeats() -> None:
    beat = Heartbeat(60, service="svc", env=None, now=0.0)
    beat.event(counters({"accepted": 5, "sent": 5}, {}, {}), {}, now=0.0)
    # a quiet minute: the only event accepted and sent was the last heartbeat itself
    quiet = beat.event(counters({"accepted": 6, "sent": 6, "heartbeats": 1}, {}, {}), {},
                       now=60.0).metadata
    assert quiet["accepted"] == 0 and quiet["dropped"] == 0 and quiet["refused"] == 0
    later = beat.event(counters({"accepted": 107, "sent": 6, "heartbeats": 2}, {"x": 1}, {}),
                       {}, now=120.0)
    assert later.metadata["accepted"] == 100 and later.metadata["dropped_x"] == 1
    assert later.level.name == "WARNING"
    assert beat.wait(120.0) == 60.0


def test_details_that_fail_still_leave_the_heartbeat_saying_why() -> None:
    beat = Heartbeat(60, service="svc", env=None, now=0.0)

    def broken() -> dict[str, Any]:
        raise OSError("stat failed")

    beat.details = broken
    meta = beat.event(counters({"accepted": 1}, {}, {}), {}, now=0.0).metadata
    assert meta["accepted"] == 1 and meta["details_error"] == "OSError: stat failed"


def test_extra_details_never_overwrite_the_counters() -> None:
    beat = Heartbeat(60, service="svc", env=None, now=0.0)
    beat.details = lambda: {"accepted": 10**9, "lag_bytes": 7}
    meta = beat.event(counters({"accepted": 1}, {}, {}), {}, now=0.0).metadata
    assert meta["accepted"] == 1 and meta["lag_bytes"] == 7


# ------------------------------------------------------------------------------ the pipeline


def test_a_quiet_pipeline_heartbeats_every_interval_with_nothing_accepted(tmp_path: Path) -> None:
    with FakeLoki() as loki:
        pipeline = Pipeline(_config(loki.url, tmp_path))
        try:
            assert _wait(lambda: len(_beats(loki)) >= 3)
        finally:
            pipeline.close()
        beats = _beats(loki)
        labels = beats[0][0]
        assert labels == {"service_name": "hb-svc", "env": "test", "level": "INFO",
                          "actor": "SYSTEM", "type": HEALTH}
        assert all(m["accepted"] == 0 for _, m in beats)
        assert beats[-1][1].get("final") is True
        assert sum(1 for _, m in beats if m.get("final")) == 1


def test_heartbeat_says_what_the_app_logged_and_the_last_one_comes_at_close(
        tmp_path: Path) -> None:
    with FakeLoki() as loki:
        pipeline = Pipeline(_config(loki.url, tmp_path, health_interval=3600))
        for i in range(25):
            pipeline.submit(_event("hb-svc", f"order {i}"))
        assert pipeline.flush(10)
        pipeline.close()
        (labels, meta), = _beats(loki)
        assert meta["final"] is True and meta["accepted"] == 25 and meta["sent"] == 25
        assert meta["dropped"] == 0 and labels["level"] == "INFO"
        assert pipeline.stats()["heartbeats"] == 1


def test_drops_make_the_next_heartbeat_a_warning_with_the_reason(tmp_path: Path) -> None:
    with FakeLoki() as loki:
        config = _config(loki.url, tmp_path, health_interval=3600, spool=False,
                         queue_max_events=1)
        pipeline = Pipeline(config)
        for i in range(200):  # far faster than one-at-a-time can take them: some are dropped
            pipeline.submit(_event("hb-svc", f"burst {i}"))
        pipeline.flush(10)
        dropped = pipeline.stats()["dropped"].get("queue_full", 0)
        pipeline.close()
        assert dropped > 0
        (labels, meta), = _beats(loki)
        assert labels["level"] == "WARNING"
        assert meta["dropped"] == meta["dropped_queue_full"] == dropped


def test_refused_entries_make_the_heartbeat_a_warning(tmp_path: Path) -> None:
    with FakeLoki() as loki:
        pipeline = Pipeline(_config(loki.url, tmp_path, health_interval=3600))
        loki.script.answers.append((400, "entry for stream '{service_name=\"hb-svc\"}' has "
                                    "timestamp too old: 2020-01-01T00:00:00Z", {}))
        pipeline.submit(_event("hb-svc", "refused"))
        pipeline.flush(10)
        pipeline.close()
        (labels, meta), = _beats(loki)
        assert labels["level"] == "WARNING"
        assert meta["refused"] == 1 and meta["refused_too_old"] == 1


def test_while_loki_is_away_heartbeats_wait_in_the_spool_and_arrive_afterwards(
        tmp_path: Path) -> None:
    port = free_port()
    pipeline = Pipeline(_config(f"http://127.0.0.1:{port}", tmp_path))
    try:
        for i in range(3):
            pipeline.submit(_event("hb-svc", f"while away {i}"))
        assert _wait(lambda: pipeline.stats()["heartbeats"] >= 3
                     and pipeline.stats()["spooled"] >= 4)
        with FakeLoki(port=port) as loki:
            assert _wait(lambda: any(m["spooled"] > 0 for _, m in _beats(loki)), 30)
            assert _wait(lambda: any(m.get("offline") for _, m in _beats(loki)), 30)
            assert _wait(lambda: any(m["replayed"] > 0 for _, m in _beats(loki)), 30)
            pipeline.close()
            beats = _beats(loki)
    finally:
        pipeline.close()
    away = [m for _, m in beats if m.get("offline")]
    assert away and any(m["spool_bytes"] > 0 and m["spool_oldest_age_s"] >= 0 for m in away)
    assert sum(m["accepted"] for _, m in beats) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_heartbeats_with_its_own_pid_and_counts(tmp_path: Path) -> None:
    with FakeLoki() as loki:
        pipeline = Pipeline(_config(loki.url, tmp_path, health_interval=3600))
        for i in range(5):
            pipeline.submit(_event("hb-svc", f"parent {i}"))
        assert pipeline.flush(10)
        pid = os.fork()
        if pid == 0:  # the child: two events of its own, then its last heartbeat
            code = 1
            try:
                for i in range(2):
                    pipeline.submit(_event("hb-svc", f"child {i}"))
                pipeline.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        pipeline.close()
        by_pid = {m["pid"]: m for _, m in _beats(loki)}
        assert set(by_pid) == {os.getpid(), pid}
        assert by_pid[pid]["accepted"] == 2
        assert by_pid[os.getpid()]["accepted"] == 5

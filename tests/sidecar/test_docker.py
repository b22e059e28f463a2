"""The docker source against a fake Docker Engine API on a unix socket (tests/support/fakedocker.py)
that serves the multiplexed log stream and the event stream."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.event import Level
from shipper.sidecar.config import DockerSourceConfig
from shipper.sidecar.formats import LineParser
from shipper.sidecar.sources.docker import DockerSource
from tests.sidecar.test_file import Sink, wait_until
from tests.support.fakedocker import FakeDocker

LABELS = {"shipper.enable": "true"}


@pytest.fixture
def engine() -> Iterator[FakeDocker]:
    directory = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))  # unix socket paths are short
    fake = FakeDocker(directory / "docker.sock")
    yield fake
    fake.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sources() -> Iterator[list[DockerSource]]:
    running: list[DockerSource] = []
    yield running
    for source in running:
        source.stop(time.monotonic() + 2)


def follow(engine: FakeDocker, sources: list[DockerSource], sink: Sink,
           saved: dict[str, int] | None = None) -> DockerSource:
    # a long refresh: starts, restarts and exits must be seen through the event stream
    config = DockerSourceConfig(host=engine.url, labels=LABELS, refresh_interval=60)
    source = DockerSource(config, parser=LineParser(format="auto", service="default"),
                          submit=sink, saved=saved)
    sources.append(source)
    source.start()
    return source


def test_labelled_containers_are_followed_with_their_service_and_format(
        engine: FakeDocker, sources: list[DockerSource]) -> None:
    web = engine.create("shop-web-1", {**LABELS, "com.docker.compose.service": "web"})
    api = engine.create("api", {**LABELS, "shipper.service": "orders"})
    plain = engine.create("plain", LABELS)
    other = engine.create("unlabelled")
    for cid in (web, api, plain, other):
        engine.start(cid)
    engine.log(web, '{"level":"error","msg":"db down","time":1795166102000}')
    engine.log(api, "2026-11-20 09:15:02 WARN slow query", stream=2)
    engine.log(plain, "hello")
    engine.log(other, "never shipped")
    sink = Sink()
    follow(engine, sources, sink)
    events = wait_until(lambda: sink.events if len(sink.events) >= 3 else None)
    time.sleep(0.2)
    by_service = {e.service: e for e in sink.events}
    assert sorted(by_service) == ["orders", "plain", "web"]
    assert (by_service["web"].level, by_service["web"].message) == (Level.ERROR, "db down")
    assert by_service["web"].timestamp_ns == 1_795_166_102_000_000_000  # the line's own time
    assert by_service["orders"].level == Level.WARNING
    docker_ts = engine.containers[plain].logs[0][0]
    assert by_service["plain"].timestamp_ns == docker_ts  # no time in the line: Docker's
    assert len(events) == 3


def test_restart_and_stop_start_are_followed_without_rereading(
        engine: FakeDocker, sources: list[DockerSource]) -> None:
    cid = engine.create("app", LABELS)
    engine.start(cid)
    engine.log(cid, "one", "two")
    sink = Sink()
    follow(engine, sources, sink)
    wait_until(lambda: len(sink.events) == 2)
    engine.restart(cid)
    engine.log(cid, "three")
    wait_until(lambda: len(sink.events) == 3)
    engine.stop(cid)
    time.sleep(0.3)
    engine.start(cid)
    engine.log(cid, "four")
    wait_until(lambda: len(sink.events) == 4)
    time.sleep(0.3)
    assert sink.messages() == ["one", "two", "three", "four"]


def test_a_container_that_exits_within_a_second_is_collected(
        engine: FakeDocker, sources: list[DockerSource]) -> None:
    sink = Sink()
    source = follow(engine, sources, sink)
    wait_until(lambda: source.client is not None)
    cid = engine.create("job", LABELS)  # the event stream may not be open yet
    engine.start(cid)
    engine.log(cid, '{"msg":"migrated 12 rows","level":"info"}', "done")
    engine.stop(cid)
    assert wait_until(lambda: sink.messages() == ["migrated 12 rows", "done"], 10)


def test_a_restart_of_the_sidecar_resumes_after_the_saved_timestamp(
        engine: FakeDocker, sources: list[DockerSource]) -> None:
    cid = engine.create("app", LABELS)
    engine.start(cid)
    engine.log(cid, *[f"line {i}" for i in range(5)])
    sink = Sink()
    first = follow(engine, sources, sink)
    wait_until(lambda: len(sink.events) == 5)
    first.stop(time.monotonic() + 2)
    saved = first.snapshot()
    assert saved == {cid: engine.containers[cid].logs[-1][0]}
    json.dumps(saved)  # what the positions file holds
    engine.log(cid, "line 5", "line 6")
    second_sink = Sink()
    follow(engine, sources, second_sink, saved=saved)
    wait_until(lambda: len(second_sink.events) == 2)
    time.sleep(0.3)
    assert second_sink.messages() == ["line 5", "line 6"]
    since = float(engine.log_requests[-1]["since"][0])
    # asked the Engine from just before the saved line (µs and float precision), never after
    assert saved[cid] - 3_000 < since * 1e9 < saved[cid]


def test_an_unreachable_engine_is_reported_and_retried(tmp_path: Path,
                                                       sources: list[DockerSource]) -> None:
    reports: list[str] = []
    config = DockerSourceConfig(host=f"unix://{tmp_path}/none.sock", labels=LABELS)
    source = DockerSource(config, parser=LineParser(service="s"), submit=Sink(),
                          report=reports.append)
    sources.append(source)
    source.start()
    assert wait_until(lambda: reports, 10)
    assert "trying again in 1s" in reports[0]
    assert source.alive


def test_the_docker_source_is_ready_once_it_has_read_the_container_list(
        engine: FakeDocker, tmp_path: Path, sources: list[DockerSource]) -> None:
    down = DockerSource(DockerSourceConfig(host=f"unix://{tmp_path}/none.sock", labels=LABELS),
                        parser=LineParser(service="s"), submit=Sink(), name="containers")
    assert down.not_ready() == "containers is not running"
    sources.append(down)
    down.start()
    reason = wait_until(lambda: (r := down.not_ready()) and "Error" in r and r, 10)
    assert reason.startswith(f"containers cannot list the containers at unix://{tmp_path}/"
                             "none.sock: ")
    up = follow(engine, sources, Sink())
    assert wait_until(lambda: up.not_ready() is None, 10)

"""Nothing is lost on deploy: real servers as subprocesses, stopped with the signals a deploy
sends, counted exactly in the fake Loki.

Every server here batches with ``batch_max_wait=30s``: nothing leaves by the timer while the
test runs, so every event counted got to Loki by the shutdown path under test (the ASGI
lifespan, gunicorn's hooks, the exit hook, or the SIGTERM hook).
"""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.delivery.spool import spool_status
from tests.support.fakeloki import FakeLoki, free_port
from tests.support.servers._run import (
    BIN,
    burst_then_stop,
    events,
    get,
    running,
    server_env,
    trace_ids,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90),
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def _service() -> str:
    return f"deploy-{uuid.uuid4().hex[:8]}"


def _assert_nothing_left(tmp_path: Path) -> None:
    assert (spool_status(tmp_path / "spool").records or 0) == 0


def _traffic_until_stopped(port: int, clients: int, stop: threading.Event,
                           done: list[str], tried: list[str]) -> list[threading.Thread]:
    """``clients`` threads, each on one kept-alive connection, sending requests until
    ``stop`` is set or the server goes away; ids of answered requests go to ``done``."""
    counter = itertools.count()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while not stop.is_set():
                rid = f"req-{next(counter)}"
                tried.append(rid)
                try:
                    done.append(get(conn, f"/work/{rid}", rid))
                except (OSError, http.client.HTTPException):
                    return  # the server is shutting down: this connection is closed
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def test_uvicorn_sigterm_in_first_second_of_traffic_delivers_every_event(
        fake: FakeLoki, tmp_path: Path) -> None:
    service, port = _service(), free_port()
    argv = [str(BIN / "uvicorn"), "tests.support.servers.asgi_app:app", "--port", str(port),
            "--no-access-log"]
    env = server_env(fake.url, service, tmp_path)
    with running(argv, env, tmp_path / "uvicorn.log") as server:
        server.wait_http(port)
        stop = threading.Event()
        done: list[str] = []
        tried: list[str] = []
        threads = _traffic_until_stopped(port, 4, stop, done, tried)
        time.sleep(0.5)  # half a second of traffic, then the deploy's SIGTERM
        code = server.stop(signal.SIGTERM)
        stop.set()
        for t in threads:
            t.join(10)
        output = server.output()
    assert code == -signal.SIGTERM, output  # uvicorn still dies by the signal, as before
    assert len(done) >= 10, output  # the signal really came in the middle of traffic
    work = trace_ids(events(fake, service, "WORK"))
    access = [t for t in trace_ids(events(fake, service, "HTTP_REQUEST")) if t != "health"]
    # every answered request is in Loki with both events; nothing arrived twice
    assert set(done) <= set(work), sorted(set(done) - set(work))[:5]
    assert sorted(work) == sorted(access)
    assert len(work) == len(set(work))
    assert set(work) <= set(tried)
    _assert_nothing_left(tmp_path)


def test_uvicorn_app_without_shipper_middleware_is_saved_by_the_sigterm_hook(
        fake: FakeLoki, tmp_path: Path) -> None:
    service, port = _service(), free_port()
    argv = [str(BIN / "uvicorn"), "tests.support.servers.asgi_app:bare", "--port", str(port),
            "--no-access-log", "--lifespan", "off"]
    ids, code, output = burst_then_stop(argv, server_env(fake.url, service, tmp_path),
                                        tmp_path / "uvicorn.log", port, 50)
    assert code == -signal.SIGTERM, output
    assert len(ids) == 50
    messages = [json.loads(s.line)["message"] for s in events(fake, service, "WORK")]
    assert sorted(messages) == sorted(f"work {i}" for i in range(50)), output
    _assert_nothing_left(tmp_path)


def test_django_asgi_without_lifespan_support_gets_its_shutdown_from_the_middleware(
        fake: FakeLoki, tmp_path: Path) -> None:
    service, port = _service(), free_port()
    argv = [str(BIN / "uvicorn"), "tests.support.servers.django_asgi:application",
            "--port", str(port), "--no-access-log", "--lifespan", "on"]
    # the SIGTERM hook is off: only the lifespan shutdown can deliver the queue here
    env = server_env(fake.url, service, tmp_path, SHIPPER_HANDLE_SIGTERM="0")
    ids, code, output = burst_then_stop(argv, env, tmp_path / "uvicorn.log", port, 40,
                                        path="/async-items/{i}", ready="/async-items/0")
    assert code == -signal.SIGTERM, output
    assert "Application startup complete" in output
    assert "shipper answers the lifespan messages itself" in output
    assert sorted(_requests_logged(fake, service)) == sorted(ids), output
    _assert_nothing_left(tmp_path)


def _requests_logged(fake: FakeLoki, service: str) -> list[str]:
    """Trace ids of the access events, less the readiness checks'."""
    return [t for t in trace_ids(events(fake, service, "HTTP_REQUEST")) if t != "health"]


def _gunicorn(port: int, *options: str) -> list[str]:
    return [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--timeout", "30",
            "--graceful-timeout", "20", "-c", "tests/support/servers/gunicorn_conf.py", *options]


def _requests(port: int, n: int, prefix: str) -> list[str]:
    """``n`` requests, one connection each (sync workers close every connection anyway)."""
    ids = []
    for i in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        ids.append(get(conn, f"/work/{i}", f"{prefix}-{i}"))
        conn.close()
    return ids


def _assert_delivered(fake: FakeLoki, service: str, ids: list[str], output: str,
                      tmp_path: Path) -> None:
    """Each request's WORK and access events arrived, once, and nothing waits in the spool."""
    assert sorted(trace_ids(events(fake, service, "WORK"))) == sorted(ids), output
    assert sorted(_requests_logged(fake, service)) == sorted(ids)
    _assert_nothing_left(tmp_path)


@pytest.mark.parametrize("options", [
    pytest.param(["--preload", "-w", "2", "tests.support.servers.wsgi_app:app"], id="sync-preload"),
    pytest.param(["-w", "2", "-k", "uvicorn_worker.UvicornWorker",
                  "tests.support.servers.asgi_app:app"], id="uvicorn-workers"),
])
def test_gunicorn_delivers_every_event_on_sigterm(
        fake: FakeLoki, tmp_path: Path, options: list[str]) -> None:
    service, port = _service(), free_port()
    ids, code, output = burst_then_stop(_gunicorn(port, *options),
                                        server_env(fake.url, service, tmp_path),
                                        tmp_path / "gunicorn.log", port, 60, keep_alive=False)
    assert code == 0, output
    _assert_delivered(fake, service, ids, output, tmp_path)


def test_gunicorn_max_requests_recycling_delivers_each_workers_events_as_it_exits(
        fake: FakeLoki, tmp_path: Path) -> None:
    service, port = _service(), free_port()
    argv = _gunicorn(port, "-w", "1", "--max-requests", "10", "--max-requests-jitter", "0",
                     "tests.support.servers.wsgi_app:app")
    env = server_env(fake.url, service, tmp_path)
    with running(argv, env, tmp_path / "gunicorn.log") as server:
        server.wait_http(port)  # the health check is the first worker's first request
        ids = _requests(port, 24, "recycled")
        # requests 1-9 and 10-19 were served by two workers that have been recycled since:
        # their 19 requests' events arrive while the server keeps running
        deadline = time.monotonic() + 20
        while len(events(fake, service, "WORK")) < 19 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(trace_ids(events(fake, service, "WORK"))) == sorted(ids[:19]), \
            server.output()
        code = server.stop(signal.SIGTERM)
        output = server.output()
    assert code == 0, output
    _assert_delivered(fake, service, ids, output, tmp_path)


def _heartbeats(loki: FakeLoki, service: str) -> list[dict[str, object]]:
    out = []
    for stored in loki.stored():
        labels = dict(stored.labels)
        if labels.get("service_name") == service and labels.get("type") == "SHIPPER_HEALTH":
            out.append(json.loads(stored.line)["metadata"])
    return out


def test_gunicorn_workers_each_heartbeat_with_their_own_pid_and_a_last_one_on_sigterm(
        fake: FakeLoki, tmp_path: Path) -> None:
    service, port = _service(), free_port()
    argv = _gunicorn(port, "--preload", "-w", "2", "tests.support.servers.wsgi_app:app")
    env = server_env(fake.url, service, tmp_path, SHIPPER_HEALTH_INTERVAL="1",
                     SHIPPER_BATCH_MAX_WAIT="0.2")
    with running(argv, env, tmp_path / "gunicorn.log") as server:
        server.wait_http(port)
        master = server.pid
        ids = _requests(port, 6, "beat")

        def worker_pids() -> set[object]:
            return {m["pid"] for m in _heartbeats(fake, service)} - {master}

        deadline = time.monotonic() + 30
        while len(worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(worker_pids()) == 2, (_heartbeats(fake, service), server.output())
        code = server.stop(signal.SIGTERM)
        output = server.output()
    assert code == 0, output
    beats = _heartbeats(fake, service)
    workers = {m["pid"] for m in beats} - {master}
    assert len(workers) == 2
    # each worker said goodbye, and the workers together accepted every request's events
    assert {m["pid"] for m in beats if m.get("final")} >= workers
    assert sum(int(str(m["accepted"])) for m in beats if m["pid"] in workers) >= len(ids)
    assert all(m["host"] and m["version"] for m in beats)

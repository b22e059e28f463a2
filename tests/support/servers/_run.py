"""Start a server as a subprocess in its own process group, wait until it answers, stop it with
a signal, and never leave it behind."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.fakeloki import FakeLoki, Stored

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def server_env(loki_url: str, service: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a server under test: the fake Loki, a spool and cache of its own, and
    batches that wait 30 s, so what arrives before the process ends got there by the shutdown
    path, not by the timer; no heartbeats unless ``extra`` sets ``SHIPPER_HEALTH_INTERVAL``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "SHIPPER_"))}
    env.update(
        LOKI_URL=loki_url,
        SHIPPER_SERVICE=service,
        SHIPPER_SPOOL_DIR=str(tmp / "spool"),
        SHIPPER_BATCH_MAX_WAIT="30",
        SHIPPER_SHUTDOWN_TIMEOUT="10",
        SHIPPER_HEALTH_INTERVAL="0",
        XDG_CACHE_HOME=str(tmp / "cache"),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Server:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_http(self, port: int, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", path, headers={"X-Request-ID": "health"})
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not answering on {port} after {timeout} s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` to the server's main process and wait for it to end."""
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {timeout} s after {sig}:\n{self.output()}") from None

    def kill(self) -> None:
        """Teardown: the whole process group, whatever state it is in."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._out.close()


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Server]:
    server = Server(argv, env, log)
    try:
        yield server
    finally:
        server.kill()


def get(conn: http.client.HTTPConnection, path: str, request_id: str) -> str:
    """GET on a kept-alive connection; the response's X-Request-ID."""
    conn.request("GET", path, headers={"X-Request-ID": request_id})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, (path, response.status)
    return response.getheader("X-Request-ID") or ""


def events(fake: FakeLoki, service: str, kind: str) -> list[Stored]:
    return [s for s in fake.stored()
            if dict(s.labels).get("service_name") == service and dict(s.labels).get("type") == kind]


def trace_ids(stored: list[Stored]) -> list[str]:
    return [dict(s.metadata).get("trace_id", "") for s in stored]


def metadata_of(stored: Stored) -> dict[str, Any]:
    import json

    line = json.loads(stored.line)
    return dict(line.get("metadata") or {})


def burst_then_stop(argv: list[str], env: dict[str, str], log: Path, port: int, n: int, *,
                    path: str = "/work/{i}", ready: str = "/health", keep_alive: bool = True,
                    sig: int = signal.SIGTERM) -> tuple[list[str], int, str]:
    """Start a server, send it ``n`` requests (ids ``r-0``...), stop it with ``sig``; the ids
    the responses carried, the exit status and the server's output."""
    with running(argv, env, log) as server:
        server.wait_http(port, ready)
        ids = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(n):
            if not keep_alive:  # sync workers close every connection anyway
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            ids.append(get(conn, path.format(i=i), f"r-{i}"))
        conn.close()
        code = server.stop(sig)
        return ids, code, server.output()

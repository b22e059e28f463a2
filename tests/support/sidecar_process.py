"""Running ``python -m shipper sidecar`` as a real process in tests: config, start, wait for
readiness, signals, and the JSON lines the tests write."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.support.fakeloki import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def json_lines(prefix: str, start: int, stop: int, base_ms: int | None = None) -> str:
    """Lines that carry their own time (so a line read twice is an exact duplicate)."""
    base = base_ms if base_ms is not None else time.time_ns() // 1_000_000 - 600_000
    return "".join(
        json.dumps({"level": 30, "time": base + i, "msg": f"{prefix}{i}"}) + "\n"
        for i in range(start, stop))




class SidecarProcess:
    """One ``shipper sidecar`` process with its own config, spool and positions file."""

    def __init__(self, work: Path, sources: list[dict[str, Any]], *, loki_url: str | None,
                 **settings: Any) -> None:
        self.work = work
        self.metrics_port = free_port()
        self.config: dict[str, Any] = {
            "loki": {"url": loki_url, "backoff_min": "50ms", "backoff_max": "500ms",
                     "batch_max_wait": "100ms", "health_interval": 0},
            "service": "sidecar-test",
            "spool_dir": str(work / "spool"),
            "positions_file": str(work / "positions.json"),
            "positions_interval": "200ms",
            "drain_timeout": "10s",
            "metrics_listen": f"127.0.0.1:{self.metrics_port}",
            "sources": sources,
        }
        loki_settings = settings.pop("loki_settings", None)
        if loki_settings:
            self.config["loki"].update(loki_settings)
        self.config.update(settings)
        self.path = work / "sidecar.yaml"
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""
        #: what runs ``shipper``: ``python -m shipper``, or a script that wraps the same main
        self.command: list[str] = [sys.executable, "-m", "shipper"]

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> SidecarProcess:
        """Start it (``env``: variables it gets on top of this process's, whose ``LOKI_*``
        and ``SHIPPER_*`` it never sees)."""
        self.path.write_text(yaml.safe_dump(self.config))
        env = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("LOKI_", "SHIPPER_"))}, **(env or {})}
        self.proc = subprocess.Popen(
            [*self.command, "sidecar", "--config", str(self.path)],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        if wait:
            assert wait_until(self.healthy, 30), f"not healthy: {self.finish()}"
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, str]:
        """``GET path`` on metrics_listen: the status and the body (0 and the error when it
        does not answer)."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as resp:
            return str(resp.read().decode())

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def finish(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``signum`` (if still running), wait, keep stderr; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr += err or ""
        return int(self.proc.returncode)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself; the exit code."""
        assert self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.finish(signal.SIGKILL)

    def workers(self) -> list[psutil.Process]:
        """Its worker processes (``workers: N``)."""
        assert self.proc is not None
        try:
            return [c for c in psutil.Process(self.proc.pid).children()
                    if "resource_tracker" not in " ".join(c.cmdline())]
        except psutil.Error:
            return []

    def kill(self) -> None:
        """SIGKILL it and its worker processes, if still running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.workers()
        self.finish(signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()

    def positions(self) -> dict[str, Any]:
        return dict(json.loads((self.work / "positions.json").read_text()))

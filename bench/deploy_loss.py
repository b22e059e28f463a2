"""What a deploy's signals cost: events lost when a process is stopped, by signal and server.

    python bench/deploy_loss.py             # against LOKI_URL if set, else a fake Loki
    LOKI_URL=http://localhost:3100 python bench/deploy_loss.py

Part 1, a plain process logging 500 events a second (default settings: batch_max_wait 1 s,
spool on) is stopped after 3 s by SIGTERM (with shipper's SIGTERM hook, and with SIGTERM's
default action, as in a process whose server neither handles the signal nor calls
``shipper.shutdown()``), and by SIGKILL (gunicorn after ``--graceful-timeout``, Kubernetes after
``terminationGracePeriodSeconds``, the OOM killer). For each: events emitted, in Loki, left in
the spool (sent by the next process), lost, and the loss window: how long before the signal the
oldest lost event was handed to ``emit``.

The same two signals are repeated while Loki refuses connections (the batches are being retried
in memory, for up to ``retry_budget``, before they go to the spool).

Part 2 repeats the uvicorn experiment of issue #15: Starlette under uvicorn, 200 requests within
one second, then SIGTERM; with ``ShipperASGIMiddleware`` (lifespan), with no shipper middleware
(the SIGTERM hook alone), and with neither (``SHIPPER_HANDLE_SIGTERM=0``).

Part 3: gunicorn ``--timeout``: a sync worker logs 50 events in a request and then hangs; the
master aborts it (SIGABRT) after the timeout, and SIGKILLs it if it is still there on its next
check.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shipper.delivery.spool import spool_status  # noqa: E402

RATE = 500
WARMUP = 3.0

_EMITTER = """
import logging, os, struct, sys, time
from shipper import LokiHandler
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
handler = LokiHandler()
log = logging.getLogger("bench")
log.setLevel(logging.INFO)
log.addHandler(handler)
print("ready", flush=True)
seq = 0
interval = 1.0 / {rate}
start = time.monotonic()
while True:
    now = time.time()
    log.info("seq %d", seq, extra={{"metadata": {{"seq": seq}}}})
    os.pwrite(out, struct.pack("<d", now), seq * 8)
    seq += 1
    pause = start + seq * interval - time.monotonic()
    if pause > 0:
        time.sleep(pause)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Loki:
    """The Loki to count in: LOKI_URL, or a fake one in this process."""

    def __init__(self) -> None:
        self.url = os.environ.get("LOKI_URL", "").rstrip("/")
        self.fake = None
        if not self.url:
            from tests.support.fakeloki import FakeLoki

            self.fake = FakeLoki(rate_limit=False)
            self.url = self.fake.url

    def seqs(self, service: str, key: str = "seq") -> list[int]:
        """``metadata[key]`` of every stored event of ``service``."""
        if self.fake is not None:
            lines = [s.line for s in self.fake.stored()
                     if dict(s.labels).get("service_name") == service]
        else:
            lines = self._query(service)
        out = []
        for line in lines:
            value = (json.loads(line).get("metadata") or {}).get(key)
            if value is not None:
                out.append(int(value))
        return out

    def count(self, service: str, kind: str) -> int:
        if self.fake is not None:
            return sum(1 for s in self.fake.stored()
                       if dict(s.labels).get("service_name") == service
                       and dict(s.labels).get("type") == kind)
        return len(self._query(service, f', type="{kind}"'))

    def _query(self, service: str, more: str = "") -> list[str]:
        query = urllib.parse.urlencode({
            "query": f'{{service_name="{service}"{more}}}', "limit": 5000,
            "start": str(int((time.time() - 600) * 1e9)), "end": str(int((time.time() + 60) * 1e9)),
        })
        with urllib.request.urlopen(f"{self.url}/loki/api/v1/query_range?{query}",
                                    timeout=30) as response:
            data = json.load(response)
        return [v[1] for stream in data["data"]["result"] for v in stream["values"]]


def _env(loki: Loki, service: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "SHIPPER_"))}
    env.update(LOKI_URL=loki.url, SHIPPER_SERVICE=service, SHIPPER_SPOOL_DIR=str(tmp / "spool"),
               XDG_CACHE_HOME=str(tmp / "cache"), PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def part1(loki: Loki) -> None:
    print(f"\n1. a process logging {RATE} events/s (batch_max_wait 1 s, spool on), "
          f"stopped after {WARMUP:.0f} s")
    print(f"  {'signal':<34}{'emitted':>8}{'in Loki':>9}{'on disk':>9}{'lost':>6}"
          f"{'  loss window (oldest lost, before the signal)'}")
    cases = [("SIGTERM, shipper's hook (default)", signal.SIGTERM, {}),
             ("SIGTERM, default action", signal.SIGTERM, {"SHIPPER_HANDLE_SIGTERM": "0"}),
             ("SIGKILL", signal.SIGKILL, {})]
    nowhere = {"LOKI_URL": f"http://127.0.0.1:{_free_port()}"}  # connections refused
    cases += [("SIGTERM, hook, Loki unreachable", signal.SIGTERM, nowhere),
              ("SIGKILL, Loki unreachable", signal.SIGKILL, nowhere)]
    for name, sig, extra in cases:
        tmp = Path(tempfile.mkdtemp(prefix="deploy-loss-"))
        service = f"loss-{uuid.uuid4().hex[:8]}"
        times_file = tmp / "times"
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_EMITTER.format(rate=RATE)),
                                 str(times_file)], env=_env(loki, service, tmp, **extra),
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(WARMUP)
        signalled = time.time()
        proc.send_signal(sig)
        proc.wait(timeout=60)
        time.sleep(3.0 if loki.fake is None else 0.5)  # a real Loki answers queries a bit later
        data = times_file.read_bytes()
        emitted = [struct.unpack_from("<d", data, i * 8)[0] for i in range(len(data) // 8)]
        arrived = set(loki.seqs(service))
        on_disk = spool_status(tmp / "spool").records or 0
        lost = [i for i in range(len(emitted)) if i not in arrived]
        # events in the spool are not lost; they are the newest ones that did not make it
        truly_lost = lost[:max(len(lost) - on_disk, 0)]
        window = (f"{(signalled - emitted[truly_lost[0]]) * 1000:.0f} ms" if truly_lost
                  else "nothing lost")
        print(f"  {name:<34}{len(emitted):>8}{len(arrived):>9}{on_disk:>9}{len(truly_lost):>6}"
              f"  {window}")


def _wait_http(port: int, proc: subprocess.Popen[bytes], path: str = "/health") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def part2(loki: Loki) -> None:
    print("\n2. Starlette under uvicorn: 200 requests within one second, then SIGTERM")
    cases = [("ShipperASGIMiddleware (lifespan)", "app", {}),
             ("no shipper middleware, SIGTERM hook", "bare", {}),
             ("neither (SHIPPER_HANDLE_SIGTERM=0)", "bare", {"SHIPPER_HANDLE_SIGTERM": "0"})]
    for name, app, extra in cases:
        tmp = Path(tempfile.mkdtemp(prefix="deploy-uvicorn-"))
        service = f"uvicorn-{uuid.uuid4().hex[:8]}"
        port = _free_port()
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "uvicorn"), f"tests.support.servers.asgi_app:{app}",
             "--port", str(port), "--no-access-log"],
            env=_env(loki, service, tmp, **extra), cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            start = time.monotonic()
            for i in range(200):
                conn.request("GET", f"/work/{i}")
                conn.getresponse().read()
            took = time.monotonic() - start
            conn.close()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(3.0 if loki.fake is None else 0.3)
        arrived = loki.count(service, "WORK")
        on_disk = spool_status(tmp / "spool").records or 0
        print(f"  {name:<40} requests took {took:.2f} s, exit {code}: {arrived}/200 WORK "
              f"events in Loki, {on_disk} on disk")


_HANG_APP = """
import logging, time
from tests.support.servers import _logging
_logging.setup()
log = logging.getLogger("app")

def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        for i in range(50):
            log.info("before the hang %d", i, extra={"metadata": {"seq": i}})
        time.sleep(120)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def part3(loki: Loki) -> None:
    print("\n3. gunicorn --timeout 2: a sync worker logs 50 events, then hangs in the request")
    tmp = Path(tempfile.mkdtemp(prefix="deploy-timeout-"))
    (tmp / "hang_app.py").write_text(_HANG_APP)
    service = f"timeout-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = _env(loki, service, tmp)
    env["PYTHONPATH"] = f"{tmp}{os.pathsep}{REPO}"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--timeout", "2", "-w", "1", "-c", str(REPO / "tests/support/servers/gunicorn_conf.py"),
         "hang_app:app"], env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_http(port, proc, "/")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", "/hang")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    log = proc.stderr.read().decode(errors="replace")
    killed = "SIGKILL" in log or "was sent SIGKILL" in log
    time.sleep(3.0 if loki.fake is None else 0.3)
    arrived = len(set(loki.seqs(service)))
    on_disk = spool_status(tmp / "spool").records or 0
    print(f"  aborted worker: {arrived}/50 events in Loki, {on_disk} on disk; "
          f"{'SIGKILLed after the abort' if killed else 'left by SIGABRT, no SIGKILL needed'}")


def main() -> None:
    loki = Loki()
    where = "LOKI_URL" if loki.fake is None else "a fake Loki in this process"
    print(f"Loki: {loki.url} ({where})")
    part1(loki)
    part2(loki)
    part3(loki)


if __name__ == "__main__":
    main()

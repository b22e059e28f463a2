"""Throughput into Loki's single binary and into simple scalable mode, side by side in one run.

    LOKI_BIN=/path/to/loki python bench/scale.py            # 3 runs of 100,000 events each
    LOKI_BIN=/path/to/loki python bench/scale.py --quick    # 2 runs of 30,000

Starts, one after the other, on free loopback ports and in temporary directories:

1. Loki from loki/config.yaml (single binary, filesystem);
2. Loki from loki/config.scale.yaml as three processes (write, read, backend) on S3 served by
   moto, and the nginx gateway from loki/gateway/nginx.conf when nginx is installed
   (tests/support/lokicluster.py starts both).

Both with the tenant limits raised (64 MB/s), so the figures measure delivery, not Loki's
default rate limit. Into each, a fresh Python process logs N events through the LokiHandler as
fast as it can; the figure is events/s from the first call until ``flush()`` returned with
every event accepted (204), and the count is then confirmed by a LogQL query on the read path.
Scalable mode is measured straight into the write target and through the gateway.

The sidecar is measured by bench/sidecar.py (a file of N JSON lines tailed by ``shipper
sidecar`` until Loki counts them all) run against each deployment, when both it and
``shipper.sidecar`` are in this tree; otherwise the script says it is left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import _table  # noqa: E402
from tests.support.lokicluster import (  # noqa: E402
    GATEWAY_USER,
    Process,
    _spawn,
    _stop,
    _wait_ready,
    free_ports,
    scalable_loki,
    with_login,
)

RAISED_LIMITS = (
    "-distributor.ingestion-rate-limit-mb=64",
    "-distributor.ingestion-burst-size-mb=128",
    "-ingester.per-stream-rate-limit=64MB",
    "-ingester.per-stream-rate-limit-burst=128MB",
)


def child(url: str, n: int, service: str) -> dict[str, Any]:
    from shipper import LokiHandler

    spool = tempfile.mkdtemp(prefix="shipper-bench-")
    handler = LokiHandler(url, service=service, spool_dir=spool, timeout=10)
    log = logging.getLogger("bench.scale")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    start = time.perf_counter()
    for i in range(n):
        log.info("User %s logged in from %s", i, "203.0.113.9",
                 extra={"type": "LOGIN", "actor": "USER", "actor_id": f"user_{i % 1000}"})
    logged = time.perf_counter() - start
    done = handler.flush(timeout=300)
    elapsed = time.perf_counter() - start
    stats = handler.stats()
    handler.close()
    shutil.rmtree(spool, ignore_errors=True)
    return {"done": done, "seconds": elapsed, "log_seconds": logged, "sent": stats["sent"],
            "spooled": stats["spooled"], "refused": stats["refused_total"],
            "dropped": stats["dropped_total"]}


def _count(query_url: str, service: str) -> int:
    """Events of ``service`` Loki has, asked with the shipper's client (which logs in to the
    gateway with the ``user:password@`` of ``query_url``)."""
    from shipper.config import ShipperConfig
    from shipper.loki.client import LokiClient

    query = f'sum(count_over_time({{service_name="{service}"}}[1h]))'
    client = LokiClient(ShipperConfig(url=query_url, spool=False, timeout=60))
    try:
        result = client.query(query)["result"]
    finally:
        client.close()
    return int(float(result[0]["value"][1])) if result else 0


def _measure(push_url: str, query_url: str, n: int) -> dict[str, Any]:
    service = f"bench-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, "--child", push_url, str(n), service],
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    result: dict[str, Any] = json.loads(lines[-1])
    deadline = time.monotonic() + 30
    result["in_loki"] = _count(query_url, service)
    while result["in_loki"] < n and time.monotonic() < deadline:
        time.sleep(1)
        result["in_loki"] = _count(query_url, service)
    result["rate"] = result["sent"] / result["seconds"]
    return result


@contextmanager
def single_binary(loki_bin: str) -> Iterator[Process]:
    """A fresh single-binary Loki from loki/config.yaml with :data:`RAISED_LIMITS`, on free
    loopback ports and a data directory of its own: its process (``url``, ``popen``)."""
    from contextlib import ExitStack

    from tests.support.lokicluster import ScalableLoki

    run_dir = Path(tempfile.mkdtemp(prefix="shipper-bench-single-"))
    holder = ScalableLoki(dir=run_dir)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        http, grpc = free_ports(2)
        proc: Process = _spawn(stack, holder, "single", [
            loki_bin, f"-config.file={REPO / 'loki' / 'config.yaml'}",
            "-config.expand-env=true", f"-common.path-prefix={run_dir}",
            "-server.http-listen-address=127.0.0.1", f"-server.http-listen-port={http}",
            "-server.grpc-listen-address=127.0.0.1", f"-server.grpc-listen-port={grpc}",
            *RAISED_LIMITS], dict(os.environ, LOKI_DATA_DIR=str(run_dir)))
        proc.url = f"http://127.0.0.1:{http}"
        import urllib3

        _wait_ready(urllib3.PoolManager(), [proc], "/ready", 90)
        yield proc
        _stop(proc)


def _sidecar(name: str, url: str, n: int) -> str:
    """bench/sidecar.py against ``url``: its sidecar row, relabelled with the deployment."""
    env = dict(os.environ, LOKI_URL=url, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "sidecar.py"), "--lines",
                           str(n), "--workers", "1"], capture_output=True, text=True,
                          timeout=900, env=env, cwd=REPO, check=False)
    row = next((ln for ln in proc.stdout.splitlines() if ln.startswith("| shipper sidecar")),
               None)
    if row is None:
        return f"| {name} | error: {(proc.stderr.strip().splitlines() or ['no output'])[-1]} |"
    return "| " + name + " |" + row.split("|", 2)[2]


def _row(name: str, runs: list[dict[str, Any]], n: int) -> list[str]:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return [name, str(n), "error", errors[0], "", ""]
    rates = [r["rate"] for r in runs]
    lost = sum(n - r["in_loki"] for r in runs)
    return [name, str(n), f"{statistics.median(rates):,.0f}",
            " / ".join(f"{x:,.0f}" for x in rates),
            str(sum(r["spooled"] for r in runs)), "none" if lost == 0 else f"{lost} missing"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 runs of 30,000 events")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, n, service = args.child
        print(json.dumps(child(url, int(n), service)), flush=True)
        return
    loki_bin = os.environ.get("LOKI_BIN", "")
    if not loki_bin:
        raise SystemExit("LOKI_BIN is unset: point it to a Loki 3.7 binary")
    n, repeats = (30_000, 2) if args.quick else (100_000, 3)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, Loki {loki_bin}")
    sidecar = (REPO / "bench" / "sidecar.py").is_file() and importlib.util.find_spec(
        "shipper.sidecar") is not None
    if not sidecar:
        print("sidecar: left out (shipper.sidecar and bench/sidecar.py are not in this tree)")

    rows = []
    sidecar_rows: list[str] = []
    with single_binary(loki_bin) as single:
        url = single.url
        rows.append(_row("single binary", [_measure(url, url, n) for _ in range(repeats)], n))
        if sidecar:
            sidecar_rows.append(_sidecar("single binary", url, n))
    with scalable_loki(loki_bin, extra_flags=RAISED_LIMITS) as cluster:
        rows.append(_row("scalable: write target", [
            _measure(cluster.write, cluster.read, n) for _ in range(repeats)], n))
        if cluster.gateway:
            gateway = with_login(cluster.gateway, GATEWAY_USER)  # it asks for basic auth
            rows.append(_row("scalable: via nginx gateway", [
                _measure(gateway, gateway, n) for _ in range(repeats)], n))
            if sidecar:
                sidecar_rows.append(_sidecar("scalable: via nginx gateway", gateway, n))
        else:
            print("gateway: left out (nginx is not installed)")
    if sidecar_rows:
        print("\nshipper sidecar, a file of JSON lines tailed into Loki (bench/sidecar.py)")
        print("| into | delivered | seconds | lines/s | CPU s per 1M lines | peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(sidecar_rows))
    _table("LokiHandler delivery, one process logging as fast as it can (events/s until "
           "flush() returned, every event accepted)",
           ["into", "N", "median events/s", "runs", "via spool", "lost"], rows)


if __name__ == "__main__":
    main()

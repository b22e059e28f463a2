"""The sidecar's HTTP source under a simple push loop: CPU per entry and requests per second.

    .venv/bin/python bench/sidecar_http.py                 # 2,000 requests of 100 entries each
    .venv/bin/python bench/sidecar_http.py --requests 500 --entries 1000

The source runs in this process with a pipeline that only counts what it is given (so the
figures are the HTTP source's own cost: reading, decoding, building events); one client
process posts the same body again and again over one keep-alive connection, for each endpoint
and encoding in turn:

* ``events``: ``POST /v1/events``, an array of seed-shaped events;
* ``push``: ``POST /loki/api/v1/push``, JSON, each line a pino-style JSON object;
* ``push-gzip``: the same body gzipped;
* ``otlp``: ``POST /v1/logs``, OTLP/HTTP JSON.

Printed per case: requests/s, entries/s, and the source process's CPU µs per entry (user +
system, from ``os.times``), the best of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing
import os
import threading
import time
from typing import Any

from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.sources.http import HttpSource


class _Counting:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def submit(self, event: Any) -> None:
        with self.lock:
            self.n += 1


def _bodies(entries: int) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    now = time.time_ns()
    events = [{"level": "INFO" if i % 10 else "ERROR", "type": "HTTP_REQUEST", "actor": "USER",
               "actorId": f"usr_{i % 500}", "message": f"GET /api/listings/{i} answered",
               "metadata": {"status": 200, "ms": i % 900, "path": f"/api/listings/{i}"}}
              for i in range(entries)]
    lines = [json.dumps({"level": 30, "time": now // 1_000_000 + i, "pid": 4242,
                         "msg": f"GET /api/listings/{i} answered in {i % 900} ms",
                         "reqId": f"req-{i:08d}", "actorId": f"usr_{i % 500}",
                         "status": 200}, separators=(",", ":")) for i in range(entries)]
    push = json.dumps({"streams": [{"stream": {"service_name": "web", "job": "node"},
                                    "values": [[str(now + i), line]
                                               for i, line in enumerate(lines)]}]}).encode()
    otlp = json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeLogs": [{"scope": {"name": "orders"}, "logRecords": [
            {"timeUnixNano": str(now + i), "severityNumber": 9, "severityText": "INFO",
             "body": {"stringValue": f"GET /api/listings/{i} answered"},
             "attributes": [{"key": "status", "value": {"intValue": "200"}},
                            {"key": "actorId", "value": {"stringValue": f"usr_{i % 500}"}}]}
            for i in range(entries)]}]}]}).encode()
    json_type = {"Content-Type": "application/json"}
    return {
        "events": ("/v1/events", json.dumps(events).encode(), json_type),
        "push": ("/loki/api/v1/push", push, json_type),
        "push-gzip": ("/loki/api/v1/push", gzip.compress(push, 1),
                      {**json_type, "Content-Encoding": "gzip"}),
        "otlp": ("/v1/logs", otlp, json_type),
    }


def _client(port: int, path: str, body: bytes, headers: dict[str, str], n: int,
            out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    statuses: dict[int, int] = {}
    for _ in range(n):
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
    conn.close()
    out.put(statuses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=100, help="entries per request")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pipeline = _Counting()
    source = HttpSource(HttpSourceConfig(listen="127.0.0.1:0"), pipeline=pipeline,
                        service="bench", env=None)
    source.start()
    ctx = multiprocessing.get_context("spawn")
    print(f"{args.requests} requests of {args.entries} entries, best of {args.rounds}")
    print(f"{'case':<10} {'req/s':>8} {'entries/s':>10} {'CPU µs/entry':>13}")
    try:
        for name, (path, body, headers) in _bodies(args.entries).items():
            best: tuple[float, float] | None = None
            for _ in range(args.rounds):
                queue = ctx.Queue()
                before_n = pipeline.n
                proc = ctx.Process(target=_client, args=(source.server.port, path, body,
                                                         headers, args.requests, queue))
                proc.start()
                started = time.perf_counter()
                cpu0 = os.times()
                statuses = queue.get()
                cpu1 = os.times()
                wall = time.perf_counter() - started
                proc.join()
                shipped = pipeline.n - before_n
                expected = args.requests * args.entries
                if statuses != {204 if "push" in name else 200 if name == "otlp" else 202:
                                args.requests} or shipped != expected:
                    raise SystemExit(f"{name}: answers {statuses}, shipped {shipped} of "
                                     f"{expected}")
                cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
                if best is None or cpu < best[1]:
                    best = (wall, cpu)
            assert best is not None
            wall, cpu = best
            n = args.requests * args.entries
            print(f"{name:<10} {args.requests / wall:>8.0f} {n / wall:>10.0f} "
                  f"{cpu / n * 1e6:>13.2f}")
    finally:
        source.close()


if __name__ == "__main__":
    main()

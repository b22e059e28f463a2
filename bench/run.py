"""Side-by-side benchmarks: shipper vs python-logging-loki and loki-logger-handler.

    python bench/run.py            # everything, against LOKI_URL if set, else a local fake Loki
    python bench/run.py --quick    # smaller counts, for a first look
    python bench/run.py --only delivery --repeat 3   # the median of three bursts

Every measurement runs in its own Python process (so one handler's background thread never
steals the CPU from the next measurement) against the same Loki. Without ``LOKI_URL``
a fake Loki (tests/support/fakeloki.py, count-only, no rate limit) runs in a separate process;
the figures then measure the clients, not Loki. Peer packages: ``pip install -e '.[bench]'``.

Figures printed:
* hot path: cost of one ``logger.info`` call on the app thread, as a ratio to the same call
  with ``logging.NullHandler`` (min of 5 runs);
* delivery: events/s delivered end to end (from the first call until a count query sent to
  Loki finds them all: the query's own time is not counted) by one process that logs as fast
  as it can, and what each call cost the app's thread in that burst (wall and CPU), as ratios
  to the same burst into ``logging.NullHandler``;
* memory: peak RSS of a process logging 1,000,000 events (and, for shipper, while Loki is down,
  with the spool taking them);
* encodings: encode cost per entry and request size for shipper's json, json+gzip, protobuf.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEERS = ("shipper", "logging_loki_queue", "logging_loki", "loki_logger_handler")
LABEL = {
    "null": "logging.NullHandler",
    "shipper": "shipper LokiHandler",
    "shipper_protobuf": "shipper LokiHandler (protobuf)",
    "logging_loki_queue": "python-logging-loki LokiQueueHandler",
    "logging_loki": "python-logging-loki LokiHandler",
    "loki_logger_handler": "loki-logger-handler",
}


# ----------------------------------------------------------------------------- child side


def _make_handler(kind: str, url: str, spool_dir: str | None = None,
                  service: str = "bench") -> Any:
    import logging

    if kind == "null":
        return logging.NullHandler()
    if kind.startswith("shipper"):
        from shipper import LokiHandler

        # default settings, with the spool in a fresh directory: what overflows the queue
        # while the app logs faster than the worker sends is spooled and replayed
        spool_dir = spool_dir or tempfile.mkdtemp(prefix="shipper-bench-")
        return LokiHandler(url or None, service=service, spool_dir=spool_dir, retry_budget=1,
                           timeout=5,
                           encoding="protobuf" if kind == "shipper_protobuf" else "json")
    if kind == "logging_loki_queue":
        import queue

        import logging_loki

        return logging_loki.LokiQueueHandler(queue.Queue(-1), url=url + "/loki/api/v1/push",
                                             tags={"service_name": service}, version="1")
    if kind == "logging_loki":
        import logging_loki

        return logging_loki.LokiHandler(url=url + "/loki/api/v1/push",
                                        tags={"service_name": service}, version="1")
    if kind == "loki_logger_handler":
        from loki_logger_handler.loki_logger_handler import LokiLoggerHandler

        return LokiLoggerHandler(url=url + "/loki/api/v1/push", labels={"service_name": service},
                                 timeout=1)
    raise SystemExit(f"unknown handler {kind!r}")


def _logger(handler: Any) -> Any:
    import logging

    log = logging.getLogger("bench.app")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def child_hotpath(kind: str, url: str, n: int) -> dict[str, Any]:
    handler = _make_handler(kind, url)
    log = _logger(handler)
    extra = {"type": "LOGIN", "actor": "USER", "actor_id": "user_42"}
    for i in range(min(n, 1000)):  # warm-up: connections, caches, first batch
        log.info("User %s logged in", i, extra=extra)
    best = best_cpu = float("inf")
    for _ in range(n // 10_000 or 1):
        # runs of 10,000 calls (below shipper's queue bound): the cost of a call in normal
        # operation; sustained overload is what the delivery figures show
        runs = min(n, 10_000)
        start, start_cpu = time.perf_counter(), time.thread_time()
        for i in range(runs):
            log.info("User %s logged in", i, extra=extra)
        best = min(best, (time.perf_counter() - start) / runs)
        best_cpu = min(best_cpu, (time.thread_time() - start_cpu) / runs)
        if hasattr(handler, "stats"):
            handler.flush(timeout=60)  # let the worker catch up between runs
        else:
            time.sleep(0.5)
    return {"per_call_us": best * 1e6, "cpu_us": best_cpu * 1e6}


def _count(url: str, service: str) -> int:
    """Events Loki holds for ``service``: the fake's counter, or a LogQL count on a real Loki."""
    try:
        with urllib.request.urlopen(url + "/fake/count", timeout=5) as resp:
            return int(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    query = urllib.parse.urlencode({
        "query": f'sum(count_over_time({{service_name="{service}"}}[1h]))',
        "time": str(time.time_ns() + 60 * 10**9)})
    with urllib.request.urlopen(f"{url}/loki/api/v1/query?{query}", timeout=30) as resp:
        result = json.load(resp)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def child_delivery(kind: str, url: str, n: int, limit_s: float) -> dict[str, Any]:
    service = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    handler = _make_handler(kind, url, service=service)
    log = _logger(handler)
    before = _count(url, service) if kind != "null" else 0
    start, start_cpu = time.perf_counter(), time.thread_time()
    for i in range(n):
        log.info("User %s logged in from %s", i, "203.0.113.9",
                 extra={"type": "LOGIN", "actor": "USER", "actor_id": f"user_{i % 1000}"})
    logged, logged_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
    call = {"call_wall_us": logged / n * 1e6, "call_cpu_us": logged_cpu / n * 1e6}
    if kind == "null":
        return {"events": n, "delivered": n, "seconds": logged, "log_seconds": logged,
                "rate": n / logged, **call}
    if kind.startswith("shipper"):
        handler.flush(timeout=limit_s)
    deadline = start + limit_s
    # the time is taken when the count query that finds every event is sent, not when its
    # answer arrives: a LogQL count over 200,000 events takes a few hundred ms of its own,
    # which is Loki's query time, not delivery (the same rule for every handler)
    asked = time.perf_counter()
    got = _count(url, service) - before
    while got < n and time.perf_counter() < deadline:
        time.sleep(0.05)
        asked = time.perf_counter()
        got = _count(url, service) - before
    elapsed = asked - start
    stats = handler.stats() if kind.startswith("shipper") else {}
    return {"events": n, "delivered": got, "seconds": elapsed, "log_seconds": logged,
            "rate": got / elapsed, "spooled": stats.get("spooled", ""),
            "dropped": stats.get("dropped"), **call}


def child_memory(kind: str, url: str, n: int, spool_dir: str | None) -> dict[str, Any]:
    import gc

    handler = _make_handler(kind, url, spool_dir)
    log = _logger(handler)
    gc.collect()
    base = _current_rss_mb()
    for i in range(n):
        log.info("User %s logged in from %s", i, "203.0.113.9",
                 extra={"type": "LOGIN", "actor": "USER", "actor_id": f"user_{i % 1000}"})
    if kind.startswith("shipper"):
        if spool_dir:  # Loki is down: close() writes what is left to the spool
            handler.close()
        else:
            handler.flush(timeout=120)
    return {"base_mb": base, "peak_mb": _rss_mb(), "growth_mb": _rss_mb() - base,
            "stats": handler.stats() if kind.startswith("shipper") else None}


def child_encodings(n: int) -> dict[str, Any]:
    from shipper.config import ShipperConfig
    from shipper.event import LogEvent, to_entry
    from shipper.loki.client import LokiClient

    now = time.time_ns()
    entries = [to_entry(LogEvent.create(
        service="bench", level="INFO", message=f"User {i} logged in from 203.0.113.9",
        timestamp_ns=now + i, actor="USER", type="LOGIN", actor_id=f"user_{i % 1000}",
        logger="bench.app", metadata={"ip": "203.0.113.9", "ok": True}))
        for i in range(n)]
    out: dict[str, Any] = {}
    for encoding in ("json", "json+gzip", "protobuf"):
        client = LokiClient(ShipperConfig(url="http://x", encoding=encoding))  # type: ignore[arg-type]
        best = float("inf")
        size = 0
        for _ in range(5):
            start = time.perf_counter()
            body, _ = client.encode(entries)
            best = min(best, time.perf_counter() - start)
            size = len(body)
        out[encoding] = {"us_per_entry": best / n * 1e6, "bytes": size}
    return out


# ----------------------------------------------------------------------------- parent side


def _run_child(*args: str, timeout: float = 600) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _start_fake() -> tuple[str, subprocess.Popen[str]]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fakeloki", "--port", str(port),
                             "--no-rate-limit", "--count-only"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return f"http://127.0.0.1:{port}", proc


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--only", choices=["hotpath", "delivery", "memory", "encodings"],
                        action="append", help="run only these parts (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="delivery: run shipper's bursts N times (each beside its own "
                             "NullHandler burst) and show the median")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, *rest = args.child
        result: dict[str, Any]
        if what == "hotpath":
            result = child_hotpath(rest[0], rest[1], int(rest[2]))
        elif what == "delivery":
            result = child_delivery(rest[0], rest[1], int(rest[2]), float(rest[3]))
        elif what == "memory":
            spool_dir = rest[3] if len(rest) > 3 else None
            result = child_memory(rest[0], rest[1], int(rest[2]), spool_dir)
        else:
            result = child_encodings(int(rest[0]))
        print(json.dumps(result, default=str), flush=True)
        os._exit(0)  # do not wait for peers' exit hooks (python-logging-loki can hang there)

    quick = args.quick
    url = os.environ.get("LOKI_URL", "").rstrip("/")
    fake = None
    if url:
        print(f"Loki: {url} (LOKI_URL)")
    else:
        url, fake = _start_fake()
        print(f"Loki: LOKI_URL is unset, so a fake Loki (count-only, no rate limit) at {url} "
              "in its own process; figures measure the clients, not Loki.")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    def want(part: str) -> bool:
        return not args.only or part in args.only

    try:
        hot_n = 30_000 if quick else 100_000
        if want("hotpath"):
            rows = []
            null = _run_child("hotpath", "null", url, str(hot_n))
            base = null.get("per_call_us", float("nan"))
            base_cpu = null.get("cpu_us", float("nan"))
            rows.append([LABEL["null"], f"{base_cpu:.2f}", "1.00x", f"{base:.2f}", "1.00x"])
            for kind in ("shipper", "logging_loki_queue", "loki_logger_handler", "logging_loki"):
                n = 300 if kind == "logging_loki" else hot_n
                res = _run_child("hotpath", kind, url, str(n))
                if "error" in res:
                    rows.append([LABEL[kind], "error", res["error"], "", ""])
                    continue
                cpu, wall = res["cpu_us"], res["per_call_us"]
                rows.append([LABEL[kind], f"{cpu:.2f}", f"{cpu / base_cpu:.2f}x",
                             f"{wall:.2f}", f"{wall / base:.2f}x"])
            _table("Hot path: one logger.info() on the app thread (goal: shipper <= 1.5x).\n"
                   "CPU is the app thread's own time (time.thread_time); wall also counts\n"
                   "waiting for the GIL while a background worker runs",
                   ["handler", "CPU us/call", "CPU ratio", "wall us/call", "wall ratio"], rows)

        if want("delivery"):
            rows = []
            big = 50_000 if quick else 200_000
            # shipper's rows run `--repeat` rounds, each beside its own NullHandler burst (the
            # machine's speed drifts between runs): the median round by events/s is shown,
            # and every round in the last column
            rounds: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
            for _ in range(args.repeat):
                null = _run_child("delivery", "null", url, str(big), "30")
                for kind in ("shipper", "shipper_protobuf"):
                    res = _run_child("delivery", kind, url, str(big), "120")
                    rounds.setdefault(kind, []).append((res, null))
            null = rounds["shipper"][len(rounds["shipper"]) // 2][1]
            base_wall = null.get("call_wall_us", float("nan"))
            base_cpu = null.get("call_cpu_us", float("nan"))
            rows.append([LABEL["null"], str(big), "", "", "", f"{base_wall:.2f}", "1.00x",
                         f"{base_cpu:.2f}", "1.00x", "", ""])
            plan = [("shipper", big, 120), ("shipper_protobuf", big, 120),
                    ("loki_logger_handler", big, 30), ("logging_loki_queue", 5_000, 30),
                    ("logging_loki", 1_000, 30)]
            for kind, n, limit in plan:
                runs = ""
                if kind in rounds:
                    done = [r for r in rounds[kind] if "error" not in r[0]]
                    done.sort(key=lambda r: r[0]["rate"])
                    res, paired = done[len(done) // 2] if done else rounds[kind][0]
                    if len(done) > 1:
                        runs = " / ".join(
                            f"{r['rate']:,.0f} ({r['call_wall_us'] / b['call_wall_us']:.2f}x, "
                            f"{r['call_cpu_us'] / b['call_cpu_us']:.2f}x)" for r, b in done)
                else:
                    res, paired = _run_child("delivery", kind, url, str(n), str(limit)), null
                if "error" in res:
                    rows.append([LABEL[kind], str(n), "error", res["error"], "", "", "", "", "",
                                 "", ""])
                    continue
                wall, cpu = res["call_wall_us"], res["call_cpu_us"]
                pair_wall, pair_cpu = paired["call_wall_us"], paired["call_cpu_us"]
                rows.append([LABEL[kind], str(n), f"{res['delivered']}",
                             f"{res['rate']:,.0f}", f"{res['seconds']:.1f}",
                             f"{wall:.2f}", f"{wall / pair_wall:.2f}x",
                             f"{cpu:.2f}", f"{cpu / pair_cpu:.2f}x",
                             str(res.get("spooled", "")), runs])
            _table("Delivery: one process logs N events as fast as it can "
                   "(goals: shipper >= 50,000/s,\napp-thread wall per call <= 3x and CPU per "
                   "call <= 1.5x NullHandler's in the same burst)"
                   + (f"; shipper: the median of {args.repeat} rounds, each against its own "
                      "NullHandler burst" if args.repeat > 1 else ""),
                   ["handler", "N", "delivered", "events/s", "seconds", "wall us/call",
                    "wall ratio", "CPU us/call", "CPU ratio", "via spool",
                    "rounds: events/s (wall, CPU ratios)"], rows)

        if want("memory"):
            rows = []
            mem_n = 200_000 if quick else 1_000_000
            for kind in ("shipper", "loki_logger_handler", "logging_loki_queue"):
                res = _run_child("memory", kind, url, str(mem_n), timeout=900)
                rows.append([LABEL[kind], f"{res.get('peak_mb', 0):.0f}",
                             f"{res.get('growth_mb', 0):.0f}", res.get("error", "")])
            with tempfile.TemporaryDirectory() as spool_dir:
                down = "http://127.0.0.1:9"  # nothing listens: connection refused
                res = _run_child("memory", "shipper", down, str(mem_n), spool_dir, timeout=900)
                stats = res.get("stats") or {}
                note = res.get("error") or (f"Loki down: spooled {stats.get('spooled', '?')}"
                                            if isinstance(stats, dict) else "")
                rows.append([LABEL["shipper"] + ", Loki down", f"{res.get('peak_mb', 0):.0f}",
                             f"{res.get('growth_mb', 0):.0f}", note])
            _table(f"Memory: logging {mem_n:,} events (goal: growth < 100 MB while Loki is down)",
                   ["handler", "peak RSS MB", "growth MB", "note"], rows)

        if want("encodings"):
            enc = _run_child("encodings", "3000")
            rows = [[name, f"{v['us_per_entry']:.2f}", f"{v['bytes']:,}"]
                    for name, v in enc.items() if isinstance(v, dict)]
            _table("Encodings: one 3,000-entry request (the default is the fastest to encode)",
                   ["encoding", "us/entry", "request bytes"], rows)
    finally:
        if fake is not None:
            fake.terminate()


if __name__ == "__main__":
    main()

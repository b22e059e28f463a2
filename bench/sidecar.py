"""Tail a JSON-lines file into Loki with ``shipper sidecar``, side by side with Loki's own
intake of the same lines pre-encoded.

    .venv/bin/python bench/sidecar.py                      # 1,000,000 lines, fake Loki
    LOKI_URL=http://localhost:3100 .venv/bin/python bench/sidecar.py --lines 200000

Each measurement runs in its own process. The sidecar is started as users start it
(``python -m shipper sidecar --config ...``) on a file written beforehand; the figures are
taken from its start until Loki has answered 204 for every line (the sidecar's
``shipper_sidecar_events_sent_total``), and Loki's own count (the fake's counter, or a LogQL
``count_over_time`` on a real Loki) is checked after that:

* events/s delivered;
* CPU seconds per million lines (user + system of the sidecar process, from /proc);
* peak RSS (VmHWM);
* a machine check: the CPU µs this process takes to parse one of the file's lines, just
  before and after each run (this machine's speed drifts: a slow moment shows here too).

No peer collector can run here (Grafana Alloy and Promtail are binaries that cannot be
downloaded on this machine), so the reference is Loki itself: the same lines, already encoded
as push requests of 1 MiB, sent by 2 client processes as fast as Loki takes them. That is the
ceiling any collector can reach against this Loki.

``--profile`` samples the sidecar with py-spy (every thread) and prints where its time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def write_lines(path: Path, n: int, start_ms: int) -> int:
    """``n`` pino-style JSON lines (about 230 bytes each), one ms apart, ending now."""
    rng = random.Random(7)
    endpoints = ["GET /api/listings", "POST /api/bookings", "GET /api/users/me",
                 "POST /api/payments", "GET /healthz"]
    with path.open("w") as f:
        for i in range(n):
            level = 50 if i % 97 == 0 else 40 if i % 13 == 0 else 30
            f.write(json.dumps({
                "level": level, "time": start_ms + i, "pid": 4242, "hostname": "web-1",
                "msg": f"{rng.choice(endpoints)} answered in {rng.randint(2, 900)} ms",
                "reqId": f"req-{i:08d}", "actor": "USER", "actorId": f"usr_{i % 5000:05d}",
                "type": "HTTP_REQUEST", "status": rng.choice([200, 200, 200, 201, 404, 500]),
            }, separators=(",", ":")) + "\n")
    return path.stat().st_size


def _tree_figures(pid: int, seen: dict[int, tuple[float, int]]) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a process and its worker processes, summed; ``seen``
    keeps each process's last figures, so a worker that already exited still counts."""
    import psutil

    pids = [pid]
    with contextlib.suppress(psutil.Error):
        pids += [c.pid for c in psutil.Process(pid).children()]
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            seen[p] = _proc_figures(p)
    return sum(c for c, _ in seen.values()), sum(r for _, r in seen.values())


def _proc_figures(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a running process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


class Loki:
    """Counts what a Loki (fake or real) holds for one service."""

    def __init__(self, url: str | None, work: Path) -> None:
        self.fake: subprocess.Popen[bytes] | None = None
        if url is None:
            port = _free_port()
            self.fake = subprocess.Popen(
                [sys.executable, "-m", "tests.support.fakeloki", "--port", str(port),
                 "--no-rate-limit", "--count-only"], cwd=ROOT, stdout=subprocess.PIPE)
            assert self.fake.stdout is not None
            self.fake.stdout.readline()
            url = f"http://127.0.0.1:{port}"
        self.url = url.rstrip("/")

    def count(self, service: str, start_ns: int) -> int:
        if self.fake is not None:
            with urllib.request.urlopen(f"{self.url}/fake/count", timeout=10) as resp:
                return int(resp.read())
        from shipper.config import ShipperConfig
        from shipper.loki.client import LokiClient

        # the shipper's client: it logs in with the user:password@ of LOKI_URL (a gateway)
        query = f'sum(count_over_time({{service_name="{service}"}}[1d]))'
        client = LokiClient(ShipperConfig(url=self.url, spool=False, timeout=30))
        try:
            result = client.query(query, time.time_ns())["result"]
        finally:
            client.close()
        return int(float(result[0]["value"][1])) if result else 0

    def close(self) -> None:
        if self.fake is not None:
            self.fake.send_signal(signal.SIGTERM)
            self.fake.wait(10)


def _sent(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("shipper_sidecar_events_sent_total "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_sidecar(loki: Loki, log: Path, n: int, work: Path, service: str,
                profile: bool, workers: int = 1, encoding: str = "json") -> dict[str, Any]:
    config = work / f"{service}.yaml"
    metrics_port = _free_port()
    config.write_text(json.dumps({
        "loki": {"url": loki.url, "encoding": encoding},
        "service": service,
        "spool_dir": str(work / f"spool-{service}"),
        "positions_file": str(work / f"positions-{service}.json"),
        "metrics_listen": f"127.0.0.1:{metrics_port}",
        "workers": workers,
        "sources": [{"type": "file", "paths": [str(log)], "format": "json"}],
    }))
    cmd = [sys.executable, "-m", "shipper", "sidecar", "--config", str(config)]
    before = loki.count(service, 0)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE)
    spy = None
    if profile:  # py-spy samples every thread (cProfile would only see the main one), and
        # only the one holding the GIL: where the process's Python time goes
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                "--pid", str(proc.pid), "--rate", "250", "--format", "raw",
                                "--gil", "--output", str(work / "profile.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = peak = 0.0
    seen: dict[int, tuple[float, int]] = {}
    delivered = before
    deadline = started + max(120.0, n / 5000)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        cpu, peak_b = _tree_figures(proc.pid, seen)
        peak = max(peak, peak_b)
        # the sidecar's own count of entries Loki answered 204 for (cheap to ask, unlike a
        # LogQL count over a million lines); Loki's own count is checked once at the end
        if _sent(metrics_port) >= n:
            break
    elapsed = time.monotonic() - started
    for _ in range(60):  # a real Loki makes pushes queryable within a second or two
        delivered = loki.count(service, 0)
        if delivered - before >= n:
            break
        time.sleep(1)
    cpu, peak_b = _tree_figures(proc.pid, seen)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        print_profile(work / "profile.txt")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return {"delivered": delivered - before, "seconds": elapsed, "cpu": cpu,
            "peak_rss": max(peak, peak_b), "stderr": err.decode()[-400:]}


#: where a sampled stack's time goes: the first of these frames found, innermost first
_STAGES = [
    ("reader: LogEvent.create (normalise)", ("LogEvent.create", "new_event")),
    ("reader: JSON parse and the field table (formats.py)", ("LineParser.",)),
    ("reader: Pipeline.submit (queue put)", ("Pipeline.submit", "Batcher.put")),
    ("reader: read, split, decode lines (file.py)", ("FileSource.",)),
    ("worker: redaction", ("Redactor.",)),
    ("worker: to_entry (labels, JSON line)", ("to_entry",)),
    ("worker: encode the push body", ("encode_json",)),
    ("worker: HTTP request to Loki", ("Urllib3Transport.request",)),
    ("worker: other (batching, bookkeeping)", ("Batcher._run",)),
]


def print_profile(raw: Path) -> None:
    """Share of busy samples per stage (py-spy raw output: ``frame;frame;... count``)."""
    from collections import Counter

    stages: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if any(w in leaf for w in ("wait (threading", "select", "sleep", "_wait_for_tstate",
                                   "acquire")) and "Batcher.put" not in stack:
            continue  # idle
        n = int(count)
        busy += n
        for name, marks in _STAGES:
            if any(any(m in f for m in marks) for f in reversed(frames)):
                stages[name] += n
                break
        else:
            stages["other"] += n
    print(f"\nwhere the sidecar's time goes ({busy} samples of the thread holding the GIL):")
    for name, n in stages.most_common():
        print(f"  {n / busy * 100:5.1f}%  {name}")


def _push_worker(url: str, bodies: list[bytes]) -> None:
    from shipper.config import ShipperConfig
    from shipper.delivery.push import PushClient

    client = PushClient(ShipperConfig(url=url, spool=False))  # its headers log in, if need be
    headers = {**client.headers, "Content-Type": "application/json"}
    for body in bodies:
        while True:
            resp = client.transport.request("POST", client.push_url, body=body,
                                            headers=headers, timeout=30)
            if resp.status < 300:
                break
            if resp.status in (401, 403):
                raise SystemExit(f"Loki refused the push: {resp.status} {resp.text[:200]}")
            time.sleep(0.05)


def run_raw(loki: Loki, log: Path, n: int, service: str) -> dict[str, Any]:
    """Loki's intake of the same lines, pre-encoded as 1 MiB JSON pushes, 2 senders."""
    from shipper.delivery.push import encode_json
    from shipper.event import Entry

    labels = (("service_name", service), ("level", "INFO"), ("actor", "USER"),
              ("type", "HTTP_REQUEST"))
    bodies: list[bytes] = []
    batch: list[Entry] = []
    size = 0
    base = time.time_ns()
    with log.open() as f:
        for i, line in enumerate(f):
            entry = Entry(labels, base + i, line.rstrip("\n"))
            batch.append(entry)
            size += len(line) + 40
            if size >= 1 << 20:
                bodies.append(encode_json(batch))
                batch, size = [], 0
    if batch:
        bodies.append(encode_json(batch))
    before = loki.count(service, 0)
    started = time.monotonic()
    workers = [multiprocessing.Process(target=_push_worker, args=(loki.url, bodies[i::2]))
               for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    for _ in range(60):
        delivered = loki.count(service, 0) - before
        if delivered >= n:
            break
        time.sleep(1)
    return {"delivered": delivered, "seconds": elapsed}


def machine_check(log: Path, n: int = 20_000) -> float:
    """CPU µs per line to parse the file's first ``n`` lines in this process (best of 3): the
    same work every time, so a high figure before or after a run says the machine was slow."""
    from shipper.sidecar.formats import LineParser

    with log.open() as f:
        texts = [line.rstrip("\n") for _, line in zip(range(n), f, strict=False)]
    parser = LineParser(format="json", service="check")
    best = float("inf")
    for _ in range(3):
        out: list[Any] = []
        started = time.process_time()
        parser.parse_many(texts, 0, None, out)
        best = min(best, time.process_time() - started)
    return best / len(texts) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2",
                        help="the sidecar's `workers` settings to run, one after the other "
                             "(default: 1,2)")
    parser.add_argument("--encoding", default="json", choices=["json", "protobuf"],
                        help="the sidecar's loki.encoding (default: json, the default)")
    parser.add_argument("--loki-pid", type=int, default=None,
                        help="a Loki running on this machine: print its CPU per run too")
    parser.add_argument("--profile", action="store_true",
                        help="sample the sidecar with py-spy and print where its time goes")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    url = os.environ.get("LOKI_URL") or None

    def loki_cpu() -> float:
        return _proc_figures(args.loki_pid)[0] if args.loki_pid else 0.0

    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp:
        work = Path(tmp)
        log = work / "app.log"
        start_ms = time.time_ns() // 1_000_000 - args.lines
        size = write_lines(log, args.lines, start_ms)
        loki = Loki(url, work)
        from shipper.redact import hide_url_credentials

        target = ("real Loki at " + hide_url_credentials(loki.url) if url
                  else "fake Loki (count only, own process)")
        print(f"{args.lines:,} JSON lines ({size / 1e6:.0f} MB) into {target}")
        try:
            tag = f"bench-{os.getpid()}"
            check = machine_check(log)
            for run, workers in enumerate(counts):
                before = loki_cpu()
                side = run_sidecar(loki, log, args.lines, work, f"{tag}-sidecar{run}",
                                   args.profile, workers, args.encoding)
                side["loki_cpu"] = loki_cpu() - before
                after = machine_check(log)  # also the next run's "before": nothing runs between
                side["check"], check = (check, after), after
                what = "one process" if workers == 1 else f"workers: {workers}"
                if args.encoding != "json":
                    what += f", {args.encoding}"
                rows.append((f"shipper sidecar, file → Loki ({what})", side))
            raw = run_raw(loki, log, args.lines, f"{tag}-raw") if not args.profile else None
        finally:
            loki.close()
    print()
    loki_col = " Loki CPU s per 1M lines |" if args.loki_pid else ""
    print(f"| run | delivered | seconds | lines/s | CPU s per 1M lines | peak RSS MB |{loki_col}"
          " machine check µs/line (before / after) |")
    print("| --- | --- | --- | --- | --- | --- |" + (" --- |" if args.loki_pid else "") + " --- |")
    failed = 0
    for name, side in rows:
        rate = side["delivered"] / side["seconds"]
        loki_figure = (f" {side['loki_cpu'] / side['delivered'] * 1e6:.1f} |"
                       if args.loki_pid else "")
        print(f"| {name} | {side['delivered']:,} | {side['seconds']:.1f} | "
              f"{rate:,.0f} | {side['cpu'] / side['delivered'] * 1e6:.1f} | "
              f"{side['peak_rss'] / 1e6:.0f} |{loki_figure} "
              f"{side['check'][0]:.2f} / {side['check'][1]:.2f} |")
        if side["delivered"] < args.lines:
            failed += 1
            print(f"\n{name} delivered only {side['delivered']:,} of {args.lines:,}:\n"
                  f"{side['stderr']}")
    if raw is not None:
        print(f"| Loki's intake of the same lines pre-encoded (2 senders) | "
              f"{raw['delivered']:,} | {raw['seconds']:.1f} | "
              f"{raw['delivered'] / raw['seconds']:,.0f} | - | - |" +
              (" - |" if args.loki_pid else "") + " - |")
    print("\nmachine check: CPU µs to parse one of the file's lines in the bench's own process,"
          "\ntaken just before and just after each run (the same work each time: a higher figure"
          "\nmeans the machine was slower then, and every figure of the run moves with it)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

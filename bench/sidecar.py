"""Tail a JSON-lines file into Loki with ``shipper sidecar``, side by side with Promtail (when
given) and with Loki's own intake of the same lines pre-encoded.

    .venv/bin/python bench/sidecar.py                      # 1,000,000 lines, fake Loki
    LOKI_URL=http://localhost:3100 .venv/bin/python bench/sidecar.py --lines 200000
    LOKI_BIN=/path/to/loki .venv/bin/python bench/sidecar.py --promtail /path/to/promtail --repeat 3

Each measurement runs in its own process. The sidecar is started as users start it
(``python -m shipper sidecar --config ...``) on a file written beforehand, and as an installed
sidecar starts: its modules compiled to ``.pyc`` first, as pip does (a shell's
``PYTHONDONTWRITEBYTECODE`` would make every start compile them all); the figures are
taken from its start until Loki has answered 204 for every line (the sidecar's
``shipper_sidecar_events_sent_total``), and Loki's own count (the fake's counter, or a LogQL
``count_over_time`` on a real Loki) is checked after that:

* events/s delivered;
* CPU seconds per million lines (user + system of the shipper's processes, its worker
  processes included, from /proc);
* peak RSS (VmHWM, summed over those processes);
* a machine check: the CPU µs this process takes to parse one of the file's lines, just
  before and after each run (this machine's speed drifts: a slow moment shows here too).

``--promtail PATH`` runs Promtail (3.6) on the same file twice per round: with the pipeline
that does the sidecar's work (``json`` stage, ``level``, ``type`` and ``actor`` as labels,
the actor id and the request id as structured metadata, the line's own time by a
``timestamp`` stage), and with no pipeline stages at all. Promtail is done when its
``promtail_sent_entries_total`` reaches the file's lines. Without the binary its runs are
skipped, saying so.

Where Loki is: ``LOKI_BIN`` (a Loki 3.7 binary) starts a fresh Loki for every run, from
loki/config.yaml with raised ingestion limits, on its own ports and data directory, and
reports its CPU per run; else ``LOKI_URL`` (one Loki for every run; ``--loki-pid`` adds its
CPU); else the fake Loki (count only, its own process). ``--repeat N`` runs every
configuration N times, in turn, so that each sees the machine as the others do.

Beside them, Loki's intake of the same lines, already encoded as push requests of 1 MiB, sent
by 2 client processes as fast as Loki takes them: the ceiling any collector can reach against
this Loki.

``--profile`` samples the sidecar with py-spy (every thread) and prints where its time goes.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, the repository not
    sys.path.insert(0, str(ROOT))


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
    """Counts what a Loki (fake or real) holds for one service; ``pid``: its process, when it
    runs on this machine (its CPU is then reported per run)."""

    def __init__(self, url: str | None, work: Path, pid: int | None = None) -> None:
        self.fake: subprocess.Popen[bytes] | None = None
        self.pid = pid
        if url is None:
            port = _free_port()
            self.fake = subprocess.Popen(
                [sys.executable, "-m", "tests.support.fakeloki", "--port", str(port),
                 "--no-rate-limit", "--count-only"], cwd=ROOT, stdout=subprocess.PIPE)
            assert self.fake.stdout is not None
            self.fake.stdout.readline()
            url = f"http://127.0.0.1:{port}"
        self.url = url.rstrip("/")

    def cpu(self) -> float:
        """CPU seconds Loki's process has spent so far (0 when it is not known)."""
        return _proc_figures(self.pid)[0] if self.pid else 0.0

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


@contextlib.contextmanager
def loki_for_run(loki_bin: str | None, shared: Loki | None, work: Path) -> Iterator[Loki]:
    """A fresh Loki from ``loki_bin`` (loki/config.yaml, raised limits, its own ports and data
    directory; stopped after the run), else the ``shared`` one."""
    if not loki_bin:
        assert shared is not None
        yield shared
        return
    from bench.scale import single_binary

    with single_binary(loki_bin) as proc:
        yield Loki(proc.url, work, pid=proc.popen.pid)


def _sent(port: int, metric: str = "shipper_sidecar_events_sent_total") -> float:
    """The sum of ``metric``'s samples (every label set) on ``port``'s /metrics."""
    total = 0.0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(metric) and line[len(metric):][:1] in (" ", "{"):
                    total += float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return total


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installed_env() -> dict[str, str]:
    """The environment of a sidecar started as an installed one starts: the package compiled
    to ``.pyc`` now (pip compiles at install) and ``PYTHONDONTWRITEBYTECODE`` left out, which
    would otherwise make every start compile every module it imports (a third of its start-up
    CPU) and measure what no installed sidecar spends."""
    compileall.compile_dir(ROOT / "shipper", quiet=1)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


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
    env = installed_env()
    spy: list[subprocess.Popen[bytes]] = []

    def started(proc: subprocess.Popen[bytes]) -> None:
        if profile:  # py-spy samples every thread (cProfile would only see the main one),
            # and only the one holding the GIL: where the process's Python time goes
            spy.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid),
                 "--rate", "250", "--format", "raw", "--gil", "--output",
                 str(work / "profile.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def delivered() -> None:
        for s in spy:
            s.send_signal(signal.SIGINT)
            s.wait(30)
            print_profile(work / "profile.txt")

    # the sidecar's own count of entries Loki answered 204 for
    return _measure(cmd, loki, n, service, metrics_port, "shipper_sidecar_events_sent_total",
                    started, delivered, env=env)


#: Promtail's pipeline doing the sidecar's work on the benchmark's lines: level, type and actor
#: as labels, the actor id and the request id as structured metadata (the sidecar's
#: ``actor_id`` and ``trace_id``), the line's own time (pino's epoch milliseconds)
PROMTAIL_STAGES: list[dict[str, Any]] = [
    {"json": {"expressions": {"level": "level", "type": "type", "actor": "actor",
                              "actor_id": "actorId", "trace_id": "reqId", "time": "time"}}},
    {"labels": {"level": None, "type": None, "actor": None}},
    {"structured_metadata": {"actor_id": None, "trace_id": None}},
    {"timestamp": {"source": "time", "format": "UnixMs"}},
]


def promtail_config(loki_url: str, log: Path, work: Path, service: str, http_port: int,
                    stages: list[dict[str, Any]]) -> dict[str, Any]:
    """A Promtail configuration tailing ``log`` into ``loki_url`` with ``stages`` (Promtail's
    defaults otherwise: batches of 1 MiB or 1 s, as the sidecar's); JSON, which is YAML."""
    parts = urllib.parse.urlsplit(loki_url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    client: dict[str, Any] = {"url": f"{parts.scheme}://{host}"
                                     f"{parts.path.rstrip('/')}/loki/api/v1/push"}
    if parts.username:  # a gateway: the same login the shipper's clients send
        client["basic_auth"] = {"username": urllib.parse.unquote(parts.username),
                                "password": urllib.parse.unquote(parts.password or "")}
    return {
        "server": {"http_listen_address": "127.0.0.1", "http_listen_port": http_port,
                   "grpc_listen_address": "127.0.0.1", "grpc_listen_port": _free_port(),
                   "log_level": "warn"},
        "positions": {"filename": str(work / f"positions-{service}.yaml")},
        "clients": [client],
        "scrape_configs": [{
            "job_name": service,
            "static_configs": [{"targets": ["localhost"],
                                "labels": {"service_name": service, "__path__": str(log)}}],
            "pipeline_stages": stages,
        }],
    }


def run_promtail(binary: str, loki: Loki, log: Path, n: int, work: Path, service: str,
                 stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Promtail on the same file, done when its ``promtail_sent_entries_total`` (entries Loki
    answered 2xx for) reaches ``n``."""
    port = _free_port()
    config = work / f"{service}.yaml"
    config.write_text(json.dumps(promtail_config(loki.url, log, work, service, port, stages)))
    return _measure([binary, f"-config.file={config}"], loki, n, service, port,
                    "promtail_sent_entries_total")


def _measure(cmd: list[str], loki: Loki, n: int, service: str, metrics_port: int,
             metric: str, started: Callable[[subprocess.Popen[bytes]], None] | None = None,
             delivered: Callable[[], None] | None = None,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` (in ``env``, else this process's environment) until ``metric`` on its
    /metrics reaches ``n``, then check Loki's count; its CPU and peak RSS (with its child
    processes), and Loki's CPU over that time."""
    before = loki.count(service, 0)
    loki_before = loki.cpu()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, env=env)
    if started is not None:
        started(proc)
    cpu = peak = 0.0
    seen: dict[int, tuple[float, int]] = {}
    deadline = start + max(120.0, n / 5000)
    asked = 0.0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        cpu, peak_b = _tree_figures(proc.pid, seen)
        peak = max(peak, peak_b)
        # its own count of entries Loki took (cheap to ask, unlike a LogQL count over a
        # million lines: a scrape costs the sidecar about 0.6 ms of CPU), asked five times a
        # second; Loki's own count is checked once at the end
        if time.monotonic() - asked >= 0.2:
            asked = time.monotonic()
            if _sent(metrics_port, metric) >= n:
                break
    elapsed = time.monotonic() - start
    cpu, peak_b = _tree_figures(proc.pid, seen)
    loki_cpu = loki.cpu() - loki_before
    if delivered is not None:
        delivered()
    count = before
    for _ in range(60):  # a real Loki makes pushes queryable within a second or two
        count = loki.count(service, 0)
        if count - before >= n:
            break
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return {"delivered": count - before, "seconds": elapsed, "cpu": cpu,
            "peak_rss": max(peak, peak_b), "loki_cpu": loki_cpu,
            "stderr": err.decode(errors="replace")[-400:]}


#: where a sampled stack's time goes: the first of these frames found, innermost first
#: the stages, the innermost first: a sample counts for the first stage one of its frames is in
#: (a file source's thread runs the worker's stages inside ``Pipeline.submit_many`` when it
#: takes a due batch itself, the worker's thread when it does not)
_STAGES = [
    ("redaction", ("Redactor.",)),
    ("entries (labels, JSON line)", ("make_entries", "to_entry")),
    ("encode the push body", ("encode_json",)),
    ("HTTP request to Loki", ("Urllib3Transport.request",)),
    ("LogEvent.create (normalise)", ("LogEvent.create", "new_event")),
    ("JSON parse and the field table (formats.py)", ("LineParser.",)),
    ("queue put, batching, bookkeeping", ("Pipeline.submit", "Batcher.", "Pipeline._process")),
    ("read, split, decode lines (file.py)", ("FileSource.",)),
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
        if any(w in leaf for w in ("wait (threading", "select", "sleep", "_wait_for_tstate")) or (
                "acquire" in leaf and "Batcher.put" not in stack):
            continue  # idle (but for the queue's lock, which a put may wait for)
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


#: one configuration of a run: its row's name, and what runs it (``loki=``, ``service=``)
_Run = tuple[str, Callable[..., dict[str, Any]]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2",
                        help="the sidecar's `workers` settings to run, one after the other "
                             "(default: 1,2)")
    parser.add_argument("--encoding", default="json", choices=["json", "protobuf"],
                        help="the sidecar's loki.encoding (default: json, the default)")
    parser.add_argument("--promtail", metavar="PATH", default=None,
                        help="a Promtail 3.6 binary: run it beside the sidecar, with the "
                             "equivalent pipeline and with none (skipped when absent)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds: every configuration runs once per round, in turn")
    parser.add_argument("--loki-pid", type=int, default=None,
                        help="the Loki of LOKI_URL runs on this machine: print its CPU per run")
    parser.add_argument("--profile", action="store_true",
                        help="sample the sidecar with py-spy and print where its time goes")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",") if w]
    loki_bin = os.environ.get("LOKI_BIN") or None
    url = None if loki_bin else os.environ.get("LOKI_URL") or None
    promtail = args.promtail
    if promtail is not None and not (os.path.isfile(promtail) and os.access(promtail, os.X_OK)):
        print(f"--promtail {promtail}: no executable file there; the Promtail runs are skipped")
        promtail = None

    has_loki_cpu = bool(loki_bin or args.loki_pid)
    rows: list[tuple[str, dict[str, Any]]] = []
    raw: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp:
        work = Path(tmp)
        log = work / "app.log"
        start_ms = time.time_ns() // 1_000_000 - args.lines
        size = write_lines(log, args.lines, start_ms)
        shared = None if loki_bin else Loki(url, work, pid=args.loki_pid)
        from shipper.redact import hide_url_credentials

        target = (f"a fresh Loki per run ({loki_bin}, loki/config.yaml, raised limits)"
                  if loki_bin else "real Loki at " + hide_url_credentials(url) if url
                  else "fake Loki (count only, own process)")
        print(f"{args.lines:,} JSON lines ({size / 1e6:.0f} MB) into {target}; "
              f"load average before: {_load()}")
        runs: list[_Run] = []
        for workers in counts:
            what = "one process" if workers == 1 else f"`workers: {workers}`"
            if args.encoding != "json":
                what += f", {args.encoding}"
            runs.append((f"shipper sidecar, {what}", functools.partial(
                run_sidecar, log=log, n=args.lines, work=work, profile=args.profile,
                workers=workers, encoding=args.encoding)))
        if promtail is not None:
            for name, stages in (("json + labels + structured_metadata + timestamp stages",
                                  PROMTAIL_STAGES), ("no pipeline stages", [])):
                runs.append((f"Promtail, {name}", functools.partial(
                    run_promtail, binary=promtail, log=log, n=args.lines, work=work,
                    stages=stages)))
        try:
            tag = f"bench-{os.getpid()}"
            check = machine_check(log)
            for round_ in range(args.repeat):
                for i, (name, run) in enumerate(runs):
                    with loki_for_run(loki_bin, shared, work) as loki:
                        result = run(loki=loki, service=f"{tag}-{round_}-{i}")
                    after = machine_check(log)  # also the next run's "before"
                    result["check"], check = (check, after), after
                    result["load"] = _load()
                    rows.append((name, result))
                    print(f"run {len(rows)} of {args.repeat * len(runs)}: "
                          f"{_row(name, result, has_loki_cpu)}", flush=True)
            if not args.profile:
                with loki_for_run(loki_bin, shared, work) as loki:
                    raw = run_raw(loki, log, args.lines, f"{tag}-raw")
        finally:
            if shared is not None:
                shared.close()
    print()
    print(f"| run | delivered | seconds | lines/s | CPU s per 1M lines | peak RSS MB |"
          f"{' Loki CPU s per 1M lines |' if has_loki_cpu else ''}"
          " machine check µs/line (before / after) | load average after |")
    print("| --- | --- | --- | --- | --- | --- |" + (" --- |" if has_loki_cpu else "") +
          " --- | --- |")
    failed = 0
    for name, result in rows:
        print(_row(name, result, has_loki_cpu))
        if result["delivered"] < args.lines:
            failed += 1
            print(f"\n{name} delivered only {result['delivered']:,} of {args.lines:,}:\n"
                  f"{result['stderr']}")
    if raw is not None:
        print(f"| Loki's intake of the same lines pre-encoded (2 senders) | "
              f"{raw['delivered']:,} | {raw['seconds']:.1f} | "
              f"{raw['delivered'] / raw['seconds']:,.0f} | - | - |" +
              (" - |" if has_loki_cpu else "") + " - | - |")
    if args.repeat > 1 or promtail is not None:
        _summary(rows)
    print("\nmachine check: CPU µs to parse one of the file's lines in the bench's own process,"
          "\ntaken just before and just after each run (the same work each time: a higher figure"
          "\nmeans the machine was slower then, and every figure of the run moves with it)")
    return 1 if failed else 0


def _load() -> str:
    """The load averages (1, 5, 15 minutes), as `uptime` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _row(name: str, result: dict[str, Any], loki_cpu: bool) -> str:
    done = max(result["delivered"], 1)
    loki_figure = f" {result['loki_cpu'] / done * 1e6:.1f} |" if loki_cpu else ""
    return (f"| {name} | {result['delivered']:,} | {result['seconds']:.1f} | "
            f"{result['delivered'] / result['seconds']:,.0f} | "
            f"{result['cpu'] / done * 1e6:.1f} | {result['peak_rss'] / 1e6:.0f} |{loki_figure} "
            f"{result['check'][0]:.2f} / {result['check'][1]:.2f} | {result['load']} |")


def _summary(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Per configuration: the median and every run; then the sidecar against Promtail."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, result in rows:
        by_name.setdefault(name, []).append(result)
    print("\n| configuration | lines/s: median (each run) | CPU s per 1M lines: median "
          "(range) | peak RSS MB |")
    print("| --- | --- | --- | --- |")
    medians: dict[str, tuple[float, float]] = {}
    for name, results in by_name.items():
        rates = [r["delivered"] / r["seconds"] for r in results]
        cpus = [r["cpu"] / max(r["delivered"], 1) * 1e6 for r in results]
        medians[name] = (statistics.median(rates), statistics.median(cpus))
        print(f"| {name} | {medians[name][0]:,.0f} ({' / '.join(f'{x:,.0f}' for x in rates)}) "
              f"| {medians[name][1]:.1f} ({min(cpus):.1f} to {max(cpus):.1f}) | "
              f"{max(r['peak_rss'] for r in results) / 1e6:.0f} |")
    one = medians.get("shipper sidecar, one process")
    stages = next((v for k, v in medians.items() if k.startswith("Promtail, json")), None)
    bare = medians.get("Promtail, no pipeline stages")
    if one and stages:
        print(f"\none process against Promtail with the equivalent pipeline: "
              f"{one[0] / stages[0]:.2f}x the lines/s (goal: 1.5x)")
    if one and bare:
        print(f"one process's CPU per line against Promtail with no stages: {one[1]:.1f} "
              f"against {bare[1]:.1f} s per 1M lines (goal: no more)")


if __name__ == "__main__":
    sys.exit(main())

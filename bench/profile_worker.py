"""The worker's cost per event, without a network: where the time goes between a queued record
and the request body.

    python bench/profile_worker.py               # CPU per event and the garbage collector's share
    python bench/profile_worker.py --profile     # plus cProfile's top functions
    py-spy record -o worker.svg -- python bench/profile_worker.py   # a flame graph

A ``LokiHandler`` with an in-memory transport that answers 204; N records are queued exactly as
``emit`` queues them, then the pipeline's worker step (``Pipeline._process``: record → entry,
redaction, JSON line, batching, request body) runs over them in batches of 10,000. The figure
is process CPU time (the worker's thread and the sender's), best of three runs.

    python bench/profile_worker.py --sidecar     # the sidecar's file path, CPU per line by thread

``--sidecar`` runs the sidecar as ``shipper sidecar`` does (its garbage collector settings
too) in this process on a file of the JSON lines bench/sidecar.py writes, ``--events`` of them,
with the same in-memory transport: the CPU per line of the whole process and of each of its
threads (the file source's reader, the pipeline's worker, the sender), start-up included.
Run it under py-spy (``--gil``) for where each thread's time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import pstats
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from shipper import LokiHandler
from shipper.delivery.transport import HttpResponse


class _Accept:
    """Answers every push with 204, as fast as possible."""

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, timeout: float) -> HttpResponse:
        return HttpResponse(204)

    def close(self) -> None:
        pass


def sidecar_path(n: int) -> None:
    """The sidecar's file path in this process (see the module's docs)."""
    import json
    import os
    import sys
    import threading
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sidecar import write_lines  # the benchmark's own lines

    from shipper.sidecar.config import load_config
    from shipper.sidecar.runner import Sidecar
    from shipper.sidecar.workers import tune_process

    work = Path(tempfile.mkdtemp(prefix="shipper-profile-"))
    log = work / "app.log"
    write_lines(log, n, time.time_ns() // 1_000_000 - n)
    config = work / "sidecar.yaml"
    config.write_text(json.dumps({
        "loki": {"url": "http://loki.invalid:3100"}, "service": "bench",
        "spool_dir": str(work / "spool"), "positions_file": str(work / "positions.json"),
        "metrics_listen": None,
        "sources": [{"type": "file", "paths": [str(log)], "format": "json"}]}))
    tune_process()
    ticks = os.sysconf("SC_CLK_TCK")

    def thread_cpu() -> dict[int, float]:
        spent = {}
        for task in os.listdir("/proc/self/task"):
            fields = Path(f"/proc/self/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
            spent[int(task)] = (int(fields[11]) + int(fields[12])) / ticks
        return spent

    before = thread_cpu()  # writing the file
    started = time.process_time()
    sidecar = Sidecar(load_config(config), transport=_Accept())
    sidecar.start()
    while sidecar.stats()["sent"] < n:
        time.sleep(0.2)
    cpu = time.process_time() - started
    names = {t.native_id: t.name for t in threading.enumerate()}
    print(f"sidecar, one process: {cpu / n * 1e6:.2f} us of CPU per line ({n:,} lines, "
          "start-up included)")
    for task, total in sorted(thread_cpu().items()):
        spent = total - before.get(task, 0.0)
        if spent > 0:
            name = "main (start-up)" if task == os.getpid() else names.get(task, "a thread")
            print(f"  {spent / n * 1e6:6.2f} us  {name}")
    os._exit(0)  # the sidecar's threads are not stopped: nothing more to measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--sidecar", action="store_true",
                        help="the sidecar's file path instead of the handler's worker")
    args = parser.parse_args()
    n = args.events
    if args.sidecar:
        sidecar_path(n)
        return

    handler = LokiHandler("http://loki.invalid:3100", service="bench",
                          spool_dir=tempfile.mkdtemp(prefix="shipper-profile-"),
                          transport=_Accept())
    queued: list[Any] = []
    handler._put = lambda item, size: queued.append(item) is None  # type: ignore[method-assign]
    log = logging.getLogger("bench.app")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for i in range(n):
        log.info("User %s logged in from %s", i, "203.0.113.9",
                 extra={"type": "LOGIN", "actor": "USER", "actor_id": f"user_{i % 1000}"})
    pipeline = handler.pipeline

    def run() -> None:
        for start in range(0, n, 10_000):
            pipeline._process(queued[start:start + 10_000])
        pipeline._sender.wait_idle(time.monotonic() + 60)

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)

    gc_time = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]

    best = best_gc = float("inf")
    gc.callbacks.append(on_gc)
    for _ in range(3):
        gc_time[0] = 0.0
        start = time.process_time()
        run()
        took = time.process_time() - start
        if took < best:
            best, best_gc = took, gc_time[0]
    gc.callbacks.remove(on_gc)
    stats = pipeline.stats()
    print(f"worker: {best / n * 1e6:.2f} us of CPU per event (garbage collector "
          f"{best_gc / n * 1e6:.2f} us); sent {stats['sent']}, dropped {stats['dropped_total']}")
    handler.close()


if __name__ == "__main__":
    main()

"""The sidecar process: sources → :class:`~shipper.delivery.pipeline.Pipeline` → Loki (with
``workers: N``, file lines are parsed and shipped by the pipelines of N worker processes: see
shipper/sidecar/workers.py).

Start-up is all or nothing: the configuration is checked, the positions file's directory is
proven writable and every port is bound before any source starts; a failure exits 2 with one
line naming what is wrong.

**Positions and delivery (at least once).** Every ``positions_interval`` the runner takes a
snapshot of what each source has *handed to the pipeline* (file offsets up to the last line
submitted; container timestamps), then calls ``Pipeline.flush`` (and each worker's). Only when
every ``flush`` returns True (every event submitted before the snapshot was delivered to Loki
or written to the spool) is that snapshot saved. So a saved position never runs ahead of what
Loki or the spool holds: after a SIGKILL, a crash or a power cut (with ``spool_fsync``), the
sidecar reads again from the last saved position; the lines read twice carry the same
timestamp when it comes from the line, and Loki drops such exact duplicates.

SIGTERM (and SIGINT): stop taking HTTP requests, read the files to their end and ship what is
held, flush the pipeline, save positions, close the pipeline (what Loki did not take by then
goes to the spool), save positions again, and exit within ``drain_timeout``. SIGHUP: expand the
globs and reopen every file now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from shipper.delivery.pipeline import Pipeline
from shipper.delivery.transport import Transport
from shipper.redact import hide_url_credentials
from shipper.sidecar.config import FileSourceConfig, SidecarConfig
from shipper.sidecar.positions import FilePosition, Positions, PositionsStore
from shipper.sidecar.pressure import QueueGauge, ReadAhead
from shipper.sidecar.promtail import PromtailPositionsError, adopt_promtail_positions
from shipper.sidecar.readiness import Readiness
from shipper.sidecar.server import StartupError
from shipper.sidecar.sources import Lane, Source, Wiring, source_class
from shipper.sidecar.sources.base import parser_spec
from shipper.sidecar.sources.file import FileSource
from shipper.sidecar.workers import WorkerPool

__all__ = ["HEALTH_FILES", "Sidecar", "StartupError", "run"]

#: a heartbeat lists at most this many files (those furthest behind); its totals count all
HEALTH_FILES = 20


def _say(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"shipper sidecar: {message}\n")
        sys.stderr.flush()


class Sidecar:
    def __init__(self, config: SidecarConfig, *, transport: Transport | None = None) -> None:
        self.config = config
        self._transport = transport
        self.pipeline: Pipeline | None = None
        self.positions = PositionsStore(config.positions_file, _say)
        self.sources: list[Source[Any]] = []
        self._ops: Any = None
        #: what /ready answers, and the probe of Loki behind it (with metrics_listen)
        self.readiness = Readiness(self)
        self._stop = threading.Event()
        self._stopped = False
        self._save_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._read_ahead = ReadAhead.of(config.loki)
        self._draining = False
        #: with `workers: N` (N >= 2) and file sources
        self._pool: WorkerPool | None = None
        #: file path -> Promtail's offset (promtail_positions), for files found at start-up
        self._promtail: dict[str, int] = {}
        self.exit_code = 0

    # ------------------------------------------------------------------ start-up

    def start(self) -> None:
        """Prepare everything that can fail, then start; raises StartupError."""
        config = self.config
        saved = Positions()
        if any(source_class(s.type).keeps_positions for s in config.sources):
            try:
                self.positions.check_writable()
            except OSError as exc:
                raise StartupError(f"positions_file: {config.positions_file}: cannot write "
                                   f"there ({exc.strerror or exc})") from None
            taken_over = os.path.lexists(config.positions_file)  # before a damaged one goes
            saved = self.positions.load()
            try:
                self._promtail = adopt_promtail_positions(
                    config.promtail_positions, config.positions_file, taken_over=taken_over,
                    say=_say)
            except PromtailPositionsError as exc:
                raise StartupError(f"promtail_positions: {exc} (fix it, or remove the "
                                   "setting to start files as start_at says)") from None
        spool_dir = config.loki.resolved_spool_dir()
        if spool_dir is not None:
            try:
                spool_dir.mkdir(parents=True, exist_ok=True)
                probe = spool_dir / f".probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise StartupError(f"spool_dir: {spool_dir}: cannot write there "
                                   f"({exc.strerror or exc})") from None
        _raise_open_files_limit()
        self.pipeline = Pipeline(config.loki, transport=self._transport)
        try:
            files = [s for s in config.sources if isinstance(s, FileSourceConfig)]
            if config.workers > 1 and files:
                self._pool = WorkerPool(
                    config.workers, config.loki,
                    [parser_spec(s, config.loki.service, config.loki.env) for s in files],
                    self._read_ahead, [(f"file#{i}", s.drop) for i, s in enumerate(
                        config.sources) if isinstance(s, FileSourceConfig)])
                try:
                    self._pool.start()
                except RuntimeError as exc:
                    raise StartupError(f"workers: {exc}") from None
            self._build_sources(saved)
            if self.pipeline.heartbeat is not None:
                self.pipeline.heartbeat.details = self.health_details
            if config.metrics_listen:
                _needs("prometheus_client", "metrics_listen", "sidecar",
                       " (or set metrics_listen: null)")
                from shipper.sidecar.metrics import OpsServer

                self._ops = OpsServer(config.metrics_listen, self)
        except BaseException:
            self._abort()
            raise
        for source in self.sources:
            source.start()
        if self._ops is not None:
            self.readiness.start()
            self._ops.start()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="shipper-positions", daemon=True)
        self._checkpointer.start()
        _say(self.describe())

    def _build_sources(self, saved: Positions) -> None:
        """Every source, by the ``type`` of its configuration (see shipper/sidecar/sources/);
        the file sources' lines go to the worker processes when there are some."""
        assert self.pipeline is not None
        pool = self._pool
        gauge = QueueGauge(self.pipeline, self._read_ahead,
                           pool.busy if pool is not None else None)
        loki = self.config.loki
        files = 0
        for i, config in enumerate(self.config.sources):
            kind = source_class(config.type)
            if kind.needs is not None:
                module, extra = kind.needs
                _needs(module, f"sources[{i}] (type: {config.type})", extra)
            lane = None
            if pool is not None and isinstance(config, FileSourceConfig):
                lane = Lane(pool.shipper(files), pool.invalid(files), pool.dropped(files))
                files += 1
            self.sources.append(kind.build(config, Wiring(
                name=config.name or f"{config.type}#{i}", pipeline=self.pipeline,
                service=loki.service, env=loki.env, saved=saved, pressure=gauge.pressure,
                overloaded=gauge.overloaded, report=_say, lane=lane,
                promtail=self._promtail)))

    def _abort(self) -> None:
        for source in self.sources:
            source.close()
        if self._pool is not None:
            self._pool.close(1.0)
        if self.pipeline is not None:
            self.pipeline.close(0)

    def describe(self) -> str:
        parts = []
        for source in self.sources:
            parts.append(f"{source.name} {source.describe()}")
        loki = self.config.loki.url or "no Loki URL (spool only)"
        ops = (f"; /ready, /healthz and /metrics on {self._ops.server.url}" if self._ops
               else "")
        workers = (f"; files parsed and shipped by {self.config.workers} worker processes"
                   if self._pool is not None else "")
        line = f"started: {'; '.join(parts)}; shipping to {loki}{workers}{ops}"
        return hide_url_credentials(line)

    def health_details(self) -> dict[str, Any]:
        """What the sidecar adds to its heartbeats: how far behind its files are. ``lag_bytes``
        (all files), ``lag_files`` (files behind), the file furthest behind
        (``lag_max_path``, ``lag_max_bytes``: a flat pair that ``| json`` makes labels of), and
        ``files``, the :data:`HEALTH_FILES` furthest behind as ``{path, lag_bytes}``."""
        files = [(status.path, status.lag_bytes) for source in self.sources
                 if isinstance(source, FileSource) for status in source.status()]
        files.sort(key=lambda item: (-item[1], item[0]))
        worst_path, worst = files[0] if files else ("", 0)
        return {
            "role": "sidecar",
            "lag_bytes": sum(lag for _, lag in files),
            "lag_files": sum(1 for _, lag in files if lag > 0),
            "lag_max_path": worst_path,
            "lag_max_bytes": worst,
            "files": [{"path": path, "lag_bytes": lag} for path, lag in files[:HEALTH_FILES]],
        }

    def stats(self) -> dict[str, Any]:
        """The pipeline's :meth:`~shipper.delivery.pipeline.Pipeline.stats`, with the counters of
        the worker processes added (``workers: N``)."""
        assert self.pipeline is not None
        stats = self.pipeline.stats()
        return self._pool.add_stats(stats) if self._pool is not None else stats

    # ------------------------------------------------------------------ running

    def problems(self) -> list[str]:
        """What makes /healthz answer 503 (empty: healthy): a source stopped or stalled, a
        worker process gone, the drain under way."""
        out = []
        if self._draining:
            out.append("draining: shutting down")
        if self._pool is not None:
            out.extend(self._pool.problems())
        for source in self.sources:
            problem = source.problem()
            if problem is not None:
                out.append(problem)
        return out

    def failures(self) -> list[str]:
        """What stops the sidecar (exit 1, so that the orchestrator restarts it): a source
        whose thread ended, a worker process gone. A stalled source (a hung filesystem) is not
        one: it may come round again, and /healthz says it meanwhile."""
        out = self._pool.problems() if self._pool is not None else []
        for source in self.sources:
            problem = None if source.alive else source.problem()
            if problem is not None:
                out.append(problem)
        return out

    def _snapshot(self) -> Positions:
        files: dict[tuple[int, int], FilePosition] = {}
        containers: dict[str, int] = {}
        for source in self.sources:
            positions = source.positions()
            for pos in positions.files:
                files[(pos.dev, pos.ino)] = pos
            containers.update(positions.containers or {})
        return Positions(tuple(files.values()), containers)

    def checkpoint(self, timeout: float) -> bool:
        """Save positions if everything read so far was taken by Loki or the spool."""
        assert self.pipeline is not None
        snapshot = self._snapshot()
        if not self._flush(timeout):
            return False
        self._save(snapshot)
        return True

    def _flush(self, timeout: float) -> bool:
        """Flush the pipeline and every worker's (see shipper/sidecar/workers.py)."""
        assert self.pipeline is not None
        deadline = time.monotonic() + timeout
        if not self.pipeline.flush(timeout):
            return False
        return self._pool is None or self._pool.flush(max(deadline - time.monotonic(), 0.1))

    def _save(self, snapshot: Positions) -> None:
        if not any(s.keeps_positions for s in self.sources):
            return
        with self._save_lock:
            try:
                self.positions.save(snapshot)
            except OSError as exc:
                _say(f"cannot save positions to {self.positions.path} "
                     f"({exc.strerror or exc}); trying again in "
                     f"{self.config.positions_interval:g}s")

    def _checkpoint_loop(self) -> None:
        interval = self.config.positions_interval
        while not self._stop.wait(interval):
            try:
                self.checkpoint(timeout=max(interval * 5, 10.0))
            except Exception as exc:  # keep checkpointing; say what went wrong
                _say(f"saving positions failed: {type(exc).__name__}: {exc}")

    def request_stop(self) -> None:
        self._stop.set()

    def reopen(self) -> None:
        for source in self.sources:
            source.reopen()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, drain; the exit code."""
        previous: dict[int, Any] = {}

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            _say("SIGHUP: reopening files")
            self.reopen()

        for sig, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                             (signal.SIGHUP, on_hup)):
            previous[sig] = signal.signal(sig, handler)
        try:
            self.start()
            while not self._stop.wait(0.5):
                trouble = self.failures()
                if trouble:
                    _say("; ".join(trouble) + ": stopping")
                    self.exit_code = 1
                    break
            self.shutdown()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
        return self.exit_code

    def shutdown(self, timeout: float | None = None) -> None:
        """Drain within ``drain_timeout``: stop sources, ship, save positions, close."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._draining = True
        self.readiness.stop()
        assert self.pipeline is not None
        started = time.monotonic()
        deadline = started + (self.config.drain_timeout if timeout is None else timeout)
        # receivers first (no new requests), then readers: read to the end and ship what is held
        for source in sorted(self.sources, key=lambda s: not s.receiver):
            source.stop(deadline=started + (deadline - started) * 0.5)
        if self._checkpointer is not None:
            self._checkpointer.join(max(deadline - time.monotonic(), 0.1))
        before = self.stats()["dropped_total"]
        snapshot = self._snapshot()
        # what is left after the flush closes the pipelines (the workers' in parallel)
        reserve = 0.5 if self._pool is None else 1.5
        delivered = self._flush(max(deadline - time.monotonic() - reserve, 0.1))
        if delivered:
            self._save(snapshot)
        workers_closed = True
        if self._pool is not None:  # they close their pipelines alongside ours
            workers_closed = self._pool.close(max(deadline - time.monotonic(), 0.1))
        self.pipeline.close(max(deadline - time.monotonic(), 0.1))
        stats = self.stats()
        if not delivered and workers_closed and stats["dropped_total"] == before:
            self._save(snapshot)  # close() put what Loki had not taken into the spool
        if self._ops is not None:
            self._ops.stop()
        spool = stats.get("spool")
        waiting = f", {spool.bytes} bytes waiting in the spool" if spool and spool.bytes else ""
        _say(f"stopped after {time.monotonic() - started:.1f}s: sent {stats['sent']}, "
             f"spooled {stats['spooled']}, refused {stats['refused_total']} requests, "
             f"dropped {stats['dropped_total']}{waiting}")


def _needs(module: str, what: str, extra: str, alternative: str = "") -> None:
    """Fail start-up clearly when an optional dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise StartupError(f"{what} needs the {module} package: pip install "
                           f"'shipper[{extra}]'{alternative}")


def _raise_open_files_limit() -> None:
    """Files stay open while they are tailed: lift the soft open-files limit (often 1024) to
    the hard one, as servers that hold many files do."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed
        pass


def run(config: SidecarConfig) -> int:
    """Run the sidecar in this process until SIGTERM; the exit code."""
    sidecar = Sidecar(config)
    try:
        return sidecar.run()
    except StartupError as exc:
        _say(f"cannot start: {exc}")
        sidecar._abort()
        return 2

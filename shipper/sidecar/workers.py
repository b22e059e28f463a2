"""Worker processes that parse and ship file lines (``workers: N`` in the sidecar's file).

One Python process reads, parses, converts, encodes and sends under one interpreter lock: about
50,000 lines/s, one core. With ``workers: N`` (N ≥ 2) the sidecar's own process only *reads*
files (split, decode, multi-line joining, offsets and positions) and hands the lines of each
read, as text, to its N worker processes in turn. Each worker parses them with the same
:class:`~shipper.sidecar.formats.LineParser`, applies the source's drop rules
(shipper/sidecar/drop.py: the counts go back with its other counters) and submits the events
to its own :class:`~shipper.delivery.pipeline.Pipeline`: the same batcher, client, redaction
and spool as the handler, with the same Loki settings and the same spool directory (the spool
is safe for several processes). Nothing else changes: HTTP and Docker sources stay in the main
process.

* **Order.** The reads of one file go to different workers, so one stream's lines reach Loki
  over N connections, not in file order. Loki accepts that (``unordered_writes``, on by
  default and in ``loki/config.yaml``); each line keeps the timestamp it carries, and lines
  without one are numbered in reading order.
* **Positions.** A file's offset moves once its lines are written to a worker's pipe. A
  checkpoint sends ``flush`` down every pipe after those lines; a worker answers once its
  pipeline has delivered (or spooled) everything it took before that message. Positions are
  saved only when every worker and the main pipeline answered True, so a saved offset never
  runs ahead of what Loki or the spool holds (at least once, as with one process).
* **Backpressure.** Each worker reports its queue load after every read it took; the reader
  waits (the file is the buffer) while a worker has two reads in flight or a full queue.
* **Signals.** Workers ignore SIGTERM, SIGINT and SIGHUP (a deploy signals the whole process
  group): the main process drains them. A worker whose main process died sees its pipe close,
  closes its pipeline (the queue goes to the spool) and exits. A worker that dies makes the
  sidecar stop with exit code 1 without saving positions past its last checkpoint, so a
  restart reads its lines again.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shipper.config import ShipperConfig
from shipper.sidecar.pressure import ReadAhead

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["SWITCH_INTERVAL", "WorkerPool", "tune_process"]

#: reads a worker may hold beyond the one it parses before the reader waits
_IN_FLIGHT = 2
#: how long past its deadline a worker may take to write its queue to the spool when closing
_CLOSE_GRACE = 3.0
#: how often a worker sends its pipeline's counters to the main process
_STATS_EVERY = 0.5
#: the counters summed across processes for /metrics and the summary line
_SUMMED = ("accepted", "sent", "retried", "spooled", "replayed", "refused_events", "queued",
           "sent_bytes")


class WorkerError(RuntimeError):
    """A worker process is gone; the lines handed to it are read again after a restart."""


class _Worker:
    """The main process's handle on one worker: its pipes and what it last reported."""

    def __init__(self, index: int, process: Any, inbox: Connection, outbox: Connection) -> None:
        self.index = index
        self.process = process
        self.inbox = inbox  # main → worker
        self.outbox = outbox  # worker → main
        self.send_lock = threading.Lock()
        self.cond = threading.Condition()
        self.ready = False
        self.in_flight = 0
        self.full = False  # its queue holds a reader's read-ahead
        self.stats: dict[str, Any] = {}
        self.invalid: list[int] = []
        self.dropped: list[dict[str, int]] = []  # per file source: lines dropped, by reason
        self.awaited: set[int] = set()  # flush tickets someone still waits for
        self.flushed: dict[int, bool] = {}
        self.closed: bool | None = None  # the answer to "close": nothing dropped
        self.gone: str | None = None
        self.exitcode: int | None = None  # set once the process was reaped
        self.reader: threading.Thread | None = None

    def wait(self, done: Callable[[_Worker], bool], deadline: float) -> None:
        """Wait (holding ``cond``) until ``done(self)``, the worker is gone, or the deadline."""
        self.cond.wait_for(lambda: done(self) or self.gone is not None,
                           max(deadline - time.monotonic(), 0.0))

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            if self.gone is not None:
                raise WorkerError(f"worker process {self.index} {self.gone}")
            try:
                self.inbox.send(message)
            except OSError as exc:
                raise WorkerError(f"worker process {self.index} is gone ({exc})") from None

    def listen(self) -> None:
        """The main process's thread that takes this worker's reports."""
        try:
            while True:
                message = self.outbox.recv()
                kind = message[0]
                with self.cond:
                    if kind == "took":
                        self.in_flight -= 1
                        self.full = message[1]
                    elif kind == "stats":
                        self.stats, self.invalid, self.full = message[1], message[2], message[3]
                        self.dropped = message[4]
                    elif kind == "flushed":
                        if message[1] in self.awaited:  # not one that timed out already
                            self.flushed[message[1]] = message[2]
                    elif kind == "ready":
                        self.ready = True
                    elif kind == "closed":
                        self.closed = message[1]
                    self.cond.notify_all()
        except (EOFError, OSError):
            pass
        except Exception as exc:  # a report that cannot be read: the worker is of no use
            with contextlib.suppress(Exception):
                sys.stderr.write(f"shipper sidecar: worker process {self.index}: unreadable "
                                 f"report ({type(exc).__name__}: {exc}); stopping it\n")
            with contextlib.suppress(OSError):
                self.process.kill()
        self.process.join(5)  # only this thread waits for the process (no two waitpid())
        with self.cond:
            self.exitcode = self.process.exitcode
            if self.closed is None:
                self.gone = _how_it_ended(self.exitcode)
            else:
                self.gone = "closed"
            self.cond.notify_all()


class WorkerPool:
    """N worker processes that parse and ship the file sources' lines."""

    def __init__(self, count: int, loki: ShipperConfig, parsers: list[dict[str, Any]],
                 read_ahead: ReadAhead, drops: list[tuple[str, tuple[Any, ...]]] | None = None,
                 ) -> None:
        self._count = count
        self._loki = loki
        self._parsers = parsers
        #: each file source's name and drop rules (shipper/sidecar/drop.py), as ``parsers``
        self._drops = drops or [("", ())] * len(parsers)
        self._read_ahead = read_ahead
        self._workers: list[_Worker] = []
        self._tickets = 0
        self._ticket_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        """Start the workers and wait until each has its pipeline; raises RuntimeError."""
        # imported here: a sidecar without workers never starts a process (multiprocessing,
        # pickle and subprocess cost its every start some milliseconds of CPU)
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        for index in range(self._count):
            inbox_r, inbox_w = context.Pipe(duplex=False)
            outbox_r, outbox_w = context.Pipe(duplex=False)
            process = context.Process(
                target=_serve, name=f"shipper-sidecar-worker-{index}", daemon=True,
                args=(index, self._loki, self._parsers, self._read_ahead, inbox_r, outbox_w,
                      self._drops))
            process.start()
            inbox_r.close()
            outbox_w.close()
            worker = _Worker(index, process, inbox_w, outbox_r)
            worker.reader = threading.Thread(target=worker.listen, daemon=True,
                                             name=f"shipper-worker-{index}")
            worker.reader.start()
            self._workers.append(worker)
        # Runs before multiprocessing's own exit handler, which would wait forever for workers
        # that ignore SIGTERM: an exit that skipped close() closes their pipes instead.
        atexit.register(self._abandon)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            with worker.cond:
                worker.wait(lambda w: w.ready, deadline)
                if not worker.ready:
                    raise RuntimeError(f"worker process {worker.index} did not start "
                                       f"({worker.gone or 'no answer'}; see its stderr above)")

    def flush(self, timeout: float) -> bool:
        """True once every worker delivered or spooled all it took before this call."""
        deadline = time.monotonic() + timeout
        tickets: list[tuple[_Worker, int]] = []
        ok = True
        for worker in self._workers:
            ticket = self._ticket()
            with worker.cond:
                worker.awaited.add(ticket)
            tickets.append((worker, ticket))
            try:
                worker.send(("flush", ticket, timeout))
            except WorkerError:
                ok = False
                break
        for worker, ticket in tickets:
            with worker.cond:
                if ok:
                    worker.wait(lambda w, t=ticket: t in w.flushed,  # type: ignore[misc]
                                deadline)
                worker.awaited.discard(ticket)
                ok = worker.flushed.pop(ticket, False) and ok
        return ok

    def close(self, timeout: float) -> bool:
        """Close every worker's pipeline within ``timeout`` and wait for them to exit. As
        ``Pipeline.close`` does in one process, a worker writes what Loki did not take by then
        to the spool, which takes the time it takes: up to ``_CLOSE_GRACE`` more is allowed for
        that. True if every worker closed and dropped nothing."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            with contextlib.suppress(WorkerError):
                worker.send(("close", max(timeout - 0.2, 0.1)))
        ok = True
        for worker in self._workers:
            with worker.cond:
                worker.wait(lambda w: w.closed is not None, deadline + _CLOSE_GRACE)
                ok = bool(worker.closed) and ok
            with contextlib.suppress(OSError):
                worker.inbox.close()
            with worker.cond:  # its listening thread sees the pipe close and reaps it
                worker.wait(lambda w: False, deadline + _CLOSE_GRACE)
                exited = worker.exitcode is not None
            if not exited:
                with contextlib.suppress(OSError):
                    worker.process.terminate()
                ok = False
        return ok

    def _abandon(self) -> None:
        """The sidecar exits without close(): each worker sees its pipe close, closes its
        pipeline (what Loki did not take goes to the spool) and exits."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.inbox.close()

    def _ticket(self) -> int:
        with self._ticket_lock:
            self._tickets += 1
            return self._tickets

    # ------------------------------------------------------------------ the readers' side

    def shipper(self, parser: int) -> Callable[[list[str], int, list[str | None] | None], None]:
        """What a file source calls with each read's texts: the workers take them in turn.
        (Measured: letting a worker keep a file's reads while it has room, for longer runs in
        file order, made neither Loki's work nor the throughput better.)"""
        workers = self._workers
        turn = [0]

        def ship(texts: list[str], first_ns: int, rests: list[str | None] | None) -> None:
            worker = workers[turn[0]]
            turn[0] = (turn[0] + 1) % len(workers)
            with worker.cond:
                worker.in_flight += 1
            worker.send(("lines", parser, first_ns, texts, rests))

        return ship

    def invalid(self, parser: int) -> Callable[[], int]:
        """Lines of source ``parser`` the workers found invalid in its format."""
        def count() -> int:
            return sum(w.invalid[parser] for w in self._workers if len(w.invalid) > parser)

        return count

    def dropped(self, parser: int) -> Callable[[], dict[str, int]]:
        """Lines of source ``parser`` the workers' drop rules kept out, by reason."""
        def count() -> dict[str, int]:
            out: dict[str, int] = {}
            for worker in self._workers:
                with worker.cond:
                    theirs = dict(worker.dropped[parser]) if len(worker.dropped) > parser \
                        else {}
                for reason, n in theirs.items():
                    out[reason] = out.get(reason, 0) + n
            return out

        return count

    def busy(self) -> bool:
        """True while a reader should wait: a worker holds enough reads or a full queue (a
        gone worker fails the next read at once instead)."""
        return any(w.gone is None and (w.in_flight >= _IN_FLIGHT or w.full)
                   for w in self._workers)

    def problems(self) -> list[str]:
        return [f"worker process {w.index} {w.gone}" for w in self._workers
                if w.gone is not None and w.closed is None]

    def add_stats(self, stats: dict[str, Any]) -> dict[str, Any]:
        """The main pipeline's ``stats()`` plus every worker's counters."""
        out = dict(stats)
        out["refused"] = dict(stats["refused"])
        out["dropped"] = dict(stats["dropped"])
        out["refused_entries"] = dict(stats["refused_entries"])
        out["push_seconds"] = {cls: (list(counts), total)
                               for cls, (counts, total) in stats["push_seconds"].items()}
        for worker in self._workers:
            with worker.cond:
                theirs = worker.stats
            if not theirs:
                continue
            for key in _SUMMED:
                out[key] += theirs.get(key, 0)
            for key in ("refused", "dropped", "refused_entries"):
                for reason, n in theirs.get(key, {}).items():
                    out[key][reason] = out[key].get(reason, 0) + n
            for cls, (counts, total) in theirs.get("push_seconds", {}).items():
                mine = out["push_seconds"].setdefault(cls, ([0] * len(counts), 0.0))
                out["push_seconds"][cls] = ([a + b for a, b in zip(mine[0], counts,
                                                                   strict=True)],
                                            mine[1] + total)
            out["offline"] = out["offline"] or theirs.get("offline", False)
            # what Loki said last, to any of the pipelines; the spool takes events only if
            # every pipeline's does
            answer = theirs.get("loki_answer")
            if answer is not None and (out["loki_answer"] is None
                                       or answer[0] > out["loki_answer"][0]):
                out["loki_answer"] = answer
            if theirs.get("spool_writable") is False:
                out["spool_writable"] = False
        out["refused_total"] = sum(out["refused"].values())
        out["dropped_total"] = sum(out["dropped"].values())
        return out


# --------------------------------------------------------------------------- in the worker


def _serve(index: int, loki: ShipperConfig, parser_specs: list[dict[str, Any]],
           read_ahead: ReadAhead, inbox: Connection, outbox: Connection,
           drops: list[tuple[str, tuple[Any, ...]]]) -> None:
    """A worker process: parse what the main process sends and submit it to a pipeline."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the main process drains us
    from shipper.delivery.pipeline import Pipeline
    from shipper.event import LogEvent
    from shipper.sidecar.drop import DropFilter
    from shipper.sidecar.formats import LineParser

    send_lock = threading.Lock()

    def reply(*message: Any) -> None:
        with send_lock, contextlib.suppress(OSError):
            outbox.send(message)

    pipeline = Pipeline(loki)
    if pipeline.heartbeat is not None:
        pipeline.heartbeat.details = lambda: {"role": "sidecar-worker", "worker": index}
    parsers = [LineParser(**spec) for spec in parser_specs]
    filters = [DropFilter.of(rules, name, _say) for name, rules in drops]
    done = threading.Event()

    def report() -> None:
        reply("stats", _counters(pipeline.stats()), [p.invalid for p in parsers],
              read_ahead.full(pipeline), [dict(f.dropped) if f else {} for f in filters])

    def reporter() -> None:
        while not done.wait(_STATS_EVERY):
            report()

    def flush(ticket: int, timeout: float) -> None:
        reply("flushed", ticket, pipeline.flush(timeout))

    # A receiving thread drains the pipe at once, so the main process never waits on a send
    # (the reads it hands over are bounded by _IN_FLIGHT); "close" or a closed pipe stops the
    # wait for room in the queue: what is left is submitted (the overflow goes to the spool).
    inbox_queue: deque[tuple[Any, ...]] = deque()
    arrived = threading.Condition()
    closing = threading.Event()

    def receive() -> None:
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):  # the main process is gone
                message = ("gone",)
            with arrived:
                inbox_queue.append(message)
                arrived.notify()
            if message[0] in ("close", "gone"):
                closing.set()
                return

    tune_process()
    threading.Thread(target=reporter, daemon=True, name="shipper-worker-stats").start()
    threading.Thread(target=receive, daemon=True, name="shipper-worker-inbox").start()
    reply("ready")
    close_timeout = loki.shutdown_timeout
    try:
        while True:
            with arrived:
                while not inbox_queue:
                    arrived.wait()
                message = inbox_queue.popleft()
            kind = message[0]
            if kind == "lines":
                _, parser, first_ns, texts, rests = message
                events: list[LogEvent] = []
                try:
                    parsers[parser].parse_many(texts, first_ns, rests, events)
                finally:  # as in one process: what was parsed goes to the pipeline
                    drop = filters[parser]
                    pipeline.submit_many(events if drop is None else
                                         drop.keep(texts, rests, events), work_here=True)
                full = read_ahead.full(pipeline)
                while full and not closing.is_set():
                    time.sleep(0.005)  # the main process, then the file, wait
                    full = read_ahead.full(pipeline)
                reply("took", full)
            elif kind == "flush":
                # after everything this worker took before the message (submitted above)
                threading.Thread(target=flush, args=message[1:], daemon=True).start()
            elif kind == "close":
                close_timeout = message[1]
                break
            elif kind == "gone":
                break
    except BaseException as exc:  # say why, then close: the queue goes to the spool
        with contextlib.suppress(Exception):
            sys.stderr.write(f"shipper sidecar worker {index}: {type(exc).__name__}: {exc}\n")
        raise
    finally:
        done.set()
        before = pipeline.stats()["dropped_total"]
        pipeline.close(close_timeout)
        report()
        reply("closed", pipeline.stats()["dropped_total"] == before)


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "closed its pipe"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exited (killed by {signal.Signals(-code).name})"
    return f"exited (code {code})"


def _counters(stats: dict[str, Any]) -> dict[str, Any]:
    out = {key: stats[key] for key in _SUMMED}
    out["refused"] = dict(stats["refused"])
    out["dropped"] = dict(stats["dropped"])
    out["offline"] = bool(stats["offline"])
    for key in ("refused_entries", "push_seconds", "loki_answer", "spool_writable"):
        out[key] = stats[key]
    return out


def _say(message: str) -> None:
    """A worker's line on the sidecar's stderr (its drop rules' first drops)."""
    with contextlib.suppress(Exception):
        sys.stderr.write(f"shipper sidecar: {message}\n")
        sys.stderr.flush()


#: how long a thread of the sidecar runs before another waiting for the GIL may take it
#: (CPython's default is 5 ms; see :func:`tune_process`)
SWITCH_INTERVAL = 0.0005


def tune_process() -> None:
    """Interpreter settings for the sidecar's process, which is ours, not an app's.

    The garbage collector: what the process holds from start-up (modules, classes,
    configuration) is frozen out of the collector's walks, and a collection waits for
    100,000 more objects than were freed instead of 700. Events, dicts and tuples are freed
    by reference counting; the collector only looks for cycles, which the pipeline does not
    make per event. A file's read of a few thousand lines is parsed at once and queued: at
    10,000 every read set off a walk over the events just made, all alive, and about a tenth
    of the sidecar's CPU went to collections; at 100,000 a collection comes only while the
    queue grows by that much, and the queue is bounded.

    The thread switch interval: a thread that waited for the network (the sender, when Loki
    answers) runs again only once the thread holding the GIL lets go of it, which a busy
    thread does when the switch interval is up. The sources and the worker are busy with the
    next batches while a request is out, so at CPython's 5 ms the sender waited up to that
    long at each point of a request where it blocks, and Loki waited with it. At 0.5 ms the
    sender's turn comes ten times sooner. The extra switches cost CPU, how much depends on the
    machine: in process (an in-memory Loki) up to 0.8 µs a line on one 2-core machine, 1 to 4
    on another (12.0 to 13.1 µs a line against 9.1 to 11.7 at 5 ms), and about 5% more an
    entry for the HTTP source's ``/v1/events``. Beside a real Loki, on the first machine, it
    gave 80,000 to 90,000 lines/s against 69,000 to 76,000 at 5 ms at about the same CPU a
    line (docs/sidecar.md, "Side by side with Promtail")."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 10, 10)
    sys.setswitchinterval(SWITCH_INTERVAL)

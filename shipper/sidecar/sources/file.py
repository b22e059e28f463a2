"""The file source: tail the files matched by globs, across rotation, truncation and re-creation.

One thread per source polls its open files (``fstat`` every ``poll_interval``: a few system calls
per file, nothing while a file is idle) and expands the globs again every ``scan_interval``.

* The globs are expanded by :class:`~shipper.sidecar.globs.GlobWalk`, in slices of
  ``_SCAN_SLICE`` between two rounds of reading: a symlink loop is gone round once, and a scan
  stops after ``max_scan_entries`` files and directories or ``scan_timeout``, saying so once,
  naming the pattern. Files already followed that a cut scan did not reach stay followed. At
  most ``max_files`` files are followed at once. What is opened must be a regular file (a FIFO
  or a device put in a log file's place is left alone, never waited on) and not a kernel
  pseudo file (``/proc``, ``/sys``: their size is not their content). What is left alone is
  said once per path.
* Health: each turn of the loop, and each file it reads, is a heartbeat. A loop that has not
  come round for :attr:`FileSource.stalled_after` seconds (a hung filesystem) is named by
  :meth:`FileSource.problem`, so /healthz answers 503; a quiet file is not a stall.

* A file is followed by its identity (device, inode), not its name: a file renamed within the
  globs keeps its offset; a file renamed out of them (``app.log`` → ``app.log.1``) or deleted is
  read to its end and closed after a second of quiet; the new file at the old name is read from
  its start. Size below the offset, or a changed fingerprint of the first bytes, means the file
  was truncated in place (copytruncate): it is read again from its start.
* A partial last line is held until its newline comes, or shipped as it is after
  ``partial_line_timeout``. Lines longer than ``max_line_bytes`` keep their first
  ``max_line_bytes`` and end with a marker naming the full size; the rest is skipped without
  being held in memory. Bytes that are not UTF-8 are decoded with U+FFFD.
* Backpressure: while the pipeline's queue is nearly full the source stops reading (the file is
  the buffer), so a burst never overflows the queue.
* Positions: each file's *shipped* offset (the end of the last line whose event was handed to
  the pipeline, lines still held by multi-line joining not included) is what
  :meth:`FileSource.snapshot` reports; the runner saves it once the pipeline has taken those
  events (see shipper/sidecar/runner.py). A file of the first scan with no position of its
  own starts where Promtail stopped when ``promtail_positions`` gave one for its path and it
  passes :func:`~shipper.sidecar.promtail.resume_offset`'s checks (else from its start, said).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from shipper._files import NotALogFile, kind_of, open_log_file
from shipper.event import LogEvent
from shipper.sidecar.config import FileSourceConfig
from shipper.sidecar.drop import DropFilter
from shipper.sidecar.formats import LineParser, cut_line
from shipper.sidecar.globs import GlobWalk
from shipper.sidecar.multiline import Joiner
from shipper.sidecar.positions import FINGERPRINT_BYTES, FilePosition, Positions, fingerprint
from shipper.sidecar.promtail import resume_offset
from shipper.sidecar.sources.base import LineShipper, Sample, Source, Wiring

__all__ = ["FileSource", "FileStatus"]

#: how long a file that left the globs (rotated, deleted) stays open after its last data
_CLOSE_AFTER = 1.0
#: how often each open file's name and fingerprint are checked (rotation, copytruncate)
_CHECK_EVERY = 1.0
#: seconds of walking the directories before the open files get their turn again
_SCAN_SLICE = 0.05
_monotonic = time.monotonic


@dataclass(frozen=True)
class FileStatus:
    """One open file, for /metrics: bytes not read yet and seconds since it was last caught up,
    where it is read up to and its size (as of its last ``fstat``)."""

    path: str
    lag_bytes: int
    lag_seconds: float
    #: bytes read from its start (a partial last line held included); its size when last seen
    offset: int = 0
    size: int = 0


class _Tail:
    __slots__ = (
        "buf", "buf_since", "caught_up_at", "checked_at", "committed", "dev", "emitted_head",
        "fd", "fp", "fp_len", "gone_since", "head", "ino", "joiner", "last_data_at", "path",
        "read_offset", "size", "skip_end", "skip_total", "skipping",
    )

    def __init__(self, path: str, fd: int, dev: int, ino: int, offset: int, head: bytes,
                 now: float) -> None:
        self.path = path
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.read_offset = offset  # bytes consumed (complete lines + held partial line)
        self.committed = offset  # end of the last line handed to the pipeline
        self.size = offset
        self.fp_len = len(head)
        self.fp = fingerprint(head)
        self.buf = b""  # a partial last line
        self.buf_since = 0.0
        self.skipping = False  # inside a line longer than max_line_bytes
        self.head = b""  # its first max_line_bytes
        self.skip_total = 0
        self.skip_end = 0
        self.emitted_head = False
        self.joiner: Joiner[int] | None = None
        self.gone_since: float | None = None  # left the globs or deleted
        self.last_data_at = now
        self.caught_up_at = now
        self.checked_at = now

    def position(self) -> FilePosition:
        return FilePosition(self.path, self.dev, self.ino, self.committed, self.fp_len, self.fp)


class FileSource(Source[FileSourceConfig]):
    kind = "file"
    keeps_positions = True
    #: seconds without a turn of the loop after which :meth:`problem` says it is stalled
    stalled_after = 30.0
    #: the files of one source that get series of their own in /metrics (those furthest
    #: behind first); ``files_followed`` counts them all
    metrics_files = 1000

    def __init__(
        self,
        config: FileSourceConfig,
        *,
        parser: LineParser,
        submit: Callable[[LogEvent], None],
        submit_many: Callable[[list[LogEvent]], None] | None = None,
        saved: Iterable[FilePosition] = (),
        pressure: Callable[[], bool] = lambda: False,
        report: Callable[[str], None] = lambda message: None,
        name: str = "file",
        ship: LineShipper | None = None,
        invalid_elsewhere: Callable[[], int] | None = None,
        dropped_elsewhere: Callable[[], dict[str, int]] | None = None,
        promtail: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._parser = parser
        self._submit = submit
        #: the complete lines of one read go to the pipeline together
        self._submit_many = submit_many or self._submit_each
        #: texts → events → the pipeline: parsed here, or by a worker process (``workers``)
        self._ship: LineShipper = ship or self._parse_here
        self._invalid_elsewhere = invalid_elsewhere
        self._pressure = pressure
        self._report = report
        self._drop = DropFilter.of(config.drop, name, report)
        self._dropped_elsewhere = dropped_elsewhere
        self._saved = {(p.dev, p.ino): p for p in saved}
        #: Promtail's offsets by path (promtail_positions), for the files of the first scan
        self._promtail = dict(promtail or {})
        #: of those: files started where Promtail stopped; files read from their start, why
        self._promtail_used = 0
        self._promtail_refused: list[str] = []
        self._tails: dict[tuple[int, int], _Tail] = {}
        self._lock = threading.Lock()  # the set of tails (snapshot vs open/close)
        self._wake = threading.Event()
        self._stop_at: float | None = None
        self._reopen = False
        self._first_scan = True
        self._next_scan = 0.0
        self._last_ns = 0
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self._walk: GlobWalk | None = None  # the expansion of the globs under way
        self._beat = _monotonic()  # the last turn of the loop (see problem)
        self._at = ""  # the file it was reading then
        #: what was said once (a cut scan, a path left alone), until it changes
        self._said: set[tuple[str, str]] = set()
        # counters, read by /metrics
        self.lines_read = 0
        self.truncated_lines = 0
        self.rotations = 0
        self.truncations = 0
        self.files_opened = 0
        self.scans_cut = 0

    @classmethod
    def build(cls, config: FileSourceConfig, wiring: Wiring) -> FileSource:
        lane = wiring.lane
        return cls(config, parser=wiring.parser(config), submit=wiring.pipeline.submit,
                   submit_many=functools.partial(wiring.pipeline.submit_many, work_here=True),
                   saved=wiring.saved.files,
                   pressure=wiring.pressure, report=wiring.report, name=wiring.name,
                   ship=lane.ship if lane is not None else None,
                   invalid_elsewhere=lane.invalid if lane is not None else None,
                   dropped_elsewhere=lane.dropped if lane is not None else None,
                   promtail=wiring.promtail)

    def _submit_each(self, events: list[LogEvent]) -> None:
        for event in events:
            self._submit(event)

    def _parse_here(self, texts: list[str], first_ns: int,
                    rests: list[str | None] | None) -> None:
        """Parse in this process (see :meth:`LineParser.parse_many`) and submit."""
        events: list[LogEvent] = []
        try:
            self._parser.parse_many(texts, first_ns, rests, events)
        finally:
            drop = self._drop
            self._submit_many(events if drop is None else drop.keep(texts, rests, events))

    # ------------------------------------------------------------------ control

    def describe(self) -> str:
        return f"tailing {', '.join(self.config.paths)} ({self.config.format})"

    def invalid_lines(self) -> int:
        elsewhere = self._invalid_elsewhere
        return self._parser.invalid + (elsewhere() if elsewhere is not None else 0)

    def start(self) -> None:
        self._beat = _monotonic()
        self._thread = threading.Thread(target=self._run, name=f"shipper-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Read what the files hold now (until ``deadline``, a monotonic time), ship held
        lines, close the files."""
        self._stop_at = deadline
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(deadline - _monotonic(), 0.0) + 1.0)

    def reopen(self) -> None:
        """SIGHUP: expand the globs now and reopen every file by its name."""
        self._reopen = True
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failed is None

    def problem(self) -> str | None:
        """Stopped (see :attr:`alive`), or stalled: the loop has not come round for
        :attr:`stalled_after` seconds (a quiet file is not a stall: the loop turns all the
        same)."""
        if not self.alive:
            return super().problem()
        idle = _monotonic() - self._beat
        if idle < self.stalled_after:
            return None
        walk = self._walk
        doing = f"scanning {walk.pattern}" if walk is not None else (
            f"at {self._at}" if self._at else "between files")
        return f"{self.name} is stalled: its loop has not come round for {idle:.0f}s ({doing})"

    def not_ready(self) -> str | None:
        """Not running, or the first expansion of the globs (finding the files) not over."""
        if self.alive and self._first_scan:
            return f"{self.name} has not finished its first scan of {', '.join(self.config.paths)}"
        return super().not_ready()

    def snapshot(self) -> list[FilePosition]:
        """Each file's shipped offset (see the module's docs)."""
        with self._lock:
            positions = [t.position() for t in self._tails.values()]
            positions += self._saved.values()  # saved files not seen yet (first scan pending)
            return positions

    def positions(self) -> Positions:
        return Positions(files=tuple(self.snapshot()))

    def samples(self) -> Iterator[Sample]:
        name = self.name
        yield "lines_truncated", (name,), self.truncated_lines
        yield "file_rotations", (name,), self.rotations
        yield "file_truncations", (name,), self.truncations
        yield "file_scans_cut", (name,), self.scans_cut
        if self._drop is not None:
            yield from self._drop.samples(self._dropped_elsewhere)
        statuses = self.status()
        yield "files_followed", (name,), len(statuses)
        if len(statuses) > self.metrics_files:
            statuses.sort(key=lambda st: st.lag_bytes, reverse=True)
            del statuses[self.metrics_files:]
        for status in statuses:
            yield "file_lag_bytes", (status.path,), status.lag_bytes
            yield "file_lag_seconds", (status.path,), status.lag_seconds
            yield "file_read_bytes", (name, status.path), status.offset
            yield "file_size_bytes", (name, status.path), status.size

    def status(self) -> list[FileStatus]:
        now = _monotonic()
        with self._lock:
            return [
                FileStatus(t.path, max(t.size - t.read_offset, 0),
                           0.0 if t.size <= t.read_offset else round(now - t.caught_up_at, 3),
                           t.read_offset, max(t.size, t.read_offset))
                for t in self._tails.values()
            ]

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            while self._stop_at is None:
                now = self._beat = _monotonic()
                if self._reopen:
                    self._reopen = False
                    self._reopen_all(now)
                walk = self._walk
                if walk is None and now >= self._next_scan:
                    walk = self._start_scan(now)
                if walk is not None:
                    if walk.advance(now + _SCAN_SLICE):
                        self._finish_scan(_monotonic())
                        walk = None
                    now = _monotonic()
                busy = self._poll_all(now)
                if not busy and walk is None:
                    self._wake.wait(self.config.poll_interval)
                    self._wake.clear()
            self._drain()
        except BaseException as exc:  # the runner reports it and /healthz turns 503
            self.failed = exc
            self._report(f"file source {self.name} stopped: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                tails = list(self._tails.values())
            for tail in tails:
                with contextlib.suppress(OSError):
                    os.close(tail.fd)

    def _drain(self) -> None:
        """Stopping: read to the end of every file (until the deadline), then ship what is
        held (partial lines, multi-line records): the app may not write again."""
        assert self._stop_at is not None
        busy = True
        while busy and (now := _monotonic()) < self._stop_at:
            self._beat = now
            busy = self._poll_all(now, draining=True)
        for tail in list(self._tails.values()):
            # Only at the end of a file is what is held its last line (or record). A file the
            # deadline cut short (the pipeline pushing back) holds the start of a line the next
            # read would complete: its offset stays before it, and the restart reads it whole.
            if tail.read_offset >= tail.size:
                self._ship_held(tail)

    def _poll_all(self, now: float, draining: bool = False) -> bool:
        busy = False
        for key, tail in list(self._tails.items()):
            self._at = tail.path
            self._beat = _monotonic()
            try:
                busy = self._poll(tail, now, draining) or busy
            except OSError as exc:
                self._report(f"file source {self.name}: {tail.path}: {exc.strerror or exc}; "
                             "closing it")
                self._close(key, tail)
        return busy

    # ------------------------------------------------------------------ discovery

    def _scan(self, now: float) -> None:
        """Expand the globs now, to the end (or the bounds), and follow what they match."""
        self._start_scan(now).advance(float("inf"))
        self._finish_scan(now)

    def _start_scan(self, now: float) -> GlobWalk:
        self._next_scan = now + self.config.scan_interval
        exclude = self.config.exclude
        self._walk = GlobWalk(
            self.config.paths, max_entries=self.config.max_scan_entries,
            timeout=self.config.scan_timeout,
            exclude=lambda path: any(fnmatch.fnmatch(path, ex) for ex in exclude))
        return self._walk

    def _finish_scan(self, now: float) -> None:
        walk = self._walk
        assert walk is not None and walk.done
        self._walk = None
        matched = walk.found
        seen = {path for path, _ in matched.values()} | walk.others.keys()
        # what was said about paths not matched any more may be said again if they return
        self._said = {said for said in self._said if said[0] in ("cut", "max_files")
                      or said[1] in seen}
        left_out = 0
        for key, (path, _) in matched.items():
            tail = self._tails.get(key)
            if tail is not None:
                tail.path = path  # renamed within the globs: same file, same offset
                tail.gone_since = None
                continue
            if len(self._tails) >= self.config.max_files:
                left_out += 1
                continue
            try:
                self._open(path, now)
                self._said.discard(("open", path))
            except NotALogFile as exc:
                self._say_once(("open", path), f"{path} {exc}: left alone")
            except OSError as exc:
                self._say_once(("open", path), f"cannot open {path} ({exc.strerror or exc}); "
                               "trying again at each scan")
        for path, mode in walk.others.items():
            self._say_once(("open", path), f"{path} matches the globs but is "
                           f"{kind_of(mode)}, not a regular file: left alone")
        self._note(("max_files", ""), left_out > 0,
                   f"the globs match more files than max_files ({self.config.max_files}): "
                   f"{left_out} of them are not followed; narrow the globs or raise max_files")
        for pattern in self.config.paths:
            why = walk.cuts.get(pattern)
            self._note(("cut", pattern), why is not None,
                       f"the scan of {pattern} stopped {why} (max_scan_entries: "
                       f"{self.config.max_scan_entries}, scan_timeout: "
                       f"{self.config.scan_timeout:g}s); files past that point are not found: "
                       "narrow the pattern or raise the limit")
        if walk.cuts:
            self.scans_cut += 1
        for key, tail in self._tails.items():
            if key in matched or tail.gone_since is not None:
                continue
            if walk.cuts and _still_at(tail):
                continue  # the cut scan did not reach it: it has not left the globs
            tail.gone_since = now
            self.rotations += 1
        if self._first_scan:
            self._first_scan = False
            self._say_promtail()
            if not walk.cuts:
                with self._lock:
                    self._saved.clear()  # a saved file not found now is gone (or renamed away)

    def _say_promtail(self) -> None:
        """After the first scan: which files started where Promtail stopped, which did not."""
        used, refused = self._promtail_used, self._promtail_refused
        if used or refused:
            self._report(f"file source {self.name}: promtail_positions: {used} file"
                         f"{'s' if used != 1 else ''} started where Promtail stopped, "
                         f"{len(refused)} from their start")
        for line in refused[:20]:
            self._report(f"file source {self.name}: promtail_positions: {line}; read from "
                         "its start")
        if len(refused) > 20:
            self._report(f"file source {self.name}: promtail_positions: and {len(refused) - 20}"
                         " more files read from their start")
        self._promtail.clear()

    def _say_once(self, key: tuple[str, str], message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._report(f"file source {self.name}: {message}")

    def _note(self, key: tuple[str, str], now_true: bool, message: str) -> None:
        """Say ``message`` when a condition starts to hold; again only after it stopped."""
        if now_true:
            self._say_once(key, message)
        else:
            self._said.discard(key)

    def _open(self, path: str, now: float) -> None:
        fd, st = open_log_file(path)
        try:
            key = (st.st_dev, st.st_ino)
            if key in self._tails:  # raced with a rename: the file is already followed
                os.close(fd)
                return
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
        except OSError:
            os.close(fd)
            raise
        offset = 0
        saved = self._saved.pop(key, None)
        if saved is not None and saved.fp_len <= len(head) and \
                fingerprint(head[:saved.fp_len]) == saved.fp:
            offset = saved.offset if saved.offset <= st.st_size else 0
        elif saved is None and self._first_scan and \
                (promtail := self._promtail.pop(os.path.normpath(path), None)) is not None:
            offset, why = resume_offset(fd, st.st_size, promtail)
            if why is None:
                self._promtail_used += 1
            else:
                self._promtail_refused.append(f"{path}: {why}")
        elif saved is None and self._first_scan and self.config.start_at == "end":
            offset = st.st_size
        tail = _Tail(path, fd, st.st_dev, st.st_ino, offset, head, now)
        tail.size = st.st_size
        if self.config.multiline is not None:
            tail.joiner = self._joiner(tail)
        with self._lock:
            self._tails[key] = tail
        self.files_opened += 1

    def _joiner(self, tail: _Tail) -> Joiner[int]:
        ml = self.config.multiline
        assert ml is not None
        def emit(first: str, rest: str | None, end: int) -> None:
            self._ship([first], self._now_ns(), [rest])
            tail.committed = end

        return Joiner(ml.start, timeout=ml.timeout, max_lines=ml.max_lines,
                      max_bytes=self.config.max_line_bytes, emit=emit)

    def _close(self, key: tuple[int, int], tail: _Tail) -> None:
        with contextlib.suppress(OSError):
            self._ship_held(tail)
        with self._lock:
            self._tails.pop(key, None)
        with contextlib.suppress(OSError):
            os.close(tail.fd)

    def _reopen_all(self, now: float) -> None:
        for key, tail in list(self._tails.items()):
            try:
                st = os.stat(tail.path)
            except OSError:
                st = None
            if st is None or (st.st_dev, st.st_ino) != key:
                tail.gone_since = tail.gone_since or now
                continue
            try:
                fd, st = open_log_file(tail.path)
            except (OSError, NotALogFile) as exc:  # keep the open descriptor: same file
                why = exc.strerror if isinstance(exc, OSError) else None
                self._report(f"file source {self.name}: cannot reopen {tail.path} "
                             f"({why or exc}); reading on from the open file")
                continue
            if (st.st_dev, st.st_ino) != key:  # replaced between the stat and the open
                os.close(fd)
                tail.gone_since = tail.gone_since or now
                continue
            old, tail.fd = tail.fd, fd
            os.close(old)
        self._next_scan = 0.0

    # ------------------------------------------------------------------ reading

    def _poll(self, tail: _Tail, now: float, draining: bool) -> bool:
        st = os.fstat(tail.fd)
        size = st.st_size
        tail.size = size
        if size < tail.read_offset:
            self._truncated(tail, now)
            return True
        if not draining and now - tail.checked_at >= _CHECK_EVERY:
            tail.checked_at = now
            if self._check(tail, st, now):
                return True
        if size > tail.read_offset:
            while self._pressure():  # waiting for the pipeline is not a stall
                self._beat = waited = _monotonic()
                if self._stop_at is not None and waited >= self._stop_at:
                    return False
                time.sleep(0.005)
            if not self._read(tail, now):  # its size says more than it gives: not busy
                return False
            if tail.read_offset >= size:
                tail.caught_up_at = now
            return True
        tail.caught_up_at = now
        if draining:
            return False
        if tail.joiner is not None and tail.joiner.pending:
            tail.joiner.expire(now)
        if (tail.buf or (tail.skipping and not tail.emitted_head)) and \
                now - tail.buf_since >= self.config.partial_line_timeout:
            self._ship_partial(tail)
        if (tail.gone_since is not None or st.st_nlink == 0) and \
                now - max(tail.last_data_at, tail.gone_since or 0.0) >= _CLOSE_AFTER:
            self._close((tail.dev, tail.ino), tail)
        return False

    def _check(self, tail: _Tail, st: os.stat_result, now: float) -> bool:
        """Once a second: has the file's name moved on; was it rewritten in place (True)?"""
        if tail.gone_since is None:
            try:
                at_path = os.stat(tail.path)
                moved = (at_path.st_dev, at_path.st_ino) != (tail.dev, tail.ino)
            except OSError:
                moved = True
            if moved or st.st_nlink == 0:
                self._next_scan = 0.0  # find the new file at that name now
        if tail.fp_len > 0:
            head = os.pread(tail.fd, tail.fp_len, 0)
            if len(head) < tail.fp_len or fingerprint(head) != tail.fp:
                self._truncated(tail, now)
                return True
        return False

    def _truncated(self, tail: _Tail, now: float) -> None:
        """copytruncate (or any rewrite in place): ship what is held, read from the start."""
        self.truncations += 1
        self._ship_held(tail)
        tail.read_offset = tail.committed = 0
        tail.buf = b""
        tail.skipping = False
        head = os.pread(tail.fd, FINGERPRINT_BYTES, 0)
        tail.fp_len, tail.fp = len(head), fingerprint(head)
        tail.last_data_at = now

    def _now_ns(self) -> int:
        ns = time.time_ns()
        if ns <= self._last_ns:
            ns = self._last_ns + 1
        self._last_ns = ns
        return ns

    def _read(self, tail: _Tail, now: float) -> bool:
        """Read one chunk and ship its lines; False when there was nothing to read."""
        start = tail.read_offset
        data = os.pread(tail.fd, self.config.read_chunk_bytes, start)
        if not data:
            return False
        # The first bytes, read after the chunk: if they changed, the file was truncated and
        # written again (copytruncate) and the chunk may be new content at an old offset.
        head = os.pread(tail.fd, FINGERPRINT_BYTES, 0)
        if tail.fp_len and (len(head) < tail.fp_len or
                            fingerprint(head[:tail.fp_len]) != tail.fp):
            self._truncated(tail, now)
            return True
        if tail.fp_len < FINGERPRINT_BYTES:  # a young file: its fingerprint grows with it
            tail.fp_len, tail.fp = len(head), fingerprint(head)
        tail.read_offset = start + len(data)
        tail.last_data_at = now
        if tail.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                tail.skip_total += len(data)
                return True
            tail.skip_total += newline
            self._end_overlong(tail, start + newline + 1)
            data = data[newline + 1:]
            start += newline + 1
        if tail.buf:
            start -= len(tail.buf)
            data = tail.buf + data
            tail.buf = b""
        last = data.rfind(b"\n")
        if last >= 0:
            self._lines(tail, data[:last], start, now)
            rest = data[last + 1:]
            start += last + 1
        else:
            rest = data
        if rest:
            limit = self.config.max_line_bytes
            if len(rest) > limit:
                tail.skipping = True
                tail.emitted_head = False
                tail.head = rest[:limit]
                tail.skip_total = len(rest)
            else:
                tail.buf = rest
            tail.buf_since = now
        return True

    def _lines(self, tail: _Tail, block: bytes, start: int, now: float) -> None:
        """Ship the complete lines of ``block`` (without its last newline); ``start`` is the
        offset of the first."""
        limit = self.config.max_line_bytes
        joiner = tail.joiner
        if joiner is None:
            texts = _decoded_at_once(block, limit)
            if texts is not None:
                self.lines_read += len(texts)
            else:
                lines = block.split(b"\n")
                self.lines_read += len(lines)
                texts = []
                add = texts.append
                for raw in lines:
                    if len(raw) > limit:
                        text = self._cut(raw[:limit], len(raw))
                    elif not raw or raw.isspace():
                        continue
                    else:
                        text = raw.decode("utf-8", "replace")
                        if text[-1] == "\r":
                            text = text[:-1]
                    add(text)
            if texts:
                first = self._now_ns() + 1
                self._last_ns = first + len(texts) - 1
                self._ship(texts, first, None)
            tail.committed = start + len(block) + 1
            return
        lines = block.split(b"\n")
        self.lines_read += len(lines)
        end = start
        for raw in lines:
            end += len(raw) + 1
            if len(raw) > limit:
                text = self._cut(raw[:limit], len(raw))
            else:
                text = raw.decode("utf-8", "replace").removesuffix("\r")
            if not joiner.pending and not text.strip():
                tail.committed = end  # a blank line between records
                continue
            joiner.push(text, end, now)
        if not joiner.pending:
            tail.committed = end

    def _cut(self, head: bytes, total: int) -> str:
        self.truncated_lines += 1
        return cut_line(head, total)

    def _end_overlong(self, tail: _Tail, end: int) -> None:
        tail.skipping = False
        if tail.emitted_head:  # shipped already (partial-line timeout): skip the rest
            tail.committed = end
            return
        self._ship_text(tail, self._cut(tail.head, tail.skip_total), end)
        tail.head = b""

    def _ship_text(self, tail: _Tail, text: str, end: int) -> None:
        self.lines_read += 1
        if tail.joiner is not None:
            tail.joiner.push(text, end, _monotonic())
            if not tail.joiner.pending:
                tail.committed = end
            return
        self._ship([text], self._now_ns(), None)
        tail.committed = end

    def _ship_partial(self, tail: _Tail) -> None:
        """The partial last line waited long enough: ship it as it is."""
        if tail.skipping:
            if not tail.emitted_head:
                tail.emitted_head = True
                self._ship_text(tail, self._cut(tail.head, tail.skip_total),
                                tail.read_offset)
            return
        buf, tail.buf = tail.buf, b""
        if buf.strip():
            self._ship_text(tail, buf.decode("utf-8", "replace"), tail.read_offset)
        if tail.joiner is not None:
            tail.joiner.flush()
        tail.committed = tail.read_offset

    def _ship_held(self, tail: _Tail) -> None:
        if tail.buf or (tail.skipping and not tail.emitted_head):
            self._ship_partial(tail)
        if tail.joiner is not None:
            tail.joiner.flush()


def _decoded_at_once(block: bytes, limit: int) -> list[str] | None:
    """The lines of ``block`` decoded and split at once, when that is what each line decoded
    on its own gives (a newline byte is never part of a UTF-8 sequence): no carriage return,
    no line blank or led by whitespace (every one starts at "!" or after), none that can be
    over ``limit`` bytes (at most 4 a character). None otherwise: the lines take the general
    path, one by one."""
    if b"\r" in block:
        return None
    texts = block.decode("utf-8", "replace").split("\n")
    if min(texts) >= "!" and (len(block) <= limit or max(map(len, texts)) * 4 <= limit):
        return texts
    return None


def _still_at(tail: _Tail) -> bool:
    """Its path still leads to it."""
    try:
        st = os.stat(tail.path)
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (tail.dev, tail.ino)

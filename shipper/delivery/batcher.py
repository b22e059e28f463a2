"""A bounded queue and one worker thread: hand batches of items to a callback.

The shape of OpenTelemetry's batch processor: ``put`` is O(1) and never blocks; the worker wakes
when a batch is full by count or bytes, when the oldest item has waited ``max_wait``, on
``flush`` and on ``close``; between batches it calls ``tick`` (the pipeline replays the spool
there). Shutdown joins with a deadline. After ``os.fork`` the child calls
:meth:`Batcher.after_fork_in_child` and gets its own worker (started on its first ``put``).

When the queue is full (by count or bytes), ``put`` parks the item on an *overflow* list (up
to ``overflow_items`` / ``overflow_bytes`` more) and the worker hands it to ``spill`` (the
pipeline writes it to the spool), so the app's thread never does that disk I/O itself. When
the overflow is full too (or without ``spill``, or once closed) ``put`` answers False; the
caller may then :meth:`park` a compact form of the item (up to ``compact_bytes``), which
goes to ``spill`` the same way.

A producer that may block (the sidecar's own reader threads, never an app's) passes
``work_here`` to :meth:`Batcher.put_many`: when its items make a batch due and no other step
is running, it takes the batch and runs ``process`` on its own thread instead of waking the
worker. One step runs at a time, whoever runs it, and batches are taken in queue order, so
items are processed in the order they were put either way. A reader and a worker handing
every batch across threads paid for it in thread switches.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Batcher", "run_registered"]

T = TypeVar("T")

_IDLE_TICK = 1.0
#: how often the worker, held off by a producer's step, looks whether it may go on
_STEP_WAIT = 0.05
#: how long a producer waits for ``ready`` before it leaves a due batch to the worker
_READY_WAIT = 1.0
#: how long ``close`` waits past its deadline for a request that was in flight then
_CLOSE_GRACE = 1.0
_monotonic = time.monotonic


def _always_ready(timeout: float) -> bool:
    return True


def run_registered(idents: set[int], body: Callable[[], None]) -> None:
    """Run ``body`` on this thread with the thread's ident in ``idents`` meanwhile (how a
    pipeline knows its own threads, whose log records must not come back into it)."""
    ident = threading.get_ident()
    idents.add(ident)
    try:
        body()
    finally:
        idents.discard(ident)


class Batcher(Generic[T]):
    def __init__(
        self,
        *,
        process: Callable[[list[T]], None],
        tick: Callable[[], float | None] | None = None,
        spill: Callable[[list[T]], None] | None = None,
        ready: Callable[[float], bool] = _always_ready,
        report: Callable[[str, BaseException], None] | None = None,
        max_items: int = 100_000,
        max_bytes: int = 64 << 20,
        overflow_items: int = 10_000,
        overflow_bytes: int = 16 << 20,
        compact_bytes: int = 32 << 20,
        batch_items: int = 10_000,
        batch_bytes: int = 1 << 20,
        max_wait: float = 1.0,
        name: str = "shipper-worker",
        idents: set[int] | None = None,
    ) -> None:
        self._process = process
        self._tick = tick
        self._spill = spill
        #: before a producer's step (``work_here``): whether it may run, waiting up to the
        #: seconds given (the pipeline: the sender has room for what the step makes)
        self._ready = ready
        self._report = report
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.overflow_items = overflow_items
        self.overflow_bytes = overflow_bytes
        self.compact_bytes = compact_bytes
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self.max_wait = max_wait
        self.name = name
        #: the worker's thread ident is in this set while it runs
        self._idents = idents if idents is not None else set()
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the worker waits here
        self._done = threading.Condition(self._lock)  # flush() waits here
        #: a step (a batch processed, the overflow spilled, a tick) is running, on the worker
        #: or on a producer's thread: one at a time
        self._stepping = False
        #: the thread of the producer whose step (``work_here``) is running, if one is
        self._step_ident: int | None = None
        #: the queued items, and the lists :meth:`put_many` queued whole (one place for a
        #: source's read of a thousand events, not one per event)
        self._queue: collections.deque[Any] = collections.deque()
        #: the size of each place (beside it rather than in a tuple with it: one object less
        #: per event for the garbage collector): an item's size, or ``~total`` for a list
        #: (negative: that is how a list is told from an item, which may be a list too)
        self._sizes: collections.deque[int] = collections.deque()
        #: the items queued (a list counts its items)
        self._count = 0
        self._bytes = 0
        #: (item, size, compact)
        self._overflow: list[tuple[T, int, bool]] = []
        self._overflow_bytes = 0
        self._compact_bytes = 0
        self._raw_parked = 0
        self._next_tick = 0.0
        self._tick_idle = False
        self._first_at = 0.0
        self._put_total = 0
        self._done_total = 0
        self._flush_target = 0
        self._closing = False
        self._close_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None

    # ------------------------------------------------------------------ producers

    def put(self, item: T, size: int) -> bool:
        """Queue ``item`` (or park it for ``spill`` when the queue is full); False when it
        was not taken: closed, or full with no room left on the overflow."""
        # acquire/release rather than `with`: the app's thread runs this once per event, and
        # the context manager's __exit__ call costs a third of it
        lock = self._lock
        lock.acquire()
        try:
            n = self._count
            queued_bytes = self._bytes + size
            if n >= self.max_items or queued_bytes > self.max_bytes or self._closing:
                return self._park(item, size)
            if not n:
                self._first_at = _monotonic()
            self._queue.append(item)
            self._sizes.append(size)
            self._count = n + 1
            self._bytes = queued_bytes
            self._put_total += 1
            if self._thread is None:
                self._start()
            elif n + 1 == self.batch_items or (
                queued_bytes >= self.batch_bytes > queued_bytes - size
            ):
                self._work.notify()
            return True
        finally:
            lock.release()

    def put_many(self, items: list[T], total: int, size_of: Callable[[T], int], *,
                 work_here: bool = False) -> list[T]:
        """:meth:`put` for several items under one lock, ``total`` bytes in all (``size_of``
        gives one item's); returns the items that were not taken, in order. When they all
        fit, the list is queued whole, as it is: the caller must not change it afterwards.

        ``work_here``: when a batch is due, process it on this thread (see
        :meth:`_work_here`), which blocks meanwhile; for a producer that may block, never an
        app's thread."""
        count = len(items)
        if not count:
            return []
        refused: list[T] = []
        with self._lock:
            queue, sizes = self._queue, self._sizes
            if (not self._closing and self._count + count <= self.max_items
                    and self._bytes + total <= self.max_bytes):
                # room for all of them (the usual case): one place, not one per item
                if not self._count:
                    self._first_at = _monotonic()
                queue.append(items)
                sizes.append(~total)
                self._count += count
                self._bytes += total
                self._put_total += count
            else:
                for item in items:  # as put() would place them, one by one
                    size = size_of(item)
                    n = self._count
                    queued_bytes = self._bytes + size
                    if n >= self.max_items or queued_bytes > self.max_bytes or self._closing:
                        if not self._park(item, size):
                            refused.append(item)
                        continue
                    if not n:
                        self._first_at = _monotonic()
                    queue.append(item)
                    sizes.append(size)
                    self._count = n + 1
                    self._bytes = queued_bytes
                    self._put_total += 1
            if queue:
                if self._thread is None:
                    self._start()
                elif not work_here and (self._count >= self.batch_items
                                        or self._bytes >= self.batch_bytes):
                    self._work.notify()  # (with work_here: taken below, or by the worker)
        if work_here:
            self._work_here()
        return refused

    def _work_here(self) -> None:
        """The worker's step on this thread, while batches of what was queued up to now are
        due and ``ready`` says the step may run (waiting up to :data:`_READY_WAIT` for it
        first): take the due batches in queue order and process them. Nothing when another
        step is running (the worker's: it takes what is due next), when closing, when the
        overflow waits to be spilled (the worker's job) or when nothing is due (the worker
        takes it when its time is up); what is due and not taken here, the worker takes."""
        lock = self._lock
        with lock:
            if self._stepping or not self._may_work_here():
                return
        if not self._ready(_READY_WAIT):
            with lock:
                self._work.notify()  # not here: the worker takes what is due
            return
        with lock:
            if self._stepping or not self._may_work_here():
                return
            self._stepping = True
            target = self._put_total
            ident = self._step_ident = threading.get_ident()
        idents = self._idents
        registered = ident not in idents
        if registered:  # records logged meanwhile are the pipeline's own, as the worker's
            idents.add(ident)
        try:
            while True:
                with lock:
                    if self._closing or self._overflow or self._done_total >= target:
                        break
                    items = self._take(_monotonic())
                if items is None:
                    break
                self._handle(self._process, items)
                if not self._ready(0.0):  # the next batch only if the sender has room now
                    break
        finally:
            if registered:
                idents.discard(ident)
            self._end_step()

    def _may_work_here(self) -> bool:
        """Under the lock: a batch is due that a producer may take."""
        return (not self._closing and not self._overflow and bool(self._queue)
                and self._due(_monotonic()))

    def _end_step(self) -> None:
        with self._lock:
            self._stepping = False
            self._step_ident = None
            self._work.notify_all()  # the worker looks again: a tick, items now due

    def _park(self, item: T, size: int) -> bool:
        """Under the lock: the queue is full; the overflow takes the item for ``spill``."""
        if (self._closing or self._spill is None or self._raw_parked >= self.overflow_items
                or self._overflow_bytes + size > self.overflow_bytes):
            return False
        self._raw_parked += 1
        self._overflow_bytes += size
        return self._parked(item, size, False)

    def park(self, item: T, size: int) -> bool:
        """Park a compact item (``size`` bytes) for ``spill`` when :meth:`put` refused its
        full form; False when closed or ``compact_bytes`` are taken."""
        with self._lock:
            if (self._closing or self._spill is None
                    or self._compact_bytes + size > self.compact_bytes):
                return False
            self._compact_bytes += size
            return self._parked(item, size, True)

    def _parked(self, item: T, size: int, compact: bool) -> bool:
        overflow = self._overflow
        overflow.append((item, size, compact))
        self._put_total += 1
        if self._thread is None:
            self._start()
        elif len(overflow) == 1:
            # all: a producer's step may be waiting on this condition (see sleep) beside the
            # worker, and the one that sleeps in its step spills the overflow
            self._work.notify_all()
        return True

    def start(self) -> None:
        """Start the worker now (it also starts on the first ``put``)."""
        with self._lock:
            if self._thread is None and not self._closing:
                self._start()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread = thread
        thread.start()

    # ------------------------------------------------------------------ state

    def in_worker(self) -> bool:
        return threading.get_ident() == self._thread_ident

    def in_producer_step(self) -> bool:
        """This thread is a producer's, doing the worker's step (``work_here``)."""
        return threading.get_ident() == self._step_ident

    def deadline_passed(self) -> bool:
        """Closing, and the time ``close`` gave the worker is up."""
        return time.monotonic() >= self._close_deadline

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def close_deadline(self) -> float:
        """When the time ``close`` gave the worker is up (monotonic; infinite until then)."""
        return self._close_deadline

    def __len__(self) -> int:
        return self._count + len(self._overflow)

    def queued(self) -> tuple[int, int]:
        """The events in the queue (not the overflow) and the bytes they are counted for."""
        return self._count, self._bytes

    def _queued_items(self) -> list[T]:
        """Under the lock: the queued items, in order (the lists put whole spread out)."""
        items: list[T] = []
        for place, size in zip(self._queue, self._sizes, strict=True):
            if size < 0:
                items += place
            else:
                items.append(place)
        return items

    def wake_tick(self) -> None:
        """If ``tick`` last said it had nothing to do, call it again as soon as the worker is
        free (a flush waits for the spool); a delay it asked for (a backoff) is kept."""
        with self._lock:
            if self._tick_idle:
                self._tick_idle = False
                self._next_tick = 0.0
                self._work.notify()

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` on the worker (a retry's backoff, the send pace), spilling
        the overflow meanwhile; return early only when ``close``'s deadline passes. A flush
        does not cut the wait short."""
        end = time.monotonic() + seconds
        while True:
            with self._lock:
                while not self._overflow:
                    left = min(end, self._close_deadline) - time.monotonic()
                    if left <= 0:
                        return
                    self._work.wait(left)
            self._drain_overflow()

    # ------------------------------------------------------------------ worker

    def _drain_overflow(self) -> None:
        """On the worker: hand the parked items to ``spill`` (in batches)."""
        while True:
            with self._lock:
                parked = self._overflow[: self.batch_items]
                if not parked:
                    return
                del self._overflow[: len(parked)]
                for _, size, compact in parked:
                    if compact:
                        self._compact_bytes -= size
                    else:
                        self._overflow_bytes -= size
                        self._raw_parked -= 1
                items = [item for item, _, _ in parked]
            assert self._spill is not None
            self._handle(self._spill, items)

    def _handle(self, handler: Callable[[list[T]], None], items: list[T]) -> None:
        """On the worker: ``handler(items)``, then count them done (and wake flushes)."""
        try:
            handler(items)
        except Exception as exc:  # the worker must survive anything
            if self._report:
                self._report("worker", exc)
        with self._lock:
            self._done_total += len(items)
            self._done.notify_all()

    def _due(self, now: float) -> bool:
        """Under the lock, with items queued: whether a batch of them is due."""
        return (
            self._count >= self.batch_items
            or self._bytes >= self.batch_bytes
            or now - self._first_at >= self.max_wait
            or self._flush_target > self._done_total
            or self._closing
        )

    def _take(self, now: float) -> list[T] | None:
        """Under the lock: the next batch if one is due, else None."""
        queue = self._queue
        if not queue or not self._due(now):
            return None
        items: list[T] = []
        sizes = self._sizes
        batch_items, batch_bytes = self.batch_items, self.batch_bytes
        taken = 0
        while queue and len(items) < batch_items and taken < batch_bytes:
            place = queue.popleft()
            size = sizes.popleft()
            if size >= 0:
                items.append(place)
                taken += size
                continue
            size = ~size
            room = batch_items - len(items)
            if len(place) <= room:
                items += place
                taken += size
                continue
            # more than the batch has room for: the rest stays first in the queue, with its
            # share of the list's bytes
            head = size * room // len(place)
            items += place[:room]
            queue.appendleft(place[room:])
            sizes.appendleft(~(size - head))
            taken += head
        self._count -= len(items)
        self._bytes -= taken
        if queue:
            self._first_at = now
        return items

    def _run(self) -> None:
        run_registered(self._idents, self._loop)

    def _loop(self) -> None:
        self._thread_ident = threading.get_ident()
        self._next_tick = time.monotonic()
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._stepping:  # a producer's step (work_here): its end wakes us
                        self._work.wait(_STEP_WAIT)
                        continue
                    if self._overflow:
                        items = None
                        break
                    items = self._take(now)
                    if items is not None or now >= self._next_tick:
                        break
                    if self._closing and not self._queue:
                        break
                    timeout = self._next_tick - now
                    if self._queue:
                        timeout = min(timeout, self._first_at + self.max_wait - now)
                    self._work.wait(max(timeout, 0.0005))
                closing = self._closing
                self._stepping = True
            try:
                if not self._step(items, closing):
                    return
            finally:
                self._end_step()

    def _step(self, items: list[T] | None, closing: bool) -> bool:
        """One turn of the worker's loop, the step its own; False when the worker is done."""
        if self._overflow:
            self._drain_overflow()
        if items:
            self._handle(self._process, items)
        elif closing and not self._queue and not self._overflow:
            with self._lock:
                self._done.notify_all()
            return False
        if self._tick is not None and time.monotonic() >= self._next_tick and not closing:
            try:
                delay = self._tick()
            except Exception as exc:
                if self._report:
                    self._report("worker", exc)
                delay = _IDLE_TICK
            with self._lock:
                self._tick_idle = delay is None
                self._next_tick = time.monotonic() + (_IDLE_TICK if delay is None else delay)
        elif self._tick is None:
            self._next_tick = time.monotonic() + _IDLE_TICK
        return True

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float) -> bool:
        """Wait until everything put before this call has been processed; False on timeout
        (or when called from the worker itself, which cannot wait for itself)."""
        if self.in_worker():
            return False
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._put_total
            if self._done_total >= target:
                return True
            if self._thread is None or not self._thread.is_alive():
                return False
            self._flush_target = max(self._flush_target, target)
            self._work.notify()
            while self._done_total < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
            return True

    def close(self, timeout: float) -> list[T]:
        """Stop taking items, let the worker process the queue for up to ``timeout`` seconds,
        stop it, and return what is still queued (the caller spools or counts it)."""
        with self._lock:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._work.notify_all()
            thread = self._thread
        if thread is not None and thread.is_alive() and not self.in_worker():
            # a request in flight at the deadline ends within the time the pipeline gives it;
            # a producer's step in progress (work_here) ends first, and takes no new batch
            thread.join(timeout + _CLOSE_GRACE)
        with self._lock:
            left = self._queued_items()
            left += [item for item, _, _ in self._overflow]
            self._overflow.clear()
            self._overflow_bytes = self._compact_bytes = self._raw_parked = 0
            self._queue.clear()
            self._sizes.clear()
            self._count = self._bytes = 0
            self._done_total += len(left)
            self._done.notify_all()
        return left

    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's queue and thread (the parent ships those
        items); a new worker starts on the child's first ``put``."""
        self._reset_state()

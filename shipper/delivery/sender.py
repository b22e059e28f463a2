"""One request in flight while the worker prepares the next.

The worker turns records into entries and encodes the request body (Python, holding the
GIL); sending a batch is mostly waiting for Loki's answer (the GIL is free then).
:class:`Sender` runs the delivery of one batch on its own thread, so the worker converts the
next batch while Loki processes this one, and the next request goes out as soon as Loki
answers. It holds at most one batch waiting beside the one being sent: when both places are
taken the worker waits (spilling the queue's overflow meanwhile), which keeps memory bounded.
A producer doing the worker's step on its own thread (``Batcher.put_many(work_here=True)``)
starts only when the waiting place is free (:meth:`Sender.wait_room`) and never waits after:
each request its step makes is handed over with :meth:`Sender.hand` and waits in line.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from shipper.delivery.batcher import run_registered

__all__ = ["Sender"]

T = TypeVar("T")


class Sender(Generic[T]):
    def __init__(self, deliver: Callable[[T], None],
                 report: Callable[[str, BaseException], None] | None = None,
                 name: str = "shipper-sender", idents: set[int] | None = None) -> None:
        self._deliver = deliver
        #: the sender's thread ident is in this set while it runs
        self._idents = idents if idents is not None else set()
        self._report = report
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._slot: collections.deque[T] = collections.deque()
        self._inflight = 0  # handed over and not finished
        self._stopping = False
        self._thread: threading.Thread | None = None

    def offer(self, work: T) -> bool:
        """Hand ``work`` over unless the waiting place is taken (then False)."""
        return self._put(work, in_line=False)

    def hand(self, work: T) -> bool:
        """Hand ``work`` over, waiting in line behind what was handed over before it (a
        producer's step, which must not wait: it starts only when :meth:`wait_room` said
        the place was free, so the line holds one step's requests at most); False once
        stopping (the caller keeps it)."""
        return self._put(work, in_line=True)

    def _put(self, work: T, in_line: bool) -> bool:
        with self._cond:
            if self._stopping or (self._slot and not in_line):
                return False
            self._slot.append(work)
            self._inflight += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return True

    def wait_room(self, timeout: float) -> bool:
        """Until nothing waits to be sent (True) or ``timeout`` seconds pass, or the sender
        stops (False)."""
        with self._cond:
            if self._slot and timeout > 0:
                deadline = time.monotonic() + timeout
                while self._slot and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            return not self._slot and not self._stopping

    def _run(self) -> None:
        run_registered(self._idents, self._loop)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._slot and not self._stopping:
                    self._cond.wait()
                if not self._slot:
                    return
                work = self._slot.popleft()
                self._cond.notify_all()
            try:
                self._deliver(work)
            except Exception as exc:  # the sender must survive anything
                if self._report:
                    self._report("sender", exc)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    @property
    def idle(self) -> bool:
        return not self._inflight

    def wait_idle(self, deadline: float) -> bool:
        """Until everything handed over is delivered; False at ``deadline`` (monotonic)."""
        with self._cond:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self, timeout: float) -> list[T]:
        """Stop after the batch being sent (waiting up to ``timeout``); return the work that
        was handed over but not started."""
        with self._cond:
            self._stopping = True
            left = list(self._slot)
            self._slot.clear()
            self._inflight -= len(left)
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        return left

    def after_fork_in_child(self) -> None:
        """A forked child starts without the parent's thread and work."""
        self._reset()

"""How fast the worker may send: additive increase, multiplicative decrease on bytes/s.

A 429 (or a 5xx) is Loki asking the client to slow down, not an outage. :class:`SendRate`
turns those answers into a pace:

* Until Loki first pushes back there is no limit.
* On push-back the limit becomes half of what was delivered over the last second (or half of
  the current limit), never below ``floor``. Several answers within ``cooldown`` count as one
  signal: they report the same overload. When nothing was delivered over the last second
  (Loki has just come back, or refuses everything) there is no rate to halve: the retry's
  backoff alone slows down.
* Every accepted request raises the limit by ``step`` bytes/s.
* After ``forget_after`` seconds without push-back the limit is dropped again.

The worker asks :meth:`SendRate.delay` before each request and waits that long. The class is
pure bookkeeping (the clock is injectable), so it is tested without sleeping.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

__all__ = ["SendRate"]


class SendRate:
    def __init__(
        self,
        *,
        floor: float = 256 * 1024,
        step: float = 128 * 1024,
        window: float = 1.0,
        cooldown: float = 1.0,
        forget_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.floor = floor
        self.step = step
        self.window = window
        self.cooldown = cooldown
        self.forget_after = forget_after
        self._clock = clock
        #: bytes/s; None while Loki has not pushed back
        self.limit: float | None = None
        self._next_at = 0.0
        self._cut_at = float("-inf")
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._recent_bytes = 0
        self._lock = threading.Lock()  # the sender and the spool's replay both send

    def __repr__(self) -> str:
        limit = "none" if self.limit is None else f"{self.limit / 1024:.0f} KiB/s"
        return f"<SendRate limit={limit}>"

    def delay(self) -> float:
        """Seconds to wait before the next request (0 when it may go now)."""
        if self.limit is None:
            return 0.0
        return max(0.0, self._next_at - self._clock())

    def sent(self, nbytes: int) -> None:
        """A request of ``nbytes`` was accepted: pace the next one, raise the limit."""
        with self._lock:
            self._sent(nbytes)

    def _sent(self, nbytes: int) -> None:
        now = self._clock()
        self._recent.append((now, nbytes))
        self._recent_bytes += nbytes
        self._expire(now)
        if self.limit is None:
            return
        if now - self._cut_at >= self.forget_after:
            self.limit = None
            return
        self._next_at = max(self._next_at, now) + nbytes / self.limit
        self.limit += self.step

    def throttled(self) -> None:
        """Loki answered 429 or 5xx: halve the rate (once per ``cooldown``)."""
        with self._lock:
            self._throttled()

    def _throttled(self) -> None:
        now = self._clock()
        if now - self._cut_at < self.cooldown:
            return
        self._expire(now)
        current = self.limit if self.limit is not None else self._recent_bytes / self.window
        if not current:
            return
        self._cut_at = now
        self.limit = max(self.floor, current / 2)
        self._next_at = max(self._next_at, now)

    def _expire(self, now: float) -> None:
        recent = self._recent
        while recent and recent[0][0] < now - self.window:
            self._recent_bytes -= recent.popleft()[1]

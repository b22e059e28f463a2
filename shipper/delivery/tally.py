"""The pipeline's bookkeeping, shared by its parts: what became of the events it took.

:class:`Tally` holds the counters behind ``Pipeline.stats()`` (accepted, sent, retried, spooled,
replayed, refused and dead-lettered by Loki's reason, dropped by ours, and the push requests'
durations by status class in :data:`PUSH_SECONDS_BUCKETS`); :class:`Reporter` says
on stderr what went wrong, once per kind (never through logging: a handler logging about
itself would loop). The app's threads, the worker and the sender all count, so the counters
share one lock.
"""

from __future__ import annotations

import bisect
import contextlib
import sys
import threading
from collections import Counter

__all__ = ["PUSH_SECONDS_BUCKETS", "PushTimes", "Reporter", "Tally"]

#: the upper bounds (seconds) of the push duration histogram's buckets; the last, +Inf, is
#: implied (a push waits at most ``timeout``, 10 s by default)
PUSH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: per status class (``2xx``, ``4xx``, ``5xx``, ``error``): the requests in each bucket of
#: :data:`PUSH_SECONDS_BUCKETS` (not cumulative; one more for +Inf) and the seconds summed
PushTimes = dict[str, tuple[list[int], float]]


class Tally:
    """Counters of events by what became of them, safe to touch from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._refused_events: Counter[str] = Counter()
        self._dead: Counter[str] = Counter()
        self._entries_refused: Counter[str] = Counter()
        self._push_times: PushTimes = {}

    def add(self, name: str, n: int) -> None:
        """``n`` more events ``name`` (accepted, sent, retried, spooled, replayed)."""
        with self._lock:
            self._counts[name] += n

    def drop(self, reason: str, n: int) -> None:
        """``n`` events lost, for ``reason``."""
        with self._lock:
            self._dropped[reason] += n

    def refuse(self, reason: str, events: int) -> None:
        """Loki refused one request of ``events`` events (400) for ``reason``."""
        with self._lock:
            self._refused[reason] += 1
            self._refused_events[reason] += events
            self._counts["refused_events"] += events

    def entries_refused(self, reasons: Counter[str]) -> None:
        """Entries Loki refused (in answers with a 400), by reason."""
        with self._lock:
            self._entries_refused.update(reasons)

    def timed(self, status_class: str, seconds: float) -> None:
        """One push request answered (or failed) after ``seconds``."""
        index = bisect.bisect_left(PUSH_SECONDS_BUCKETS, seconds)
        with self._lock:
            times = self._push_times.get(status_class)
            if times is None:
                times = self._push_times[status_class] = (
                    [0] * (len(PUSH_SECONDS_BUCKETS) + 1), 0.0)
            times[0][index] += 1
            self._push_times[status_class] = (times[0], times[1] + seconds)

    def dead_lettered(self, reasons: Counter[str], lost: int) -> None:
        """Entries Loki refused kept as dead letters, by reason; ``lost``: dead letters that
        could not be kept (the store full or unwritable, or older ones dropped at its cap)."""
        with self._lock:
            self._dead.update(reasons)
            self._counts["dead_letters_dropped"] += lost

    def spooled(self, written: int, wanted: int) -> None:
        """``written`` of ``wanted`` events reached the spool; the rest are lost."""
        with self._lock:
            self._counts["spooled"] += written
        if written < wanted:
            self.drop("spool_full_or_unwritable", wanted - written)

    def dropped_total(self) -> int:
        with self._lock:
            return sum(self._dropped.values())

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Copies of the counts, the drops by reason and the refusals by reason."""
        with self._lock:
            return dict(self._counts), dict(self._dropped), dict(self._refused)

    def refused_entries(self) -> dict[str, int]:
        """A copy of the entries Loki refused, by reason."""
        with self._lock:
            return dict(self._entries_refused)

    def push_times(self) -> PushTimes:
        """A copy of the push durations (see :data:`PushTimes`)."""
        with self._lock:
            return {cls: (list(counts), total) for cls, (counts, total)
                    in self._push_times.items()}

    def refused_events(self) -> dict[str, int]:
        """A copy of the events in the requests Loki refused, by reason."""
        with self._lock:
            return dict(self._refused_events)

    def dead_letters(self) -> dict[str, int]:
        """A copy of the dead-lettered entries by reason."""
        with self._lock:
            return dict(self._dead)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread of the parent may have held it


class Reporter:
    """Problems said on stderr as ``shipper [service] kind: message``."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._reported: set[str] = set()

    def report(self, kind: str, problem: BaseException | str) -> None:
        """Say what went wrong, once per kind (until :meth:`rearm`)."""
        if kind in self._reported:
            return
        self._reported.add(kind)
        text = problem if isinstance(problem, str) else f"{type(problem).__name__}: {problem}"
        self.say(kind, text)

    def rearm(self, kind: str) -> None:
        """The next problem of ``kind`` is said again (the condition ended meanwhile)."""
        self._reported.discard(kind)

    def say(self, kind: str, message: str) -> None:
        """Say it, every time."""
        with contextlib.suppress(Exception):  # stderr closed: nothing left to tell
            sys.stderr.write(f"shipper [{self._service}] {kind}: {message}\n")

"""Backpressure between the sidecar's sources and a pipeline's queue: how far a source that can
wait (files, Docker: the file or the Engine holds the rest) reads ahead of the pipeline, and when
a source that cannot wait (HTTP) answers 429. The runner and every worker process use the same
bounds (shipper/sidecar/workers.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from shipper.config import ShipperConfig
from shipper.delivery.pipeline import TAKE_RATIO, Pipeline

__all__ = ["HIGH_WATER", "QueueGauge", "ReadAhead"]

#: the HTTP source answers 429 while the queue holds more than this share of its bounds
HIGH_WATER = 0.5
#: sources that can wait (files, Docker) stop reading while the queue holds this many takes
_TAKES_AHEAD = 2
#: how often the queue's load is read again (the sources ask far more often than that)
_SAMPLE_EVERY = 0.005


class ReadAhead(NamedTuple):
    """How much a source that can wait (files, Docker) leaves in a pipeline's queue before it
    stops reading: two takes of the worker, in events and in bytes. Beyond that, events in the
    queue only cost memory (and the garbage collector's time); the file holds them as well.

    Each bound on its own, and neither below one take: the worker takes a batch once the queue
    holds ``batch_max_events`` events *or* its bytes, so a reader that stops is never waiting
    for a take that waits for more events (which would stall both until ``batch_max_wait``).
    Both stay under half the queue's bounds while that is more than one take."""

    events: int
    bytes: int

    @classmethod
    def of(cls, loki: ShipperConfig) -> ReadAhead:
        take_events, take_bytes = loki.batch_max_events, TAKE_RATIO * loki.batch_max_bytes
        return cls(
            int(min(_TAKES_AHEAD * take_events,
                    max(HIGH_WATER * loki.queue_max_events, take_events))),
            int(min(_TAKES_AHEAD * take_bytes,
                    max(HIGH_WATER * loki.queue_max_bytes, take_bytes))))

    def full(self, pipeline: Pipeline) -> bool:
        events, size = pipeline.queued()
        return events >= self.events or size >= self.bytes


class QueueGauge:
    """The main pipeline's load as the sources ask for it: sampled at most every 5 ms, with
    whether the queue holds a reader's read-ahead. ``busy`` says whether something else the
    readers feed (the worker processes) wants them to wait as well."""

    def __init__(self, pipeline: Pipeline, read_ahead: ReadAhead,
                 busy: Callable[[], bool] | None = None) -> None:
        self._pipeline = pipeline
        self._read_ahead = read_ahead
        self._busy = busy
        self._sampled_at = 0.0
        self._load = 0.0
        self._full = False

    def load(self) -> float:
        """The pipeline's :meth:`~shipper.delivery.pipeline.Pipeline.load`, at most 5 ms old."""
        now = time.monotonic()
        if now - self._sampled_at >= _SAMPLE_EVERY:
            self._sampled_at = now
            self._load = self._pipeline.load()
            self._full = self._read_ahead.full(self._pipeline)
        return self._load

    def pressure(self) -> bool:
        """True while a reader (files, Docker) should wait: the queue holds its read-ahead, or
        a worker process is busy."""
        self.load()
        return self._full or (self._busy is not None and self._busy())

    def overloaded(self) -> bool:
        """True while the queue is over its high-water mark (the HTTP source answers 429)."""
        return self.load() >= HIGH_WATER

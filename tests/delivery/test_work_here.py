"""A reader thread that does the worker's step itself (``Pipeline.submit_many(work_here=True)``,
the sidecar's file sources): what it submits reaches Loki once each and in order, and a Loki
that does not answer does not hold the reader."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shipper import LogEvent, ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.transport import HttpResponse
from tests.support.fakeloki import FakeLoki


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as loki:
        yield loki


def _chunks(count: int, size: int) -> list[list[LogEvent]]:
    now = time.time_ns()
    return [[LogEvent.create(service="reader", level="INFO", message=f"line {c * size + i}",
                             timestamp_ns=now + c * size + i, type="tail")
             for i in range(size)] for c in range(count)]


def _messages(chunks: list[list[LogEvent]]) -> list[str]:
    return [event.message for chunk in chunks for event in chunk]


def _read(pipeline: Pipeline, chunks: list[list[LogEvent]]) -> threading.Thread:
    def reader() -> None:
        for chunk in chunks:
            pipeline.submit_many(chunk, work_here=True)

    thread = threading.Thread(target=reader, name="reader")
    thread.start()
    return thread


def test_what_a_reader_submits_with_work_here_reaches_loki_once_each_in_order(
        fake: FakeLoki) -> None:
    pipeline = Pipeline(ShipperConfig(url=fake.url, service="reader", spool=False,
                                      batch_max_events=50, batch_max_wait=0.05))
    try:
        chunks = _chunks(40, 25)
        reader = _read(pipeline, chunks)
        reader.join(30)
        assert not reader.is_alive()
        assert pipeline.flush(30)
    finally:
        pipeline.close(5)
    assert [json.loads(s.line)["message"] for s in fake.stored()] == _messages(chunks)
    assert pipeline.stats()["dropped_total"] == 0


class _Gate:
    """A Loki that does not answer until the gate opens."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lines: list[str] = []

    def request(self, method: str, url: str, *, headers: Any = None,
                body: bytes | None = None, timeout: float) -> HttpResponse:
        self.open.wait(60)
        for stream in json.loads(body or b"{}")["streams"]:
            self.lines += [value[1] for value in stream["values"]]
        return HttpResponse(204)

    def close(self) -> None:
        self.open.set()


def test_a_reader_is_not_held_by_a_loki_that_does_not_answer() -> None:
    gate = _Gate()
    pipeline = Pipeline(ShipperConfig(url="http://loki.test:3100", service="reader", spool=False,
                                      batch_max_events=10, batch_max_wait=0.05,
                                      timeout=60), transport=gate)
    try:
        chunks = _chunks(50, 10)  # each one a due batch
        reader = _read(pipeline, chunks)
        # two requests go out (one sent, one waiting); the worker holds the next one; the rest
        # waits in the queue, and the reader goes on meanwhile
        reader.join(30)
        assert not reader.is_alive()
        assert gate.lines == []
        gate.open.set()
        assert pipeline.flush(30)
    finally:
        gate.open.set()
        pipeline.close(5)
    assert [json.loads(line)["message"] for line in gate.lines] == _messages(chunks)

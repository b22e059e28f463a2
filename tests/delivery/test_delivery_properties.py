"""Whatever Loki answers and whenever the app flushes or closes, no accepted event is lost
uncounted: each one ends in exactly one of three places — stored by Loki, refused by Loki with
a 400 (counted), or on disk in the spool.

Driven through the transport seam with a scripted in-memory Loki (tests/support/fakeloki.py), so
each example takes milliseconds; hypothesis is derandomized and bounded so CI sees the same runs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.spool import Spool
from shipper.event import LogEvent
from tests.support.fakeloki import ScriptedTransport


def _on_disk(spool_dir: Path) -> list[str]:
    """The messages of every record in the spool directory."""
    messages: list[str] = []
    with Spool(spool_dir) as spool:  # closing it releases every segment claimed here
        while (segment := spool.claim()) is not None:
            messages += [json.loads(json.loads(p)[2])["message"] for p in segment.records()]
    return messages


_steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=25),
              st.sampled_from([None, 0.0, 0.02, 0.15])),  # events, then flush(timeout) or not
    min_size=1, max_size=4,
)


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    script=st.lists(st.sampled_from(ScriptedTransport.ANSWERS), max_size=14),
    then=st.sampled_from(["204", "refused", "429", "timeout"]),
    steps=_steps,
    close_timeout=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_every_accepted_event_is_stored_refused_or_on_disk_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, script: list[str], then: str,
    steps: list[tuple[int, float | None]], close_timeout: float,
) -> None:
    spool_dir = tmp_path_factory.mktemp("spool")
    transport = ScriptedTransport(script, then=then)
    config = ShipperConfig(
        url="http://loki.test:3100", service="prop", spool_dir=str(spool_dir),
        batch_max_events=7, batch_max_wait=0.005, queue_max_events=20, retry_budget=0.05,
        backoff_min=0.001, backoff_max=0.01, shutdown_timeout=close_timeout,
    )
    pipeline = Pipeline(config, transport=transport)
    now = time.time_ns()
    n = 0
    for count, flush in steps:
        for _ in range(count):
            pipeline.submit(LogEvent.create(service="prop", level="INFO", message=f"event {n}",
                                            timestamp_ns=now + n))
            n += 1
        if flush is not None:
            pipeline.flush(flush)
    pipeline.close(close_timeout)

    stored = Counter(json.loads(line)["message"] for line in transport.lines())
    refused = Counter(json.loads(line)["message"] for line in transport.refused)
    disk = Counter(_on_disk(spool_dir))
    places = stored + refused + disk
    doubled = {f"event {i}" for i in range(n) if places[f"event {i}"] > 1}
    missing = {f"event {i}" for i in range(n) if places[f"event {i}"] == 0}
    assert not doubled, (transport.answers, doubled)
    stats = pipeline.stats()
    # the only other way out: more events at once than the queue and its overflow hold
    # (20 + 20 here) while the worker is busy; each of those is counted as dropped
    assert set(stats["dropped"]) <= {"queue_full"}
    assert len(missing) == stats["dropped_total"], (transport.answers, missing)
    assert stats["accepted"] + stats["dropped_total"] == n
    # refused ones are counted: refused_events counts the events of every request Loki
    # answered with a 400 (it stored the valid ones among them)
    assert sum(refused.values()) <= stats["refused_events"]
    assert bool(refused) <= bool(stats["refused_total"])


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=3_000), max_size=60),
       st.integers(min_value=1024, max_value=8_000), st.integers(min_value=1, max_value=7))
@example([352, 352, 352], 1024, 7)  # two entries fill a request exactly
@example([2_000, 0, 0, 0], 1024, 2)  # one too large alone; then the count binds
def test_requests_are_cut_as_entry_by_entry_filling_would_cut_them(
        lengths: list[int], limit_bytes: int, limit_events: int) -> None:
    """The worker cuts a batch's entries into requests of at most ``batch_max_bytes`` (an
    entry counting its line plus 160) and ``batch_max_events``, an entry too large alone
    going alone: the same requests as filling each one entry by entry until the next does
    not fit."""
    from shipper.event import make_entry

    pipeline = Pipeline(ShipperConfig(url=None, service="cut", batch_max_bytes=limit_bytes,
                                      batch_max_events=limit_events), health=False)
    try:
        entries = [make_entry((("service_name", "cut"),), i, "x" * n, ())
                   for i, n in enumerate(lengths)]
        expected: list[tuple[list[object], int]] = []
        chunk: list[object] = []
        size = 0
        for entry in entries:
            if chunk and (size + entry.size > limit_bytes or len(chunk) >= limit_events):
                expected.append((chunk, size))
                chunk, size = [], 0
            chunk.append(entry)
            size += entry.size
        if chunk:
            expected.append((chunk, size))
        assert list(pipeline._chunks(entries)) == expected
    finally:
        pipeline.close()

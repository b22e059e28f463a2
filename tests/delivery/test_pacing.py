"""429 and 5xx are backpressure: the same batch again, paced by an AIMD send rate, and the
spool only after ``retry_budget`` of continuous failure; a refused connection or a timeout
goes to the spool at once (after one retry on a fresh connection)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from shipper.delivery.pacing import SendRate
from shipper.delivery.spool import spool_status
from shipper.delivery.transport import HttpResponse
from tests.support.fakeloki import ScriptedTransport
from tests.support.pipelines import fast_pipeline, submit_events


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_send_rate_is_unlimited_until_loki_pushes_back() -> None:
    clock = Clock()
    rate = SendRate(clock=clock)
    for _ in range(50):
        rate.sent(1 << 20)
        assert rate.delay() == 0.0
    assert rate.limit is None


def test_push_back_halves_what_was_delivered_over_the_last_second() -> None:
    clock = Clock()
    rate = SendRate(clock=clock, floor=1000, step=0)
    for _ in range(8):  # 8 MiB within the last second
        clock.now += 0.1
        rate.sent(1 << 20)
    rate.throttled()
    assert rate.limit == 4 << 20
    rate.throttled()  # the same overload, reported again within the cooldown
    assert rate.limit == 4 << 20
    clock.now += 1.0
    rate.throttled()
    assert rate.limit == 2 << 20


def test_paced_requests_wait_for_their_bytes_and_the_limit_grows_additively() -> None:
    clock = Clock()
    rate = SendRate(clock=clock, floor=1000, step=100_000)
    clock.now += 0.5
    rate.sent(1_000_000)
    rate.throttled()  # limit: half of 1 MB/s
    assert rate.limit == 500_000
    rate.sent(500_000)  # the next may go one second later
    assert rate.delay() == 1.0
    assert rate.limit == 600_000
    clock.now += 1.0
    assert rate.delay() == 0.0


def test_push_back_with_nothing_delivered_lately_sets_no_limit() -> None:
    """Loki just came back (or refuses everything): no rate to halve; backoff slows down."""
    clock = Clock()
    rate = SendRate(clock=clock)
    rate.sent(1 << 20)
    clock.now += 5
    rate.throttled()
    assert rate.limit is None and rate.delay() == 0.0


def test_the_limit_never_drops_below_the_floor_and_is_forgotten_after_calm() -> None:
    clock = Clock()
    rate = SendRate(clock=clock, floor=64_000, forget_after=30)
    rate.sent(1_000_000)
    rate.throttled()
    assert rate.limit == 500_000
    for _ in range(10):
        clock.now += 2
        rate.throttled()
    assert rate.limit == 64_000
    clock.now += 31
    rate.sent(1000)
    assert rate.limit is None and rate.delay() == 0.0


def test_a_pending_flush_does_not_turn_429s_into_spooling(tmp_path: Path) -> None:
    transport = ScriptedTransport(["429"] * 8)
    pipeline = fast_pipeline(tmp_path, transport)
    submit_events(pipeline, 100)
    assert pipeline.flush(timeout=30) is True
    stats = pipeline.stats()
    assert (stats["sent"], stats["spooled"], stats["offline"]) == (100, 0, False)
    assert transport.answers == ["429"] * 8 + ["204"]
    pipeline.close()


def test_continuous_failure_past_the_retry_budget_goes_to_the_spool(tmp_path: Path) -> None:
    transport = ScriptedTransport(then="500")
    pipeline = fast_pipeline(tmp_path, transport, retry_budget=0.3)
    submit_events(pipeline, 10)
    start = time.monotonic()
    assert pipeline.flush(timeout=2) is False
    stats = pipeline.stats()
    assert stats["spooled"] == 10 and stats["offline"] is True
    assert len(transport.answers) > 3, "retried with backoff before giving up"
    assert time.monotonic() - start >= 0.3
    pipeline.close(0)
    assert spool_status(tmp_path / "spool").records == 10


def test_a_refused_connection_goes_to_the_spool_after_one_immediate_retry(
    tmp_path: Path,
) -> None:
    transport = ScriptedTransport(then="refused")
    pipeline = fast_pipeline(tmp_path, transport, retry_budget=60)
    submit_events(pipeline, 10)
    deadline = time.monotonic() + 5
    while pipeline.stats()["spooled"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pipeline.stats()["spooled"] == 10  # long before the 60 s budget
    assert transport.answers[:2] == ["refused", "refused"]
    pipeline.close(0)


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    class RetryAfter(ScriptedTransport):
        def request(self, method: str, url: str, **kw: Any) -> HttpResponse:
            if not self.answers:
                self.answers.append("429")
                return HttpResponse(429, b"slow down", {"retry-after": "0.4"})
            return super().request(method, url, **kw)

    transport = RetryAfter()
    pipeline = fast_pipeline(tmp_path, transport)
    submit_events(pipeline, 1)
    start = time.monotonic()
    assert pipeline.flush(timeout=10)
    assert time.monotonic() - start >= 0.4
    assert [json.loads(line)["message"] for line in transport.lines()] == ["m0"]
    pipeline.close()

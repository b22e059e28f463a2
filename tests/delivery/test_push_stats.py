"""What the pipeline tells about its pushes, for /metrics and /ready: each request's duration
by status class, the bytes Loki took, the entries it refused by reason, and what Loki's last
answer (or a probe, a push of nothing) says of it."""

from __future__ import annotations

import time
from pathlib import Path

from shipper.delivery.tally import PUSH_SECONDS_BUCKETS, Tally
from tests.support.fakeloki import FakeLoki, ScriptedTransport
from tests.support.pipelines import fast_pipeline, submit_events


def test_each_push_is_timed_by_status_class_and_the_bytes_taken_are_counted(
        tmp_path: Path) -> None:
    transport = ScriptedTransport(["429", "500"])
    pipeline = fast_pipeline(tmp_path, transport)
    submit_events(pipeline, 10)
    assert pipeline.flush(timeout=30)
    stats = pipeline.stats()
    times = stats["push_seconds"]
    assert sorted(times) == ["2xx", "4xx", "5xx"]
    for status_class in times:
        counts, total = times[status_class]
        assert len(counts) == len(PUSH_SECONDS_BUCKETS) + 1
        assert sum(counts) == 1 and total >= 0
    assert stats["retried"] == 20  # the batch of 10, sent twice more
    assert stats["sent_bytes"] > 0
    pipeline.close()


def test_a_duration_falls_in_the_first_bucket_whose_bound_is_not_below_it() -> None:
    tally = Tally()
    for seconds in (0.0, 0.005, 0.0051, 30.0, 31.0):
        tally.timed("2xx", seconds)
    counts, total = tally.push_times()["2xx"]
    assert counts[0] == 2 and counts[1] == 1  # le="0.005" holds 0.005 itself
    assert counts[len(PUSH_SECONDS_BUCKETS) - 1] == 1 and counts[-1] == 1  # 30 and +Inf
    assert total == 0.005 + 0.0051 + 30.0 + 31.0


def test_entries_loki_refused_are_counted_by_reason_not_the_whole_request(
        tmp_path: Path) -> None:
    with FakeLoki(rate_limit=False) as loki:
        pipeline = fast_pipeline(tmp_path, None, url=loki.url)
        submit_events(pipeline, 7)
        submit_events(pipeline, 3, age_ns=30 * 24 * 3600 * 10**9)  # older than Loki takes
        assert pipeline.flush(timeout=30)
        stats = pipeline.stats()
        assert stats["refused_entries"] == {"too_old": 3}
        assert stats["refused_events"] == 10  # the events of refused requests, as before
        assert loki.count() == 7
        pipeline.close()


def test_before_any_push_loki_has_said_nothing_and_a_probe_asks_it(tmp_path: Path) -> None:
    transport = ScriptedTransport()
    pipeline = fast_pipeline(tmp_path, transport)
    assert pipeline.stats()["loki_answer"] is None
    answer = pipeline.probe_loki()
    assert answer is not None and answer.ok and answer.detail == "Loki answered 204"
    assert pipeline.stats()["loki_answer"] == answer
    assert transport.stored == {}  # a push of nothing stores nothing
    assert pipeline.stats()["push_seconds"]["2xx"][0] != [0] * (len(PUSH_SECONDS_BUCKETS) + 1)
    pipeline.close()


def test_a_probe_or_push_without_an_answer_says_loki_cannot_be_reached(
        tmp_path: Path) -> None:
    transport = ScriptedTransport(then="refused")
    pipeline = fast_pipeline(tmp_path, transport, spool=False, retry_budget=0.2)
    answer = pipeline.probe_loki()
    assert answer is not None and not answer.ok
    assert answer.detail.startswith("no answer from Loki (POST http://loki.test:3100/")
    assert "Connection refused" in answer.detail
    assert pipeline.stats()["push_seconds"]["error"]
    pipeline.close(0)


def test_429s_within_the_retry_budget_leave_loki_answering_past_it_not(
        tmp_path: Path) -> None:
    transport = ScriptedTransport(then="429")
    pipeline = fast_pipeline(tmp_path, transport, spool=False, retry_budget=0.3)
    submit_events(pipeline, 3)
    first = pipeline.flush(timeout=0.1)
    answer = pipeline.stats()["loki_answer"]
    assert not first and answer is not None and answer.ok
    assert answer.detail == "Loki answered 429 (pushing back)"
    time.sleep(0.5)  # past the budget; the sender keeps trying until it gives up
    pipeline.flush(timeout=2)
    answer = pipeline.stats()["loki_answer"]
    assert answer is not None and not answer.ok
    assert answer.detail.startswith("Loki answered 429: ")
    assert "(retry_budget spent)" in answer.detail
    pipeline.close(0)


def test_the_spool_says_whether_it_takes_events(tmp_path: Path) -> None:
    with_spool = fast_pipeline(tmp_path, ScriptedTransport())
    assert with_spool.stats()["spool_writable"] is True
    with_spool.close()
    without = fast_pipeline(tmp_path, ScriptedTransport(), spool=False)
    assert without.stats()["spool_writable"] is None
    without.close()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unusable = fast_pipeline(tmp_path, ScriptedTransport(), spool_dir=str(blocker / "spool"))
    assert unusable.stats()["spool_writable"] is False
    unusable.close(0)


def test_a_url_without_a_push_api_is_not_loki_answering(tmp_path: Path) -> None:
    """A 404 (Grafana's URL instead of Loki's, a write path behind the wrong target) refuses
    every push: the pipeline cannot deliver, unlike a 400 about some entries."""
    with FakeLoki(target="read") as loki:
        pipeline = fast_pipeline(tmp_path, None, url=loki.url, spool=False)
        answer = pipeline.probe_loki()
        assert answer is not None and not answer.ok
        assert answer.detail.startswith("pushes are refused: 404: ")
        assert "served by the write target" in answer.detail
        pipeline.close(0)

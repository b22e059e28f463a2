"""The handler delivers every record, whatever its message, arguments, exception, extras,
metadata or time: one entry each, nothing dropped, and never a timestamp that would make Loki
refuse the whole push (and with it the neighbours)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import math
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shipper.config import ShipperConfig
from shipper.event import TypeGuard, to_entry
from shipper.handler import LokiHandler, event_from_record
from shipper.redact import Redactor
from tests.support import hostile
from tests.support.fakeloki import FakeLoki
from tests.test_handler import fake, make_handler

__all__ = ["fake", "make_handler"]  # the fixtures of tests/test_handler.py, used here too

LIMIT = 2_048
INT64 = range(-(2**63), 2**63)


def _pushed(fake: FakeLoki, since: int = 0) -> list[tuple[dict[str, str], list[Any]]]:
    """Every value of every JSON push the fake answered (stored or refused, not those it asked
    to send again), with its stream."""
    out = []
    for request in fake.requests[since:]:
        if request.status not in (204, 400):
            continue
        for stream in json.loads(request.body)["streams"]:
            out += [(stream["stream"], value) for value in stream["values"]]
    return out


def _stored_one(fake: FakeLoki) -> tuple[dict[str, Any], dict[str, str], int]:
    [stored] = fake.stored()
    return json.loads(stored.line), dict(stored.metadata), stored.ts


def _nothing_lost(handler: LokiHandler) -> None:
    stats = handler.stats()
    assert stats["dropped"] == {} and stats["refused"] == {}, stats


# ----------------------------------------------------------------------------- observations


@pytest.mark.parametrize("extra", [
    {},
    {"exc_info": ValueError("boom")},
    {"extra": {"metadata": {"when": dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC),
                            "amount": decimal.Decimal("12.50"), "raw": b"\x00\xffbytes"}}},
    {"extra": {"metadata": MappingProxyType({"k": "v"})}},
], ids=["plain", "exc_info", "datetime-decimal-bytes", "mappingproxy"])
def test_a_message_over_max_line_bytes_is_delivered_cut_not_dropped(
        fake: FakeLoki, make_handler: Any, extra: dict[str, Any]) -> None:
    handler, log = make_handler(fake.url, max_line_bytes=LIMIT)
    log.error("x" * (3 * LIMIT), **extra)
    assert handler.flush(timeout=10)
    line, _, _ = _stored_one(fake)
    assert len(fake.stored()[0].line.encode()) <= LIMIT
    assert line["truncated"] is True
    assert line["message"].startswith("xxxx") and "truncated by shipper" in line["message"]
    _nothing_lost(handler)


def test_metadata_holding_an_int_too_long_to_write_is_delivered(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.info("big number", extra={"metadata": {"n": hostile.HUGE_INT, "ok": 1}})
    assert handler.flush(timeout=10)
    line, _, _ = _stored_one(fake)
    assert line["metadata"] == {"n": "<int of 16610 bits, too long to write in decimal>",
                                "ok": 1}
    _nothing_lost(handler)


@pytest.mark.parametrize("event_time", [math.nan, math.inf, -math.inf])
def test_an_event_time_of_nan_or_infinity_is_shipped_at_the_records_time(
        fake: FakeLoki, make_handler: Any, event_time: float) -> None:
    handler, log = make_handler(fake.url)
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "odd time", (), None,
                            extra={"event_time": event_time})
    log.handle(record)
    assert handler.flush(timeout=10)
    [(_, value)] = _pushed(fake)
    assert value[0] == str(round(record.created * 1e6) * 1000)
    assert value[2]["original_time"] == repr(event_time)
    _nothing_lost(handler)


def test_a_message_whose_str_and_repr_raise_is_delivered_and_counted(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.info(hostile.BadBoth())
    log.info("%s and %d", hostile.BadBoth(), "not a number")
    assert handler.flush(timeout=10)
    messages = sorted(json.loads(s.line)["message"] for s in fake.stored())
    assert messages == [
        "'%s and %d' % (<unprintable BadBoth: str() and repr() raised RuntimeError>, "
        "'not a number') (formatting failed: RuntimeError('str refused'))",
        "<unprintable BadBoth: str() and repr() raised RuntimeError> % () "
        "(formatting failed: RuntimeError('str refused'))",
    ]
    assert handler.stats()["accepted"] == 2
    _nothing_lost(handler)


def test_an_exception_whose_str_raises_is_delivered_with_its_traceback(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    try:
        raise hostile.StrRaisesError()
    except hostile.StrRaisesError:
        log.exception("failed")
    log.error("forged", exc_info=(ValueError, "not an exception", 42))  # type: ignore[arg-type]
    assert handler.flush(timeout=10)
    lines = {json.loads(s.line)["message"]: json.loads(s.line) for s in fake.stored()}
    assert "StrRaisesError: <exception str() failed>" in lines["failed"]["exception"]
    assert "formatting the exception failed" in lines["forged"]["exception"]
    _nothing_lost(handler)


@pytest.mark.parametrize("bad_time", [
    dt.datetime(2300, 1, 1, tzinfo=dt.UTC), dt.datetime(1600, 1, 1, tzinfo=dt.UTC),
    1e30, 10**30, dt.datetime.max,
], ids=["year-2300", "year-1600", "float-1e30", "int-1e30", "datetime-max"])
def test_a_time_loki_cannot_take_costs_no_neighbour(
        fake: FakeLoki, make_handler: Any, bad_time: Any) -> None:
    """Loki refuses a whole push holding a timestamp outside int64 nanoseconds: such a time
    is shipped at the record's own time, the original kept, and the batch is stored whole."""
    handler, log = make_handler(fake.url, batch_max_wait=1.0)
    log.info("before")
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "bad time", (), None,
                            extra={"event_time": bad_time})
    log.handle(record)
    log.info("after")
    assert handler.flush(timeout=10)
    assert sorted(json.loads(s.line)["message"] for s in fake.stored()) == [
        "after", "bad time", "before"]
    [stored] = [s for s in fake.stored() if "bad time" in s.line]
    assert stored.ts == round(record.created * 1e6) * 1000
    original = bad_time.isoformat() if isinstance(bad_time, dt.datetime) else str(bad_time)
    assert dict(stored.metadata)["original_time"] == original
    _nothing_lost(handler)


def test_a_forged_record_time_is_replaced_by_the_clock_and_kept(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    for created in (math.nan, 1e12, "yesterday"):
        record = log.makeRecord(log.name, logging.INFO, __file__, 1, "forged", (), None)
        record.created = created  # type: ignore[assignment]
        log.handle(record)
    assert handler.flush(timeout=10)
    originals = sorted(value[2]["original_time"] for _, value in _pushed(fake))
    assert originals == ["1000000000000.0", "nan", "yesterday"]
    assert all(int(value[0]) in INT64 for _, value in _pushed(fake))
    _nothing_lost(handler)


def test_the_fake_refuses_a_whole_push_holding_a_time_past_int64_as_loki_does(
        fake: FakeLoki) -> None:
    """What Loki 3.7.6 answered (measured): 400, nothing of the request stored."""
    import urllib.error
    import urllib.request
    body = {"streams": [{"stream": {"service_name": "s"}, "values": [
        ["1795315536000000000", "good"], ["10413792000000000000", "year 2300"]]}]}
    request = urllib.request.Request(f"{fake.url}/loki/api/v1/push",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert refused.value.read().decode().startswith(
        "loghttp.PushRequest.Streams: []loghttp.LogProtoStream: unmarshalerDecoder: Value "
        "looks like Number/Boolean/None, but can't find its end")
    assert fake.stored() == []


# ----------------------------------------------------------------------------- property


_CONTRACT_KEYS = ("type", "actor", "actor_id", "trace_id", "metadata", "event_time",
                  "original_level", "actorId", "user_id", "request_id", "traceId",
                  "requestId")
#: extra fields that are not event fields: metadata under their own names (and tags spread)
_EXTRA_KEYS = ("order_id", "tags", "loki_metadata", "password", "_private", 7, ("k", 1))
_anything = st.one_of(hostile.values, st.sampled_from([None, "", "USER", "robot", 35]))
_extras = st.dictionaries(
    st.sampled_from(_CONTRACT_KEYS + _EXTRA_KEYS), _anything | st.dictionaries(
        st.sampled_from(["type", "actor", "trace_id", "region"]), _anything, max_size=3),
    max_size=6,
).flatmap(lambda extra: st.builds(
    lambda t: {**extra, "event_time": t} if t is not None else extra,
    st.none() | hostile.event_times))
_messages = st.one_of(
    st.text(max_size=40),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 2 * LIMIT)),
    st.sampled_from(["user %s paid %d", "%(name)s did %(what)s", "100%", "%s"]),
    hostile.values,
)
_args = st.one_of(st.just(()), st.tuples(_anything), st.tuples(_anything, _anything),
                  st.builds(lambda d: (d,), st.dictionaries(st.text(max_size=5), _anything,
                                                            max_size=3)))


def _exc_info(kind: str) -> Any:
    if kind == "none":
        return None
    error = hostile.StrRaisesError() if kind == "str-raises" else ValueError("boom")
    try:
        raise error
    except Exception:
        return sys.exc_info()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[FakeLoki, LokiHandler, logging.Logger, Path]]:
    """One fake Loki and one handler for every example (a handler per example would start a
    worker thread each time)."""
    import tempfile
    with FakeLoki(rate_limit=False) as server, tempfile.TemporaryDirectory() as tmp:
        handler = LokiHandler(server.url, service="hostile", spool=False, spool_dir=tmp,
                              max_line_bytes=LIMIT, batch_max_wait=0.01, backoff_min=0.01,
                              backoff_max=0.05, shutdown_timeout=2)
        log = logging.getLogger(f"test.hostile.{uuid.uuid4().hex[:8]}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        log.addHandler(handler)
        try:
            yield server, handler, log, Path(tmp)
        finally:
            log.removeHandler(handler)
            handler.close()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.function_scoped_fixture,
                                                   HealthCheck.data_too_large])
@given(message=_messages, args=_args, exc=st.sampled_from(["none", "plain", "str-raises"]),
       extra=_extras, stack=st.booleans())
def test_every_record_gives_exactly_one_valid_entry(
        shared: tuple[FakeLoki, LokiHandler, logging.Logger, Path], message: Any,
        args: tuple[Any, ...], exc: str, extra: dict[str, Any], stack: bool) -> None:
    fake, handler, log, _ = shared
    since, before = len(fake.requests), handler.stats()
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1, message, args,
                            _exc_info(exc), extra=extra, sinfo="Stack (most recent call last)"
                            if stack else None)
    handler.handle(record)  # the handler alone: logging's other handlers may refuse the record
    assert handler.flush(timeout=10)
    [(labels, value)] = _pushed(fake, since)
    after = handler.stats()
    assert after["accepted"] == before["accepted"] + 1
    assert after["dropped"] == before["dropped"] == {}
    # an event_time within 64-bit ns but older than a week or in the future is Loki's to
    # refuse, that entry alone (counted; the dead-letter spool keeps it): never the push
    assert set(after["refused"]) <= {"too_old", "too_new"}, after["refused"]
    timestamp, line = value[0], value[1]
    metadata = value[2] if len(value) > 2 else {}
    assert int(timestamp) in INT64
    assert len(line.encode()) <= LIMIT
    body = json.loads(line)
    assert isinstance(body["message"], str) and "metadata" in body
    assert all(isinstance(v, str) for v in (*labels.values(), *metadata.values()))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(message=_messages, args=_args, exc=st.sampled_from(["none", "plain", "str-raises"]),
       extra=_extras)
def test_the_workers_fast_and_careful_paths_give_the_event_paths_entry(
        message: Any, args: tuple[Any, ...], exc: str, extra: dict[str, Any]) -> None:
    """The worker's own conversion (the fast path, and the careful one it falls back to)
    gives the entry the LogEvent path gives the same record, for any record. (But metadata
    that contains itself: the LogEvent path copies the mapping, so its cycle is cut one
    level further down; both lines are valid.)"""
    from shipper.handler import _RecordConverter, _snapshot

    metadata = extra.get("metadata")
    assume(not (isinstance(metadata, dict) and any(v is metadata for v in metadata.values())))

    record = logging.getLogger("conv.hostile").makeRecord(
        "conv.hostile", logging.ERROR, __file__, 1, message, args, _exc_info(exc), extra=extra)
    config = ShipperConfig(service="conv", max_line_bytes=LIMIT)
    redactor = Redactor.from_config(config)
    failed: list[Exception] = []
    entries: list[Any] = []
    _RecordConverter(config, redactor, TypeGuard(100)).many(
        [_snapshot(record, None, None)], entries, failed.append)
    assert failed == [] and len(entries) == 1
    event = event_from_record(record, service="conv")
    assert entries[0] == to_entry(redactor.redact_event(event), type_guard=TypeGuard(100),
                                  max_line_bytes=LIMIT)

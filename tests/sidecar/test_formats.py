"""The sidecar's parsers: the JSON loggers apps use, logfmt, text, timestamps, invalid lines."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.event import Actor, Level, to_entry
from shipper.sidecar.formats import LineParser, parse_logfmt, parse_timestamp
from shipper.sidecar.multiline import Joiner

NOW = 1_795_000_000_123_456_789
T_ISO = "2026-11-20T09:15:02.123456789Z"
T_NS = 1_795_166_102_123_456_789


def parse(line: str, fmt: str = "auto", continuation: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    parser = LineParser(format=fmt, service="shop", env="prod", **kw)  # type: ignore[arg-type]
    return parser.parse(line, continuation, NOW)


def test_seed_shape_maps_every_field_of_the_contract() -> None:
    event = parse(json.dumps({
        "level": "WARN", "type": "paymentFailed", "actor": "user", "actorId": "usr_1",
        "message": "card declined", "metadata": {"amount": 12}, "createdAt": T_ISO,
    }), "json")
    assert (event.level, event.type, event.actor, event.actor_id) == \
        (Level.WARNING, "PAYMENT_FAILED", Actor.USER, "usr_1")
    assert event.message == "card declined"
    assert event.metadata == {"amount": 12}
    assert event.timestamp_ns == T_NS
    assert (event.service, event.env) == ("shop", "prod")


@pytest.mark.parametrize(
    ("line", "level", "message", "ns"),
    [
        # pino: numeric level, msg, time in ms
        ('{"level":50,"time":1795166102123,"pid":7,"hostname":"h","msg":"boom"}',
         Level.ERROR, "boom", 1_795_166_102_123_000_000),
        ('{"level":60,"time":1795166102123,"msg":"dead"}', Level.CRITICAL, "dead",
         1_795_166_102_123_000_000),
        ('{"level":10,"time":1795166102123,"msg":"t"}', Level.DEBUG, "t",
         1_795_166_102_123_000_000),
        # bunyan: numeric level, msg, ISO time, name, v
        ('{"name":"api","hostname":"h","pid":1,"level":40,"msg":"slow","time":'
         '"2026-11-20T09:15:02.123Z","v":0}', Level.WARNING, "slow", 1_795_166_102_123_000_000),
        # winston
        ('{"level":"error","message":"db down","timestamp":"2026-11-20T09:15:02.123Z"}',
         Level.ERROR, "db down", 1_795_166_102_123_000_000),
        ('{"level":"http","message":"GET /","timestamp":"2026-11-20T09:15:02Z"}',
         Level.INFO, "GET /", 1_795_166_102_000_000_000),
        # structlog
        ('{"event":"user logged in","level":"info","timestamp":"2026-11-20T09:15:02.5Z",'
         '"logger":"auth"}', Level.INFO, "user logged in", 1_795_166_102_500_000_000),
        # python-json-logger
        ('{"asctime":"2026-11-20 09:15:02,123","levelname":"CRITICAL","name":"pay",'
         '"message":"ledger mismatch"}', Level.CRITICAL, "ledger mismatch",
         1_795_166_102_123_000_000),
        # ECS, dotted and nested
        ('{"@timestamp":"2026-11-20T09:15:02.123Z","log.level":"warn","message":"disk",'
         '"ecs.version":"1.6.0"}', Level.WARNING, "disk", 1_795_166_102_123_000_000),
        ('{"@timestamp":"2026-11-20T09:15:02.123Z","log":{"level":"error","logger":"db"},'
         '"message":"gone"}', Level.ERROR, "gone", 1_795_166_102_123_000_000),
    ],
)
def test_common_json_loggers_are_read_into_the_contract(line: str, level: Level, message: str,
                                                        ns: int) -> None:
    event = parse(line, "json")
    assert (event.level, event.message, event.timestamp_ns) == (level, message, ns)
    assert "parse_error" not in event.metadata


def test_unknown_fields_go_to_metadata_and_known_ones_do_not() -> None:
    event = parse('{"level":30,"time":1795166102123,"pid":7,"hostname":"web-1","msg":"hi",'
                  '"reqId":"r-1","name":"api","responseTime":12}', "json")
    assert event.metadata == {"pid": 7, "hostname": "web-1", "responseTime": 12}
    assert event.trace_id == "r-1"
    assert event.logger == "api"


def test_pino_err_and_ecs_error_become_the_exception_and_the_rest_stays() -> None:
    pino = parse('{"level":50,"msg":"failed","err":{"type":"Error","message":"x",'
                 '"stack":"Error: x\\n    at f (a.js:1:1)"}}', "json")
    assert pino.exception == "Error: x\n    at f (a.js:1:1)"
    assert pino.metadata["err"] == {"type": "Error", "message": "x"}
    ecs = parse('{"message":"m","error":{"type":"E","stack_trace":"trace"},'
                '"trace":{"id":"abc"},"service":{"name":"billing"}}', "json")
    assert (ecs.exception, ecs.trace_id, ecs.service) == ("trace", "abc", "billing")


def test_a_second_key_for_the_same_field_is_kept_in_metadata() -> None:
    event = parse('{"message":"the message","msg":"another","level":"info"}', "json")
    assert event.message == "the message"
    assert event.metadata == {"msg": "another"}


def test_demo_file_lines_come_out_as_the_handler_sent_them() -> None:
    """``shipper demo --file`` writes what the handler sends; reading it back gives the same
    labels, structured metadata, line and timestamp."""
    line = json.dumps({
        "ts": T_ISO, "service": "marketplace", "env": "demo", "level": "ERROR",
        "actor": "USER", "type": "API_ERROR", "actor_id": "usr_1", "trace_id": "t1",
        "logger": "marketplace.api", "message": "POST failed", "metadata": {"status": 504},
        "exception": "Traceback ...", })
    entry = to_entry(parse(line, "json"))
    assert dict(entry.labels) == {"service_name": "marketplace", "env": "demo",
                                  "level": "ERROR", "actor": "USER", "type": "API_ERROR"}
    assert dict(entry.metadata) == {"actor_id": "usr_1", "trace_id": "t1",
                                    "logger": "marketplace.api"}
    assert json.loads(entry.line) == {"message": "POST failed", "metadata": {"status": 504},
                                      "exception": "Traceback ..."}
    assert entry.timestamp_ns == T_NS


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"level":"info","msg":"cut', "not valid JSON"),
        ("[1, 2, 3]", "a JSON list, not an object"),
        ("\x00\x01\x02 binary \ufffd", "not valid JSON"),
        ('"just a string"', "a JSON str, not an object"),
    ],
)
def test_a_line_invalid_in_its_format_is_shipped_as_text_and_marked(line: str,
                                                                    why: str) -> None:
    parser = LineParser(format="json", service="shop")
    event = parser.parse(line, None, NOW)
    assert event.message == line
    assert why in event.metadata["parse_error"]
    assert event.metadata["parse_error"].startswith("json: ")
    assert event.timestamp_ns == NOW
    assert parser.invalid == 1


def test_text_lines_take_the_level_from_the_pattern_else_info() -> None:
    assert parse("2026-11-20 09:15:02 ERROR payment failed", "text").level == Level.ERROR
    assert parse("2026-11-20 09:15:02 WARN disk 91%", "text").level == Level.WARNING
    assert parse("an error happened", "text").level == Level.INFO  # lower case: a word
    custom = parse("[E] boom", "text", level_pattern=r"^\[(?P<level>[A-Z])\]")
    assert custom.level == Level.INFO and custom.metadata.get("original_level") == "E"


def test_a_text_line_that_starts_with_a_time_is_at_that_time() -> None:
    assert parse("2026-11-20 09:15:02,123 ERROR x", "text").timestamp_ns == \
        1_795_166_102_123_000_000
    assert parse("[2026-11-20T10:15:02+01:00] INFO x", "text").timestamp_ns == \
        1_795_166_102_000_000_000
    assert parse("2026-11-20 is the day", "text").timestamp_ns == NOW
    assert parse("12 apples", "text").timestamp_ns == NOW


def test_text_pattern_groups_fill_time_message_and_metadata() -> None:
    pattern = (r"^(?P<time>\S+ \S+) (?P<level>[A-Z]+) \[(?P<thread>[^\]]+)\] "
               r"(?P<message>.*)$")
    event = parse("2026-11-20 09:15:02.123 WARN [main] pool exhausted", "text",
                  level_pattern=pattern)
    assert (event.level, event.message) == (Level.WARNING, "pool exhausted")
    assert event.metadata == {"thread": "main"}
    assert event.timestamp_ns == 1_795_166_102_123_000_000


def test_logfmt_lines_use_the_same_field_table() -> None:
    event = parse('ts=2026-11-20T09:15:02Z level=warn msg="cache miss storm" keys=120 '
                  'caller=cache.go:42', "logfmt")
    assert (event.level, event.message) == (Level.WARNING, "cache miss storm")
    assert event.metadata == {"keys": "120", "caller": "cache.go:42"}
    assert event.timestamp_ns == 1_795_166_102_000_000_000
    bad = parse("no pairs here at all", "logfmt")
    assert bad.metadata["parse_error"].startswith("logfmt: ")


def test_auto_tells_json_logfmt_and_text_apart() -> None:
    assert parse('{"msg":"j","level":40}', "auto").level == Level.WARNING
    assert parse("level=error msg=l", "auto").level == Level.ERROR
    text = parse("user=bob logged in", "auto")  # not every word is key=value: text
    assert text.message == "user=bob logged in" and "parse_error" not in text.metadata
    broken = parse('{"level":"error", "msg": truncated', "auto")
    assert broken.metadata["parse_error"].startswith("auto: not valid JSON")


def test_an_unparseable_time_is_kept_and_the_read_time_used() -> None:
    event = parse('{"msg":"m","time":"last tuesday"}', "json")
    assert event.timestamp_ns == NOW
    assert event.metadata == {"time": "last tuesday"}


def test_an_unknown_level_maps_to_info_and_keeps_the_original() -> None:
    event = parse('{"msg":"m","level":"chatty"}', "json")
    assert event.level == Level.INFO
    assert event.metadata["original_level"] == "chatty"


def test_continuation_lines_become_the_exception() -> None:
    trace = 'Traceback (most recent call last):\n  File "a.py", line 1\nValueError: x'
    text = parse("2026-11-20 09:15:02 ERROR failed", "text", continuation=trace)
    assert (text.message, text.exception) == ("2026-11-20 09:15:02 ERROR failed", trace)
    js = parse('{"msg":"m","level":50,"stack":"Error: a"}', "json", continuation="  more")
    assert js.exception == "Error: a\n  more"


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        (1_795_166_102, 1_795_166_102_000_000_000),
        (1_795_166_102.25, 1_795_166_102_250_000_000),
        (1_795_166_102_123, 1_795_166_102_123_000_000),
        (1_795_166_102_123_456, 1_795_166_102_123_456_000),
        (1_795_166_102_123_456_789, 1_795_166_102_123_456_789),
        ("1795166102.123456789", 1_795_166_102_123_456_789),
        ("1795166102123", 1_795_166_102_123_000_000),
        ("2026-11-20T09:15:02Z", 1_795_166_102_000_000_000),
        ("2026-11-20T11:15:02.5+02:00", 1_795_166_102_500_000_000),
        ("2026-11-20T04:15:02-0500", 1_795_166_102_000_000_000),
        ("2026-11-20 09:15:02,123", 1_795_166_102_123_000_000),
        ("2026-11-20T09:15:02.123456789123Z", 1_795_166_102_123_456_789),
        ("yesterday", None),
        ("2026-13-40T09:15:02Z", None),
        (True, None),
        (-5, None),
        (float("nan"), None),
    ],
)
def test_timestamps_iso_and_epoch_in_every_unit(value: object, ns: int | None) -> None:
    assert parse_timestamp(value) == ns


def test_times_without_an_offset_use_the_configured_zone() -> None:
    berlin = LineParser(format="json", service="s", timezone="Europe/Berlin")
    event = berlin.parse('{"msg":"m","time":"2026-11-20 10:15:02"}', None, NOW)
    assert event.timestamp_ns == 1_795_166_102_000_000_000  # 10:15 CET is 09:15 UTC


@given(st.datetimes(min_value=dt.datetime(1974, 1, 1), max_value=dt.datetime(2999, 1, 1),
                    timezones=st.just(dt.UTC)),
       st.integers(min_value=0, max_value=999_999_999))
def test_iso_and_every_epoch_unit_agree(when: dt.datetime, nanos: int) -> None:
    seconds = int(when.replace(microsecond=0).timestamp())
    ns = seconds * 1_000_000_000 + nanos
    iso = when.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"
    assert parse_timestamp(iso) == ns
    assert parse_timestamp(ns) == ns
    assert parse_timestamp(ns // 1000) == ns // 1000 * 1000
    assert parse_timestamp(ns // 1_000_000) == ns // 1_000_000 * 1_000_000
    assert parse_timestamp(seconds) == seconds * 1_000_000_000
    assert parse_timestamp(f"{seconds}.{nanos:09d}") == ns


_KEY = st.from_regex(r"[a-z][a-z0-9_.]{0,10}", fullmatch=True)
_VALUE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(st.dictionaries(_KEY, _VALUE, min_size=1, max_size=6))
def test_logfmt_round_trips_quoted_values(fields: dict[str, str]) -> None:
    line = " ".join(f"{k}={json.dumps(v)}" for k, v in fields.items())
    assert parse_logfmt(line) == fields


@given(st.text(max_size=300))
def test_any_line_in_any_format_becomes_an_event_and_an_entry(line: str) -> None:
    for fmt in ("json", "logfmt", "text", "auto"):
        event = LineParser(format=fmt, service="s").parse(line, None, NOW)
        entry = to_entry(event)
        body = json.loads(entry.line)
        assert body["message"] or line.strip() == "" or "parse_error" not in body["metadata"] \
            or body["message"] == line


@given(st.dictionaries(st.text(max_size=12), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8), max_size=8))
def test_any_json_object_keeps_every_field_somewhere(obj: dict[str, object]) -> None:
    """Nothing in a JSON line is lost: each key is a contract field, in metadata, or was
    null (nothing to keep)."""
    event = LineParser(format="json", service="s").parse(json.dumps(obj), None, NOW)
    body = json.loads(to_entry(event).line)
    assert "parse_error" not in event.metadata or "parse_error" in obj
    kept = json.dumps(body) + json.dumps(to_entry(event).metadata) + event.service + \
        json.dumps(dict(to_entry(event).labels))
    for key, value in obj.items():
        if value is None or key in ("level", "levelname", "lvl", "severity", "log.level",
                                    "type", "actor", "env", "log", "service", "service_name"):
            continue  # normalised into a label (the original kept when it was unknown)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and \
                key not in ("createdAt", "created_at", "ts", "time", "timestamp",
                            "@timestamp", "asctime"):
            assert json.dumps(value)[:8].strip('"')[:4] in kept or str(value)[:4] in kept


def test_joiner_joins_continuation_lines_and_ships_on_timeout_and_limits() -> None:
    out: list[tuple[str, str | None, int]] = []
    joiner: Joiner[int] = Joiner(r"^\d{4}-", timeout=1.0, max_lines=3, max_bytes=1000,
                                 emit=lambda a, b, p: out.append((a, b, p)))
    joiner.push("2026-01-01 ERROR x", 1, 0.0)
    joiner.push("Traceback:", 2, 0.1)
    joiner.push("  File a", 3, 0.2)
    joiner.push("2026-01-01 INFO y", 4, 0.3)
    assert out == [("2026-01-01 ERROR x", "Traceback:\n  File a", 3)]
    assert not joiner.expire(1.0)
    assert joiner.expire(1.4)
    assert out[-1] == ("2026-01-01 INFO y", None, 4)
    for i in range(5):  # max_lines=3: the fourth line starts a new record
        joiner.push("2026-x" if i == 0 else f"  more {i}", 10 + i, 2.0)
    joiner.flush()
    assert [p for _, _, p in out[-2:]] == [12, 14]


_KEYS = st.sampled_from(["message", "msg", "event", "level", "levelname", "log.level", "severity",
                         "time", "ts", "timestamp", "@timestamp", "type", "actor", "actorId",
                         "actor_id", "trace_id", "reqId", "logger", "name", "exception",
                         "stack", "service_name", "env", "metadata", "pid", "hostname", "status",
                         "log", "trace", "err", "service"])
_VALUES = st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 2_000_000_000_000),
                    st.booleans(), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.sampled_from(["level", "id", "stack", "name", "x"]),
                                    st.text(max_size=4), max_size=2))


@given(st.lists(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=8), min_size=1, max_size=6))
def test_lines_of_a_known_shape_give_the_events_the_field_table_gives(
        objs: list[dict[str, object]]) -> None:
    """Lines with the keys of an earlier line take the worked-out plan: the event is the one
    the field table makes of the line on its own."""
    from shipper.sidecar import formats

    parser = LineParser(format="json", service="svc")
    for obj in objs * 2:  # the second time round every shape has its plan
        planned = parser.from_fields(obj, None, 7)
        vals, keys, meta = formats._assign(obj)
        assert planned == parser._event(vals, keys, meta, None, 7), obj
        assert list(planned.metadata) == list(parser._event(vals, keys, meta, None, 7).metadata)


# --------------------------------------------------------------------------- bounded caches


def _retained_by(work: object) -> int:
    """Bytes still allocated after ``work()`` ran (tracemalloc: the objects kept, not RSS)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        work()  # type: ignore[operator]
        gc.collect()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_wide_json_lines_never_grow_the_plan_cache_past_its_byte_budget() -> None:
    """Lines of 20,000 distinct keys each used to keep a plan per line (47 MB for 20 lines;
    the cache was capped at 1,024 key sets, whatever their size)."""
    from shipper.sidecar.formats import PLAN_CACHE_BYTES, plan_cache_size

    parser = LineParser(format="json", service="shop")
    wide = [json.dumps({f"k{n}_{i}": i for i in range(20_000)}) for n in range(20)]
    # and many mid-sized key sets (1,500 keys each: kept, until the budget says no more)
    mid = [json.dumps({f"m{n}_{i}": i for i in range(1_500)}) for n in range(100)]

    def parse_all() -> None:
        for line in wide + mid:
            event = parser.parse(line, None, NOW)
            assert len(event.metadata) in (20_000, 1_500)  # every key kept, plan or not

    retained = _retained_by(parse_all)
    plans, accounted = plan_cache_size()
    assert 0 < accounted <= PLAN_CACHE_BYTES
    assert 0 < plans < 100  # the oldest mid-sized plans made room for the newer ones
    assert retained <= PLAN_CACHE_BYTES * 1.25, retained  # the accounting does not lie
    # a logger's lines, over and over, still find their plan
    steady = json.dumps({"level": "info", "msg": "ok", "user": "u1"})
    parser.parse(steady, None, NOW)
    assert plan_cache_size()[0] >= 1
    before = plan_cache_size()
    for _ in range(100):
        parser.parse(steady, None, NOW)
    assert plan_cache_size() == before


def test_a_key_set_too_wide_to_keep_reads_the_same_as_one_with_a_plan() -> None:
    parser = LineParser(format="json", service="shop")
    obj = {f"extra{i}": i for i in range(6_000)}
    obj.update({"level": "error", "msg": "wide", "traceId": "t-1"})
    event = parser.parse(json.dumps(obj), None, NOW)
    assert (event.level, event.message, event.trace_id) == (Level.ERROR, "wide", "t-1")
    assert len(event.metadata) == 6_000 and event.metadata["extra5999"] == 5999


def test_long_level_values_are_not_kept_by_the_level_cache() -> None:
    """Each distinct level text was kept (up to 4,096 of them, of any length): 100 KB levels
    made a cache of 400 MB."""
    parser = LineParser(format="json", service="shop")
    lines = [json.dumps({"level": f"{n}" + "x" * 100_000, "msg": "m"}) for n in range(50)]

    def parse_all() -> None:
        for line in lines:
            assert parser.parse(line, None, NOW).level == Level.INFO

    assert _retained_by(parse_all) < 1_000_000


# --------------------------------------------------------------------------- the batch path

_BATCH_TEXT = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["warn", "ERROR", "30", "user", "ADMIN", "http_request", "", " ", "\n",
                     "x" * 65, "y" * 129, "2026-11-20T09:15:02Z", "1795166102123", "NaN"]))
_BATCH_VALUES = st.one_of(
    st.none(), _BATCH_TEXT, st.booleans(), st.floats(allow_nan=False),
    st.integers(-5, 2_000_000_000_000_000_000), st.sampled_from([10, 30, 50, 60, 1.0, 30.5]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["level", "id", "stack", "name", "x"]), st.text(max_size=4),
                    max_size=2))


def _steady(events: list[object]) -> list[object]:
    """The events, each with a time Loki cannot take (shipped at the time it was read, which
    differs between two parses) set to 0."""
    return [dataclasses.replace(e, timestamp_ns=0)  # type: ignore[type-var]
            if e.original_time is not None else e for e in events]  # type: ignore[attr-defined]


@given(st.lists(st.dictionaries(_KEYS, _BATCH_VALUES, min_size=1, max_size=8), min_size=1,
                max_size=8), st.sampled_from(["UTC", "Europe/Paris"]), st.booleans())
def test_a_read_parsed_at_once_gives_each_line_the_event_it_gives_alone(
        objs: list[dict[str, object]], timezone: str, with_env: bool) -> None:
    """The file source parses a read's lines together (``parse_many``), on a path of its own
    for JSON lines: every event, its metadata's order included, is the one ``parse`` makes of
    the line alone, whatever the values (numbers, booleans, objects, long or unprintable text,
    times in any form, or none)."""
    parser = LineParser(format="json", service="svc", env="prod" if with_env else None,
                        timezone=timezone)
    texts = [json.dumps(obj) for obj in objs * 2] + ["{not json", "[1, 2]", '"text"']
    batch: list[object] = []
    parser.parse_many(texts, 1_795_000_000_000_000_000, None, batch)  # type: ignore[arg-type]
    alone = [parser.parse(text, None, 1_795_000_000_000_000_000 + i)
             for i, text in enumerate(texts)]

    assert _steady(batch) == _steady(alone)
    for got, want in zip(batch, alone, strict=True):
        assert list(got.metadata.items()) == list(want.metadata.items())  # type: ignore[attr-defined]


@given(st.lists(st.dictionaries(_KEYS, _BATCH_VALUES, min_size=1, max_size=8), min_size=1,
                max_size=6), st.sampled_from(["UTC", "Europe/Paris"]), st.booleans())
def test_key_orders_with_converters_give_each_line_the_event_it_gives_alone(
        objs: list[dict[str, object]], timezone: str, with_env: bool) -> None:
    """Once a key order's lines have their own converter, every line of it (nulls, numbers,
    booleans, objects, odd times and all) still gets the event ``parse`` makes of it alone,
    its metadata's order included."""
    from unittest import mock

    from shipper.sidecar import formats

    parser = LineParser(format="json", service="svc", env="prod" if with_env else None,
                        timezone=timezone)
    texts = [json.dumps(obj) for obj in objs * 3]
    with mock.patch.object(formats, "_CONVERT_AFTER", 1):  # the second line of a key order
        batch: list[object] = []
        parser.parse_many(texts, NOW, None, batch)  # type: ignore[arg-type]
    alone = [parser.parse(text, None, NOW + i) for i, text in enumerate(texts)]

    assert _steady(batch) == _steady(alone)
    for got, want in zip(batch, alone, strict=True):
        assert list(got.metadata.items()) == list(want.metadata.items())  # type: ignore[attr-defined]


def _pino(i: int, **extra: object) -> dict[str, object]:
    return {"level": 30, "time": 1_795_000_000_000 + i, "pid": 7, "hostname": "h",
            "msg": f"request {i}", "reqId": f"req-{i}", "actor": "USER", "actorId": f"usr_{i}",
            "type": "HTTP_REQUEST", "status": 200, **extra}


def test_a_key_order_gets_its_converter_only_after_many_lines() -> None:
    """A key order's converter is made once its plan has taken ``_CONVERT_AFTER`` lines, and
    from then on its lines take it (not before: lines whose keys keep changing never pay for
    one); the events are the ones the plan made."""
    from shipper.sidecar import formats

    parser = LineParser(format="json", service="svc")
    key = f"k{id(parser)}"  # a key order no other test made
    texts = [json.dumps(_pino(i, **{key: i})) for i in range(formats._CONVERT_AFTER + 10)]
    names = tuple(json.loads(texts[0]))
    out: list[object] = []
    first = formats._CONVERT_AFTER - 1
    parser.parse_many(texts[:first], NOW, None, out)  # type: ignore[arg-type]
    assert names not in formats._CONVERTERS
    parser.parse_many(texts[first:], NOW + first, None, out)  # type: ignore[arg-type]
    assert callable(formats._CONVERTERS[names])
    assert out == [parser.parse(text, None, NOW + i) for i, text in enumerate(texts)]
    event, last = out[-1], len(texts) - 1
    assert (event.level, event.actor, event.type, event.actor_id,  # type: ignore[attr-defined]
            event.trace_id, event.timestamp_ns) == (  # type: ignore[attr-defined]
        Level.INFO, Actor.USER, "HTTP_REQUEST", f"usr_{last}", f"req-{last}",
        (1_795_000_000_000 + last) * 1_000_000)
    assert list(event.metadata) == ["pid", "hostname", "status", key]  # type: ignore[attr-defined]


def test_lines_a_converter_cannot_take_leave_it_untouched_for_the_general_path() -> None:
    """After the converter exists, a line of its keys with a null, a message that is not
    text, a level that is a list, a time no calendar holds, a time that is a boolean, an
    actor id that is not printable, a request id that is a number or an actor of its own
    gets the event it gets alone: the converter gave up on it or did what the general path
    does, and a line it gave up on reached the general path as it was."""
    from shipper.sidecar import formats

    key = f"odd{id(formats)}"
    parser = LineParser(format="json", service="svc")
    warm = [json.dumps(_pino(i, **{key: 1})) for i in range(formats._CONVERT_AFTER + 1)]
    parser.parse_many(warm, NOW, None, [])  # type: ignore[arg-type]
    assert callable(formats._CONVERTERS[tuple(json.loads(warm[0]))])
    changes: list[dict[str, object]] = [
        {key: None}, {key: "null inside a text"}, {"msg": ["not", "text"]}, {"level": [30]},
        {"time": 99_999_999_999_999_999_999}, {"time": True}, {"actorId": "usr\x00x"},
        {"reqId": 8}, {"actor": "robot"}, {"time": "2026-12-06T10:00:00+01:00"}]
    odd = [json.dumps({**_pino(i, **{key: 1}), **change}) for i, change in enumerate(changes)]
    out: list[object] = []
    parser.parse_many(odd, NOW, None, out)  # type: ignore[arg-type]
    assert _steady(out) == _steady([parser.parse(text, None, NOW + i)
                                    for i, text in enumerate(odd)])
    assert out[4].original_time is not None  # type: ignore[attr-defined]
    assert out[2].message == '["not","text"]'  # type: ignore[attr-defined]
    assert out[8].metadata["original_actor"] == "robot"  # type: ignore[attr-defined]
    assert key not in out[0].metadata  # type: ignore[attr-defined]


def test_keys_reach_a_converter_as_data_never_as_code() -> None:
    """Keys made to break out of generated source (quotes, newlines, statements) are only
    data: the converter of lines holding them keeps them as metadata."""
    from shipper.sidecar import formats

    hostile: dict[str, object] = {'x"); import os; os._exit(3); ("': 1, "a'''\nb": 2,
                                  "\\": 3, "{k}": 4, "msg'": "not the message"}
    parser = LineParser(format="json", service="svc")
    texts = [json.dumps(_pino(i, **hostile)) for i in range(formats._CONVERT_AFTER + 2)]
    out: list[object] = []
    parser.parse_many(texts, NOW, None, out)  # type: ignore[arg-type]
    assert callable(formats._CONVERTERS[tuple(json.loads(texts[0]))])
    assert out[-1].metadata == {"pid": 7, "hostname": "h", "status": 200, **hostile}  # type: ignore[attr-defined]
    assert out[-1].message == f"request {len(texts) - 1}"  # type: ignore[attr-defined]


def test_converters_are_kept_only_while_their_plans_are() -> None:
    """Converters go with their plans when the plan cache makes room, and count in its
    byte budget."""
    from unittest import mock

    from shipper.sidecar import formats

    parser = LineParser(format="json", service="svc")
    with mock.patch.object(formats, "_CONVERT_AFTER", 1):
        for i in range(formats._MAX_PLANS + 50):
            texts = [json.dumps({"msg": "m", "level": "info", f"only{i}": 1})] * 2
            parser.parse_many(texts, NOW, None, [])  # type: ignore[arg-type]
    converters = [c for c in formats._CONVERTERS.values() if c is not None]
    assert len(converters) > formats._MAX_PLANS // 2
    assert set(formats._CONVERTERS) <= set(formats._PLANS)
    assert len(formats._PLANS) <= formats._MAX_PLANS
    _, accounted = formats.plan_cache_size()
    assert len(converters) * formats._CONVERTER_COST <= accounted <= formats.PLAN_CACHE_BYTES


def test_the_batch_path_keeps_few_and_short_normal_forms() -> None:
    """The level, actor and type a line gives are normalised once per combination: at most
    4,096 combinations of short values are kept, and a long value is never kept."""
    from shipper.sidecar import formats

    parser = LineParser(format="json", service="svc")
    texts = [json.dumps({"level": "info", "type": f"T{i}", "actor": "user", "msg": "m"})
             for i in range(5_000)]
    texts += [json.dumps({"level": "info", "type": "T" * 100 + str(i), "msg": "m"})
              for i in range(50)]
    out: list[object] = []
    parser.parse_many(texts, NOW, None, out)  # type: ignore[arg-type]
    assert [e.type for e in out[:3]] == ["T0", "T1", "T2"]  # type: ignore[attr-defined]
    assert len(formats._NORMS) <= 4_096
    assert not any(len(str(key[2])) > 64 for key in formats._NORMS)

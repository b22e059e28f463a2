"""The event contract: normalisation, label safety, the label / metadata / line split."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import logging
import math
import time
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.event import (
    Actor,
    Entry,
    Level,
    LogEvent,
    TypeGuard,
    make_entries,
    normalize_actor,
    normalize_level,
    normalize_type,
    sanitize_label_value,
    to_entry,
)
from tests.support import hostile


def _event(**kw: object) -> LogEvent:
    base: dict[str, object] = {"service": "checkout", "level": "INFO", "message": "hello",
                               "timestamp_ns": 1_795_315_536_398_275_627}
    base.update(kw)
    return LogEvent.create(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "level", "original"),
    [
        ("WARN", Level.WARNING, None),
        ("warning", Level.WARNING, None),
        ("fatal", Level.CRITICAL, None),
        (" Error ", Level.ERROR, None),
        (logging.INFO, Level.INFO, None),
        (logging.CRITICAL, Level.CRITICAL, None),
        (35, Level.WARNING, "35"),
        (5, Level.DEBUG, "5"),
        ("verbose", Level.DEBUG, None),
        ("loud", Level.INFO, "loud"),
        (True, Level.INFO, "True"),
    ],
)
def test_levels_are_normalised_and_unknown_ones_keep_their_original(
    given: object, level: Level, original: str | None
) -> None:
    assert normalize_level(given) == (level, original)


def test_actor_aliases_map_and_unknown_actor_becomes_system_with_original() -> None:
    assert normalize_actor("user") == (Actor.USER, None)
    assert normalize_actor("anonymous") == (Actor.GUEST, None)
    assert normalize_actor(None) == (Actor.SYSTEM, None)
    assert normalize_actor("robot") == (Actor.SYSTEM, "robot")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("userLogin", "USER_LOGIN"),
        ("auth.failed", "AUTH_FAILED"),
        ("USER_PROFILE_UPDATE", "USER_PROFILE_UPDATE"),
        ("  payment intent succeeded ", "PAYMENT_INTENT_SUCCEEDED"),
        ("HTTPRequest", "HTTP_REQUEST"),
        ('x"}{evil="1', "X_EVIL_1"),
        ("404 page", "T_404_PAGE"),
        ("", "LOG"),
        (None, "LOG"),
        ("!!!", "LOG"),
        ("a" * 100, "A" * 64),
    ],
)
def test_type_is_coerced_to_upper_snake(given: object, expected: str) -> None:
    assert normalize_type(given) == expected


@pytest.mark.parametrize("value", ['prod"}', "a\nb", "x{y}", "back\\slash", "tab\there"])
def test_label_values_cannot_forge_labels(value: str) -> None:
    cleaned = sanitize_label_value(value)
    assert not set(cleaned) & set('"{}\\\n\t'), cleaned


def test_event_splits_into_contract_labels_metadata_and_json_line() -> None:
    event = _event(env="prod", actor="user", type="login", actor_id="user_42", trace_id="abc",
                   logger="checkout.auth", metadata={"ip": "203.0.113.9"})
    entry = to_entry(event)
    assert dict(entry.labels) == {"service_name": "checkout", "env": "prod", "level": "INFO",
                                  "actor": "USER", "type": "LOGIN"}
    assert dict(entry.metadata) == {"actor_id": "user_42", "trace_id": "abc",
                                    "logger": "checkout.auth"}
    assert json.loads(entry.line) == {"message": "hello", "metadata": {"ip": "203.0.113.9"}}
    assert entry.timestamp_ns == 1_795_315_536_398_275_627


def test_exception_text_is_part_of_the_line() -> None:
    entry = to_entry(_event(exception="Traceback...\nValueError: x"))
    assert json.loads(entry.line)["exception"] == "Traceback...\nValueError: x"


def test_env_label_is_absent_when_not_set() -> None:
    assert "env" not in dict(to_entry(_event()).labels)


def test_unknown_level_and_actor_are_kept_in_metadata() -> None:
    entry = to_entry(_event(level="loud", actor="robot"))
    assert dict(entry.labels)["level"] == "INFO"
    assert json.loads(entry.line)["metadata"] == {"original_level": "loud",
                                                  "original_actor": "robot"}


def test_non_json_metadata_is_made_safe_with_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 7>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    meta = {"thing": Thing(), "nan": float("nan"), "bytes": b"\xffok", "set": {2, 1},
            3: "int key", "broken": Broken(), "cyclic": cyclic}
    line = json.loads(to_entry(_event(metadata=meta)).line)
    assert line["metadata"]["thing"] == "<Thing 7>"
    assert line["metadata"]["nan"] == "nan"
    assert line["metadata"]["bytes"] == "\ufffdok"
    assert line["metadata"]["set"] == [1, 2]
    assert line["metadata"]["3"] == "int key"
    assert line["metadata"]["broken"].startswith("<unrepresentable Broken")
    assert line["metadata"]["cyclic"] == {"self": "<cycle>"}


def test_metadata_that_is_not_a_mapping_is_kept_under_value() -> None:
    assert json.loads(to_entry(_event(metadata=[1, 2])).line)["metadata"] == {"value": [1, 2]}


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    bad = "caf\udce9"  # a lone surrogate, as os.fsdecode makes of invalid UTF-8
    entry = to_entry(_event(message=bad, metadata={"k": bad}))
    entry.line.encode("utf-8")  # must not raise
    assert json.loads(entry.line)["message"] == "caf?"


def test_line_over_max_size_is_truncated_with_marker_and_stays_json() -> None:
    event = _event(message="m" * 400_000, metadata={"blob": '"' * 50_000},
                   exception="E" * 100_000)
    entry = to_entry(event, max_line_bytes=256 * 1024)
    assert len(entry.line.encode()) <= 256 * 1024
    body = json.loads(entry.line)
    assert body["truncated"] is True
    assert "[truncated by shipper" in body["message"]
    assert body["message"].startswith("mmmm")


def test_small_limit_truncates_metadata_into_text() -> None:
    entry = to_entry(_event(metadata={"k": "v" * 5000}), max_line_bytes=1024)
    body = json.loads(entry.line)
    assert len(entry.line.encode()) <= 1024
    assert body["message"] == "hello"
    assert isinstance(body["metadata"], str) and "truncated by shipper" in body["metadata"]


def test_type_guard_caps_distinct_types_and_keeps_the_real_type() -> None:
    guard = TypeGuard(limit=3)
    types = [dict(to_entry(_event(type=f"T{i}_X"), type_guard=guard).labels)["type"]
             for i in range(5)]
    assert types == ["T0_X", "T1_X", "T2_X", "OTHER", "OTHER"]
    overflow = to_entry(_event(type="NEW_ONE"), type_guard=guard)
    assert dict(overflow.labels)["type"] == "OTHER"
    assert json.loads(overflow.line)["metadata"]["type"] == "NEW_ONE"
    # types seen before the cap keep passing
    assert dict(to_entry(_event(type="T0_X"), type_guard=guard).labels)["type"] == "T0_X"
    assert guard.overflowed == 3


def test_entry_json_round_trip_is_byte_identical() -> None:
    entry = to_entry(_event(message="é \u2028 \"q\"", actor_id="u1", metadata={"a": [1]}))
    again = Entry.from_json(entry.to_json().encode())
    assert again == entry
    assert again.line.encode() == entry.line.encode()


def test_entry_level_reads_the_label() -> None:
    assert to_entry(_event(level="CRITICAL")).level is Level.CRITICAL
    assert Level.CRITICAL.priority == 2 and Level.INFO.priority == 0


def test_fast_construction_fills_exactly_the_dataclass_fields() -> None:
    import dataclasses

    event = _event(env="prod", actor="user", type="login", actor_id="u1", trace_id="t",
                   logger="a.b", metadata={"k": 1}, exception="E")
    assert type(event) is LogEvent and not hasattr(event, "__dict__")
    assert LogEvent.__slots__ == tuple(f.name for f in dataclasses.fields(LogEvent))
    # every slot is filled (an unfilled slot raises AttributeError on reading)
    assert {f.name: getattr(event, f.name) for f in dataclasses.fields(LogEvent)} == {
        f.name: getattr(dataclasses.replace(event), f.name)
        for f in dataclasses.fields(LogEvent)}
    assert event == LogEvent(service="checkout", level=Level.INFO, message="hello",
                             actor=Actor.USER, type="LOGIN",
                             timestamp_ns=1_795_315_536_398_275_627, env="prod", actor_id="u1",
                             trace_id="t", logger="a.b", metadata={"k": 1}, exception="E")
    entry = to_entry(event)
    assert type(entry) is Entry
    assert entry == Entry(labels=entry.labels, timestamp_ns=entry.timestamp_ns, line=entry.line,
                          metadata=entry.metadata)
    assert entry._asdict()["line"] == entry.line
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.message = "changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        entry.line = "changed"  # type: ignore[misc]


def test_a_subclass_of_logevent_is_created_as_itself_through_its_own_init() -> None:
    class AuditEvent(LogEvent):
        pass

    event = AuditEvent.create(service="checkout", level="warn", message="m", timestamp_ns=1,
                              actor="user", actor_id="u1")
    assert type(event) is AuditEvent
    assert (event.service, event.level, event.actor, event.actor_id) == (
        "checkout", Level.WARNING, Actor.USER, "u1")
    assert to_entry(event).line == to_entry(LogEvent.create(
        service="checkout", level="warn", message="m", timestamp_ns=1, actor="user",
        actor_id="u1")).line


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(("timestamp_ns", "original"), [
    (10_413_792_000_000_000_000, "2300-01-01T00:00:00Z"),
    (2**63, "2262-04-11T23:47:16.854775808Z"),
    (-(2**63) - 1, "1677-09-21T00:12:43.145224191Z"),
    (10**30, "1000000000000000000000000000000"),
    (math.nan, "nan"),
    (math.inf, "inf"),
    (1e30, "1e+30"),
    (None, "None"),
    ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00Z"),
], ids=["year-2300", "int64-max+1", "int64-min-1", "1e30-int", "nan", "inf", "1e30-float",
        "none", "text"])
def test_a_time_loki_cannot_take_is_shipped_at_receipt_with_the_original(
        timestamp_ns: Any, original: str) -> None:
    """Loki refuses the whole push when one entry's time is outside 64-bit nanoseconds."""
    before = time.time_ns()
    entry = to_entry(_event(timestamp_ns=timestamp_ns))
    assert before <= entry.timestamp_ns <= time.time_ns()
    assert dict(entry.metadata)["original_time"] == original


@pytest.mark.parametrize("timestamp_ns", [0, -1, -(2**63), 2**63 - 1, 1_000_000_000])
def test_a_time_within_64_bit_nanoseconds_is_kept_even_one_loki_refuses_as_too_old(
        timestamp_ns: int) -> None:
    """Too old and too new are Loki's per-entry refusals: counted, and no neighbour lost."""
    entry = to_entry(_event(timestamp_ns=timestamp_ns))
    assert entry.timestamp_ns == timestamp_ns
    assert "original_time" not in dict(entry.metadata)


def test_an_event_built_without_create_gets_the_same_rule() -> None:
    import dataclasses

    made = LogEvent(service="s", level=Level.INFO, message="m", timestamp_ns=2**64)
    replaced = dataclasses.replace(_event(), timestamp_ns=2**64)
    for event in (made, replaced):
        entry = to_entry(event)
        assert entry.timestamp_ns < 2**63
        assert dict(entry.metadata)["original_time"] == "2554-07-21T23:34:33.709551616Z"


def test_entry_time_keeps_the_time_as_given_bounded() -> None:
    from shipper.event import entry_time

    assert entry_time(1_795_315_536_000_000_000, 5) == (1_795_315_536_000_000_000, None)
    assert entry_time(None, 5, dt.datetime(2300, 1, 1, tzinfo=dt.UTC)) == (
        5, "2300-01-01T00:00:00+00:00")
    assert entry_time(None, 5, math.nan) == (5, "nan")
    assert entry_time(None, 5, hostile.BadBoth()) == (
        5, "<unprintable BadBoth: str() and repr() raised RuntimeError>")
    received, original = entry_time(None, 5, "line\nbreak" * 1000)
    assert received == 5 and original is not None
    assert len(original) == 1024 and "\n" not in original


def test_an_event_keeps_its_original_time_through_redaction_and_the_spool() -> None:
    from shipper.redact import Redactor

    event = _event(timestamp_ns=2**64, metadata={"password": "hunter2"})
    entry = to_entry(Redactor().redact_event(event))
    assert dict(entry.metadata)["original_time"] == event.original_time
    assert Entry.from_json(entry.to_json()) == entry


@pytest.mark.parametrize("metadata", [
    MappingProxyType({}),
    {"when": dt.datetime(2026, 1, 31, tzinfo=dt.UTC), "amount": decimal.Decimal("1.5"),
         "raw": b"\xff"},
    MappingProxyType({"k": "v"}), {"n": math.nan}, {"big": hostile.HUGE_INT},
], ids=["nothing-as-the-handler-passes-it", "datetime-decimal-bytes", "mappingproxy", "nan",
        "huge-int"])
def test_a_line_over_the_limit_holding_values_json_cannot_write_is_cut_not_refused(
        metadata: Any) -> None:
    from shipper.event import entry_line

    line = entry_line("x" * 5_000, metadata, "Traceback...", 1_000)
    assert len(line.encode()) <= 1_000
    body = json.loads(line)
    assert body["truncated"] is True and body["message"].startswith("xxx")


def test_values_whose_str_repr_or_size_fail_are_written_as_markers() -> None:
    meta = {"huge": hostile.HUGE_INT, "both": hostile.BadBoth(), hostile.BadBoth(): 1,
            "set": {hostile.BadBoth()}, "deep": hostile.nested(2_000)}
    entry = to_entry(_event(message=hostile.BadBoth(), metadata=meta, actor=hostile.BadBoth(),
                            type=hostile.BadBoth(), actor_id=hostile.HUGE_INT,
                            level=hostile.BadBoth()))
    body = json.loads(entry.line)
    unprintable = "<unprintable BadBoth: str() and repr() raised RuntimeError>"
    assert body["message"] == unprintable
    assert body["metadata"]["huge"] == "<int of 16610 bits, too long to write in decimal>"
    assert body["metadata"]["both"] == "<unrepresentable BadBoth: RuntimeError>"
    assert body["metadata"][unprintable] == 1
    assert body["metadata"]["set"] == ["<unrepresentable BadBoth: RuntimeError>"]
    assert body["metadata"]["original_actor"] == unprintable
    assert body["metadata"]["original_level"] == unprintable
    assert dict(entry.metadata)["actor_id"] == (
        "<int of 16610 bits, too long to write in decimal>")


def test_an_event_of_objects_whose_hash_eq_str_and_repr_raise_is_made() -> None:
    bad = hostile.BadHash
    entry = to_entry(LogEvent.create(
        service="s", level=bad(), message=bad(), timestamp_ns=bad(), actor=bad(), type=bad(),
        actor_id=bad(), trace_id=bad(), metadata={"k": bad()}))
    unprintable = "<unprintable BadHash: str() and repr() raised RuntimeError>"
    assert dict(entry.metadata) == {"actor_id": unprintable, "trace_id": unprintable,
                                    "original_time": unprintable}
    assert json.loads(entry.line)["metadata"]["k"] == "<unrepresentable BadHash: RuntimeError>"


def test_text_of_never_raises() -> None:
    from shipper.event import text_of

    assert text_of("s") == "s" and text_of(12) == "12"
    assert text_of(hostile.BadStr()) == "<BadStr>"
    assert text_of(hostile.BadBoth()) == (
        "<unprintable BadBoth: str() and repr() raised RuntimeError>")
    assert text_of(-hostile.HUGE_INT) == "<int of 16610 bits, too long to write in decimal>"


@settings(max_examples=300, deadline=None)
@given(message=st.one_of(st.text(), st.builds(lambda c, n: c * n, st.characters(),
                                              st.integers(0, 4_000))),
       metadata=st.dictionaries(st.text(max_size=10), hostile.values, max_size=5),
       exception=st.none() | st.text(max_size=3_000), limit=st.integers(200, 3_000))
def test_every_line_is_json_within_the_limit_whatever_the_metadata(
        message: str, metadata: dict[str, Any], exception: str | None, limit: int) -> None:
    from shipper.event import entry_line

    line = entry_line(message, metadata, exception, limit)
    assert len(line.encode()) <= limit
    body = json.loads(line)
    assert isinstance(body["message"], str)


_MAKER_EVENTS = st.lists(st.builds(
    LogEvent.create,
    service=st.sampled_from(["shop", "billing"]),
    level=st.sampled_from(["INFO", "ERROR", "loud"]),
    message=st.text(max_size=20),
    timestamp_ns=st.sampled_from([1_795_000_000_000_000_000, 0, -1, 2**70]),
    actor=st.sampled_from([None, "USER", "robot"]),
    type=st.sampled_from(["LOGIN", "HTTP_REQUEST", "T1", "T2", "T3", "AUTH_A", "AUTH_B",
                          "AUTH_C", "APP_LOGS_DELETED", "LOGS_DELETED", "LOGS_DELETE_CANCELLED"]),
    actor_id=st.sampled_from([None, "", "u1", "u\n2"]),
    trace_id=st.sampled_from([None, "", "t-1"]),
    logger=st.sampled_from([None, "", "app.db"]),
    metadata=st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "password"]),
                                                  st.integers() | st.text(max_size=5))),
    exception=st.sampled_from([None, "", "Traceback"]),
    span_id=st.sampled_from([None, "", "00f067aa0ba902b7"]),
), max_size=30)


@given(_MAKER_EVENTS, st.integers(min_value=1, max_value=3), st.sampled_from([64, 300]),
       st.integers(min_value=1, max_value=4))
def test_make_entries_makes_the_entries_to_entry_makes(
        events: list[LogEvent], limit: int, max_line_bytes: int, group: int) -> None:
    """The worker's maker of a batch's entries (``make_entries``) gives each event the entry
    ``to_entry`` gives, and leaves its type guard as ``to_entry`` leaves one: the same types
    folded into OTHER and the same audit types renamed, counted once each."""
    guard, maker_guard = TypeGuard(limit), TypeGuard(limit)
    groups = -(-len(events) // group)
    made = make_entries(events, [True] * groups, group, _no_redaction, _raise, maker_guard,
                        max_line_bytes)
    assert made == [to_entry(event, type_guard=guard, max_line_bytes=max_line_bytes)
                    for event in events]
    assert (maker_guard.overflowed, maker_guard.audit_renamed) == \
        (guard.overflowed, guard.audit_renamed)
    unguarded = make_entries(events, [True] * groups, group, _no_redaction, _raise)
    assert unguarded == [to_entry(e) for e in events]


def _no_redaction(event: LogEvent) -> LogEvent:
    raise AssertionError("a group to keep was redacted")


def _raise(exc: Exception) -> None:
    raise exc


def test_make_entries_redacts_the_groups_not_kept_and_leaves_out_only_what_fails() -> None:
    events = [LogEvent.create(service="shop", level="INFO", message=f"m{i}", timestamp_ns=i + 1)
              for i in range(5)]
    failed: list[Exception] = []

    def redact(event: LogEvent) -> LogEvent:
        if event.message == "m2":
            raise ValueError("cannot redact m2")
        return dataclasses.replace(event, message=f"{event.message}!")

    made = make_entries(events, [True, False, True], 2, redact, failed.append)
    assert [orjson.loads(entry.line)["message"] for entry in made] == ["m0", "m1", "m3!", "m4"]
    assert [type(exc) for exc in failed] == [ValueError]


def test_make_event_gives_a_frozen_log_event_equal_to_the_constructors() -> None:
    import copy
    import pickle

    from shipper.event import make_event

    metadata = {"pid": 4242}
    made = make_event("web", Level.WARNING, "disk low", Actor.USER, "DISK", 5, "prod", "usr_1",
                      "req-1", "app.disk", metadata, "Traceback ...", None, "00f067aa0ba902b7")
    built = LogEvent(service="web", level=Level.WARNING, message="disk low", actor=Actor.USER,
                     type="DISK", timestamp_ns=5, env="prod", actor_id="usr_1", trace_id="req-1",
                     logger="app.disk", metadata={"pid": 4242}, exception="Traceback ...",
                     span_id="00f067aa0ba902b7")
    assert made.__class__ is LogEvent
    assert made == built and repr(made) == repr(built)
    assert made.metadata is metadata  # kept, not copied
    assert not hasattr(made, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.message = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.message  # type: ignore[misc]
    with pytest.raises(TypeError):  # a field's value is a dict: no hash, as with the constructor
        hash(made)
    assert pickle.loads(pickle.dumps(made)) == built
    assert copy.deepcopy(made) == built
    assert dataclasses.replace(made, message="other").message == "other"


def test_event_source_fills_an_event_as_make_event_does_and_refuses_unknown_fields() -> None:
    """The lines ``event_source`` gives, run, make the event ``make_event`` makes of the same
    values (a field not given is None); a name that is not a field is refused, named."""
    from shipper.event import event_source, make_event

    lines, names = event_source("made", {
        "service": "service", "level": "level", "message": "'disk low'", "actor": "actor",
        "type": "'DISK'", "timestamp_ns": "5", "metadata": "metadata"}, indent="")
    space: dict[str, Any] = {**names, "service": "web", "level": Level.WARNING,
                             "actor": Actor.USER, "metadata": {"pid": 1}}
    exec("\n".join(lines), space)
    made = space["made"]
    assert made.__class__ is LogEvent and not hasattr(made, "__dict__")
    assert made == make_event("web", Level.WARNING, "disk low", Actor.USER, "DISK", 5, None,
                              None, None, None, {"pid": 1}, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.message = "changed"
    with pytest.raises(ValueError, match="mesage"):
        event_source("made", {"mesage": "'x'"})

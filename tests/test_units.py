"""shipper._units: the one grammar of durations, sizes and times. Every unit and compound form,
the formatters, the errors and their messages, and properties: what is formatted is read back
to the same value, and no input makes a parser raise anything but a UnitError."""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper._units import (
    NS,
    UnitError,
    describe_time,
    format_duration,
    format_duration_ns,
    format_seconds,
    format_size,
    format_time,
    parse_duration,
    parse_duration_ns,
    parse_seconds,
    parse_size,
    parse_time,
)

S = NS
MIN, HOUR, DAY = 60 * S, 3600 * S, 86400 * S
#: the longest duration: what a timedelta holds
MAX_DURATION_NS = dt.timedelta.max // dt.timedelta(microseconds=1) * 1000
#: a fixed "now" for relative times: 2026-01-31T12:00:00Z
NOW = 1_769_860_800 * NS
INT64_MAX = 2**63 - 1

# ------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(("text", "ns"), [
    ("1ns", 1), ("1us", 1_000), ("1µs", 1_000), ("1μs", 1_000), ("1ms", 1_000_000),
    ("1s", S), ("1m", MIN), ("1h", HOUR), ("1d", DAY), ("1w", 7 * DAY), ("1y", 365 * DAY),
])
def test_every_unit(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration_ns("3" + text[1:]) == 3 * ns


@pytest.mark.parametrize(("text", "ns"), [
    ("1h30m", 90 * MIN), ("2h0m0s", 2 * HOUR), ("720h0m0s", 30 * DAY), ("30d1h", 30 * DAY + HOUR),
    ("4w2d", 30 * DAY), ("1y2w3d4h5m6s7ms8us9ns",
                         365 * DAY + 17 * DAY + 4 * HOUR + 5 * MIN + 6 * S + 7_008_009),
    ("1.5h", 90 * MIN), ("0.5s", S // 2), (".5s", S // 2), ("1.s", S), ("1s500ms", 3 * S // 2),
    ("90m", 90 * MIN), ("0", 0), ("0s", 0), ("0h0m0s", 0), (" 7d ", 7 * DAY),
    ("0.000000001s", 1), ("1.0000000005s", S + 0), ("1.0000000015s", S + 2),
])
def test_compound_and_fractional_forms(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


def test_parse_duration_is_a_timedelta_to_the_microsecond() -> None:
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("1h30m") == parse_duration("90m") == dt.timedelta(minutes=90)
    assert parse_duration("720h") == parse_duration("30d")
    assert parse_duration("1500ns") == dt.timedelta(microseconds=2)


@pytest.mark.parametrize(("value", "seconds"), [
    ("90", 90.0), ("0.5", 0.5), (".5", 0.5), (90, 90.0), (0.25, 0.25), ("90s", 90.0),
    ("1h30m", 5400.0), ("2h0m0s", 7200.0), ("7d", 604800.0), ("250ms", 0.25), (" 15s ", 15.0),
    ("0", 0.0), (0, 0.0), ("10m", 600.0),
])
def test_parse_seconds_takes_a_bare_number_as_seconds(value: object, seconds: float) -> None:
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (1_000, "1us"), (250 * 1_000_000, "250ms"), (90 * S, "1m30s"),
    (90 * MIN, "1h30m"), (7 * DAY, "7d"), (30 * DAY + HOUR, "30d1h"), (365 * DAY, "1y"),
    (730 * DAY, "2y"), (366 * DAY, "366d"), (365 * DAY + 1, "365d1ns"),
    (S + 500_000_000, "1s500ms"), (DAY + 1, "1d1ns"),
])
def test_format_duration_ns_writes_the_shortest_exact_form(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text
    assert parse_duration_ns(text) == ns


def test_format_duration_and_format_seconds() -> None:
    assert format_duration(dt.timedelta(days=90)) == "90d"
    assert format_duration(dt.timedelta(days=1.5)) == "1d12h"
    assert format_duration(dt.timedelta(0)) == "0s"
    assert format_duration(dt.timedelta(microseconds=1)) == "1us"
    assert format_seconds(5400) == "1h30m"
    assert format_seconds(0.25) == "250ms"
    assert format_seconds(0.1) == "100ms"
    assert format_seconds(0) == "0s"
    assert format_seconds(1e-9) == "1ns"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: parse_duration_ns("90"), "not a duration: '90'; use a number and a unit"),
    (lambda: parse_duration_ns(""), "not a duration: ''"),
    (lambda: parse_duration_ns("ages"), "not a duration: 'ages'; use"),
    (lambda: parse_duration_ns("30 d"), "not a duration: '30 d'"),
    (lambda: parse_duration_ns("d30"), "not a duration: 'd30'"),
    (lambda: parse_duration_ns("1x"), "not a duration: '1x'"),
    (lambda: parse_duration_ns("1h-1m"), "not a duration: '1h-1m'"),
    (lambda: parse_duration_ns("1e3s"), "not a duration: '1e3s'"),
    # units are lower case, as Go and Loki read them: 1M is not a minute (nor a month)
    (lambda: parse_duration_ns("1M"), "not a duration: '1M'"),
    (lambda: parse_duration_ns("2H"), "not a duration: '2H'"),
    (lambda: parse_duration_ns("٣s"), "not a duration"),  # digits are ASCII digits
    (lambda: parse_duration_ns("-1h"), "negative duration: '-1h' (a duration is zero or more)"),
    (lambda: parse_duration_ns(None), "not a duration: None"),  # type: ignore[arg-type]
    (lambda: parse_duration_ns(90), "not a duration: 90"),  # type: ignore[arg-type]
    (lambda: parse_duration("99999999999y"), "duration too long: '99999999999y' (at most"),
    (lambda: parse_seconds("soon"), "not a duration: 'soon'; use seconds (90, 0.5) or"),
    (lambda: parse_seconds("-1"), "negative duration: '-1'"),
    (lambda: parse_seconds(-0.5), "negative duration: -0.5"),
    (lambda: parse_seconds("-1m"), "negative duration: '-1m'"),
    (lambda: parse_seconds(math.nan), "not a duration: nan is not a finite number"),
    (lambda: parse_seconds(math.inf), "not a duration: inf is not a finite number"),
    (lambda: parse_seconds("nan"), "not a duration: 'nan'"),
    (lambda: parse_seconds("inf"), "not a duration: 'inf'"),
    (lambda: parse_seconds(10**400), "duration too long: 1000000000000000000000000000000000"),
    (lambda: parse_seconds(True), "not a duration: True"),
    (lambda: parse_seconds([1]), "not a duration: [1]"),
    (lambda: parse_seconds("0", allow_zero=False), "zero duration: '0' (this must be more"),
    (lambda: parse_seconds("0s", allow_zero=False), "zero duration: '0s'"),
    (lambda: format_duration_ns(-1), "not a duration: -1"),
    (lambda: format_duration(dt.timedelta(seconds=-1)), "negative duration: -1 day, 23:59:59"),
    (lambda: format_seconds(-1.0), "not a duration: -1.0"),
    (lambda: format_seconds(math.nan), "not a duration: nan"),
])
def test_a_duration_that_cannot_be_read_is_a_unit_error_saying_why(
    call: Any, message: str,
) -> None:
    with pytest.raises(UnitError) as err:
        call()
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(("value", "size"), [
    (0, 0), (1048576, 1048576), ("1048576", 1048576), ("10b", 10), ("10B", 10),
    ("1k", 1000), ("1kb", 1000), ("1KB", 1000), ("1kib", 1024), ("1KiB", 1024),
    ("1m", 1000**2), ("1MB", 1000**2), ("1MiB", 1024**2), ("1g", 1000**3), ("1GB", 1000**3),
    ("1GiB", 1024**3), ("1.5MB", 1_500_000), ("4mb", 4_000_000), (" 512 KiB ", 512 * 1024),
    ("1.5B", 1), ("0.0001KiB", 0),
])
def test_every_size_unit(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(("value", "message"), [
    ("lots", "not a size: 'lots'; use bytes, or a number and a unit such as 512KiB"),
    ("1TB", "not a size: '1TB'"),
    ("1 2", "not a size: '1 2'"),
    ("", "not a size: ''"),
    ("-1", "negative size: '-1' (a size is zero or more)"),
    (-1, "negative size: -1"),
    (1.5, "not a size: 1.5"),
    (True, "not a size: True"),
    (None, "not a size: None"),
    ("9" * 10_000, "not a size: '99999999999999999999999999999999999...; use bytes"),
])
def test_a_size_that_cannot_be_read_is_a_unit_error_saying_why(value: object,
                                                               message: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_size(value)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (3_355_443, "3.2 MiB"), (1024**3, "1.0 GiB"), (5 * 1024**4, "5120.0 GiB"),
])
def test_format_size_is_for_a_person(n: int, text: str) -> None:
    assert format_size(n) == text


# ------------------------------------------------------------------------------ times


@pytest.mark.parametrize(("text", "ns"), [
    ("2026-01-31T12:00:00Z", NOW),
    ("2026-01-31t12:00:00z", NOW),
    ("2026-01-31 12:00:00Z", NOW),
    ("2026-01-31T13:00:00+01:00", NOW),
    ("2026-01-31T06:30:00-05:30", NOW),
    ("2026-01-31T12:00:00.5Z", NOW + S // 2),
    ("2026-01-31T12:00:00.123456789Z", NOW + 123_456_789),
    ("2026-01-31T12:00:00.000000001+00:00", NOW + 1),
    ("2026-01-31", NOW - 12 * HOUR),
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59.999999999Z", -1),
    ("2262-04-11T23:47:16.854775807Z", INT64_MAX),
    ("now", NOW), ("NOW", NOW), (" now ", NOW),
    ("now-2h", NOW - 2 * HOUR), ("now - 1h30m", NOW - 90 * MIN), ("now-0s", NOW),
    ("2h", NOW - 2 * HOUR), ("1h30m", NOW - 90 * MIN), ("7d", NOW - 7 * DAY),
    ("500ms", NOW - 500_000_000),
])
def test_times_absolute_and_relative(text: str, ns: int) -> None:
    assert parse_time(text, now_ns=NOW) == ns


def test_relative_times_count_from_the_clock_by_default() -> None:
    import time

    before = time.time_ns()
    got = parse_time("now-1h")
    assert before - HOUR <= got <= time.time_ns() - HOUR


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "not a time: 'yesterday'; use RFC 3339 (2026-01-31T12:00:00Z"),
    ("now+1h", "not a time: 'now+1h'"),
    ("now-soon", "not a time: 'now-soon'; after now- comes a number and a unit"),
    ("now--1h", "not a time: 'now--1h'; after now- comes"),
    ("90", "not a time: '90'; a bare number is not a time (write 90s for 90 seconds ago)"),
    ("0", "not a time: '0'; a bare number is not a time"),
    ("2026-01-31T12:00:00", "no time zone in '2026-01-31T12:00:00': add Z for UTC or an offset"),
    ("2026-01-31T12:00", "not a time: '2026-01-31T12:00'"),
    ("2026-01-31T12:00:00.1234567891Z", "not a time: '2026-01-31T12:00:00.1234567891Z'"),
    ("2026-02-30", "not a time: '2026-02-30': day is out of range for month"),
    ("2026-01-31T24:00:00Z", "not a time: '2026-01-31T24:00:00Z': hour must be in 0..23"),
    ("2026-01-31T23:59:60Z", "not a time: '2026-01-31T23:59:60Z': second must be in 0..59"),
    ("2026-01-31T12:00:00+24:00", "not a time: '2026-01-31T12:00:00+24:00': an offset runs"),
    ("2026-01-31T12:00:00+01:60", "not a time: '2026-01-31T12:00:00+01:60': an offset runs"),
    ("2026-01-31T12:00:00+0100", "not a time: '2026-01-31T12:00:00+0100'"),
    ("31/01/2026", "not a time: '31/01/2026'"),
    ("2262-04-12", "time out of range: '2262-04-12' (Loki's times run from 1677-09-21 to "
                   "2262-04-11)"),
    ("1600-01-01", "time out of range: '1600-01-01'"),
    ("999999y", "time out of range: '999999y'"),
    ("99999999999y", "duration too long: '99999999999y'"),
    ("", "not a time: ''"),
])
def test_a_time_that_cannot_be_read_is_a_unit_error_saying_why(text: str, message: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_time(text, now_ns=NOW)
    assert str(err.value).startswith(message)


def test_format_time_is_rfc3339_in_utc() -> None:
    assert format_time(NOW) == "2026-01-31T12:00:00Z"
    assert format_time(NOW + S // 2) == "2026-01-31T12:00:00.5Z"
    assert format_time(NOW + 123_456_789) == "2026-01-31T12:00:00.123456789Z"
    assert format_time(NOW, digits=9) == "2026-01-31T12:00:00.000000000Z"
    assert format_time(NOW + 123_456_789, digits=3) == "2026-01-31T12:00:00.123Z"
    assert format_time(NOW + 123_456_789, digits=0) == "2026-01-31T12:00:00Z"
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(-1) == "1969-12-31T23:59:59.999999999Z"
    assert format_time(INT64_MAX) == "2262-04-11T23:47:16.854775807Z"


@pytest.mark.parametrize(("ns", "text"), [
    (NOW, "2026-01-31T12:00:00Z"),
    (10_413_792_000_000_000_000, "2300-01-01T00:00:00Z"),
    (-(2**63) - 1, "1677-09-21T00:12:43.145224191Z"),
    (-62_135_596_800 * S, "0001-01-01T00:00:00Z"),
    (253_402_300_800 * S, "253402300800000000000"),
    (-(10**5000), "<negative 16610-bit number of nanoseconds>"),
], ids=["2026", "2300", "int64-min-1", "year-1", "year-10000", "too-long-to-write"])
def test_describe_time_writes_times_outside_lokis_range_too(ns: int, text: str) -> None:
    assert describe_time(ns) == text


@pytest.mark.parametrize(("call", "message"), [
    (lambda: format_time(2**63), "time out of range: 9223372036854775808"),
    (lambda: format_time(NOW, digits=10), "digits=10: a time has 0 to 9 fractional digits"),
    (lambda: format_time(1.5), "time out of range: 1.5"),  # type: ignore[arg-type]
])
def test_format_time_refuses_what_is_not_a_time(call: Any, message: str) -> None:
    with pytest.raises(UnitError) as err:
        call()
    assert str(err.value).startswith(message)


# ------------------------------------------------------------------------------ properties


@given(st.integers(min_value=0, max_value=MAX_DURATION_NS))
def test_any_duration_in_ns_is_read_back_as_formatted(ns: int) -> None:
    text = format_duration_ns(ns)
    assert parse_duration_ns(text) == ns
    if ns <= INT64_MAX:
        assert parse_time(f"now-{text}", now_ns=INT64_MAX) == INT64_MAX - ns


@given(st.timedeltas(min_value=dt.timedelta(0)))
def test_any_timedelta_is_read_back_as_formatted(value: dt.timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@given(st.floats(min_value=0, max_value=1e12))
def test_any_number_of_seconds_is_read_back_to_the_nanosecond(seconds: float) -> None:
    to_the_ns = float(Fraction(round(Fraction(seconds) * NS), NS))
    assert parse_seconds(format_seconds(seconds)) == to_the_ns
    assert parse_seconds(repr(seconds) if "e" not in repr(seconds) else seconds) == seconds


@given(st.integers(min_value=0, max_value=INT64_MAX), st.sampled_from([None, 9]))
def test_any_time_from_1970_to_2262_is_read_back_as_formatted(ns: int,
                                                               digits: int | None) -> None:
    assert parse_time(format_time(ns, digits=digits)) == ns


@given(st.integers(min_value=0, max_value=2**70),
       st.sampled_from([("", 1), ("KiB", 1024), ("MB", 1000**2), ("gib", 1024**3)]))
def test_any_whole_size_is_read_back(n: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{n}{unit[0]}") == n * unit[1]
    assert parse_size(n) == n


#: texts near the grammar (digits, units, signs, separators) and anything at all
_NEAR = st.text(alphabet="0123456789.,+-:eE hmsdwyunµμbBkKMgGiT Zz now", max_size=30)
_ANY_TEXT = st.one_of(_NEAR, st.text(max_size=60),
                      st.integers(1, 20_000).map(lambda n: "9" * n + "h"))
_ANY_VALUE = st.one_of(
    _ANY_TEXT, st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**1400),
    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=2),
    st.binary(max_size=4),
)


@given(_ANY_VALUE)
def test_no_input_makes_a_parser_raise_anything_but_a_unit_error(value: Any) -> None:
    for parse in (parse_duration, parse_duration_ns, parse_seconds, parse_size,
                  lambda v: parse_time(v, now_ns=NOW)):
        try:
            parse(value)
        except UnitError as exc:
            message = str(exc)
            assert 10 < len(message) < 400, message  # quotes the value, cut short when long
            assert "\n" not in message


@given(st.one_of(st.integers(min_value=1, max_value=2**70),
                 st.floats(min_value=1e-9, max_value=1e12)))
def test_a_negative_value_is_refused_as_negative(magnitude: float) -> None:
    for value in (-magnitude, f"-{magnitude}"):
        with pytest.raises(UnitError, match=r"^negative"):
            parse_seconds(value)
        if isinstance(magnitude, int):
            with pytest.raises(UnitError, match=r"^negative"):
                parse_size(value)

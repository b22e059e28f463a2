"""What an attacker or a careless app hands a logging call: objects whose ``str``, ``repr``,
``hash`` or ``==`` raise, ints too long to write, NaN, cycles, deep nesting, odd mappings and
times Loki cannot take; and hypothesis strategies that draw them."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from types import MappingProxyType
from typing import Any

from hypothesis import strategies as st


class BadStr:
    """``str`` raises; ``repr`` works."""

    def __str__(self) -> str:
        raise RuntimeError("str refused")

    def __repr__(self) -> str:
        return "<BadStr>"


class BadBoth:
    """``str`` and ``repr`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("str refused")

    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


class BadHash(BadBoth):
    """Unusable as a key and in comparisons too: ``hash`` and ``==`` raise as well."""

    def __hash__(self) -> int:
        raise RuntimeError("hash refused")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq refused")


class StrRaisesError(Exception):
    """An exception whose own text cannot be written."""

    def __str__(self) -> str:
        raise RuntimeError("str of the exception refused")


HUGE_INT = 10**5000


def cycle() -> dict[str, Any]:
    """A dict that contains itself."""
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    return loop


def nested(depth: int) -> list[Any]:
    """Lists ``depth`` deep."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


#: times the event contract must ship at receipt time (outside 64-bit nanoseconds, or none)
BAD_TIMES: tuple[Any, ...] = (
    math.nan, math.inf, -math.inf, 1e30, -1e30, 10**30,
    dt.datetime(2300, 1, 1, tzinfo=dt.UTC), dt.datetime(1600, 1, 1, tzinfo=dt.UTC),
    dt.datetime.max, dt.datetime.min, dt.datetime.max.replace(tzinfo=dt.UTC),
    dt.datetime.min.replace(tzinfo=dt.UTC),
)

_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
    st.sampled_from([1, -1]).map(lambda sign: sign * HUGE_INT),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.binary(max_size=30), st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(), st.datetimes(timezones=st.just(dt.UTC)), st.uuids(),
    st.frozensets(st.integers(), max_size=4), st.sets(st.text(max_size=5), max_size=4),
    st.builds(BadStr), st.builds(BadBoth), st.builds(BadHash),
    st.just(decimal.Decimal("1.5")),
)
_keys = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(),
                  st.tuples(st.integers(), st.text(max_size=3)), st.builds(BadStr),
                  st.builds(BadBoth), st.just("password"), st.just("type"),
                  st.just("message"), st.just("original_time"))

#: a metadata value: leaves, containers of them, cycles, deep nesting, mappingproxy
values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_keys, inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4).map(MappingProxyType),
    ),
    max_leaves=12,
) | st.builds(cycle) | st.builds(nested, st.sampled_from([100, 300, 2_000]))

#: an event's own time as an app may give it: any float, int or datetime
event_times = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(BAD_TIMES),
    st.datetimes(), st.datetimes(timezones=st.just(dt.UTC)),
    st.datetimes(timezones=st.just(dt.timezone(dt.timedelta(hours=-5)))),
    st.text(max_size=20), st.builds(BadBoth),
)

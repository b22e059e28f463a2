"""load_json: json.loads with a bound on nesting; what is deeper is kept as the text sent."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.sidecar.boundedjson import DeepJson, NestedTooDeep, load_json, open_deep

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=25)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@settings(max_examples=300)
@given(_JSON, st.sampled_from([None, 1]), st.integers(min_value=1, max_value=6))
def test_what_is_within_the_bound_is_what_json_loads_gives(
        doc: Any, indent: int | None, bound: int) -> None:
    text = json.dumps(doc, indent=indent)
    if _depth(doc) <= bound:
        assert load_json(text, bound) == doc
        assert load_json(text.encode(), bound) == doc
    else:
        with pytest.raises(NestedTooDeep):
            load_json(text, bound, None)


@settings(max_examples=300)
@given(_JSON, st.integers(min_value=1, max_value=4))
def test_a_value_past_the_bound_is_its_text_as_sent_and_reads_back_the_same(
        doc: Any, bound: int) -> None:
    text = json.dumps(doc, indent=1)

    def restored(value: Any, level: int) -> Any:
        if isinstance(value, DeepJson):
            assert level == bound + 1
            assert value in text  # the text as it was sent, spacing included
            return json.loads(value)
        if isinstance(value, dict):
            return {k: restored(v, level + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [restored(v, level + 1) for v in value]
        return value

    assert restored(load_json(text, bound, DeepJson), 1) == doc


def test_json_nested_5000_deep_is_read_without_recursion_and_its_neighbours_kept() -> None:
    deep = "[" * 5000 + '"]}"' + "]" * 5000
    text = '[{"message": "before"}, {"metadata": {"a": ' + deep + '}}, {"message": "after"}]'
    with pytest.raises(RecursionError):
        json.loads(text)
    doc = load_json(text, 16)
    assert doc[0] == {"message": "before"} and doc[2] == {"message": "after"}
    value = doc[1]["metadata"]["a"]
    for _ in range(13):  # levels 4 to 16 are read; the 17th is text
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == "[" * (5000 - 13) + '"]}"' + "]" * (5000 - 13)
    assert type(value) is str  # a plain string unless DeepJson is asked for
    with pytest.raises(NestedTooDeep):
        load_json(text, 16, None)


def test_four_mebibytes_of_brackets_are_read_as_one_deep_value() -> None:
    body = b"[" * 2_000_000 + b"]" * 2_000_000
    doc = load_json(body, 3, DeepJson)
    assert isinstance(doc[0][0][0], DeepJson) and len(doc[0][0][0]) == 4_000_000 - 6
    assert doc[0][0][0].kind == "array"


def test_an_integer_of_more_digits_than_int_converts_is_kept_as_its_digits() -> None:
    digits = "7" * 5000
    with pytest.raises(ValueError, match="integer string conversion"):
        json.loads(f'{{"n": {digits}}}')
    assert load_json(f'[{{"n": {digits}}}, 1]', 10) == [{"n": digits}, 1]


def test_nan_and_infinity_are_read_as_json_loads_reads_them() -> None:
    doc = load_json("[" * 20 + "[NaN, Infinity, -Infinity, 1e400, -0, 0.5]" + "]" * 20, 100)
    for _ in range(20):
        doc = doc[0]
    assert math.isnan(doc[0]) and doc[1:] == [math.inf, -math.inf, math.inf, 0, 0.5]


@pytest.mark.parametrize("text", [
    "[" * 5000, "[" * 5000 + "}" * 5000, '{"a": 1,}', "[1 2]", "", '{"a" 1}', "[1]x",
    '[[[["unterminated', "[" * 40 + "]" * 39 + "}", '{"a": [' + "[" * 3000 + "]" * 3000 + "}",
])
def test_what_is_not_json_is_a_value_error_whatever_its_depth(text: str) -> None:
    with pytest.raises(ValueError):
        load_json(text, 8)


def test_invalid_utf8_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load_json(b'{"message": "\xff\xfe"}', 8)


def test_open_deep_opens_one_level_at_a_time() -> None:
    doc = load_json('{"a": {"b": {"c": [1, {"d": 2}]}}}', 1, DeepJson)
    inner = open_deep(doc["a"])
    assert isinstance(inner["b"], DeepJson)
    assert open_deep(open_deep(inner["b"])["c"]) == [1, '{"d": 2}']
    assert open_deep("plain") == "plain"


def test_without_the_walk_only_what_json_loads_cannot_read_is_kept_as_text() -> None:
    """For a reader that checks every value's type: the depth json.loads reads is left as it
    is, and what it cannot read is still text, never a RecursionError."""
    medium = "[" * 200 + "]" * 200
    assert load_json(medium, 100, walk=False) == json.loads(medium)
    cut = load_json(medium, 100)  # with the walk: cut at level 100
    for _ in range(99):
        cut = cut[0]
    assert cut == ["[" * 100 + "]" * 100]
    doc = load_json("[" + "[" * 5000 + "]" * 5000 + "]", 100, walk=False)
    for _ in range(99):
        doc = doc[0]
    assert doc == ["[" * 4901 + "]" * 4901]

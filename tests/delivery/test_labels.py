"""shipper.delivery.labels: the one reader of label text, for label sets and selectors."""

from __future__ import annotations

import pytest

from shipper.delivery.labels import LabelSyntaxError, parse_labels, parse_matchers


def test_parse_labels_takes_equality_only() -> None:
    assert parse_labels('{level="INFO",actor="USER"}') == {"level": "INFO", "actor": "USER"}
    with pytest.raises(LabelSyntaxError, match="with = only"):
        parse_labels('{level=~"INFO"}')
    with pytest.raises(LabelSyntaxError, match="given twice"):
        parse_labels('{level="INFO", level="ERROR"}')


def test_an_empty_label_set_has_no_labels() -> None:
    assert parse_labels("{}") == {}
    assert parse_labels(" { } ") == {}
    assert parse_matchers("{}") == ()


def test_label_sets_as_loki_and_prometheus_print_them() -> None:
    # Go's strconv.Quote, which Prometheus' labels.String() uses: named and hex escapes
    text = r'{a="x\\y\"z", b="tab\there\nnew", c="\x01\u00e9\U0001F600", d=`raw \n`}'
    assert parse_labels(text) == {"a": 'x\\y"z', "b": "tab\there\nnew",
                                  "c": "\x01\u00e9\U0001F600", "d": "raw \\n"}


def test_label_names_may_carry_the_dots_some_clients_push() -> None:
    assert parse_labels('{service.name="shop"}') == {"service.name": "shop"}


def test_matchers_keep_their_order_and_operators() -> None:
    assert parse_matchers('{a="1", b!="2", c=~"3", d!~"4"}') == (
        ("a", "=", "1"), ("b", "!=", "2"), ("c", "=~", "3"), ("d", "!~", "4"))


@pytest.mark.parametrize(("text", "message"), [
    ('a="1"', "missing '{'"),
    ('{a="1"', "expected ',' or '}'"),
    ("{a=unquoted}", "expected a quoted value"),
    (r'{a="1\q"}', r"invalid escape \q"),
    (r'{a="\xff"}', "byte escape above"),
    ('{a="1"} x', "unexpected text after '}'"),
    ('{a="1\n2"}', "newline inside a string"),
    ('{a="12', "unterminated string"),
])
def test_bad_label_text_is_named_with_where_it_went_wrong(text: str, message: str) -> None:
    with pytest.raises(LabelSyntaxError) as info:
        parse_labels(text)
    assert message in str(info.value)
    assert repr(text) in str(info.value)


def test_an_empty_set_is_refused_where_one_label_is_needed() -> None:
    with pytest.raises(LabelSyntaxError, match=r"no label \(Loki needs at least one\)"):
        parse_labels("{ }", empty=False)
    with pytest.raises(LabelSyntaxError, match=r"no matcher \(Loki needs at least one\)"):
        parse_matchers("{}", empty=False)

"""shipper.loki.selector: LogQL stream selectors parsed, printed and evaluated as Loki does."""

from __future__ import annotations

import pytest

from shipper.loki.selector import Matcher, Selector, SelectorError


def test_selector_parses_all_four_operators_and_prints_canonically() -> None:
    sel = Selector.parse('{ level = "INFO",type=~"AUTH_.*" , env!="dev",actor!~`GUEST|USER`}')
    assert sel.matchers == (
        Matcher("level", "=", "INFO"),
        Matcher("type", "=~", "AUTH_.*"),
        Matcher("env", "!=", "dev"),
        Matcher("actor", "!~", "GUEST|USER"),
    )
    assert str(sel) == '{level="INFO", type=~"AUTH_.*", env!="dev", actor!~"GUEST|USER"}'
    assert Selector.parse(str(sel)) == sel


def test_selector_identity_ignores_matcher_order_and_spacing() -> None:
    a = Selector.parse('{level="INFO",type="HTTP_REQUEST"}')
    b = Selector.parse('{ type = "HTTP_REQUEST", level = "INFO" }')
    assert a.key == b.key
    assert a.key != Selector.parse('{level="INFO"}').key


def test_selector_reads_go_string_escapes() -> None:
    sel = Selector.parse(r'{type=~"A\\.B", service_name="say \"hi\"\t\u00e9"}')
    assert sel.matchers[0].value == r"A\.B"
    assert sel.matchers[1].value == 'say "hi"\té'
    assert Selector.parse(str(sel)) == sel


def test_regex_matchers_are_fully_anchored_like_loki() -> None:
    sel = Selector.parse('{type=~"AUTH"}')
    assert not sel.matches({"type": "AUTH_LOGIN"})
    assert sel.matches({"type": "AUTH"})
    assert Selector.parse('{type=~"AUTH_.*"}').matches({"type": "AUTH_LOGIN"})
    assert not Selector.parse('{type=~"AUTH_.*"}').matches({"type": "X_AUTH_LOGIN"})
    assert Selector.parse('{type!~"AUTH_.*"}').matches({"type": "X_AUTH_LOGIN"})


def test_a_missing_label_reads_as_the_empty_value() -> None:
    assert Selector.parse('{level="INFO", env!="prod"}').matches({"level": "INFO"})
    assert not Selector.parse('{level="INFO", env="prod"}').matches({"level": "INFO"})
    assert Selector.parse('{level="INFO", env=""}').matches({"level": "INFO"})
    assert not Selector.parse('{level="INFO", env=""}').matches({"level": "INFO", "env": "x"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('level="INFO"', "missing '{'"),
        ("{}", "no matcher"),
        ('{level="INFO"', "expected ',' or '}'"),
        ('{level=="INFO"}', "expected a quoted value"),
        ('{level~"INFO"}', "expected =, !=, =~ or !~"),
        ('{1level="INFO"}', "expected a label name"),
        ('{level="INFO}', "unterminated string"),
        ('{level="INFO"} |= "x"', "unexpected text after '}'"),
        (r'{type=~"AUTH\.X"}', r"invalid escape \."),
        (r'{type="\x"}', r"malformed escape \x"),
        ('{type=~"(?=AUTH)"}', "RE2"),
        ('{type=~"(AUTH"}', "invalid regex"),
    ],
)
def test_bad_selectors_get_an_error_naming_the_selector(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        Selector.parse(text)
    assert message in str(info.value)
    assert repr(text) in str(info.value)

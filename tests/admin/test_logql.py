"""shipper/loki/logql.py: filters become LogQL whose structure no input can change.

The property test parses generated queries with Grafana's own LogQL grammar (tests/logql,
@grafana/lezer-logql, as the dashboard tests do): for any values, the parse tree has exactly
the shape the same filters have with harmless values, and every string literal decodes back to
the value typed (regexes: to the value, escaped so that it matches only itself)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shipper.event import Actor, Level
from shipper.loki.logql import (
    FilterError,
    Filters,
    count_by,
    duration,
    label_name,
    log_query,
    metric_query,
    quote,
    regex_escape,
    stream_selector,
)
from tests.support import _grafana as g

ADVERSARIAL = [
    '"', "\\", "`", "\\\"", '"} | drop level |= "x', "a\nb", "\x00\x07\x1b\x7f", "{{ .message }}",
    "(a+b)*[c]{2}|^$.?/", "' OR 1=1 --", ") or vector(1) #", "${search}", "ünïcödé 😀 中文",
    "\u2028\u2029", " ", "|", "=~", "!=", "\\u0022", "%22", "\t",
]

text = st.one_of(
    st.sampled_from(ADVERSARIAL),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=16),
)


@st.composite
def filters(draw: st.DrawFn) -> Filters:
    return Filters(
        services=tuple(draw(st.lists(text, max_size=3, unique=True))),
        levels=tuple(draw(st.lists(st.sampled_from(list(Level)), max_size=5, unique=True))),
        actors=tuple(draw(st.lists(st.sampled_from(list(Actor)), max_size=5, unique=True))),
        type=draw(st.none() | text),
        actor_id=draw(st.none() | text),
        logger=draw(st.none() | text),
        search=draw(st.none() | text),
    )


def _harmless(f: Filters) -> Filters:
    """The same filters with plain values: the structure every input must keep."""
    return Filters(services=tuple(f"s{i}" for i in range(len(f.services))), levels=f.levels,
                   actors=f.actors, type="t" if f.type else None,
                   actor_id="a" if f.actor_id else None, logger="l" if f.logger else None,
                   search="x" if f.search else None)


STRING = re.compile(r'String\(("(?:[^"\\]|\\.)*"|null)\)')


def _masked(tree: str) -> str:
    return STRING.sub("String", tree)


def _strings(tree: str) -> list[Any]:
    return [json.loads(m) for m in STRING.findall(tree)]


def _unescape(pattern: str) -> str:
    return re.sub(r"\\(.)", r"\1", pattern, flags=re.S)


def _expected_values(f: Filters) -> list[str]:
    """What each string literal must decode to, in query order, said independently of the
    builder: the typed value, or a regex that matches it and only it."""
    out = []
    out.append("|".join(regex_escape(s) for s in f.services) if f.services else ".+")
    if f.levels:
        out.append(f.levels[0].value if len(f.levels) == 1 else "|".join(f.levels))
    if f.actors:
        out.append(f.actors[0].value if len(f.actors) == 1 else "|".join(f.actors))
    if f.type:
        out.append(f"(?i).*{regex_escape(f.type)}.*")
    if f.actor_id:
        out.append(f.actor_id)
    if f.logger:
        out += [f.logger, regex_escape(f.logger) + "\\..*"]
    if f.search:
        out += ["message"] + [f"(?is).*{regex_escape(f.search)}.*"] * 3
    return out


# Each example is a batch of queries parsed in one node call. No shrinking: a shrink step costs
# a node call, and the assertion messages already name the query that failed.
@settings(max_examples=15, deadline=None, derandomize=True,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(filters(), min_size=20, max_size=20))
def test_no_filter_value_changes_the_structure_of_the_query(batch: list[Filters]) -> None:
    queries = [log_query(f) for f in batch] + [log_query(_harmless(f)) for f in batch]
    queries += [log_query(f, keep_audit=True) for f in batch[:20]]
    results = g.parse_logql(queries)
    assert all(r["ok"] for r in results), g.describe_failures(results)
    n = len(batch)
    for i, f in enumerate(batch):
        tree, reference = results[i]["tree"], results[n + i]["tree"]
        assert _masked(tree) == _masked(reference), (f, queries[i])
        values = _strings(tree)
        assert values == _expected_values(f), queries[i]
        # the regexes match exactly what was typed (Python's re reads RE2's escapes alike)
        if f.services:
            alternation = values[0]
            for s in f.services:
                assert re.fullmatch(alternation, s)
            assert not re.fullmatch(alternation, f.services[0] + "\n!")
        if f.type:
            pattern = next(v for v in values if v.startswith("(?i)"))
            assert _unescape(pattern[len("(?i).*"):-2]) == f.type
            assert re.fullmatch(pattern, "X" + f.type.upper() + "Y") or not f.type.isascii()
        if f.search:
            pattern = values[-1]
            assert re.fullmatch(pattern, f"before {f.search} after")
    for r in results[2 * n:3 * n]:  # whatever the filters, a deletion spares the audit events
        assert 'Neq:"!=" String("LOGS_DELETED"))' in r["tree"]
        assert 'Neq:"!=" String("LOGS_DELETE_CANCELLED"))' in r["tree"]


# The queries `shipper series --count` and `shipper labels` build: the same filters inside a
# count grouped by the streams' label names, and the bare stream selector.
@settings(max_examples=10, deadline=None, derandomize=True,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(filters(), min_size=20, max_size=20),
       st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True), max_size=6))
def test_counts_by_stream_and_selectors_keep_their_structure_for_any_value(
    batch: list[Filters], names: list[str],
) -> None:
    queries = [count_by(names, f, 3600) for f in batch]
    queries += [count_by(names, _harmless(f), 3600) for f in batch]
    queries += [stream_selector(f) for f in batch]
    results = g.parse_logql(queries)
    assert all(r["ok"] for r in results), g.describe_failures(results)
    n = len(batch)
    for i, f in enumerate(batch):
        assert _masked(results[i]["tree"]) == _masked(results[n + i]["tree"]), queries[i]
        assert _strings(results[i]["tree"]) == _expected_values(f), queries[i]
        assert "Grouping" in results[i]["tree"] or not names
        selector_values = _strings(results[2 * n + i]["tree"])
        assert selector_values == _expected_values(f.replace(actor_id=None, logger=None,
                                                             search=None))


@pytest.mark.parametrize("name", ['ty"pe', "a}", "1x", "", "a b", "a-b", "a\nb", "é", "a.b"])
def test_a_label_name_loki_would_not_take_is_refused_naming_it(name: str) -> None:
    with pytest.raises(FilterError, match="not a label name"):
        label_name(name)
    with pytest.raises(FilterError, match="not a label name"):
        count_by(["level", name], Filters(), 60)


def test_quote_writes_every_control_character_escaped_on_one_line() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert quote("x\ny\tz\x00\x7f") == '"x\\u000ay\\u0009z\\u0000\\u007f"'
    assert "\n" not in quote("".join(chr(c) for c in range(32)))


def test_regex_escape_is_go_quotemeta_and_grafanas_slash() -> None:
    assert regex_escape("a.b*c+d?(e)|[f]{g}^h$\\/") == \
        "a\\.b\\*c\\+d\\?\\(e\\)\\|\\[f\\]\\{g\\}\\^h\\$\\\\\\/"
    assert regex_escape("plain-text_1 @:") == "plain-text_1 @:"
    for name in ("shop.api", "c++ worker", "billing/eu-1", "a@b:c", "x_y z"):
        assert regex_escape(name) == g.escape_regex(name)


def test_filters_map_to_the_event_contract() -> None:
    f = Filters.create(services=["shop"], levels=["error", "CRITICAL", "warn"],
                       actors=["admin"], type="login", actor_id="u-1", logger="shop.auth",
                       search="card declined")
    assert log_query(f) == (
        '{service_name=~"shop", level=~"WARNING|ERROR|CRITICAL", actor="ADMIN", '
        'type=~"(?i).*login.*"} | actor_id="u-1" '
        '| logger="shop.auth" or logger=~"shop\\\\.auth\\\\..*" '
        '| json message="message" '
        '| message=~"(?is).*card declined.*" or type=~"(?is).*card declined.*" '
        'or actor_id=~"(?is).*card declined.*"')
    assert stream_selector(Filters()) == '{service_name=~".+"}'
    assert log_query(Filters(), keep_audit=True) == \
        '{service_name=~".+", type!="LOGS_DELETED", type!="LOGS_DELETE_CANCELLED"}'


def test_logger_matches_the_module_and_its_children_only() -> None:
    values = _strings(g.parse_logql([log_query(Filters(logger="shop.auth"))])[0]["tree"])
    exact, children = values[1], values[2]
    for name in ("shop.auth", "shop.auth.login", "shop.auth.x.y"):
        assert name == exact or re.fullmatch(children, name)
    for name in ("shop.authz", "shop", "shopXauth.login", "other.shop.auth"):
        assert name != exact and not re.fullmatch(children, name)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"levels": ["loud"]}, "--level: unknown level 'loud'"),
    ({"actors": ["robot"]}, "--actor: unknown actor 'robot'"),
    ({"search": "bad \udcff byte"}, "--search"),
])
def test_bad_filter_values_are_refused_with_the_flag_named(kwargs: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(FilterError, match=re.escape(message)):
        Filters.create(**kwargs)


def test_durations_are_whole_milliseconds_in_the_largest_unit() -> None:
    assert [duration(s) for s in (3600, 86400 * 30 + 3600, 90, 1.5, 0.0001)] == \
        ["1h", "721h", "90s", "1500ms", "1ms"]
    expr = metric_query("sum by (level) (count_over_time({logs} [{range}]))",
                        Filters(search="{range} {logs}"), 60)
    assert expr.endswith('"(?is).*\\\\{range\\\\} \\\\{logs\\\\}.*" [1m]))')

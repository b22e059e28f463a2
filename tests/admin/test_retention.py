"""shipper.cli.retention: policy loading and validation, rendering, explain, and the drift check
against a local server that answers GET /config the way Loki 3.7.6 does."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import socket
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper._units import UnitError, format_duration, parse_duration
from shipper.cli.main import main
from shipper.cli.retention import (
    FOREVER_PERIOD,
    FOREVER_PRIORITY,
    LEVEL_PRIORITY,
    SELECTOR_PRIORITY,
    RetentionError,
    RetentionPolicy,
    check,
    check_url,
    explain,
    format_check_table,
)
from tests.support.lokiconfig import RETENTION_PATH, effective_config, serve_config, to_yaml

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def policy() -> RetentionPolicy:
    return RetentionPolicy.load(RETENTION_PATH)


def make_policy(**overrides: Any) -> RetentionPolicy:
    data: dict[str, Any] = {
        "levels": {"DEBUG": "7d", "INFO": "30d", "WARNING": "60d", "ERROR": "90d",
                   "CRITICAL": "forever"},
        "selectors": [],
        "default": "30d",
    }
    data.update(overrides)
    return RetentionPolicy.from_mapping(data, source="test.yaml")


def selector_error(selector: str, **entry: Any) -> str:
    with pytest.raises(RetentionError) as info:
        make_policy(selectors=[{"selector": selector, "period": "30d", **entry}])
    return str(info.value)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", 30 * DAY),
        ("720h", 30 * DAY),
        ("720h0m0s", 30 * DAY),
        ("4w2d", 30 * DAY),
        ("1w", 7 * DAY),
        ("1y", 365 * DAY),
        ("100y", FOREVER_PERIOD),
        ("30d1h", 30 * DAY + dt.timedelta(hours=1)),
        ("1.5h", dt.timedelta(minutes=90)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("500ms", dt.timedelta(milliseconds=500)),
        ("0s", dt.timedelta(0)),
        ("0", dt.timedelta(0)),
    ],
)
def test_parse_duration_reads_go_and_prometheus_forms(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "30 d", "d30", "-1h", "1x", "30d junk", "1h-1m"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(UnitError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("period", "text"),
    [(7 * DAY, "7d"), (365 * DAY, "1y"), (730 * DAY, "2y"), (90 * DAY, "90d"),
     (DAY * 1.5, "1d12h"), (dt.timedelta(0), "0s"), (FOREVER_PERIOD, "100y")],
)
def test_format_duration_round_trips(period: dt.timedelta, text: str) -> None:
    assert format_duration(period) == text
    assert parse_duration(text) == period


# --------------------------------------------------------------------------- policy validation


def test_project_policy_has_the_seed_periods(policy: RetentionPolicy) -> None:
    by_name = {rule.name: rule for rule in policy.rules}
    assert by_name["level DEBUG"].period == 7 * DAY
    assert by_name["level INFO"].period == 30 * DAY
    assert by_name["level WARNING"].period == 60 * DAY
    assert by_name["level ERROR"].period == 90 * DAY
    assert by_name["level CRITICAL"].forever
    assert str(by_name["security"].selector) == '{type=~"AUTH_.*|SECURITY_.*"}'
    assert by_name["security"].period == 365 * DAY
    assert str(by_name["access logs"].selector) == '{type="HTTP_REQUEST"}'
    assert by_name["access logs"].period == 90 * DAY
    assert policy.default == 30 * DAY


def test_rules_come_highest_priority_first(policy: RetentionPolicy) -> None:
    priorities = [rule.priority for rule in policy.rules]
    assert priorities == sorted(priorities, reverse=True)
    assert priorities[0] == FOREVER_PRIORITY
    assert {r.priority for r in policy.rules if r.name.startswith("level ") and not r.forever} == {
        LEVEL_PRIORITY
    }


def test_category_label_is_refused_because_it_is_not_a_stream_label() -> None:
    message = selector_error('{category="security"}')
    assert "{category=\"security\"}" in message
    assert "names label 'category', which is not a stream label" in message
    assert "selectors[0]" in message


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ('{level="info"}', 'level="info" matches no level'),
        ('{level=~"TRACE|NOTICE"}', "matches no level"),
        ('{actor="ROBOT"}', "matches no actor"),
        ('{type="auth_login"}', "did you mean 'AUTH_LOGIN'"),
        ('{env!="prod"}', "matches the empty value with every matcher"),
        ('{type=~".*"}', "matches the empty value with every matcher"),
        ('{trace_id="abc"}', "never structured metadata"),
    ],
)
def test_selectors_that_cannot_select_shipper_streams_are_refused(
    selector: str, message: str
) -> None:
    error = selector_error(selector)
    assert message in error
    assert selector in error


def test_selectors_with_negative_matchers_beside_a_real_one_are_accepted() -> None:
    policy = make_policy(selectors=[{"selector": '{type=~"AUTH_.+", env!="dev"}', "period": "1y"}])
    assert any(str(r.selector) == '{type=~"AUTH_.+", env!="dev"}' for r in policy.rules)


@pytest.mark.parametrize(
    ("period", "message"),
    [
        ("0s", "Loki refuses 0s in retention_stream; write 'forever'"),
        ("12h", "shorter than 24h"),
        (30, "needs a unit, e.g. 30d"),
        ("101y", "100 years or more: write 'forever'"),
        ("thirty days", "not a duration"),
        (None, "expected a duration"),
    ],
)
def test_bad_level_periods_are_refused(period: Any, message: str) -> None:
    with pytest.raises(RetentionError) as info:
        make_policy(levels={"INFO": period})
    assert message in str(info.value)
    assert "levels.INFO" in str(info.value)


def test_default_may_be_forever_or_0s_which_loki_reads_as_forever() -> None:
    assert make_policy(default="forever").default is None
    assert make_policy(default="0s").default is None
    assert make_policy(default="forever").limits()["retention_period"] == "0s"
    with pytest.raises(RetentionError, match="shorter than 24h"):
        make_policy(default="1h")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"levels": {"FATAL": "30d"}, "default": "30d"}, "'FATAL' is not a level"),
        ({"levels": {}, "default": "30d", "category": []}, "unknown key(s) category"),
        ({"levels": {}}, "'default' is missing"),
        ({"default": "30d"}, "'levels' is missing"),
        ({"levels": ["INFO"], "default": "30d"}, "levels must map level names"),
        ({"levels": {}, "default": "30d", "selectors": {"a": 1}}, "selectors must be a list"),
        ([], "expected a mapping"),
    ],
)
def test_malformed_policies_are_refused(data: Any, message: str) -> None:
    with pytest.raises(RetentionError) as info:
        RetentionPolicy.from_mapping(data, source="test.yaml")
    assert message in str(info.value)
    assert "test.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"period": "forever", "priority": 5}, "a forever rule always has priority 100"),
        ({"priority": 100}, "must be 1..99"),
        ({"priority": 0}, "must be 1..99"),
        ({"priority": "high"}, "must be an integer"),
        ({"name": ""}, "name must be non-empty text"),
        ({"ttl": "1d"}, "unknown key(s) ttl"),
    ],
)
def test_bad_selector_entries_are_refused(entry: dict[str, Any], message: str) -> None:
    assert message in selector_error('{type="HTTP_REQUEST"}', **entry)


def test_a_selector_given_twice_is_refused_even_in_another_order() -> None:
    with pytest.raises(RetentionError, match="is the same as"):
        make_policy(
            selectors=[
                {"selector": '{type="X", env="prod"}', "period": "30d"},
                {"selector": '{env="prod",type="X"}', "period": "60d"},
            ]
        )
    with pytest.raises(RetentionError, match=r"same as \{level=\"INFO\"\} \(level INFO\)"):
        make_policy(selectors=[{"selector": '{level="INFO"}', "period": "60d"}])


def test_load_names_the_file_in_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RetentionError, match="no such file"):
        RetentionPolicy.load(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("levels: [unclosed\n")
    with pytest.raises(RetentionError, match="not valid YAML") as info:
        RetentionPolicy.load(broken)
    assert str(broken) in str(info.value)


# --------------------------------------------------------------------------- rendering


def test_rendered_block_is_yaml_equal_to_limits(policy: RetentionPolicy) -> None:
    rendered = policy.render("")
    assert yaml.safe_load(rendered) == policy.limits()
    limits = policy.limits()
    assert limits["retention_period"] == "30d"
    assert limits["retention_stream"][0] == {
        "selector": '{level="CRITICAL"}',
        "priority": FOREVER_PRIORITY,
        "period": "100y",
    }
    assert {"selector": '{type="HTTP_REQUEST"}', "priority": SELECTOR_PRIORITY,
            "period": "90d"} in limits["retention_stream"]


def test_every_rendered_period_is_one_loki_accepts(policy: RetentionPolicy) -> None:
    for item in policy.limits()["retention_stream"]:
        assert parse_duration(item["period"]) >= DAY
        assert item["period"] != "0s"


def test_selectors_with_single_quotes_survive_yaml_quoting() -> None:
    policy = make_policy(selectors=[{"selector": "{service_name=\"it's\"}", "period": "60d"}])
    assert yaml.safe_load(policy.render("")) == policy.limits()


CONFIG_TEMPLATE = """\
# top comment stays
auth_enabled: false
limits_config:
  # a limit with its reason
  max_line_size: 256KB
  # BEGIN shipper retention
  retention_period: 1d
  # END shipper retention
  deletion_mode: filter-and-delete   # trailing comment stays
analytics:
  reporting_enabled: false
"""


def test_render_into_replaces_only_the_marked_block(
    policy: RetentionPolicy, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_TEMPLATE)
    path.chmod(0o640)
    assert policy.render_into(path) is True
    text = path.read_text()
    before, _, after = CONFIG_TEMPLATE.partition("  # BEGIN shipper retention\n")
    after = after.partition("  # END shipper retention\n")[2]
    assert text == before + policy.render("  ") + after
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    loaded = yaml.safe_load(text)["limits_config"]
    assert loaded["retention_stream"] == policy.limits()["retention_stream"]
    assert loaded["deletion_mode"] == "filter-and-delete"
    # a second run finds nothing to do and leaves the file alone
    assert policy.render_into(path) is False
    assert path.read_text() == text
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("limits_config:\n  max_line_size: 256KB\n", "found 0 begin and 0 end"),
        ("limits_config:\n  # BEGIN shipper retention\n", "found 1 begin and 0 end"),
        (
            "limits_config:\n  # END shipper retention\n  # BEGIN shipper retention\n",
            "followed by one",
        ),
        (
            "limits_config:\n  retention_period: 7d\n  # BEGIN shipper retention\n"
            "  # END shipper retention\n",
            "limits_config.retention_period is set outside",
        ),
        (
            "compactor:\n  # BEGIN shipper retention\n  # END shipper retention\n",
            "not inside limits_config",
        ),
    ],
)
def test_render_into_refuses_a_config_it_cannot_update_safely(
    policy: RetentionPolicy, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(RetentionError) as info:
        policy.render_into(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_text() == text


# --------------------------------------------------------------------------- explain


def _winner_period(labels: dict[str, str], policy: RetentionPolicy) -> dt.timedelta | None:
    return explain(policy, labels).period


@pytest.mark.parametrize(
    ("labels", "period", "winner"),
    [
        ({"level": "INFO", "actor": "USER"}, 30 * DAY, "level INFO"),
        ({"level": "DEBUG", "type": "LOG"}, 7 * DAY, "level DEBUG"),
        ({"level": "ERROR", "type": "PAYMENT_FAILED"}, 90 * DAY, "level ERROR"),
        # the extra selectors outrank the levels, whichever is longer or shorter
        ({"level": "DEBUG", "type": "AUTH_LOGIN"}, 365 * DAY, "security"),
        ({"level": "WARNING", "type": "HTTP_REQUEST"}, 90 * DAY, "access logs"),
        ({"level": "INFO", "type": "SECURITY_ALERT"}, 365 * DAY, "security"),
        # CRITICAL is forever even where a shorter rule matches too
        ({"level": "CRITICAL", "type": "AUTH_FAILED"}, None, "level CRITICAL"),
        ({"level": "CRITICAL", "type": "HTTP_REQUEST"}, None, "level CRITICAL"),
        # no level rule matches: the default
        ({"service_name": "api"}, 30 * DAY, None),
        ({"level": "info"}, 30 * DAY, None),
    ],
)
def test_explain_picks_the_rule_loki_would(
    policy: RetentionPolicy,
    labels: dict[str, str],
    period: dt.timedelta | None,
    winner: str | None,
) -> None:
    result = explain(policy, labels)
    assert result.period == period
    assert (result.winner.name if result.winner else None) == winner


def test_explain_on_equal_priority_keeps_the_shorter_period() -> None:
    policy = make_policy(
        selectors=[
            {"name": "security", "selector": '{type=~"AUTH_.*"}', "period": "365d"},
            {"name": "billing", "selector": '{service_name="billing"}', "period": "60d"},
        ]
    )
    result = explain(policy, {"service_name": "billing", "level": "INFO", "type": "AUTH_LOGIN"})
    assert result.period == 60 * DAY
    assert result.winner is not None and result.winner.name == "billing"
    assert "equal priority" in result.reason
    assert "security" in result.reason
    assert [r.name for r in result.matched] == ["security", "billing", "level INFO"]


def test_explain_explicit_priorities_decide_overlaps() -> None:
    policy = make_policy(
        selectors=[
            # at the levels' priority: shorter wins, so INFO access logs keep 30d
            {"selector": '{type="HTTP_REQUEST"}', "period": "90d", "priority": 1},
            # above everything finite: a noisy service's entries go after a day
            {"selector": '{service_name="noisy"}', "period": "1d", "priority": 50},
        ]
    )
    assert _winner_period({"level": "INFO", "type": "HTTP_REQUEST"}, policy) == 30 * DAY
    assert _winner_period({"level": "ERROR", "type": "HTTP_REQUEST"}, policy) == 90 * DAY
    assert _winner_period({"level": "ERROR", "service_name": "noisy"}, policy) == DAY
    # ...but nothing outranks forever
    assert _winner_period({"level": "CRITICAL", "service_name": "noisy"}, policy) is None


def test_explain_agrees_with_highest_priority_then_shortest_for_every_stream() -> None:
    policy = make_policy(
        selectors=[
            {"selector": '{type=~"AUTH_.*|SECURITY_.*"}', "period": "365d"},
            {"selector": '{type="HTTP_REQUEST"}', "period": "90d"},
            {"selector": '{actor="ADMIN"}', "period": "180d"},
            {"selector": '{actor="GUEST", type="HTTP_REQUEST"}', "period": "14d", "priority": 3},
            {"selector": '{env="dev"}', "period": "3d", "priority": 2},
        ],
        default="45d",
    )
    types = ["LOG", "AUTH_LOGIN", "SECURITY_ALERT", "HTTP_REQUEST", "PAYMENT"]
    for level, actor, type_, env in itertools.product(
        ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", None],
        ["USER", "ADMIN", "GUEST"],
        types,
        [None, "dev", "prod"],
    ):
        labels = {"actor": actor, "type": type_}
        if level:
            labels["level"] = level
        if env:
            labels["env"] = env
        matched = [r for r in policy.rules if r.selector.matches(labels)]
        if matched:
            top = max(r.priority for r in matched)
            expected = min(r.loki_period for r in matched if r.priority == top)
        else:
            expected = policy.default or dt.timedelta(0)
        got = explain(policy, labels)
        assert (got.period or FOREVER_PERIOD) == (expected or FOREVER_PERIOD), labels
        if level == "CRITICAL":
            assert got.forever, labels


def test_explain_describe_says_when_entries_are_deleted(policy: RetentionPolicy) -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    info = explain(policy, '{level="INFO",actor="USER"}')
    text = info.describe(now)
    assert "level INFO is the only matching rule: 30d" in text
    assert "from 2026-01-31 12:00 UTC" in text
    assert info.deleted_after(now) == now + 30 * DAY

    critical = explain(policy, '{level="CRITICAL",type="AUTH_FAILED"}')
    text = critical.describe(now)
    assert critical.deleted_after(now) is None
    assert "highest priority (100) of the 2 matching rules: forever" in text
    assert "in effect never" in text
    assert "100y at priority 100" in text

    text = explain(policy, '{service_name="api", category="x"}').describe(now)
    assert "no retention_stream rule matches, so retention_period applies" in text
    assert "category is not a stream label" in text
    assert "no level label" in text


def test_explain_with_a_forever_default() -> None:
    result = explain(make_policy(default="forever"), {"service_name": "api"})
    assert result.forever and result.winner is None
    assert "never by retention (retention_period 0s)" in result.describe()


# --------------------------------------------------------------------------- drift check


def live_yaml(edit: Any = None) -> str:
    config = effective_config()
    if edit is not None:
        edit(config)
    return to_yaml(config)


def rows_by_selector(rows: list[Any]) -> dict[str, Any]:
    return {row.selector: row for row in rows}


def test_check_passes_for_a_loki_started_from_config_yaml(policy: RetentionPolicy) -> None:
    answer = live_yaml()
    # Loki prints durations its own way: 7d as 1w, 365d as 1y
    assert "period: 1w" in answer
    rows = check(policy, answer)
    assert all(row.ok for row in rows), format_check_table(rows)
    assert len(rows) == len(policy.rules) + 2


def test_check_compares_durations_by_value(policy: RetentionPolicy) -> None:
    def hours(config: dict[str, Any]) -> None:
        limits = config["limits_config"]
        limits["retention_period"] = "720h0m0s"
        for rule in limits["retention_stream"]:
            rule["period"] = f"{int(parse_duration(rule['period']).total_seconds() // 3600)}h"
            rule["selector"] = "{ " + rule["selector"][1:-1] + " }"

    rows = check(policy, live_yaml(hours))
    assert all(row.ok for row in rows), format_check_table(rows)


def test_check_reports_a_changed_period_as_drift(policy: RetentionPolicy) -> None:
    def shorter_info(config: dict[str, Any]) -> None:
        for rule in config["limits_config"]["retention_stream"]:
            if rule["selector"] == '{level="INFO"}':
                rule["period"] = "2w"

    rows = rows_by_selector(check(policy, live_yaml(shorter_info)))
    info = rows['{level="INFO"}']
    assert (info.policy, info.live, info.status) == ("30d, priority 1", "2w, priority 1", "DRIFT")
    assert [s for s, row in rows.items() if not row.ok] == ['{level="INFO"}']


def test_check_reports_missing_extra_and_reprioritised_rules(policy: RetentionPolicy) -> None:
    def edit(config: dict[str, Any]) -> None:
        limits = config["limits_config"]
        limits["retention_stream"] = [
            r for r in limits["retention_stream"] if r["selector"] != '{type="HTTP_REQUEST"}'
        ]
        limits["retention_stream"].append(
            {"period": "1d", "priority": 5, "selector": '{service_name="x"}'}
        )
        for rule in limits["retention_stream"]:
            if rule["selector"] == '{level="CRITICAL"}':
                rule["priority"] = 1
        limits["retention_period"] = "0s"
        config["compactor"]["retention_enabled"] = False

    rows = rows_by_selector(check(policy, live_yaml(edit)))
    assert rows['{type="HTTP_REQUEST"}'].live == "missing"
    assert rows['{service_name="x"}'].policy == "not in policy"
    assert rows['{level="CRITICAL"}'].policy == "forever (as 100y), priority 100"
    assert rows['{level="CRITICAL"}'].live == "100y, priority 1"
    assert rows["(default: retention_period)"].live == "0s"
    assert rows["(compactor.retention_enabled)"].live == "false"
    drift = {s for s, row in rows.items() if not row.ok}
    assert drift == {
        '{type="HTTP_REQUEST"}',
        '{service_name="x"}',
        '{level="CRITICAL"}',
        "(default: retention_period)",
        "(compactor.retention_enabled)",
    }


def test_check_without_any_retention_stream_reports_every_rule_missing(
    policy: RetentionPolicy,
) -> None:
    def edit(config: dict[str, Any]) -> None:
        del config["limits_config"]["retention_stream"]  # Loki omits an empty list

    rows = check(policy, live_yaml(edit))
    assert sum(row.live == "missing" for row in rows) == len(policy.rules)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("just text\n", "no limits_config"),
        ("limits_config: [1, 2\n", "not YAML"),
        ("limits_config:\n  retention_stream: {a: 1}\n", "is not a list"),
    ],
)
def test_check_refuses_answers_that_are_not_lokis_config(
    policy: RetentionPolicy, body: str, message: str
) -> None:
    with pytest.raises(RetentionError, match=message):
        check(policy, body)


def test_format_check_table_aligns_columns() -> None:
    rows = check(make_policy(levels={"INFO": "30d"}), live_yaml())
    table = format_check_table(rows).splitlines()
    assert table[0].split() == ["SELECTOR", "POLICY", "LIVE", "STATUS"]
    assert len({line.index("STATUS") if i == 0 else len(line) - len(line.split()[-1])
                for i, line in enumerate(table)}) == 1


def test_check_url_reads_get_config_from_a_live_server(policy: RetentionPolicy) -> None:
    with serve_config(live_yaml()) as server:
        rows = check_url(policy, server.url + "/")
        assert server.requests == 1
    assert all(row.ok for row in rows)


def test_check_url_reports_a_non_200_answer(policy: RetentionPolicy) -> None:
    with (
        serve_config("Internal Server Error\n", status=500) as server,
        pytest.raises(RetentionError, match=r"/config answered 500: Internal Server Error"),
    ):
        check_url(policy, server.url)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_check_url_reports_an_unreachable_loki(policy: RetentionPolicy) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(RetentionError, match=rf"cannot reach Loki at {url}: .*Connection refused"):
        check_url(policy, url, timeout=2)
    with pytest.raises(RetentionError, match="expected Loki's base URL"):
        check_url(policy, "localhost:3100")


# --------------------------------------------------------------------------- the CLI


def test_cli_render_prints_the_block(policy: RetentionPolicy, capsys: Any) -> None:
    assert main(["retention", "render", "--file", str(RETENTION_PATH)]) == 0
    assert capsys.readouterr().out == policy.render()


def test_cli_render_write_updates_then_reports_up_to_date(
    policy: RetentionPolicy, tmp_path: Path, capsys: Any
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_TEMPLATE)
    args = ["retention", "render", "--file", str(RETENTION_PATH), "--write", str(config)]
    assert main(args) == 0
    assert "retention block updated" in capsys.readouterr().out
    assert policy.render() in config.read_text()
    assert main(args) == 0
    assert "already up to date" in capsys.readouterr().out


_HELM_TEMPLATE = """\
deploymentMode: SimpleScalable
loki:
  limits_config:
    ingestion_rate_mb: 8
    # BEGIN shipper retention
    # END shipper retention
  compactor:
    retention_enabled: true
"""


def test_cli_render_target_helm_prints_a_values_snippet(
    policy: RetentionPolicy, capsys: Any
) -> None:
    assert main(["retention", "render", "--file", str(RETENTION_PATH), "--target", "helm"]) == 0
    out = capsys.readouterr().out
    assert out == "loki:\n  limits_config:\n" + policy.render("    ", "helm")
    limits = yaml.safe_load(out)["loki"]["limits_config"]
    assert limits == policy.limits()
    assert "render --target helm --write" in out


def test_cli_render_target_helm_writes_a_values_file_and_keeps_the_rest(
    policy: RetentionPolicy, tmp_path: Path, capsys: Any
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(_HELM_TEMPLATE)
    args = ["retention", "render", "--file", str(RETENTION_PATH), "--target", "helm",
            "--write", str(values)]
    assert main(args) == 0
    assert "helm upgrade the release to apply it" in capsys.readouterr().out
    data = yaml.safe_load(values.read_text())
    assert data["loki"]["limits_config"]["ingestion_rate_mb"] == 8
    assert data["loki"]["compactor"] == {"retention_enabled": True}
    assert {k: data["loki"]["limits_config"][k]
            for k in ("retention_period", "retention_stream")} == policy.limits()
    assert main(args) == 0
    assert "already up to date" in capsys.readouterr().out


def test_cli_render_names_the_target_a_file_needs(tmp_path: Path, capsys: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(_HELM_TEMPLATE)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_TEMPLATE)
    base = ["retention", "render", "--file", str(RETENTION_PATH)]
    assert main([*base, "--write", str(values)]) == 2
    assert "this is a Helm values file; use --target helm" in capsys.readouterr().err
    assert main([*base, "--target", "helm", "--write", str(config)]) == 2
    assert "this is a Loki config; use --target loki" in capsys.readouterr().err
    assert values.read_text() == _HELM_TEMPLATE and config.read_text() == CONFIG_TEMPLATE
    with pytest.raises(RetentionError, match="format 'xml': expected one of loki, helm"):
        RetentionPolicy.load(RETENTION_PATH).render("  ", "xml")


def test_cli_finds_the_policy_from_env_or_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    (tmp_path / "loki").mkdir()
    (tmp_path / "loki" / "retention.yaml").write_text("levels: {INFO: 14d}\ndefault: 60d\n")
    other = tmp_path / "other.yaml"
    other.write_text("levels: {INFO: 21d}\ndefault: forever\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHIPPER_RETENTION_FILE", raising=False)
    assert main(["retention", "explain", '{level="INFO"}']) == 0
    assert "14d" in capsys.readouterr().out
    monkeypatch.setenv("SHIPPER_RETENTION_FILE", str(other))
    assert main(["retention", "explain", '{level="INFO"}']) == 0
    assert "21d" in capsys.readouterr().out


def test_cli_reports_a_bad_selector_with_exit_2(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "retention.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            levels: {INFO: 30d}
            selectors:
              - selector: '{category="security"}'
                period: 365d
            default: 30d
            """
        )
    )
    assert main(["retention", "render", "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shipper retention render: ")
    assert '{category="security"}' in err


def test_cli_explain_refuses_a_matcher_with_exit_2(capsys: Any) -> None:
    code = main(["retention", "explain", "--file", str(RETENTION_PATH), '{level=~"INFO"}'])
    assert code == 2
    assert "with = only" in capsys.readouterr().err


def test_cli_check_exit_codes(capsys: Any) -> None:
    base = ["retention", "check", "--file", str(RETENTION_PATH), "--format", "table", "--url"]
    with serve_config(live_yaml()) as server:
        assert main([*base, server.url]) == 0
        out = capsys.readouterr().out
        assert "DRIFT" not in out and out.count("OK") == len(out.splitlines()) - 1

        server.body = live_yaml(lambda c: c["compactor"].update(retention_enabled=False))
        assert main([*base, server.url]) == 1
        captured = capsys.readouterr()
        assert "(compactor.retention_enabled)  true" in captured.out
        assert "1 of" in captured.err

    assert main([*base, f"http://127.0.0.1:{_closed_port()}", "--timeout", "2"]) == 2
    assert "cannot reach Loki" in capsys.readouterr().err


def test_cli_check_reads_loki_url_and_the_other_connection_variables(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["retention", "check", "--file", str(RETENTION_PATH)]
    monkeypatch.delenv("LOKI_URL", raising=False)
    monkeypatch.delenv("SHIPPER_CONFIG", raising=False)
    assert main(base) == 2
    assert "no Loki URL: set LOKI_URL" in capsys.readouterr().err
    with serve_config(live_yaml()) as server:
        monkeypatch.setenv("LOKI_URL", server.url)
        monkeypatch.setenv("LOKI_TENANT", "team-a")
        assert main(base) == 0
        assert server.tenant == "team-a"
        # --url wins over LOKI_URL
        monkeypatch.setenv("LOKI_URL", f"http://127.0.0.1:{_closed_port()}")
        assert main([*base, "--url", server.url]) == 0
    monkeypatch.setenv("LOKI_TIMEOUT", "2")
    assert main(base) == 2
    assert "cannot reach Loki" in capsys.readouterr().err


def test_cli_check_prints_a_table_or_json(capsys: Any) -> None:
    with serve_config(live_yaml()) as server:
        base = ["retention", "check", "--file", str(RETENTION_PATH), "--url", server.url]
        assert main([*base, "--json"]) == 0
        as_json = capsys.readouterr().out
        assert main([*base, "--format", "json"]) == 0
        assert capsys.readouterr().out == as_json
        assert main(base) == 0  # piped: JSON
        assert capsys.readouterr().out == as_json
        rows = json.loads(as_json)
        assert rows[0] == {"selector": "(compactor.retention_enabled)", "policy": "true",
                           "live": "true", "status": "OK", "ok": True}
        assert main([*base, "--format", "table"]) == 0
        assert capsys.readouterr().out.startswith("SELECTOR ")

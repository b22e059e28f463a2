"""Checks on the Grafana provisioning files: structure, uids, datasource references, variables,
and every LogQL expression parsed by Grafana's own grammar (tests/logql/parse.mjs) after the
dashboard variables are filled in as Grafana would fill them."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from tests.support import _grafana as g

DASHBOARD_UIDS = {"shipper-system-logs", "shipper-overview", "shipper-security",
                  "shipper-performance", "shipper-shipping-health"}
RULE_UIDS = {
    "shipper-critical-event",
    "shipper-error-rate",
    "shipper-failed-logins-actor",
    "shipper-failed-logins-total",
    "shipper-webhook-failures",
    "shipper-p95-latency",
    "shipper-http-5xx-share",
    "shipper-error-rate-elevated",
    "shipper-payment-failures",
    "shipper-user-activity-drop",
    "shipper-events-dropped",
    "shipper-entries-refused",
    "shipper-spool-growing",
    "shipper-heartbeats-stopped",
    "shipper-sidecar-lag",
}
#: The seed's alert scale, most urgent first: every rule carries one as its `severity` label.
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
FOLDER = "Shipper"
#: The environment variables the provisioning files read, and nothing else.
PROVISIONING_ENV = {"GRAFANA_LOKI_URL", "GRAFANA_LOKI_USER", "GRAFANA_LOKI_PASSWORD",
                    "GRAFANA_TRACE_URL", "GRAFANA_TRACE_DATASOURCE_UID", "SLACK_WEBHOOK_URL"}

#: Search and actor-id texts a person could type, chosen to break a naively built query.
ADVERSARIAL_TEXT = [
    'He said "hi"',
    "back`tick` and ``double``",
    "\\",
    "trailing backslash \\",
    "(a+b)*[c]{2}|^$.?/",
    "{{ .message }} {{ end }}",
    "$service ${search} [[type]]",
    "' OR 1=1 --",
    "100% %41 %zz +plus",
    "} | drop level |= `x",
    '`) or vector(1) #',
    "line\nbreak\ttab",
    "ünïcödé 😀 中文",
    "   ",
]
#: Service names as the event contract's sanitiser lets them through ([A-Za-z0-9 _.:/@+-]).
ODD_SERVICE_NAMES = ["shop.api", "c++ worker", "billing/eu-1", "a@b:c", "x_y z"]


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return g.dashboards()


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return g.alert_rules()


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    doc = g.load_yaml(g.PROVISIONING / "datasources" / "loki.yaml")
    (ds,) = doc["datasources"]
    return dict(ds)


def _sample_values(dash: Mapping[str, Any]) -> list[dict[str, g.Value]]:
    """Value sets for every variable of a dashboard: All, a multi-selection, odd texts."""
    variables = g.dashboard_variables(dash)
    base: dict[str, g.Value] = {}
    multi: dict[str, g.Value] = {}
    for name, var in variables.items():
        if var.type == "textbox":
            base[name] = ""
            multi[name] = {"actor_id": "u-42", "logger": "shop.auth",
                           "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                           }.get(name, "payment failed")
        else:
            base[name] = g.ALL
            multi[name] = {
                "service": ["shop.api", "c++ worker"],
                "level": ["ERROR", "CRITICAL"],
                "actor": ["ADMIN"],
                "type": ["AUTH_LOGIN", "WEBHOOK_PAYMENT_INTENT_SUCCEEDED"],
            }.get(name, ["x"])
    sets = [base, multi]
    for text in ADVERSARIAL_TEXT:
        odd = dict(multi)
        for name, var in variables.items():
            if var.type == "textbox":
                odd[name] = text
        sets.append(odd)
    for service in ODD_SERVICE_NAMES:
        if "service" in variables:
            sets.append({**base, "service": [service]})
    return sets


def _walk_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")


# ------------------------------------------------------------------------- files and uids


def test_every_provisioning_yaml_parses_with_api_version_1() -> None:
    files = g.provisioning_files()
    assert {p.relative_to(g.PROVISIONING).as_posix() for p in files} == {
        "datasources/loki.yaml",
        "dashboards/shipper.yaml",
        "alerting/rules.yaml",
        "alerting/contact-points.yaml",
        "alerting/policies.yaml",
        "alerting/templates.yaml",
        "alerting/mute-timings.yaml",
    }
    for path in files:
        doc = g.load_yaml(path)
        assert isinstance(doc, dict), path
        assert doc.get("apiVersion") == 1, path


def test_every_dashboard_json_parses_and_has_the_stable_uid() -> None:
    uids = []
    for path in g.dashboard_files():
        dash = json.loads(path.read_text(encoding="utf-8"))
        uids.append(dash["uid"])
        assert dash["title"], path
        assert "shipper" in dash["tags"], path
        assert dash["editable"] is False, path
    assert sorted(uids) == sorted(DASHBOARD_UIDS)


def test_panel_ids_are_unique_within_each_dashboard(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, dash in dashboards.items():
        ids = [p["id"] for p in g.iter_panels(dash)]
        assert len(ids) == len(set(ids)), uid


def test_alert_rule_uids_are_stable_unique_and_short(rules: list[dict[str, Any]]) -> None:
    uids = [r["uid"] for r in rules]
    assert len(uids) == len(set(uids))
    assert set(uids) == RULE_UIDS
    for uid in uids:
        assert len(uid) <= 40 and re.fullmatch(r"[a-zA-Z0-9_-]+", uid), uid


def test_contact_point_and_receiver_uids_are_stable() -> None:
    doc = g.load_yaml(g.ALERTING / "contact-points.yaml")
    receivers = [r for cp in doc["contactPoints"] for r in cp["receivers"]]
    assert [r["uid"] for r in receivers] == ["shipper-slack"]
    assert [cp["name"] for cp in doc["contactPoints"]] == ["shipper-slack"]


# ------------------------------------------------------------------------------ datasource


def test_datasource_has_the_fixed_uid_and_its_url_from_the_environment(
    datasource: dict[str, Any],
) -> None:
    assert datasource["uid"] == g.DATASOURCE_UID
    assert datasource["type"] == "loki"
    assert datasource["access"] == "proxy"
    assert datasource["url"] == "${GRAFANA_LOKI_URL}"
    assert datasource["isDefault"] is True


def test_datasource_logs_in_to_the_gateway_with_a_password_kept_encrypted(
    datasource: dict[str, Any],
) -> None:
    assert datasource["basicAuth"] is True
    assert datasource["basicAuthUser"] == "${GRAFANA_LOKI_USER}"
    # secureJsonData: encrypted in Grafana's database, never sent back by its API
    assert datasource["secureJsonData"] == {"basicAuthPassword": "${GRAFANA_LOKI_PASSWORD}"}
    assert "basicAuthPassword" not in datasource.get("jsonData", {})


def test_datasource_max_lines_is_within_lokis_per_query_limit(
    datasource: dict[str, Any],
) -> None:
    defaults = (g.REPO.parent / "shared" / "loki-contract" / "loki-3.7.6-config-defaults.yaml")
    limit = 5000
    if defaults.is_file():
        limit = yaml.safe_load(defaults.read_text())["limits_config"][
            "max_entries_limit_per_query"]
    max_lines = datasource["jsonData"]["maxLines"]
    assert isinstance(max_lines, int)
    assert 1000 <= max_lines <= limit


def test_trace_id_derived_field_links_only_when_a_tracing_url_is_set(
    datasource: dict[str, Any],
) -> None:
    (field,) = datasource["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label"
    assert field["matcherRegex"] == "trace_id"
    assert field["url"] == "${GRAFANA_TRACE_URL}"
    # Unset, the variable expands to "" and Grafana shows the field without a link.
    assert _grafana_expand(field["url"], {}) == ""
    tempo = "https://tempo.example.com/trace/${__value.raw}"
    assert _grafana_expand(field["url"], {"GRAFANA_TRACE_URL": tempo}) == tempo


def _derived_links(field: Mapping[str, Any], env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The links Grafana's Loki datasource makes of one provisioned derived field, after the
    provisioning interpolation (public/app/plugins/datasource/loki/getDerivedFields.ts: a
    datasourceUid makes an internal link whose query is ``url``; else a non-empty ``url`` is
    an outside link; else there is no link)."""
    uid = _grafana_expand(field.get("datasourceUid", ""), env)
    url = _grafana_expand(field.get("url", ""), env)
    if uid:
        return [{"internal": {"datasourceUid": uid, "query": url}}]
    return [{"url": url}] if url else []


def test_trace_id_opens_in_a_tracing_datasource_only_when_its_uid_is_set(
    datasource: dict[str, Any],
) -> None:
    (field,) = datasource["jsonData"]["derivedFields"]
    assert field["datasourceUid"] == "${GRAFANA_TRACE_DATASOURCE_UID}"
    # off by default: no variable set, no link
    assert _derived_links(field, {}) == []
    outside = "https://tempo.example.com/trace/${__value.raw}"
    assert _derived_links(field, {"GRAFANA_TRACE_URL": outside}) == [{"url": outside}]
    # a tracing datasource in Grafana: the trace id is the query
    env = {"GRAFANA_TRACE_DATASOURCE_UID": "tempo", "GRAFANA_TRACE_URL": "${__value.raw}"}
    assert _derived_links(field, env) == [
        {"internal": {"datasourceUid": "tempo", "query": "${__value.raw}"}}]


# ------------------------------------------------------------- environment interpolation


def _grafana_expand(value: str, env: Mapping[str, str]) -> str:
    """Grafana's provisioning interpolation: $$ is a literal $, then os.ExpandEnv per part."""

    def expand(part: str) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            return env.get(name, "")

        return re.sub(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)", repl, part)

    return "$".join(expand(p) for p in value.split("$$"))


def _interpolated_values(doc: Any, path: str) -> Iterator[tuple[str, str]]:
    """The values Grafana interpolates: everything except rule annotations, query models and
    notification templates."""
    for where, value in _walk_strings(doc, path):
        if ".annotations." in where or ".model." in where or where.endswith(".template"):
            continue
        yield where, value


def test_provisioning_reads_only_the_documented_environment_variables() -> None:
    used: set[str] = set()
    for file in g.provisioning_files():
        doc = g.load_yaml(file)
        for where, value in _interpolated_values(doc, file.name):
            for part in value.split("$$"):
                for m in re.finditer(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]*)", part):
                    name = m.group(1) if m.group(1) is not None else m.group(2)
                    assert name in PROVISIONING_ENV, (
                        f"{where}: ${name} would be read from Grafana's environment "
                        "(write a literal $ as $$)"
                    )
                    used.add(name)
    assert used == PROVISIONING_ENV


def test_rule_annotations_and_templates_use_no_braced_environment_syntax() -> None:
    # Grafana leaves these unexpanded, or (newer versions) expands only ${VAR}: avoid both.
    rules_doc = g.load_yaml(g.ALERTING / "rules.yaml")
    templates_doc = g.load_yaml(g.ALERTING / "templates.yaml")
    for where, value in [*_walk_strings(rules_doc, "rules"),
                         *_walk_strings(templates_doc, "templates")]:
        if ".annotations." in where or where.endswith(".template"):
            assert "${" not in value, where


# ------------------------------------------------------------------------------ dashboards


def test_dashboard_provider_loads_the_dashboards_into_one_folder() -> None:
    doc = g.load_yaml(g.PROVISIONING / "dashboards" / "shipper.yaml")
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == FOLDER
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/shipper"
    assert provider["options"]["foldersFromFilesStructure"] is False
    assert provider["allowUiUpdates"] is False


def test_every_panel_and_query_uses_the_provisioned_datasource(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, dash in dashboards.items():
        for panel in g.iter_panels(dash):
            if panel["type"] in ("row", "text"):
                continue
            where = f"{uid} / {panel['title']}"
            assert panel["datasource"] == {"type": "loki", "uid": g.DATASOURCE_UID}, where
            assert panel["targets"], where
            for t in panel["targets"]:
                assert t["datasource"] == {"type": "loki", "uid": g.DATASOURCE_UID}, where
                assert t["queryType"] in ("range", "instant"), where
            for link in g.field_links(panel):
                if "internal" in link:
                    assert link["internal"]["datasourceUid"] == g.DATASOURCE_UID, where
        for v in dash["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"] == {"type": "loki", "uid": g.DATASOURCE_UID}, v["name"]


def test_every_variable_used_is_defined_and_every_defined_variable_is_used(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, dash in dashboards.items():
        defined = set(g.dashboard_variables(dash))
        used: set[str] = set()
        for where, text in _walk_strings({k: v for k, v in dash.items() if k != "templating"}):
            for name in g.referenced_variables(text):
                if not name.startswith("__"):
                    assert name in defined, f"{uid}{where}: ${name} is not a variable"
                    used.add(name)
        for v in dash["templating"]["list"]:
            for where, text in _walk_strings(v.get("query"), f".{v['name']}.query"):
                for name in g.referenced_variables(text):
                    assert name in defined and name != v["name"], f"{uid}{where}: ${name}"
                    used.add(name)
        assert used == defined, f"{uid}: unused variables {defined - used}"


def test_system_logs_has_the_admin_page_filters(dashboards: dict[str, dict[str, Any]]) -> None:
    dash = dashboards["shipper-system-logs"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == ["service", "level", "actor", "type", "actor_id", "logger",
                               "trace_id",
                               "search"]
    for name, label in [("service", "service_name"), ("level", "level"),
                        ("actor", "actor"), ("type", "type")]:
        v = variables[name]
        assert v["type"] == "query" and v["multi"] is True and v["includeAll"] is True, name
        assert v["allValue"] == ".+", name
        assert v["query"]["type"] == 1 and v["query"]["label"] == label, name  # label values
        assert v["definition"].startswith("label_values("), name
    for name in ("actor_id", "logger", "trace_id", "search"):
        assert variables[name]["type"] == "textbox"
    assert "30s" in dash["timepicker"]["refresh_intervals"]
    assert dash["time"]["from"].startswith("now-")
    logs = [p for p in g.iter_panels(dash) if p["type"] == "logs"]
    assert len(logs) == 1
    opts = logs[0]["options"]
    assert opts["enableLogDetails"] is True and opts["sortOrder"] == "Descending"
    stat = [p for p in g.iter_panels(dash) if p["type"] == "stat"]
    assert len(stat) == 1 and stat[0]["targets"][0]["queryType"] == "instant"


def test_explore_links_run_exactly_the_events_query(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-system-logs"]
    events = next(p for p in g.iter_panels(dash) if p["type"] == "logs")["targets"][0]["expr"]
    links = [q for q in g.panel_queries(dash) if q.source == "explore link"]
    assert len(links) >= 1
    for link in links:
        assert link.expr == events
        assert link.instant is False


def test_every_panel_query_filters_on_the_service_variable(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for dash in dashboards.values():
        for q in g.panel_queries(dash):
            assert "service_name=~`${service:regex}`" in q.expr, (q.dashboard, q.panel)


def test_error_rate_panel_draws_the_alert_rules_threshold(
    dashboards: dict[str, dict[str, Any]], rules: list[dict[str, Any]],
) -> None:
    rule = next(r for r in rules if r["uid"] == "shipper-error-rate")
    panel = next(p for p in g.iter_panels(dashboards["shipper-overview"])
                 if p["title"].startswith("Error rate"))
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["value"] is not None] == [g.rule_threshold(rule)]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    # The same ratio as the rule, with the service filter in place of "every service".
    rule_ratio = g.rule_expr(rule).replace('service_name=~".+"', "service_name=~`${service:regex}`")
    assert panel["targets"][0]["expr"] == rule_ratio


def test_overview_and_security_have_the_panels_the_issue_lists(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    overview = [p["title"] for p in g.iter_panels(dashboards["shipper-overview"])]
    for title in ("Events by level", "Error rate", "Top types", "Top actors",
                  "Latest CRITICAL events", "Events per service"):
        assert any(t.startswith(title) for t in overview), title
    by_level = next(p for p in g.iter_panels(dashboards["shipper-overview"])
                    if p["title"] == "Events by level")
    assert by_level["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    security = {p["title"]: p for p in g.iter_panels(dashboards["shipper-security"])}
    assert set(security) == {"Logins: failed vs successful", "Webhook failures by provider",
                             "Failed logins by actor id", "Failed logins by IP",
                             "Admin actions", "Log deletions"}
    assert security["Admin actions"]["type"] == "table"
    assert 'actor="ADMIN"' in security["Admin actions"]["targets"][0]["expr"]
    assert "metadata_ip" in security["Failed logins by IP"]["targets"][0]["expr"]
    assert "metadata_provider" in security["Webhook failures by provider"]["targets"][0]["expr"]


# ------------------------------------------------------------------------------- LogQL


def _all_dashboard_queries(
    dashboards: dict[str, dict[str, Any]],
) -> tuple[list[str], list[str]]:
    queries: list[str] = []
    names: list[str] = []
    for uid, dash in dashboards.items():
        variables = g.dashboard_variables(dash)
        for i, values in enumerate(_sample_values(dash)):
            for q in g.panel_queries(dash):
                queries.append(g.interpolate(q.expr, variables, values))
                names.append(f"{uid} / {q.panel} ({q.source}, values #{i})")
            for stream in g.variable_streams(dash):
                queries.append(g.interpolate(stream, variables, values))
                names.append(f"{uid} / variable selector (values #{i})")
    return queries, names


def test_every_dashboard_query_parses_with_every_sample_value(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    queries, names = _all_dashboard_queries(dashboards)
    assert len(queries) > 100
    results = g.parse_logql(queries)
    assert all(r["ok"] for r in results), g.describe_failures(results, names)
    for r in results:
        assert "$" not in r["query"].replace("$__", ""), "uninterpolated variable: " + r["query"]


def test_every_alert_rule_query_parses(rules: list[dict[str, Any]]) -> None:
    queries = [g.rule_expr(r) for r in rules]
    results = g.parse_logql(queries)
    assert all(r["ok"] for r in results), g.describe_failures(results, [r["uid"] for r in rules])


def test_queries_use_only_contract_labels_and_json_fields(
    dashboards: dict[str, dict[str, Any]], rules: list[dict[str, Any]],
) -> None:
    queries, names = _all_dashboard_queries(dashboards)
    queries += [g.rule_expr(r) for r in rules]
    names += [r["uid"] for r in rules]
    allowed = g.STREAM_LABELS | g.STRUCTURED_METADATA | g.LINE_FIELDS | g.ERROR_LABELS
    for name, r in zip(names, g.parse_logql(queries), strict=True):
        labels = r["labels"]
        assert set(labels["selector"]) <= g.STREAM_LABELS, (name, labels["selector"])
        for label in labels["used"]:
            assert (label in allowed or label in labels["created"]
                    or label.startswith(g.LINE_FIELD_PREFIX)), (name, label)


def test_search_actor_id_and_module_reach_loki_exactly_as_typed(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-system-logs"]
    variables = g.dashboard_variables(dash)
    events = next(q for q in g.panel_queries(dash) if q.panel == "Events")
    queries = []
    for text in ADVERSARIAL_TEXT:
        values: dict[str, g.Value] = {"service": g.ALL, "level": g.ALL, "actor": g.ALL,
                                      "type": g.ALL, "actor_id": text, "logger": text,
                                      "trace_id": text, "search": text}
        expr = g.interpolate(events.expr, variables, values)
        literals = re.findall(r'urldecode "([^"]*)"', expr)
        assert len(literals) == 7
        for lit in literals:
            assert re.fullmatch(r"[A-Za-z0-9%._~-]*", lit), lit
            # Loki's urldecode is Go's url.QueryUnescape, which unquote_plus mirrors.
            assert urllib.parse.unquote_plus(lit) == text
        queries.append(expr)
    results = g.parse_logql(queries)
    assert all(r["ok"] for r in results), g.describe_failures(results)


def test_service_names_with_regex_characters_match_only_themselves(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-overview"]
    variables = g.dashboard_variables(dash)
    for name in ODD_SERVICE_NAMES:
        selector = g.interpolate("${service:regex}", variables, {"service": [name]})
        assert re.fullmatch(selector, name)
        assert not re.fullmatch(selector, name.replace(".", "x").replace("+", "")
                                .replace("/", "x") + "!")
        both = g.interpolate("${service:regex}", variables, {"service": [name, "other"]})
        assert re.fullmatch(both, name) and re.fullmatch(both, "other")


def test_the_parser_rejects_queries_loki_would_refuse() -> None:
    bad = {
        "unclosed selector": '{service_name="shop"',
        "unknown function": 'count_over_tim({service_name="shop"}[5m])',
        "missing range": 'sum(count_over_time({service_name="shop"}))',
        "invalid escape in a double-quoted string": '{service_name="shop"} |~ "(?i)a\\.b"',
        "typed backtick in a raw string": '{service_name="shop"} |~ `(?i)it`s`',
        "broken regex": '{service_name="shop"} |~ `(unclosed`',
        "selector that matches everything": '{service_name=~".*"}',
        "grouping on count_over_time": 'count_over_time({service_name="shop"}[5m]) by (type)',
        "max_over_time without unwrap": 'max_over_time({service_name="shop"}[5m])',
        "count_over_time with unwrap":
            'count_over_time({service_name="shop"} | unwrap x [5m])',
        "same label twice in one label_format":
            '{service_name="shop"} | label_format a=`{{ .b }}`, a=`x`',
        "unbalanced template": '{service_name="shop"} | line_format `{{ .message `',
        "empty query": "",
    }
    results = g.parse_logql(list(bad.values()))
    accepted = [name for name, r in zip(bad, results, strict=True) if r["ok"]]
    assert accepted == []


def test_the_parser_accepts_the_shapes_the_files_rely_on() -> None:
    good = [
        '{service_name=~`shop\\.api`, level=~`.+`} | json | drop __error__, __error_details__',
        'sum by (level) (count_over_time({service_name="a"} | json | __error__="" [1m]))',
        'topk by (service_name, type) (1, max_over_time({service_name="a"} | json message="message"'
        " | label_format event_ms=`{{ __timestamp__ | unixEpochMillis }}` | unwrap event_ms"
        ' | __error__="" [5m]) by (service_name, type, message))',
        '{service_name="a"} | actor_id="u1" | line_format `{{ .message }}`',
    ]
    results = g.parse_logql(good)
    assert all(r["ok"] for r in results), g.describe_failures(results)


def test_parse_script_reports_bad_input_clearly() -> None:
    import subprocess

    for stdin in ("not json", '{"a": 1}', "[1, 2]"):
        proc = subprocess.run(["node", str(g.PARSER)], input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 2
        assert "parse.mjs:" in proc.stderr


# ------------------------------------------------------------------------------ alerting


def test_rules_have_the_query_reduce_threshold_shape(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        uid = rule["uid"]
        assert rule["_folder"] == FOLDER, uid
        assert [d["refId"] for d in rule["data"]] == ["A", "B", "C"], uid
        a, b, c = (g.rule_data(rule, ref) for ref in "ABC")
        assert a["datasourceUid"] == g.DATASOURCE_UID, uid
        assert a["model"]["datasource"] == {"type": "loki", "uid": g.DATASOURCE_UID}, uid
        assert a["model"]["queryType"] == "instant", uid
        assert a["relativeTimeRange"]["from"] > 0 and a["relativeTimeRange"]["to"] == 0, uid
        for expr_query in (b, c):
            assert expr_query["datasourceUid"] == g.EXPRESSION_UID, uid
            assert expr_query["model"]["datasource"]["uid"] == g.EXPRESSION_UID, uid
        assert b["model"]["type"] == "reduce" and b["model"]["expression"] == "A", uid
        assert b["model"]["reducer"] == "last", uid
        assert c["model"]["type"] == "threshold" and c["model"]["expression"] == "B", uid
        assert c["model"]["conditions"][0]["evaluator"]["type"] == "gt", uid
        assert rule["condition"] == "C", uid
        assert rule["noDataState"] == "OK", uid
        assert rule["execErrState"] in ("Error", "Alerting", "OK"), uid
        assert rule["labels"]["severity"] in SEVERITIES, uid
        assert rule["annotations"]["summary"], uid
        assert rule["annotations"]["logs_url"], uid
        assert rule["_interval"] == "1m", uid


def _range_of(expr: str) -> str:
    ranges = set(re.findall(r"\[(\d+[smhd])\]", expr))
    assert len(ranges) == 1, expr
    return ranges.pop()


def test_critical_rule_fires_within_a_minute_once_per_service_and_type(
    rules: list[dict[str, Any]],
) -> None:
    rule = next(r for r in rules if r["uid"] == "shipper-critical-event")
    assert rule["_interval"] == "1m"
    assert rule["for"] == "0s"
    assert rule["labels"] == {"severity": "CRITICAL"}
    assert g.rule_threshold(rule) == 0
    expr = g.rule_expr(rule)
    assert 'level="CRITICAL"' in expr
    (parsed,) = g.parse_logql([expr])
    assert parsed["outer"] == {"op": "topk", "grouping": ["service_name", "type"],
                               "without": False, "param": 1}
    for label in ("message", "actor", "actor_id"):
        assert label in parsed["labels"]["used"], label
    annotations = " ".join(rule["annotations"].values())
    for ref in ("$labels.message", "$labels.actor", "$labels.actor_id", "$labels.service_name",
                "$labels.type"):
        assert ref in annotations, ref


def test_thresholds_and_windows_are_the_documented_defaults(
    rules: list[dict[str, Any]],
) -> None:
    by_uid = {r["uid"]: r for r in rules}
    expected = {
        "shipper-error-rate": (0.05, "5m"),
        "shipper-failed-logins-actor": (10, "5m"),
        "shipper-failed-logins-total": (100, "1m"),
        "shipper-webhook-failures": (5, "10m"),
        "shipper-critical-event": (0, "5m"),
        "shipper-p95-latency": (2000, "5m"),
        "shipper-http-5xx-share": (0.05, "5m"),
        "shipper-error-rate-elevated": (0.01, "1h"),
        "shipper-payment-failures": (0.1, "15m"),
        "shipper-user-activity-drop": (0.5, "30m"),
    }
    for uid, (threshold, window) in expected.items():
        rule = by_uid[uid]
        assert g.rule_threshold(rule) == threshold, uid
        assert _range_of(g.rule_expr(rule)) == window, uid
    outer = {uid: r["outer"] for uid, r in zip(
        by_uid, g.parse_logql([g.rule_expr(r) for r in by_uid.values()]), strict=True)}
    assert outer["shipper-failed-logins-actor"]["grouping"] == ["service_name", "actor_id"]
    assert outer["shipper-failed-logins-total"]["grouping"] == ["service_name"]
    assert outer["shipper-webhook-failures"]["grouping"] == ["service_name", "metadata_provider"]
    assert g.rule_expr(by_uid["shipper-p95-latency"]).endswith("by (service_name)")
    for uid in ("shipper-http-5xx-share", "shipper-error-rate-elevated",
                "shipper-payment-failures", "shipper-user-activity-drop"):
        assert "sum by (service_name) (" in g.rule_expr(by_uid[uid]), uid
    # The error rate is a ratio of two sums, each per service.
    assert outer["shipper-error-rate"] is None
    assert g.rule_expr(by_uid["shipper-error-rate"]).count("sum by (service_name) (") == 2


def test_rule_links_open_system_logs_with_its_own_variables(
    dashboards: dict[str, dict[str, Any]], rules: list[dict[str, Any]],
) -> None:
    dash = dashboards["shipper-system-logs"]
    defined = set(g.dashboard_variables(dash))
    for rule in rules:
        url = rule["annotations"]["logs_url"]
        path_and_query = url.split("externalURL }}", 1)[1]
        assert path_and_query.startswith("/d/shipper-system-logs/"), rule["uid"]
        params = urllib.parse.parse_qsl(urllib.parse.urlsplit(path_and_query).query)
        names = {k.removeprefix("var-") for k, _ in params if k.startswith("var-")}
        assert names and names <= defined, (rule["uid"], names - defined)
        assert {"from", "to"} <= {k for k, _ in params}, rule["uid"]


def _routes_by_severity() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    doc = g.load_yaml(g.ALERTING / "policies.yaml")
    (root,) = doc["policies"]
    by_severity: dict[str, dict[str, Any]] = {}
    for route in root["routes"]:
        assert "continue" not in route
        (matcher,) = route["object_matchers"]
        label, op, value = matcher
        assert (label, op) == ("severity", "="), matcher
        assert value not in by_severity, f"two routes for {value}"
        by_severity[value] = route
    return root, by_severity


def test_every_severity_has_exactly_one_route_and_every_rule_a_severity(
    rules: list[dict[str, Any]],
) -> None:
    root, routes = _routes_by_severity()
    assert set(routes) == set(SEVERITIES)
    contact_points = {cp["name"] for cp in
                      g.load_yaml(g.ALERTING / "contact-points.yaml")["contactPoints"]}
    assert root["receiver"] in contact_points
    for severity, route in routes.items():
        assert route["receiver"] in contact_points, severity
    used = {r["labels"]["severity"] for r in rules}
    assert used == set(SEVERITIES), "every level of the scale is used by at least one rule"


def test_critical_and_high_go_to_slack_at_once() -> None:
    root, routes = _routes_by_severity()
    for severity in ("CRITICAL", "HIGH"):
        route = routes[severity]
        assert route["receiver"] == "shipper-slack", severity
        assert "mute_time_intervals" not in route, severity
        assert _seconds(route["group_wait"]) <= 10, severity
        assert _seconds(route["group_interval"]) <= 300, severity
        assert {"alertname", "service_name"} <= set(route["group_by"]), severity
    assert {"service_name", "type"} <= set(routes["CRITICAL"]["group_by"])
    assert _seconds(routes["CRITICAL"]["repeat_interval"]) <= 3600
    assert _seconds(root["group_wait"]) >= 30


def test_medium_is_grouped_into_one_slack_message_an_hour() -> None:
    _, routes = _routes_by_severity()
    medium = routes["MEDIUM"]
    assert medium["receiver"] == "shipper-slack"
    assert "mute_time_intervals" not in medium
    # One group for every MEDIUM alert, flushed at most once an hour.
    assert medium["group_by"] == ["severity"]
    assert _seconds(medium["group_wait"]) == 3600
    assert _seconds(medium["group_interval"]) == 3600
    assert _seconds(medium["repeat_interval"]) >= 3600


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def test_low_sends_nothing_to_slack_and_is_left_to_the_digest() -> None:
    _, routes = _routes_by_severity()
    low = routes["LOW"]
    (name,) = low["mute_time_intervals"]
    doc = g.load_yaml(g.ALERTING / "mute-timings.yaml")
    (timing,) = [t for t in doc["muteTimes"] if t["name"] == name]
    # Muted means no notification at any minute of any day: one interval, no day/month/year
    # restriction, times covering 00:00 to 24:00 (Alertmanager's end time is exclusive).
    (interval,) = timing["time_intervals"]
    assert set(interval) == {"times"}, interval
    covered = set()
    for span in interval["times"]:
        covered |= set(range(_minutes(span["start_time"]), _minutes(span["end_time"])))
    assert covered == set(range(24 * 60))


def test_every_time_value_is_alertmanagers_hh_mm() -> None:
    doc = g.load_yaml(g.ALERTING / "mute-timings.yaml")
    for timing in doc["muteTimes"]:
        for interval in timing["time_intervals"]:
            for span in interval.get("times", []):
                for key in ("start_time", "end_time"):
                    value = span[key]
                    assert re.fullmatch(r"(([01][0-9]|2[0-3]):[0-5][0-9])|24:00", value), value
                assert _minutes(span["start_time"]) < _minutes(span["end_time"])


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", duration)
    assert m, duration
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_slack_contact_point_reads_the_webhook_and_never_fails_validation() -> None:
    doc = g.load_yaml(g.ALERTING / "contact-points.yaml")
    (cp,) = doc["contactPoints"]
    (receiver,) = cp["receivers"]
    settings = receiver["settings"]
    assert receiver["type"] == "slack"
    assert settings["url"] == "${SLACK_WEBHOOK_URL}"
    # Unset, url expands to "" and Grafana's Slack notifier falls back to endpointUrl; with that
    # not being Slack's chat API, neither token nor recipient is required, so Grafana starts.
    assert _grafana_expand(settings["url"], {}) == ""
    fallback = urllib.parse.urlsplit(settings["endpointUrl"])
    assert fallback.scheme == "https" and fallback.hostname is not None
    assert fallback.hostname.endswith(".invalid")  # RFC 2606: never resolves
    assert "token" not in settings and "recipient" not in settings
    hook = "https://hooks.slack.com/services/T000/B000/XXXX"
    assert _grafana_expand(settings["url"], {"SLACK_WEBHOOK_URL": hook}) == hook


def test_contact_point_uses_the_provisioned_message_templates() -> None:
    cp = g.load_yaml(g.ALERTING / "contact-points.yaml")["contactPoints"][0]
    settings = cp["receivers"][0]["settings"]
    doc = g.load_yaml(g.ALERTING / "templates.yaml")
    (tpl,) = doc["templates"]
    defined = set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', tpl["template"]))
    used = set(re.findall(r'template\s+"([^"]+)"', settings["title"] + settings["text"]))
    assert used == {"shipper.slack.title", "shipper.slack.text"}
    assert used <= defined
    inner = set(re.findall(r'template\s+"([^"]+)"', tpl["template"]))
    assert inner <= defined
    body = tpl["template"]
    assert body.count("{{ define") + body.count("{{- define") == len(defined)
    assert len(re.findall(r"\{\{-?\s*(?:if|range|with|define)\b", body)) == len(
        re.findall(r"\{\{-?\s*end\s*-?\}\}", body))
    for ref in (".Annotations.summary", ".Annotations.description", ".Annotations.actor",
                ".Annotations.logs_url", ".CommonLabels.level", ".CommonLabels.service_name",
                ".CommonLabels.type"):
        assert ref in body, ref


def test_folders_and_group_names_match_between_rules_and_dashboards(
    rules: list[dict[str, Any]],
) -> None:
    assert {r["_folder"] for r in rules} == {FOLDER}
    assert {r["_group"] for r in rules} == {"shipper-critical", "shipper-trends",
                                            "shipper-performance", "shipper-business",
                                            "shipper-health"}


# ------------------------------------------------------------------- performance and refresh


def test_every_dashboard_refreshes_itself_by_default(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    # The seed admin page refreshed itself; so does every dashboard, at one of its own choices.
    for uid, dash in dashboards.items():
        assert dash["refresh"], uid
        assert dash["refresh"] in dash["timepicker"]["refresh_intervals"], uid
        assert _seconds(dash["refresh"]) >= 30, uid
    assert dashboards["shipper-system-logs"]["refresh"] == "30s"


def test_every_dashboard_has_the_same_service_variable(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    def service(dash: Mapping[str, Any]) -> dict[str, Any]:
        var = next(v for v in dash["templating"]["list"] if v["name"] == "service")
        return {k: v for k, v in var.items() if k != "current"}

    reference = service(dashboards["shipper-overview"])
    for uid, dash in dashboards.items():
        assert service(dash) == reference, uid
    assert [v["name"] for v in dashboards["shipper-performance"]["templating"]["list"]] == [
        "service"]


def _panel(dash: Mapping[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in g.iter_panels(dash) if p["title"] == title)


def test_performance_has_the_panels_the_issue_lists(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-performance"]
    titles = [p["title"] for p in g.iter_panels(dash)]
    assert len(titles) == len(set(titles))
    exprs = {q.panel: q.expr for q in g.panel_queries(dash) if q.ref == "A"}
    assert "rate({" in exprs["Request rate"]
    for name, q in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
        expr = exprs[f"{name} latency by route"]
        assert expr.startswith(f"quantile_over_time({q}, ") and "| unwrap duration_ms" in expr
        assert expr.endswith("by (route)")
    slowest = _panel(dash, "Slowest routes")
    assert slowest["type"] == "table"
    assert [t["queryType"] for t in slowest["targets"]] == ["instant"] * 3
    assert "sortBy" in [t["id"] for t in slowest["transformations"]]
    assert "status >= 500" in exprs["5xx share by route"]
    assert "sum by (status)" in exprs["Status codes"]
    assert _panel(dash, "Failing routes")["targets"][0]["queryType"] == "instant"
    perf_events = [q.expr for q in g.panel_queries(dash)
                   if 'type=~"SLOW_.+|OPERATION(_.+)?|PERFORMANCE(_.+)?"' in q.expr]
    assert len(perf_events) == 2  # durations by name, and the events themselves
    assert 'type="SLOW_REQUEST"' in exprs["Slow requests"]


def test_performance_panels_parse_and_reach_route_status_and_duration(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-performance"]
    queries = g.panel_queries(dash)
    variables = g.dashboard_variables(dash)
    filled = [g.interpolate(q.expr, variables, {"service": ["shop.api"]}) for q in queries]
    results = g.parse_logql(filled)
    assert all(r["ok"] for r in results), g.describe_failures(results)
    created = set().union(*(r["labels"]["created"] for r in results))
    assert {"route", "status", "duration_ms", "name"} <= created


def test_slow_requests_link_opens_system_logs_filtered_by_their_trace_id(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    perf = dashboards["shipper-performance"]
    panel = _panel(perf, "Slow requests")
    (link,) = g.field_links(panel)
    url = urllib.parse.urlsplit(link["url"])
    assert url.path == "/d/shipper-system-logs/system-logs"
    params = dict(urllib.parse.parse_qsl(url.query))
    assert params["var-trace_id"] == "${__value.raw}"
    assert params["var-service"] == "${__data.fields.service_name}"
    assert "${__url_time_range}" in link["url"]
    # The link sits on the trace id column, which comes from the structured metadata.
    override = next(o for o in panel["fieldConfig"]["overrides"]
                    if any(p["id"] == "links" for p in o["properties"]))
    assert override["matcher"] == {"id": "byName", "options": "trace_id"}
    system_logs = g.dashboard_variables(dashboards["shipper-system-logs"])
    names = {k.removeprefix("var-") for k in params if k.startswith("var-")}
    assert names <= set(system_logs)
    assert system_logs["trace_id"].type == "textbox"


def test_system_logs_trace_id_filter_is_an_exact_match_on_the_structured_metadata(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-system-logs"]
    for q in g.panel_queries(dash):
        assert '(eq (urldecode "${trace_id:percentencode}") .trace_id)' in q.expr, q.panel
        assert '(or (not "${trace_id:percentencode}")' in q.expr, q.panel


def test_rule_panels_run_the_rules_query_and_draw_its_threshold(
    dashboards: dict[str, dict[str, Any]], rules: list[dict[str, Any]],
) -> None:
    by_uid = {r["uid"]: r for r in rules}
    perf = dashboards["shipper-performance"]
    for title, uid, unit in (("p95 latency by service (alert rule)", "shipper-p95-latency", "ms"),
                             ("5xx share by service (alert rule)", "shipper-http-5xx-share",
                              "percentunit")):
        panel = _panel(perf, title)
        rule = by_uid[uid]
        expected = g.rule_expr(rule).replace('service_name=~".+"',
                                             "service_name=~`${service:regex}`")
        assert panel["targets"][0]["expr"] == expected, title
        defaults = panel["fieldConfig"]["defaults"]
        steps = [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]
        assert steps == [g.rule_threshold(rule)], title
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", title
        assert defaults["unit"] == unit, title


def test_overview_top_error_types_counts_error_and_critical_only(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    panel = _panel(dashboards["shipper-overview"], "Top error types")
    (target,) = panel["targets"]
    assert target["queryType"] == "instant"
    assert 'level=~"ERROR|CRITICAL"' in target["expr"]
    assert target["expr"].startswith("topk(10, sum by (type) (")


# ------------------------------------------------------------------ the seeds' alert rules


def test_every_rule_says_what_to_do(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        text = rule["annotations"]["what_to_do"]
        assert len(text) > 40 and "{{" not in text, rule["uid"]


def test_ratio_rules_need_enough_volume_before_they_alert(rules: list[dict[str, Any]]) -> None:
    by_uid = {r["uid"]: g.rule_expr(r) for r in rules}
    for uid, minimum in (("shipper-http-5xx-share", 20), ("shipper-payment-failures", 20),
                         ("shipper-error-rate-elevated", 100),
                         ("shipper-user-activity-drop", 100)):
        assert by_uid[uid].count(f") >= {minimum})") == 1, uid


def test_activity_drop_compares_with_the_same_window_a_day_earlier(
    rules: list[dict[str, Any]],
) -> None:
    rule = next(r for r in rules if r["uid"] == "shipper-user-activity-drop")
    expr = g.rule_expr(rule)
    assert expr.count('actor="USER"') == 3
    assert expr.count("[30m] offset 1d") == 2 and expr.count("[30m]") == 3
    assert expr.startswith("1 - (")
    # today's count falls back to 0 (not "no data") for a service that went silent
    assert "or 0 * sum by (service_name)" in expr
    assert rule["for"] == "5m"


def test_both_error_rate_rules_watch_the_same_ratio_at_different_urgency(
    rules: list[dict[str, Any]],
) -> None:
    by_uid = {r["uid"]: r for r in rules}
    acute, slow = by_uid["shipper-error-rate"], by_uid["shipper-error-rate-elevated"]
    assert acute["labels"]["severity"] == "HIGH" and slow["labels"]["severity"] == "LOW"
    assert g.rule_threshold(acute) > g.rule_threshold(slow)
    selector = '{service_name=~".+", level=~"ERROR|CRITICAL"}'
    assert selector in g.rule_expr(acute) and selector in g.rule_expr(slow)


def test_docs_thresholds_table_is_the_one_generated_from_the_rules() -> None:
    table = g.docs_alert_table()
    assert table == g.alert_table_markdown(), (
        "docs/grafana.md is out of date: run "
        "`.venv/bin/python -m tests.support._grafana --write-docs`")
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == len(RULE_UIDS)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 6, row  # no unescaped pipe splits a cell
        assert cells[4] in SEVERITIES


def test_threshold_text_reads_as_the_rule_means_it(rules: list[dict[str, Any]]) -> None:
    by_uid = {r["uid"]: r for r in rules}
    assert g.threshold_text(by_uid["shipper-p95-latency"]) == "> 2000 ms (2 s)"
    assert g.threshold_text(by_uid["shipper-error-rate-elevated"]) == "> 1%"
    assert g.threshold_text(by_uid["shipper-user-activity-drop"]) == "> 50%"
    assert g.threshold_text(by_uid["shipper-failed-logins-total"]) == "> 100"
    assert g.threshold_text(by_uid["shipper-critical-event"]) == "> 0 (any)"


# ------------------------------------------------------------------------- shipping health


def test_shipping_health_has_the_panels_the_issue_lists_all_from_the_heartbeats(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dash = dashboards["shipper-shipping-health"]
    panels = {p["title"]: p for p in g.iter_panels(dash)}
    assert set(panels) == {"Events sent", "Events dropped", "Entries refused by Loki",
                           "Spool size", "Spool oldest age", "Sidecar lag per file",
                           "Processes: last seen", "Heartbeats with trouble"}
    queries = g.panel_queries(dash)
    assert all('type="SHIPPER_HEALTH"' in q.expr for q in queries)
    exprs = {(q.panel, q.ref): q.expr for q in queries}
    for panel, field in (("Events sent", "sent"), ("Events dropped", "dropped"),
                         ("Entries refused by Loki", "refused"),
                         ("Spool size", "spool_bytes"), ("Spool oldest age", "spool_oldest_age_s")):
        expr = exprs[(panel, "A")]
        assert f'{field}="metadata.{field}"' in expr and f"unwrap {field}" in expr, panel
        assert "by (service_name, host)" in expr, panel
    assert "by (service_name, host, path)" in exprs[("Sidecar lag per file", "A")]
    last_seen = panels["Processes: last seen"]
    (target,) = last_seen["targets"]
    assert last_seen["type"] == "table" and target["queryType"] == "instant"
    assert "by (service_name, host, pid, role, version)" in target["expr"]
    assert "unixEpochMillis" in target["expr"] and "[$__range]" in target["expr"]
    assert last_seen["options"]["sortBy"] == [{"displayName": "Last seen", "desc": False}]


def test_shipping_health_rules_have_the_issues_severities_windows_and_groups(
    rules: list[dict[str, Any]],
) -> None:
    by_uid = {r["uid"]: r for r in rules if r["_group"] == "shipper-health"}
    expected = {  # uid: (severity, threshold, for, the query's ranges)
        "shipper-events-dropped": ("HIGH", 0, "0s", {"5m"}),
        "shipper-entries-refused": ("MEDIUM", 0, "0s", {"15m"}),
        "shipper-spool-growing": ("HIGH", 0, "15m", {"5m"}),
        "shipper-heartbeats-stopped": ("HIGH", 0, "0s", {"6h", "10m"}),
        "shipper-sidecar-lag": ("MEDIUM", 10 * 2**20, "10m", {"5m"}),
    }
    assert set(by_uid) == set(expected)
    for uid, (severity, threshold, wait, ranges) in expected.items():
        rule = by_uid[uid]
        expr = g.rule_expr(rule)
        assert rule["labels"]["severity"] == severity, uid
        assert g.rule_threshold(rule) == threshold, uid
        assert rule["for"] == wait, uid
        assert set(re.findall(r"\[(\d+[smhd])\]", expr)) == ranges, uid
        assert 'type="SHIPPER_HEALTH"' in expr, uid
        assert "shipper-shipping-health" in rule["annotations"]["dashboard_url"], uid
        seconds = max(_seconds(r) for r in ranges)
        assert rule["data"][0]["relativeTimeRange"]["from"] == seconds, uid
    stopped = g.rule_expr(by_uid["shipper-heartbeats-stopped"])
    assert stopped.count(" unless ") == 2 and 'final="true"' in stopped

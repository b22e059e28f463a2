"""The provisioned Grafana files as data: loading, Grafana's variable interpolation, LogQL parsing.

Shared by tests/deploy/test_grafana.py (checks on the files) and tests/live/test_grafana_queries.py
(the same queries against a real Loki). The interpolation follows Grafana's own rules for a Loki
datasource, so that a query is tested as Grafana would send it:

- ``${var:regex}`` escapes ``\\ ^ $ * + ? . ( ) | [ ] { } /`` with one backslash; several values
  become ``(a|b)``;
- ``${var:percentencode}`` is ``encodeURIComponent`` plus ``! ' ( ) *``: only
  ``A-Z a-z 0-9 - _ . ~`` and ``%XX`` remain;
- a plain ``$var`` goes through the Loki datasource's own escaping (``lokiSpecialRegexEscape`` for
  multi-value and include-All variables, made for double-quoted LogQL strings);
- "All" with a custom all value is inserted as that value, unformatted (except percentencode);
- ``$__auto``, ``$__interval``, ``$__range`` and friends are filled in by Grafana's backend.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DASHBOARDS_DIR = GRAFANA / "dashboards"
ALERTING = PROVISIONING / "alerting"
PARSER = REPO / "tests" / "logql" / "parse.mjs"
PARSER_PACKAGE = REPO / "tests" / "logql" / "node_modules" / "@grafana" / "lezer-logql"

DATASOURCE_UID = "loki"
EXPRESSION_UID = "__expr__"
ALL = "$__all"

#: The event contract (DESIGN.md): stream labels, structured metadata, fields of the JSON line.
STREAM_LABELS = frozenset({"service_name", "env", "level", "actor", "type"})
STRUCTURED_METADATA = frozenset({"actor_id", "trace_id", "logger"})
LINE_FIELDS = frozenset({"message", "exception"})
LINE_FIELD_PREFIX = "metadata_"
ERROR_LABELS = frozenset({"__error__", "__error_details__"})

#: What Grafana's backend puts in place of its interval variables, for these tests.
BUILTIN_VALUES = {
    "__auto": "1m",
    "__interval": "1m",
    "__rate_interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# Grafana's variable reference syntax: $var, [[var:fmt]], ${var.field:fmt}.
VARIABLE_REF = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)


# ------------------------------------------------------------------------------------ loading


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def provisioning_files() -> list[Path]:
    return sorted(PROVISIONING.rglob("*.yaml")) + sorted(PROVISIONING.rglob("*.yml"))


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, by uid."""
    out: dict[str, dict[str, Any]] = {}
    for path in dashboard_files():
        dash = json.loads(path.read_text(encoding="utf-8"))
        out[dash["uid"]] = dash
    return out


def iter_panels(dash: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows."""
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def field_links(panel: Mapping[str, Any]) -> list[dict[str, Any]]:
    config = panel.get("fieldConfig", {})
    links = list(config.get("defaults", {}).get("links", []))
    for override in config.get("overrides", []):
        for prop in override.get("properties", []):
            if prop.get("id") == "links":
                links.extend(prop.get("value") or [])
    return links


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool
    source: str  # "target" or "explore link"


def panel_queries(dash: Mapping[str, Any]) -> list[PanelQuery]:
    """Every LogQL expression a dashboard runs: panel targets and Explore data links."""
    out: list[PanelQuery] = []
    for panel in iter_panels(dash):
        for t in panel.get("targets", []):
            out.append(PanelQuery(dash["uid"], panel["title"], t["refId"], t["expr"],
                                  t.get("queryType") == "instant", "target"))
        for link in field_links(panel):
            internal = link.get("internal")
            if internal:
                q = internal["query"]
                out.append(PanelQuery(dash["uid"], panel["title"], q.get("refId", "A"),
                                      q["expr"], q.get("queryType") == "instant",
                                      "explore link"))
    return out


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    multi: bool
    include_all: bool
    all_value: str | None


def dashboard_variables(dash: Mapping[str, Any]) -> dict[str, Variable]:
    return {
        v["name"]: Variable(v["name"], v["type"], bool(v.get("multi")),
                            bool(v.get("includeAll")), v.get("allValue") or None)
        for v in dash.get("templating", {}).get("list", [])
    }


def variable_streams(dash: Mapping[str, Any]) -> list[str]:
    """The stream selectors of query variables (label_values(<selector>, label))."""
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "query" and isinstance(v.get("query"), dict) and v["query"].get("stream"):
            out.append(v["query"]["stream"])
    return out


def alert_rules() -> list[dict[str, Any]]:
    """Every rule, with its group's name and interval under ``_group`` / ``_interval``."""
    doc = load_yaml(ALERTING / "rules.yaml")
    out = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            out.append({**rule, "_group": group["name"], "_interval": group["interval"],
                        "_folder": group["folder"]})
    return out


def rule_data(rule: Mapping[str, Any], ref: str) -> dict[str, Any]:
    for item in rule["data"]:
        if item["refId"] == ref:
            return dict(item)
    raise KeyError(f"rule {rule['uid']} has no query {ref}")


def rule_expr(rule: Mapping[str, Any]) -> str:
    return str(rule_data(rule, "A")["model"]["expr"])


def rule_threshold(rule: Mapping[str, Any]) -> float:
    cond = rule_data(rule, rule["condition"])["model"]["conditions"][0]["evaluator"]
    return float(cond["params"][0])


# ---------------------------------------------------------------------------- interpolation


def escape_regex(value: str) -> str:
    """Grafana's ``escapeRegex`` (the ``regex`` format)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def loki_regular_escape(value: str) -> str:
    return value.replace("'", "\\\\'")


def loki_special_regex_escape(value: str) -> str:
    """The Loki datasource's escaping of plain ``$var`` values of multi/include-All variables."""
    value = value.replace("\\", "\\\\\\\\")
    value = re.sub(r"[$^*{}\[\]+?.()|]", lambda m: "\\\\" + m.group(0), value)
    return loki_regular_escape(value)


def encode_uri_component_strict(value: str) -> str:
    """Grafana's ``percentencode`` format: ``encodeURIComponent`` plus ``! ' ( ) *``."""
    return urllib.parse.quote(value, safe="")


Value = str | Sequence[str]


def _format(var: Variable, value: Value, fmt: str | None) -> str:
    if value == ALL or (not isinstance(value, str) and list(value) == [ALL]):
        if var.all_value is None:
            raise AssertionError(f"variable {var.name} has no custom all value")
        if fmt == "percentencode":
            return encode_uri_component_strict(var.all_value)
        return var.all_value
    values = [value] if isinstance(value, str) else list(value)
    if fmt == "regex":
        escaped = [escape_regex(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "percentencode":
        if len(values) != 1:
            return encode_uri_component_strict("{" + ",".join(values) + "}")
        return encode_uri_component_strict(values[0])
    if fmt in ("raw", "text"):
        return ",".join(values)
    if fmt is None:
        if var.multi or var.include_all:
            escaped = [loki_special_regex_escape(v) for v in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return loki_regular_escape(values[0])
    raise AssertionError(f"format {fmt!r} of ${{{var.name}}} is not emulated by these tests")


def interpolate(text: str, variables: Mapping[str, Variable], values: Mapping[str, Value],
                builtins: Mapping[str, str] = BUILTIN_VALUES) -> str:
    """Replace variable references as Grafana does for a Loki query (one pass, like Grafana)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)  # Grafana leaves unknown variables as they are
        if name not in values:
            raise AssertionError(f"no sample value for variable {name}")
        return _format(var, values[name], fmt)

    return VARIABLE_REF.sub(repl, text)


def referenced_variables(text: str) -> set[str]:
    return {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE_REF.finditer(text)}


def scope_rule_expr(expr: str, service: str) -> str:
    """A rule query limited to one service (for tests that must not see other data)."""
    matcher = 'service_name=~".+"'
    if matcher not in expr:
        raise AssertionError(f"rule query has no {matcher} selector to scope: {expr}")
    return expr.replace(matcher, f'service_name="{service}"')


# ---------------------------------------------------------------------------------- parsing


def parse_logql(queries: Sequence[str]) -> list[dict[str, Any]]:
    """Parse with Grafana's LogQL grammar (tests/logql/parse.mjs); one result per query."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the LogQL checks run Grafana's grammar on Node.js "
                    "(apt-get install nodejs npm, then npm ci --prefix tests/logql)")
    if not PARSER_PACKAGE.is_dir():
        pytest.fail("tests/logql/node_modules is missing @grafana/lezer-logql: "
                    "run `npm ci --prefix tests/logql` first")
    proc = subprocess.run(
        [node, str(PARSER)], input=json.dumps(list(queries)), capture_output=True,
        text=True, timeout=120, check=False,
    )
    if proc.returncode not in (0, 1):
        pytest.fail(f"tests/logql/parse.mjs failed ({proc.returncode}): {proc.stderr.strip()}")
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    if len(results) != len(queries):
        pytest.fail(f"parse.mjs answered {len(results)} results for {len(queries)} queries")
    return results


def describe_failures(results: Sequence[Mapping[str, Any]],
                      names: Sequence[str] | None = None) -> str:
    lines = []
    for i, r in enumerate(results):
        if r["ok"]:
            continue
        name = names[i] if names else f"query {i}"
        lines.append(f"{name}: {r['query']}")
        lines.extend(f"    syntax error at {e['from']}: ...{e['context']}..." for e in r["errors"])
        lines.extend(f"    {p['message']} (at {p['from']})" for p in r["problems"])
    return "\n".join(lines)


# ------------------------------------------------------------------- the thresholds table

DOCS = REPO / "docs" / "grafana.md"
TABLE_BEGIN = ("<!-- BEGIN alert-rules: generated from grafana/provisioning/alerting/rules.yaml "
               "by `python -m tests.support._grafana --write-docs`; "
               "tests/deploy/test_grafana.py checks it -->")
TABLE_END = "<!-- END alert-rules -->"
_HTML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "`": "&#96;",
                 "[": "&#91;", "]": "&#93;", "*": "&#42;", "_": "&#95;", "\\": "&#92;"}


def _cell(text: str) -> str:
    """Text for a Markdown table cell that GitHub and Python-Markdown both render as is."""
    return "".join(_HTML_ESCAPES.get(c, c) for c in text).replace("\n", " ")


def threshold_text(rule: Mapping[str, Any]) -> str:
    value = rule_threshold(rule)
    expr = rule_expr(rule)
    if "unwrap duration_ms" in expr:
        return f"> {value:g} ms ({value / 1000:g} s)"
    if "unwrap lag" in expr:
        return f"> {value:g} bytes ({value / 2**20:g} MiB)"
    if 0 < value < 1:
        return f"> {value:.0%}".replace(".0%", "%")
    return f"> {value:g}" + (" (any)" if value == 0 else "")


def alert_table_markdown() -> str:
    """The thresholds table of docs/grafana.md, from rules.yaml (most severe first)."""
    order = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3}
    rules = sorted(alert_rules(), key=lambda r: (order[r["labels"]["severity"]], r["title"]))
    lines = ["| Rule | Query (per service) | Threshold | For | Severity | What to do |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        query = "<code>" + _cell(rule_expr(r)) + "</code>"
        lines.append(" | ".join([
            f"| {_cell(r['title'])} (`{r['uid']}`)", query, _cell(threshold_text(r)),
            r["for"], r["labels"]["severity"], _cell(r["annotations"]["what_to_do"]) + " |"]))
    return "\n".join(lines)


def docs_alert_table() -> str:
    """The generated block as docs/grafana.md has it now."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    return text[start:text.index(TABLE_END, start)].strip("\n")


def _write_docs() -> None:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    end = text.index(TABLE_END, start)
    DOCS.write_text(text[:start] + "\n" + alert_table_markdown() + "\n" + text[end:],
                    encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-docs"]:
        _write_docs()
    else:
        print(alert_table_markdown())

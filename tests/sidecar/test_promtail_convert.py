"""``shipper sidecar convert-promtail``: a Promtail configuration as the sidecar's. What converts
is checked by its outcome (the converted source parses a line into the event Promtail's stages
described), what does not is listed with its line, the result always loads, and no file makes
it fail with anything but a clear error (exit 2, nothing printed)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.config import ShipperConfig
from shipper.event import Level, LogEvent
from shipper.sidecar.config import FileSourceConfig, load_config
from shipper.sidecar.formats import LineParser
from shipper.sidecar.promtail_convert import (
    MAX_CONFIG_BYTES,
    Conversion,
    PromtailConfigError,
    convert_promtail,
    read_promtail_config,
)
from shipper.sidecar.sources.base import parser_spec
from tests.support.docsnippets import ROOT, blocks
from tests.support.promtail_example import PAGE, page_files

NS = 1_000_000_000


def convert(text: str) -> Conversion:
    return convert_promtail(textwrap.dedent(text), "promtail.yaml")


def job(stages: str = "", labels: str = "", extra: str = "") -> str:
    """A Promtail configuration of one file job."""
    return textwrap.dedent("""\
        clients:
          - url: http://loki:3100/loki/api/v1/push
        scrape_configs:
          - job_name: app
            static_configs:
              - labels:
                  __path__: /var/log/app/*.log
        {labels}
            pipeline_stages:
        {stages}
        {extra}
        """).format(labels=textwrap.indent(textwrap.dedent(labels), " " * 10),
                    stages=textwrap.indent(textwrap.dedent(stages), " " * 6),
                    extra=textwrap.indent(textwrap.dedent(extra), " " * 4))


def loaded(conversion: Conversion, tmp_path: Path) -> Any:
    path = tmp_path / "sidecar.yaml"
    path.write_text(conversion.text("promtail.yaml"))
    return load_config(path, environ={})


def parse(conversion: Conversion, tmp_path: Path, line: str) -> LogEvent:
    """The event the converted sidecar makes of ``line``."""
    source = loaded(conversion, tmp_path).sources[0]
    assert isinstance(source, FileSourceConfig)
    return LineParser(**parser_spec(source, "svc", None)).parse(line, None, 7)


# ----------------------------------------------------------------------------- the docs


def test_the_pages_example_converts_as_the_page_shows(tmp_path: Path) -> None:
    (tmp_path / "promtail.yaml").write_text(page_files()["promtail.yaml"])
    result = subprocess.run([sys.executable, "-m", "shipper", "sidecar", "convert-promtail",
                             "promtail.yaml"], check=False, cwd=tmp_path, capture_output=True,
                            text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 3, result.stderr
    page = {block.title: block.code for block in blocks(PAGE) if block.title}
    console = next(b.code for b in blocks(PAGE) if b.lang == "console"
                   and "convert-promtail promtail.yaml" in b.code)
    assert result.stderr.splitlines() == console.strip().splitlines()[1:]
    printed = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert printed == page["sidecar.yaml"].strip().splitlines()
    (tmp_path / "sidecar.yaml").write_text(result.stdout)
    config = load_config(tmp_path / "sidecar.yaml", environ={})
    assert config.promtail_positions == "/var/lib/promtail/positions.yaml"
    assert config.env == "production"


def test_promtails_own_config_in_the_repository_converts(tmp_path: Path) -> None:
    conversion = convert((ROOT / "promtail" / "config.yml").read_text())
    assert conversion.config["sources"] == [{
        "type": "file", "paths": ["${SHIPPER_LOG_GLOB:-/var/log/shipper/*.jsonl}"],
        "format": "json"}]
    assert [note.split(": ")[1] for note in conversion.left_out] == [
        "scrape_configs[0].pipeline_stages[4].template",
        "scrape_configs[0].pipeline_stages[5].output.source"]


# ----------------------------------------------------------------------------- what converts


def test_json_labels_structured_metadata_and_timestamp_become_the_events_fields(
        tmp_path: Path) -> None:
    conversion = convert(job("""\
        - json:
            expressions: {severity: severity, kind: type, who: actor, uid: actorId, at: ts,
                          request: requestId, status: status}
        - labels: {level: severity, type: kind, actor: who, status: ~}
        - structured_metadata: {user: uid, trace_id: request}
        - timestamp: {source: at, format: RFC3339Nano}
        """))
    assert conversion.left_out == []
    event = parse(conversion, tmp_path, '{"severity":"warn","type":"login_failed","actor":'
                  '"user","actorId":"u1","ts":"2026-12-06T09:15:01.5Z","requestId":"r9",'
                  '"status":401,"msg":"bad password"}')
    assert (event.level, event.type, event.actor, event.actor_id, event.trace_id) == (
        Level.WARNING, "LOGIN_FAILED", "USER", "u1", "r9")
    assert event.timestamp_ns == 1_796_548_501_500_000_000
    assert event.metadata["status"] == 401 and event.message == "bad password"
    changed = "\n".join(conversion.changed)
    assert "label status is not a label in the sidecar: it stays in the line, " \
           "metadata.status (| json | metadata_status=...)" in changed
    assert "structured metadata user becomes structured metadata actor_id" in changed


def test_a_level_from_a_key_the_sidecar_does_not_read_is_left_out(tmp_path: Path) -> None:
    conversion = convert(job("""\
        - json: {expressions: {level: loglevel}}
        - labels: {level: ~}
        """))
    (note,) = conversion.left_out
    assert note.startswith("promtail.yaml:11: scrape_configs[0].pipeline_stages[1].labels.level")
    assert '"loglevel" stays in metadata' in note


def test_a_regex_becomes_the_level_pattern_with_its_groups_renamed_as_the_stages_use_them(
        tmp_path: Path) -> None:
    conversion = convert(job(r"""
        - regex:
            expression: '^(?<ts>\S+ \S+) (?P<severity>[A-Z]+) \[(?P<thread>[^\]]+)\] (?P<msg>.*)$'
        - labels: {level: severity}
        - timestamp: {source: ts, format: '2006-01-02 15:04:05.000', location: Europe/Berlin}
        - output: {source: msg}
        """))
    assert conversion.left_out == []
    event = parse(conversion, tmp_path, "2026-12-06 10:15:01.250 ERROR [main] Disk full")
    assert (event.level, event.message) == (Level.ERROR, "Disk full")
    assert event.timestamp_ns == 1_796_548_501_250_000_000  # 09:15:01.25 UTC
    assert event.metadata == {"thread": "main"}


def test_a_regex_without_a_level_group_finds_the_level_as_text_lines_do(
        tmp_path: Path) -> None:
    conversion = convert(job(r"""
        - regex: {expression: 'took (?P<ms>\d+)ms'}
        """))
    assert not [n for n in conversion.changed if "group" in n]
    event = parse(conversion, tmp_path, "WARN slow query took 1200ms on orders")
    assert event.level == Level.WARNING and event.metadata == {"ms": "1200"}
    assert parse(conversion, tmp_path, "no number here").level == Level.INFO


def test_a_group_named_as_an_event_field_is_said_to_fill_it(tmp_path: Path) -> None:
    conversion = convert(job(r"""
        - regex: {expression: '^(?P<time>\S+) (?P<message>.*)$'}
        """))
    assert [n.split(": ", 2)[2] for n in conversion.changed if "group" in n] == [
        "the group time gives the event's time (Promtail used a group only through a stage)",
        "the group message gives the event's message (Promtail used a group only through a "
        "stage)"]
    event = parse(conversion, tmp_path, "2026-12-06T09:15:01Z hello")
    assert event.message == "hello" and event.timestamp_ns == 1_796_548_501 * NS


def test_logfmt_converts(tmp_path: Path) -> None:
    conversion = convert(job("""\
        - logfmt: {mapping: {lvl: level, trace: traceId}}
        - labels: {level: lvl}
        - structured_metadata: {trace_id: trace}
        """))
    event = parse(conversion, tmp_path, 'level=error traceId=abc msg="it broke"')
    assert (event.level, event.trace_id, event.message) == (Level.ERROR, "abc", "it broke")


def test_multiline_firstline_matches_anywhere_in_the_line_as_in_promtail(
        tmp_path: Path) -> None:
    conversion = convert(job(r"""
        - multiline: {firstline: '\d{4}-\d{2}-\d{2}', max_wait_time: 500ms}
        """))
    multiline = loaded(conversion, tmp_path).sources[0].multiline
    assert (multiline.timeout, multiline.max_lines) == (0.5, 128)
    import re
    assert re.match(multiline.start, "[web] 2026-12-06 boot")
    assert not re.match(multiline.start, "  at Foo.bar(Foo.java:12)")


def test_drop_stages_become_the_sources_drop_rules_and_drop_the_same_lines(
        tmp_path: Path) -> None:
    from shipper.sidecar.drop import DropFilter

    conversion = convert(job(r"""
        - json: {expressions: {lvl: level, user: user, msg: msg}}
        - drop: {source: lvl, value: debug}
        - drop: {source: [user, msg], separator: '|', expression: '^bot\|',
                 drop_counter_reason: bots}
        - drop: {expression: healthz}
        - drop: {older_than: 24h, drop_counter_reason: too_old}
        - drop: {longer_than: 1KB}
        - drop: {source: lvl, expression: 'warn|error'}
        """))
    rules = conversion.config["sources"][0]["drop"]
    assert rules == [
        {"source": "level", "value": "debug"},
        {"source": ["user", "msg"], "separator": "|", "expression": r"^bot\|",
         "drop_counter_reason": "bots"},
        {"expression": "healthz"},
        {"older_than": "24h", "drop_counter_reason": "too_old"},
        {"longer_than": "1KiB"},  # Promtail's KB is 1024 bytes
        {"source": "level", "expression": "(?i)warn|error"},
    ]
    assert not [n for n in conversion.left_out if "drop" in n], conversion.left_out
    assert any("matched against the event's level" in n for n in conversion.changed)
    source = loaded(conversion, tmp_path).sources[0]
    assert len(source.drop) == 6
    filt = DropFilter.of(source.drop, "file#0", lambda message: None)
    assert filt is not None

    parser = LineParser(**parser_spec(source, "svc", None))

    def dropped(line: str) -> bool:
        now = time.time_ns()
        return filt.drops(parser.parse(line, None, now), line, None, now)

    assert dropped('{"level": "debug", "msg": "x"}')
    assert not dropped('{"level": "info", "msg": "x"}')
    assert dropped('{"level": "info", "user": "bot", "msg": "hi"}')
    assert not dropped('{"level": "info", "user": "bob", "msg": "hi"}')
    assert dropped('{"level": "info", "msg": "GET /healthz"}')
    assert dropped('{"level": "info", "msg": "' + "x" * 1100 + '"}')
    assert dropped('{"level": "warn", "msg": "x"}')
    assert dropped('{"level": "info", "msg": "x", "ts": "2020-01-01T00:00:00Z"}')


def test_a_drop_stage_on_a_field_no_stage_extracts_is_said_and_left_out(
        tmp_path: Path) -> None:
    conversion = convert(job("- drop: {source: nothere}"))
    assert "drop" not in conversion.config["sources"][0]
    assert any("no stage extracts" in n for n in conversion.changed)


@pytest.mark.parametrize(("stages", "why"), [
    ("- drop: {longer_than: 1MB}", "cuts lines to max_line_bytes"),
    ("- drop: {expression: '(a+)+'}", "no quantified group holding a quantifier"),
    ("- json: {expressions: {ts: time}}\n- drop: {source: ts, value: x}",
     "read into the entry's time"),
    ("- match: {selector: '{app=\"x\"}', stages: []}", "the match stage has no equivalent"),
    ("- timestamp: {source: ts, format: '02/Jan/2006:15:04:05 -0700'}",
     'the time layout "02/Jan/2006:15:04:05 -0700"'),
    ("- regex: {expression: '[[:alpha:]]+'}", "POSIX classes"),
    ("- regex: {expression: '(unclosed'}", "is not read by Python's re"),
    ("- json: {source: payload}", 'json of the extracted field "payload"'),
    ("- json: {}\n- logfmt: {}", "a second parsing stage (logfmt after json)"),
    ("- json: {expressions: {lvl: 'items[0].level'}}\n- labels: {level: lvl}",
     "not a plain key"),
    ("- template: {source: line, template: x}\n- output: {source: line}",
     '"line" is made by the template stage, left out'),
    ("- cri: {}", "the cri stage has no equivalent"),
])
def test_what_has_no_equivalent_is_left_out_naming_its_line(
        tmp_path: Path, stages: str, why: str) -> None:
    conversion = convert(job(stages))
    assert any(why in note for note in conversion.left_out), conversion.left_out
    assert all(note.startswith("promtail.yaml:") and "\n" not in note
               for note in conversion.left_out)
    loaded(conversion, tmp_path)


def test_static_labels_give_service_name_as_loki_derives_it_env_and_nothing_else(
        tmp_path: Path) -> None:
    conversion = convert(job(labels="""\
        job: varlogs
        app: checkout
        env: prod
        host: web-1
        """))
    source = conversion.config["sources"][0]
    assert source["service"] == "checkout"  # app comes before job in Loki's list
    assert conversion.config["env"] == "prod"
    # the labels Loki did not take service_name from have no place in the event contract
    assert len([n for n in conversion.left_out if "host=web-1" in n or "job=varlogs" in n]) == 2
    assert loaded(conversion, tmp_path).env == "prod"


def test_keys_and_values_with_line_breaks_stay_inside_one_comment_line(tmp_path: Path) -> None:
    conversion = convert("""\
        scrape_configs:
          - job_name: a
            static_configs:
              - labels:
                  __path__: /var/log/a.log
                  "team\\nsources: []\\n#": "x\\ny"
            pipeline_stages:
              - "evil\\rstage": {}
        """)
    assert len(conversion.left_out) == 2
    assert all("\n" not in n and "\r" not in n for n in conversion.left_out)
    config = loaded(conversion, tmp_path)
    assert config.sources[0].paths == ("/var/log/a.log",)


def test_braces_expand_and_relative_paths_are_left_out(tmp_path: Path) -> None:
    conversion = convert("""\
        scrape_configs:
          - job_name: a
            static_configs:
              - labels: {__path__: '/var/log/{nginx,apache}/{access,error}.log'}
              - labels: {__path__: 'logs/*.log'}
              - targets: [localhost]
        """)
    assert conversion.config["sources"][0]["paths"] == [
        "/var/log/nginx/access.log", "/var/log/nginx/error.log",
        "/var/log/apache/access.log", "/var/log/apache/error.log"]
    notes = "\n".join(conversion.left_out)
    assert "the sidecar needs absolute paths" in notes and "without __path__" in notes
    many = convert("scrape_configs: [{static_configs: [{labels: {__path__: '/" +
                   "{a,b}" * 7 + "'}}, {labels: {__path__: '/" + "{a}" * 5000 + "'}}, "
                   "{labels: {__path__: /ok.log}}]}]\n")
    assert many.config["sources"] == [{"type": "file", "paths": ["/ok.log"],
                                       "format": "text"}]
    assert ["more than 64 patterns" in n or "more than 16" in n for n in many.left_out] == [
        True, True]


def test_the_first_client_becomes_the_loki_section(tmp_path: Path) -> None:
    conversion = convert("""\
        positions: {filename: /var/lib/promtail/positions.yaml, sync_period: 10s}
        clients:
          - url: https://logs.example.com/loki/api/v1/push
            tenant_id: shop
            basic_auth: {username: promtail, password: '${LOKI_PASSWORD}'}
            tls_config: {ca_file: /etc/ssl/loki-ca.pem, cert_file: /etc/ssl/me.pem,
                         key_file: /etc/ssl/me.key, server_name: loki.internal}
            proxy_url: http://proxy.internal:3128
            headers: {X-Team: payments}
            batchwait: 2s
            batchsize: 524288
            backoff_config: {min_period: 1s, max_period: 1m, max_retries: 5}
            external_labels: {env: staging}
          - url: http://second:3100/loki/api/v1/push
        scrape_configs:
          - job_name: app
            static_configs: [{labels: {__path__: /var/log/app/*.log}}]
        """)
    loki = conversion.config["loki"]
    assert loki == {"url": "https://logs.example.com/loki/api/v1/push", "tenant": "shop",
                    "username": "promtail", "password": "${LOKI_PASSWORD}",
                    "ca_bundle": "/etc/ssl/loki-ca.pem", "client_cert": "/etc/ssl/me.pem",
                    "client_key": "/etc/ssl/me.key", "proxy_url": "http://proxy.internal:3128",
                    "headers": {"X-Team": "payments"}, "batch_max_wait": "2s",
                    "batch_max_bytes": 524288, "backoff_min": "1s", "backoff_max": "1m"}
    assert conversion.config["promtail_positions"] == "/var/lib/promtail/positions.yaml"
    assert conversion.config["env"] == "staging"
    assert any("only the first client" in n for n in conversion.left_out)
    assert any("tls_config.server_name: not converted" in n for n in conversion.left_out)
    path = tmp_path / "sidecar.yaml"
    path.write_text(conversion.text("promtail.yaml"))
    config = load_config(path, environ={"LOKI_PASSWORD": "s3cret"})
    assert (config.loki.tenant, config.loki.password, config.loki.batch_max_wait) == (
        "shop", "s3cret", 2.0)


def test_a_bearer_token_file_is_carried_over_where_the_loki_section_reads_one() -> None:
    conversion = convert("""\
        clients: [{url: http://loki:3100/loki/api/v1/push,
                   bearer_token_file: /run/secrets/loki-token}]
        scrape_configs: [{static_configs: [{labels: {__path__: /var/log/app/*.log}}]}]
        """)
    left = [n for n in conversion.left_out if "bearer_token_file" in n]
    if "bearer_token_file" in {f.name for f in dataclasses.fields(ShipperConfig)}:
        assert not left
        assert conversion.config["loki"]["bearer_token_file"] == "/run/secrets/loki-token"
    else:
        assert "give the token in loki.bearer_token" in left[0]


def test_other_targets_are_left_out_and_a_config_without_files_converts_nothing() -> None:
    with pytest.raises(PromtailConfigError) as caught:
        convert("""\
            scrape_configs:
              - job_name: pods
                kubernetes_sd_configs: [{role: pod}]
              - job_name: journal
                journal: {max_age: 12h}
            """)
    message = str(caught.value)
    assert "nothing for the sidecar to tail" in message
    assert "promtail.yaml:3: scrape_configs[0].kubernetes_sd_configs" in message
    assert "promtail.yaml:5: scrape_configs[1].journal" in message


# ----------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize(("text", "why"), [
    ("[" * 100_000, "not valid YAML"),
    ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)), "nested deeper than 64"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9)), "more than 200000 values"),
    ("- just\n- a list\n", "expected a Promtail configuration"),
    ("", "expected a Promtail configuration"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ("scrape_configs: 3\n", "nothing for the sidecar to tail"),
    ("scrape_configs:\n  - 7\n  - {static_configs: [{labels: {__path__: [1]}}]}\n",
     "expected a glob"),
])
def test_a_file_that_is_not_a_promtail_config_is_refused_clearly(text: str, why: str) -> None:
    with pytest.raises(PromtailConfigError) as caught:
        convert_promtail(text, "promtail.yaml")
    assert str(caught.value).startswith("promtail.yaml: ") and why in str(caught.value)


def test_a_huge_fifo_or_binary_file_is_refused_without_waiting(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES)
    with pytest.raises(PromtailConfigError, match="larger than 1 MiB"):
        read_promtail_config(str(big))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PromtailConfigError, match="not a regular file"):
        read_promtail_config(str(fifo))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PromtailConfigError, match="not UTF-8"):
        read_promtail_config(str(binary))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
              st.sampled_from(["/var/log/*.log", "json", "labels", "drop", "__path__", "{a,b}",
                               "${X}", "(?P<level>x)", "[[:alpha:]]"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from([
                                "scrape_configs", "static_configs", "labels", "__path__",
                                "pipeline_stages", "json", "regex", "expression", "labels",
                                "timestamp", "source", "format", "multiline", "firstline",
                                "clients", "url", "positions", "filename", "job", "env"]),
                                inner, max_size=4)),
    max_leaves=25))
def test_no_configuration_ever_fails_with_anything_but_a_clear_error(data: Any) -> None:
    text = yaml.safe_dump(data)
    try:
        conversion = convert_promtail(text, "p.yaml")
    except PromtailConfigError as exc:
        assert str(exc).startswith("p.yaml: ")
    else:
        assert conversion.config["sources"]


# ----------------------------------------------------------------------------- the command


def cli(tmp_path: Path, text: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    if text is not None:
        (tmp_path / "promtail.yaml").write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, "-m", "shipper", "sidecar", *args], check=False,
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_exit_0_when_everything_converted_3_when_something_was_left_out_2_when_nothing(
        tmp_path: Path) -> None:
    full = cli(tmp_path, job("- json: {}"), "convert-promtail", "promtail.yaml")
    assert full.returncode == 0 and "left out:" not in full.stderr
    assert yaml.safe_load(full.stdout)["sources"][0]["format"] == "json"
    partial = cli(tmp_path, job("- cri: {}"), "convert-promtail",
                  "promtail.yaml")
    assert partial.returncode == 3 and "left out: promtail.yaml:" in partial.stderr
    nothing = cli(tmp_path, "scrape_configs: []\n", "convert-promtail", "promtail.yaml")
    assert nothing.returncode == 2 and nothing.stdout == ""
    assert "Traceback" not in nothing.stderr
    missing = cli(tmp_path, None, "convert-promtail", "absent.yaml")
    assert missing.returncode == 2 and "absent.yaml: cannot read it" in missing.stderr


def test_shipper_sidecar_without_config_or_action_says_what_it_needs(tmp_path: Path) -> None:
    result = cli(tmp_path, None)
    assert result.returncode == 2 and "--config (or an ACTION such as convert-promtail)" \
        in result.stderr

"""A file or docker source's ``drop`` rules (shipper/sidecar/drop.py): the lines they drop are not
shipped, their neighbours are, each reason is counted in /metrics and each rule said once on the
sidecar's log; a rule that cannot be used fails the configuration, naming it."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.event import LogEvent
from shipper.sidecar.config import DockerSourceConfig, SidecarConfigError, load_config
from shipper.sidecar.drop import MAX_PATTERN, MAX_RULES, DropError, DropFilter, read_rules
from shipper.sidecar.formats import LineParser
from shipper.sidecar.sources.docker import DockerSource
from tests.sidecar.test_file import Sink
from tests.support.fakedocker import FakeDocker
from tests.support.fakeloki import FakeLoki
from tests.support.sidecar_process import SidecarProcess, wait_until

NOW_MS = time.time_ns() // 1_000_000


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as fake:
        yield fake


def line(msg: str, level: str = "info", ago_s: float = 60, **fields: Any) -> str:
    return json.dumps({"level": level, "time": NOW_MS - int(ago_s * 1000), "msg": msg,
                       **fields}) + "\n"


def messages(loki: FakeLoki) -> list[str]:
    return sorted(json.loads(text)["message"] for text in loki.lines())


RULES: list[dict[str, Any]] = [
    {"source": "level", "value": "debug"},
    {"expression": "GET /healthz", "drop_counter_reason": "health"},
    {"older_than": "24h", "drop_counter_reason": "old"},
    {"longer_than": "2KiB", "drop_counter_reason": "long"},
    {"source": ["logger", "path"], "separator": "|", "expression": r"^access\|/static/",
     "drop_counter_reason": "static"},
    {"source": "tenant", "drop_counter_reason": "tenant_present"},
]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "2-workers"])
def test_each_kind_of_rule_drops_its_lines_in_a_running_sidecar_and_counts_them(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess], workers: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    text = "".join([
        line("kept first"),
        line("debug noise", level="debug"), line("debug again", level="DEBUG"),
        line("kept warning", level="warn"),
        line("probe GET /healthz 200"),
        line("a week old", ago_s=7 * 86400),
        line("kept an hour old", ago_s=3600),
        line("x" * 3000),
        line("y" * 10_000),  # cut to max_line_bytes first, and longer still
        line("static file", logger="access", path="/static/app.js"),
        line("kept dynamic", logger="access", path="/api/orders"),
        line("kept static path, other logger", logger="app", path="/static/app.js"),
        line("has a tenant", tenant="acme"),
        "kept text line\n",
        line("kept last"),
    ])
    (logs / "app.log").write_text(text)
    source = {"type": "file", "paths": [str(logs / "*.log")], "poll_interval": "20ms",
              "scan_interval": "100ms", "max_line_bytes": "4KiB", "drop": RULES}
    proc = SidecarProcess(tmp_path, [source], loki_url=loki.url, workers=workers)
    processes.append(proc)
    proc.start()
    kept = ["kept an hour old", "kept dynamic", "kept first", "kept last",
            "kept static path, other logger", "kept text line", "kept warning"]
    assert wait_until(lambda: messages(loki) == kept, 20), messages(loki)
    name = 'shipper_sidecar_lines_dropped_total{{reason="{}",source="file#0"}}'
    # the workers report their counts every half second
    assert wait_until(lambda: proc.metrics().get(name.format("drop_stage")) == 2, 10)
    metrics = proc.metrics()
    dropped = {k: v for k, v in metrics.items() if k.startswith("shipper_sidecar_lines_dropped")}
    assert dropped == {name.format("drop_stage"): 2, name.format("health"): 1,
                       name.format("old"): 1, name.format("long"): 2,
                       name.format("static"): 1, name.format("tenant_present"): 1}
    assert metrics['shipper_sidecar_lines_read_total{source="file#0"}'] == 15
    (logs / "app.log").open("a").write(line("debug later", level="debug") + line("kept later"))
    assert wait_until(lambda: "kept later" in messages(loki), 20)
    assert proc.finish(signal.SIGTERM) == 0
    assert "debug later" not in messages(loki)
    assert proc.positions()["files"][0]["offset"] == (logs / "app.log").stat().st_size
    said = [ln for ln in proc.stderr.splitlines() if "drop rule" in ln]
    # once per rule (and process that applies it), not once per line
    assert len(RULES) <= len(said) <= len(RULES) * workers
    assert any("drop rule 0" in ln and 'shipper_sidecar_lines_dropped_total{source="file#0", '
               'reason="drop_stage"}' in ln for ln in said)


def test_a_source_without_rules_reports_no_dropped_family_and_ships_everything(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(line("one", level="debug") + line("two"))
    source = {"type": "file", "paths": [str(logs / "*.log")], "poll_interval": "20ms"}
    proc = SidecarProcess(tmp_path, [source], loki_url=loki.url)
    processes.append(proc)
    proc.start()
    assert wait_until(lambda: messages(loki) == ["one", "two"], 20)
    assert not [k for k in proc.metrics() if k.startswith("shipper_sidecar_lines_dropped")]
    assert proc.finish() == 0
    assert "drop rule" not in proc.stderr


def test_docker_source_drops_by_rule_and_counts(tmp_path: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))  # unix socket paths are short
    engine = FakeDocker(directory / "docker.sock")
    source: DockerSource | None = None
    try:
        cid = engine.create("web", {"shipper.enable": "true"})
        engine.start(cid)
        engine.log(cid, '{"level":"debug","msg":"noise"}', "plain kept", "GET /healthz",
                   '{"level":"error","msg":"kept error"}')
        config = DockerSourceConfig(host=engine.url, refresh_interval=60, drop=read_rules(
            [{"source": "level", "value": "debug"}, {"expression": "healthz",
                                                     "drop_counter_reason": "health"}]))
        sink = Sink()
        said: list[str] = []
        source = DockerSource(config, parser=LineParser(format="auto", service="web"),
                              submit=sink, report=said.append, name="docker#0")
        source.start()
        assert wait_until(lambda: len(sink.events) == 2 and source is not None and
                          sum(v for *_, v in source.samples()) >= 3)
        time.sleep(0.2)
        assert sorted(sink.messages()) == ["kept error", "plain kept"]
        assert sorted((f, labels, v) for f, labels, v in source.samples()
                      if f == "lines_dropped") == [
            ("lines_dropped", ("docker#0", "drop_stage"), 1),
            ("lines_dropped", ("docker#0", "health"), 1)]
        assert len(said) == 2
        assert source.positions().containers == {cid: engine.containers[cid].logs[-1][0]}
    finally:
        if source is not None:
            source.stop(time.monotonic() + 2)
        engine.close()
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- the rules


def event(**fields: Any) -> LogEvent:
    parser = LineParser(format="json", service="s")
    return parser.parse(json.dumps({"msg": "m", **fields}), None, time.time_ns())


def drops(rule: dict[str, Any], ev: LogEvent, text: str = "text") -> bool:
    filt = DropFilter.of(read_rules([rule]), "file#0", lambda message: None)
    assert filt is not None
    return filt.drops(ev, text, None, time.time_ns())


def test_value_is_exact_and_reads_the_field_as_the_event_carries_it() -> None:
    assert drops({"source": "level", "value": "debug"}, event(level="DEBUG"))
    assert drops({"source": "severity", "value": "warn"}, event(level="warning"))
    assert not drops({"source": "level", "value": "debug"}, event(level="info"))
    assert drops({"source": "type", "value": "userLogin"}, event(type="user_login"))
    assert drops({"source": "user", "value": "bob"}, event(user="bob"))
    assert not drops({"source": "user", "value": "bob"}, event(user="bobby"))  # exact
    assert not drops({"source": "user", "value": "bo"}, event(user="bob"))
    assert drops({"source": "code", "value": "404"}, event(code=404))
    assert drops({"source": "ok", "value": "true"}, event(ok=True))
    assert drops({"source": "ok", "value": True}, event(ok=True))  # YAML's true
    assert not drops({"source": "obj", "value": "{}"}, event(obj={}))  # not a string


def test_expression_searches_the_field_or_the_whole_line_as_promtail_does() -> None:
    assert drops({"source": "msg", "expression": "time.?out"}, event(msg="read timeout"))
    assert not drops({"source": "msg", "expression": "^out"}, event(msg="timeout"))
    assert drops({"expression": "secret"}, event(), text='{"msg": "a secret"}')
    assert not drops({"expression": "secret"}, event(), text='{"msg": "public"}')
    # multi-line: the joined record is the line
    filt = DropFilter.of(read_rules([{"expression": "Traceback"}]), "f", lambda m: None)
    assert filt is not None and filt.drops(event(), "boom", "Traceback (most recent...)", 0)


def test_several_sources_join_the_values_present_with_the_separator() -> None:
    rule = {"source": ["a", "b"], "expression": "^1;2$"}
    assert drops(rule, event(a=1, b=2))
    assert not drops(rule, event(a=2, b=1))
    assert drops({"source": ["a", "b"], "expression": "^1$"}, event(a=1))  # b absent
    assert drops({"source": ["a", "b"], "separator": "", "expression": "^12$"},
                 event(a=1, b=2))
    assert drops({"source": ["a", "b"]}, event(a=1, b=None)) is False  # presence of all
    # as in Promtail, absent fields join to "": an expression may select their absence
    assert drops({"source": "tenant", "expression": "^$"}, event())
    assert not drops({"source": "tenant", "expression": "^$"}, event(tenant="acme"))
    assert drops({"source": ["a", "b"]}, event(a=1, b=0))


def test_all_conditions_of_a_rule_must_hold() -> None:
    rule = {"source": "level", "value": "debug", "longer_than": 10}
    assert not drops(rule, event(level="debug"), text="short")
    assert drops(rule, event(level="debug"), text="a line longer than ten")
    assert not drops(rule, event(level="info"), text="a line longer than ten")


def test_older_than_compares_the_events_own_time_and_longer_than_counts_bytes() -> None:
    old = event(time=(time.time_ns() - 2 * 86400 * 10**9) // 10**6)
    assert drops({"older_than": "1d"}, old)
    assert not drops({"older_than": "1d"}, event())  # no time in the line: read now
    assert drops({"longer_than": 5}, event(), text="ééé")  # 6 bytes, 3 characters
    assert not drops({"longer_than": 6}, event(), text="ééé")


BAD: list[tuple[object, str, str]] = [
    ([{"sorce": "level"}], "[0].sorce", "did you mean source"),
    ([{"source": "level", "value": "x", "expression": "y"}], "[0].value", "not both"),
    ([{"value": "debug"}], "[0].value", "a source"),
    ([{"drop_counter_reason": "x"}], "[0]", "at least one of"),
    ([{"expression": "(a+)+$"}], "[0].expression", "quantified group"),
    ([{"expression": r"(?:\w*x)*"}], "[0].expression", "quantified group"),
    ([{"expression": "(a|b)+("}], "[0].expression", "valid regular expression"),
    ([{"expression": "a" * (MAX_PATTERN + 1)}], "[0].expression", "at most"),
    ([{"older_than": "yesterday"}], "[0].older_than", "positive duration"),
    ([{"older_than": "-1h"}], "[0].older_than", "positive duration"),
    ([{"longer_than": "lots"}], "[0].longer_than", "positive size"),
    ([{"source": "time", "value": "1"}], "[0].source", "older_than"),
    ([{"source": "level", "value": "loud"}], "[0].value", "level name"),
    ([{"source": ["a", 3]}], "[0].source", "field name"),
    ([{"source": "a", "drop_counter_reason": "a b\n"}], "[0].drop_counter_reason", "letters"),
    ([{"longer_than": 1}] * (MAX_RULES + 1), "", f"at most {MAX_RULES}"),
    ([{"source": "a", "value": "x" * (MAX_PATTERN + 1)}], "[0].value", "at most"),
    ([{"source": ["a", "b"], "separator": ["x"]}], "[0].separator", "a string"),
    ({"source": "level"}, "", "a list of rules"),
    (["level"], "[0]", "a mapping"),
]


@pytest.mark.parametrize(("value", "key", "said"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_a_rule_that_cannot_be_used_is_refused_naming_its_key(value: object, key: str,
                                                             said: str) -> None:
    with pytest.raises(DropError) as caught:
        read_rules(value)
    assert caught.value.key == key
    assert said in caught.value.expected


def test_bounded_repeats_and_quantifiers_outside_groups_are_accepted() -> None:
    for pattern in (r"(ab)+", r"(a+)?", r"(a+){0,1}", r"\d+-\d+", r"[(a+)]+", r"(\(x+\))",
                    r"(?P<x>a)b*"):
        assert read_rules([{"expression": pattern}])[0].pattern is not None


def write(tmp_path: Path, source: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(json.dumps({"sources": [source], **top}))
    return path


def test_the_configuration_names_the_source_and_the_rule(tmp_path: Path) -> None:
    source = {"type": "file", "paths": ["/var/log/*.log"], "drop": [
        {"source": "level", "value": "debug"}, {"expression": "(x*)*"}]}
    with pytest.raises(SidecarConfigError, match=r"sources\[0\]\.drop\[1\]\.expression: "
                                                 r"'\(x\*\)\*': expected no quantified"):
        load_config(write(tmp_path, source))
    source["drop"] = [{"longer_than": "1MiB"}]
    with pytest.raises(SidecarConfigError, match=r"drop\[0\]\.longer_than.*below "
                                                 "max_line_bytes"):
        load_config(write(tmp_path, source))
    source["drop"] = [{"longer_than": "1KiB"}]
    assert load_config(write(tmp_path, source)).sources[0].drop[0].longer_than == 1024  # type: ignore[union-attr]
    http = {"type": "http", "drop": [{"longer_than": 1}]}
    with pytest.raises(SidecarConfigError, match=r"sources\[0\]\.drop.*one of the keys"):
        load_config(write(tmp_path, http))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.sampled_from(["source", "value", "expression",
                                                     "separator", "older_than", "longer_than",
                                                     "drop_counter_reason", "x"]), inner,
                                    max_size=4), max_leaves=12))
def test_any_yaml_value_is_read_or_refused_with_a_drop_error(value: object) -> None:
    try:
        read_rules(value)
    except DropError as exc:
        assert exc.expected


def test_docker_source_in_a_running_sidecar_drops_by_rule_and_moves_on(
        tmp_path: Path, loki: FakeLoki, processes: list[SidecarProcess]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))  # unix socket paths are short
    engine = FakeDocker(directory / "docker.sock")
    try:
        cid = engine.create("web-1", {"shipper.enable": "true"})
        engine.start(cid)
        engine.log(cid, '{"level":"debug","msg":"noise"}', "kept plain",
                   '{"level":"error","msg":"kept"}', '{"level":"info","msg":"GET /healthz"}')
        source = {"type": "docker", "host": engine.url, "refresh_interval": "1m",
                  "drop": [{"source": "level", "value": "debug"},
                           {"source": "msg", "expression": "healthz",
                            "drop_counter_reason": "health"}]}
        proc = SidecarProcess(tmp_path, [source], loki_url=loki.url)
        processes.append(proc)
        proc.start()
        assert wait_until(lambda: messages(loki) == ["kept", "kept plain"], 20)
        name = 'shipper_sidecar_lines_dropped_total{{reason="{}",source="docker#0"}}'
        assert wait_until(lambda: proc.metrics().get(name.format("health")) == 1, 10)
        assert proc.metrics()[name.format("drop_stage")] == 1
        assert proc.finish() == 0
        # the position moves past dropped lines too (the last one is): none is read again
        assert proc.positions()["containers"] == {cid: engine.containers[cid].logs[-1][0]}
    finally:
        engine.close()
        shutil.rmtree(directory, ignore_errors=True)

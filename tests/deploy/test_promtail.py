"""promtail/config.yml and promtail/config.alloy turn `shipper demo --file` lines into exactly the
entries the handler sends.

Both files are parsed (YAML; a small parser of the Alloy syntax they use) and their pipelines run
here, stage by stage, by a model of the Promtail/Alloy stages they use (json with plain-field
JMESPath, labels, structured_metadata, timestamp, template, output, label drop), written from the
stages' Go source: an extracted null is skipped by labels and structured metadata, a nested JSON
value is extracted as JSON text, a template sees extracted values as strings. Anything else in the
files fails the test instead of being ignored.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper._units import parse_time
from shipper.cli.demo import (
    DemoEmitter,
    EventTimeFilter,
    JsonLinesFileHandler,
    backfill_events,
    live_events,
)
from shipper.context import LogContext, current_context
from shipper.event import Entry, LogEvent, to_entry
from shipper.handler import event_from_record

REPO = Path(__file__).resolve().parents[2]
PROMTAIL = REPO / "promtail" / "config.yml"
ALLOY = REPO / "promtail" / "config.alloy"
NS = 1_000_000_000


def _contract() -> tuple[set[str], set[str]]:
    """Label names and structured-metadata names the handler sends (an event with every field)."""
    entry = to_entry(LogEvent.create(
        service="s", env="e", level="INFO", message="m", timestamp_ns=1, actor="USER", type="T",
        actor_id="a", trace_id="t", logger="l", metadata={"k": 1}, exception="x"))
    return {k for k, _ in entry.labels}, {k for k, _ in entry.metadata}


LABELS, STRUCTURED = _contract()


# --------------------------------------------------------------------------- the Alloy syntax


@dataclass
class Block:
    name: str
    label: str | None
    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def block(self, name: str) -> Block:
        found = [b for b in self.blocks if b.name == name]
        assert len(found) == 1, f"expected one {name} block in {self.name}, got {len(found)}"
        return found[0]


@dataclass(frozen=True)
class Ref:
    """A reference to another component's export, e.g. loki.process.shipper.receiver."""
    path: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\](),=.])
""", re.VERBOSE | re.DOTALL)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SyntaxError(f"unexpected {text[pos:pos + 20]!r} at offset {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
    return out


class AlloyParser:
    """Blocks (``name.sub "label" { ... }``), attributes (``name = expr``) and the expressions
    these configs use: strings, raw strings, numbers, bools, null, lists, objects, references
    and function calls. Nothing else is accepted."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> tuple[str, str]:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.peek()
        if (value is not None and v != value) or (kind is not None and k != kind):
            raise SyntaxError(f"expected {value or kind}, got {v!r} (token {self.i})")
        self.i += 1
        return v

    def parse(self) -> Block:
        root = Block("<root>", None)
        self.body(root, end="eof")
        return root

    def dotted(self) -> str:
        parts = [self.take(kind="ident")]
        while self.peek()[1] == "." and self.peek(1)[0] == "ident":
            self.take(".")
            parts.append(self.take(kind="ident"))
        return ".".join(parts)

    def body(self, block: Block, end: str) -> None:
        while self.peek()[0 if end == "eof" else 1] != end:
            name = self.dotted()
            if self.peek()[1] == "=":
                self.take("=")
                assert "." not in name, f"attribute names are plain: {name}"
                assert name not in block.attrs, f"{name} set twice in {block.name}"
                block.attrs[name] = self.expr()
                continue
            label = json.loads(self.take(kind="string")) if self.peek()[0] == "string" else None
            self.take("{")
            child = Block(name, label)
            self.body(child, end="}")
            self.take("}")
            block.blocks.append(child)

    def expr(self) -> Any:
        kind, value = self.peek()
        if kind == "string":
            self.i += 1
            return json.loads(value)
        if kind == "raw":
            self.i += 1
            return value[1:-1]
        if kind == "number":
            self.i += 1
            return float(value) if "." in value else int(value)
        if value == "[":
            self.take("[")
            items = []
            while self.peek()[1] != "]":
                items.append(self.expr())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return items
        if value == "{":
            self.take("{")
            obj: dict[str, Any] = {}
            while self.peek()[1] != "}":
                k, v = self.peek()
                key = json.loads(v) if k == "string" else self.take(kind="ident")
                if k == "string":
                    self.i += 1
                self.take("=")
                obj[key] = self.expr()
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return obj
        if kind == "ident":
            if value in ("true", "false", "null"):
                self.i += 1
                return {"true": True, "false": False, "null": None}[value]
            name = self.dotted()
            if self.peek()[1] == "(":
                self.take("(")
                args = []
                while self.peek()[1] != ")":
                    args.append(self.expr())
                    if self.peek()[1] == ",":
                        self.take(",")
                self.take(")")
                return Call(name, tuple(args))
            return Ref(name)
        raise SyntaxError(f"unexpected {value!r} (token {self.i})")


def _evaluate(value: Any, env: Mapping[str, str]) -> Any:
    """The standard-library calls these configs use, with ``env`` as the environment."""
    if isinstance(value, Call):
        args = [_evaluate(a, env) for a in value.args]
        if value.name == "sys.env":
            return env.get(args[0], "")
        if value.name == "coalesce":
            return next((a for a in args if a not in ("", None, [], {})), args[-1])
        if value.name == "string.format":
            return args[0] % tuple(args[1:])
        raise AssertionError(f"function {value.name} is not modelled here")
    if isinstance(value, list):
        return [_evaluate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _evaluate(v, env) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- stage model

Stage = tuple[str, dict[str, Any]]
_MISSING = object()


def _go_string(value: Any) -> str | None:
    """getString() of the stages: None for what it cannot convert (null, nested values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value).removesuffix(".0") if value == int(value) else repr(value)
    if isinstance(value, str):
        return value
    return None


def _jmespath_field(data: Mapping[str, Any], expression: str) -> Any:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", expression):
        raise AssertionError(f"JMESPath {expression!r}: only plain fields are modelled here")
    return data.get(expression)


_GO_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)


def _go_template(template: str, data: Mapping[str, str]) -> str:
    """text/template for the constructs these configs use: ``{{ .x }}``, ``{{ toJson .x }}``,
    ``{{ if .x }}``/``{{ else }}``/``{{ end }}``. A missing key prints ``<no value>`` and is
    false in ``if``, as in Go; ``toJson`` of a missing key is ``null``."""
    out: list[str] = []
    active: list[bool] = []  # one per open `if`: is this branch emitting?
    pos = 0
    for m in _GO_ACTION.finditer(template):
        if all(active):
            out.append(template[pos:m.start()])
        pos = m.end()
        action = m.group(1)
        if match := re.fullmatch(r"if \.(\w+)", action):
            active.append(bool(data.get(match.group(1))))
        elif action == "else":
            active[-1] = not active[-1]
        elif action == "end":
            active.pop()
        elif not all(active):
            continue
        elif match := re.fullmatch(r"\.(\w+)", action):
            value = data.get(match.group(1))
            out.append("<no value>" if value is None else value)
        elif match := re.fullmatch(r"toJson \.(\w+)", action):
            out.append(json.dumps(data.get(match.group(1))))
        else:
            raise AssertionError(f"template action {{{{ {action} }}}} is not modelled here")
    assert not active, "unclosed {{ if }}"
    out.append(template[pos:])
    return "".join(out)


def run_pipeline(stages: list[Stage], line: str, labels: Mapping[str, str]) -> Entry:
    """One line through the stages, as Promtail/Alloy run them."""
    extracted: dict[str, Any] = {}
    labels = dict(labels)
    structured: dict[str, str] = {}
    timestamp: int | None = None
    for kind, cfg in stages:
        if kind == "json":
            assert not cfg.get("source"), "json from an extracted value is not modelled"
            data = json.loads(line)
            for name, expression in cfg["expressions"].items():
                value = _jmespath_field(data, expression or name)
                extracted[name] = (value if value is None or isinstance(value, (str, bool))
                                   else float(value) if isinstance(value, (int, float))
                                   else json.dumps(value, separators=(",", ":")))
        elif kind in ("labels", "structured_metadata"):
            target = labels if kind == "labels" else structured
            for name, source in cfg.items():
                if (source or name) in extracted:
                    text = _go_string(extracted[source or name])
                    if text is not None:
                        target[name] = text
        elif kind == "timestamp":
            assert cfg["format"] == "RFC3339Nano", cfg
            text = _go_string(extracted.get(cfg["source"]))
            assert text is not None, f"no {cfg['source']} to take the time from"
            timestamp = parse_time(text)
        elif kind == "template":
            data = {k: s for k, v in extracted.items() if (s := _go_string(v)) is not None}
            result = _go_template(cfg["template"], data)
            if result:
                extracted[cfg["source"]] = result
            else:
                extracted.pop(cfg["source"], None)
        elif kind == "output":
            text = _go_string(extracted.get(cfg["source"]))
            if text is not None:
                line = text
        elif kind == "labeldrop":
            for name in cfg["values"]:
                labels.pop(name, None)
        else:
            raise AssertionError(f"stage {kind} is not modelled here")
    assert timestamp is not None, "no timestamp stage: entries would get the scrape time"
    return Entry(labels=tuple(sorted(labels.items())), timestamp_ns=timestamp, line=line,
                 metadata=tuple(sorted(structured.items())))


# --------------------------------------------------------------------------- the two files


def _promtail() -> tuple[dict[str, Any], dict[str, Any]]:
    config = yaml.safe_load(PROMTAIL.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    return config, job


def promtail_stages() -> list[Stage]:
    _, job = _promtail()
    stages: list[Stage] = []
    for stage in job["pipeline_stages"]:
        ((kind, cfg),) = stage.items()
        if kind == "labeldrop":
            stages.append(("labeldrop", {"values": list(cfg)}))
        elif kind in ("labels", "structured_metadata"):
            stages.append((kind, {k: v or "" for k, v in cfg.items()}))
        else:
            stages.append((kind, dict(cfg)))
    return stages


def _alloy() -> Block:
    return AlloyParser(ALLOY.read_text(encoding="utf-8")).parse()


def alloy_stages() -> list[Stage]:
    process = next(b for b in _alloy().blocks if b.name == "loki.process")
    stages: list[Stage] = []
    for b in process.blocks:
        kind = b.name.removeprefix("stage.")
        assert b.name.startswith("stage."), b.name
        if kind == "label_drop":
            stages.append(("labeldrop", {"values": b.attrs["values"]}))
        elif kind in ("labels", "structured_metadata"):
            stages.append((kind, dict(b.attrs["values"])))
        else:
            stages.append((kind, dict(b.attrs)))
    return stages


def _promtail_target_labels() -> dict[str, str]:
    _, job = _promtail()
    (static,) = job["static_configs"]
    labels = {k: v for k, v in static["labels"].items() if not k.startswith("__")}
    return {**labels, "filename": "/var/log/shipper/app.jsonl"}  # Promtail adds `filename`


def _alloy_target_labels() -> dict[str, str]:
    match = next(b for b in _alloy().blocks if b.name == "local.file_match")
    (target,) = _evaluate(match.attrs["path_targets"], {})
    labels = {k: v for k, v in target.items() if not k.startswith("__")}
    return {**labels, "filename": "/var/log/shipper/app.jsonl"}  # loki.source.file adds it


PIPELINES: dict[str, tuple[Callable[[], list[Stage]], Callable[[], dict[str, str]]]] = {
    "promtail": (promtail_stages, _promtail_target_labels),
    "alloy": (alloy_stages, _alloy_target_labels),
}


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_declares_exactly_the_handlers_labels_and_structured_metadata(
        name: str) -> None:
    stages = PIPELINES[name][0]()
    labels = {k for kind, cfg in stages if kind == "labels" for k in cfg}
    structured = {k for kind, cfg in stages if kind == "structured_metadata" for k in cfg}
    assert labels == LABELS
    assert structured == STRUCTURED
    kinds = [kind for kind, _ in stages]
    assert kinds[0] == "json"
    assert {"timestamp", "template", "output", "labeldrop"} <= set(kinds)
    assert kinds.index("template") < kinds.index("output")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[logging.LogRecord, LogContext | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.items.append((record, current_context()))


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[Entry]]:
    """Demo events written with --file's writer, and the entries the handler makes of them."""
    path = tmp_path_factory.mktemp("promtail") / "events.jsonl"
    base = f"pt{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(base)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    capture = _Capture()
    writer = JsonLinesFileHandler(path, service="marketplace", env="demo")
    for h in (capture, writer):
        h.addFilter(EventTimeFilter())
        logger.addHandler(h)
    emitter = DemoEmitter(base)
    end = time.time_ns()
    events = backfill_events(random.Random(21), start_ns=end - 3 * 3600 * NS, end_ns=end,
                             per_hour=150)
    events += list(live_events(random.Random(22), 600))
    try:
        for e in events:
            emitter.emit(e)
        # plus what the demo never sends: quotes, backslashes, HTML, non-ASCII, newlines, nested
        # lists with null, no metadata at all
        logger.warning('quote " backslash \\ <b>&</b> ünïcødé\nsecond line',
                       extra={"type": "odd", "metadata": {"list": [1, 2.5, None], "e": {}}})
        logger.info("no metadata at all")
    finally:
        for h in (capture, writer):
            logger.removeHandler(h)
            h.close()
    sent = [to_entry(event_from_record(r, service="marketplace", env="demo", context=c))
            for r, c in capture.items]
    return path.read_text(encoding="utf-8").splitlines(), sent


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_turns_demo_file_lines_into_the_entries_the_handler_sends(
        name: str, demo_file: tuple[list[str], list[Entry]]) -> None:
    make_stages, target_labels = PIPELINES[name]
    stages, labels = make_stages(), target_labels()
    lines, sent = demo_file
    assert len(lines) == len(sent) > 600
    for line, want in zip(lines, sent, strict=True):
        got = run_pipeline(stages, line, labels)
        assert dict(got.labels) == dict(want.labels), line
        assert dict(got.metadata) == dict(want.metadata), line
        assert got.timestamp_ns == want.timestamp_ns, line
        assert json.loads(got.line) == json.loads(want.line), line


def test_events_without_env_get_no_env_label() -> None:
    line = json.dumps({"ts": "2026-01-01T00:00:00.000000001Z", "service": "s", "env": None,
                       "level": "INFO", "actor": "SYSTEM", "type": "LOG", "actor_id": None,
                       "trace_id": None, "logger": None, "message": "m", "metadata": {},
                       "exception": None})
    for make_stages, target_labels in PIPELINES.values():
        entry = run_pipeline(make_stages(), line, target_labels())
        assert dict(entry.labels) == {"service_name": "s", "level": "INFO", "actor": "SYSTEM",
                                      "type": "LOG"}
        assert entry.metadata == ()
        assert json.loads(entry.line) == {"message": "m", "metadata": {}}
        assert entry.timestamp_ns == 1_767_225_600 * NS + 1


def test_promtail_reads_the_demo_files_and_pushes_to_loki_url() -> None:
    config, job = _promtail()
    (client,) = config["clients"]
    assert client["url"] == "${LOKI_URL:-http://localhost:3100}/loki/api/v1/push"
    (static,) = job["static_configs"]
    assert static["labels"]["__path__"].endswith("*.jsonl}")
    assert set(static["labels"]) == {"__path__"}, "any other static label would be sent too"
    assert config["positions"]["filename"]


def test_alloy_wires_file_match_to_source_to_process_to_write() -> None:
    root = _alloy()
    names = [(b.name, b.label) for b in root.blocks]
    assert names == [("local.file_match", "shipper"), ("loki.source.file", "shipper"),
                     ("loki.process", "shipper"), ("loki.write", "loki")]
    match, source, process, write = root.blocks
    assert source.attrs["targets"] == Ref("local.file_match.shipper.targets")
    assert source.attrs["forward_to"] == [Ref("loki.process.shipper.receiver")]
    assert process.attrs["forward_to"] == [Ref("loki.write.loki.receiver")]
    url = write.block("endpoint").attrs["url"]
    assert _evaluate(url, {}) == "http://localhost:3100/loki/api/v1/push"
    assert _evaluate(url, {"LOKI_URL": "http://loki:3100"}) == "http://loki:3100/loki/api/v1/push"
    (target,) = _evaluate(match.attrs["path_targets"], {})
    assert target == {"__path__": "/var/log/shipper/*.jsonl"}
    (target,) = _evaluate(match.attrs["path_targets"], {"SHIPPER_LOG_GLOB": "/srv/*.jsonl"})
    assert target == {"__path__": "/srv/*.jsonl"}


def test_both_files_say_promtail_is_end_of_life_and_alloy_succeeds_it() -> None:
    for path in (PROMTAIL, ALLOY):
        text = path.read_text(encoding="utf-8")
        assert "end of life" in text and "2026-03-02" in text and "Alloy" in text


def test_the_alloy_parser_refuses_what_it_does_not_know() -> None:
    with pytest.raises(SyntaxError):
        AlloyParser('a "b" { c = 1 + 2 }').parse()
    with pytest.raises(SyntaxError):
        AlloyParser("a { b = }").parse()
    with pytest.raises(AssertionError, match="not modelled"):
        _go_template("{{ .a | ToUpper }}", {"a": "x"})

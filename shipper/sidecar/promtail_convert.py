"""A Promtail configuration turned into the sidecar's (``shipper sidecar convert-promtail``).

The common subset converts: ``static_configs`` targets (``__path__``, ``__path_exclude__`` and
their labels), the pipeline stages ``json``, ``logfmt``, ``regex``, ``labels``,
``structured_metadata``, ``timestamp``, ``output``, ``multiline`` and ``static_labels``, the
first client (``url``, ``tenant_id``, ``basic_auth``, ``bearer_token``, ``bearer_token_file``,
``tls_config.ca_file``, batching and backoff) and ``positions.filename``, which becomes
``promtail_positions``.

Promtail's model is not the sidecar's: Promtail ships the line as it is, with any label the
stages extract; the sidecar ships each line as an event (``{"message", "metadata", ...}``) whose
only labels are ``service_name``, ``env``, ``level``, ``type`` and ``actor`` (docs/events.md).
So each label is mapped to what the event contract makes of the same field: a level label to
the ``level`` label, a ``service``/``app``/``job`` label to ``service_name`` as Loki 3 derives
it, any other extracted label to the event's metadata, kept in the line (``| json`` reaches it).
Every such change is listed (:attr:`Conversion.changed`), and everything that has no
equivalent (a ``drop`` stage, a Kubernetes target, a static label with no place in the
contract) is listed as left out (:attr:`Conversion.left_out`), each with its line in the file.
The result is checked by the sidecar's own loader before it is returned.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from shipper._units import UnitError, format_seconds, parse_seconds
from shipper.config import ShipperConfig
from shipper.sidecar.config import DEFAULT_LEVEL_PATTERN, SidecarConfigError, load_config
from shipper.sidecar.formats import role_of
from shipper.sidecar.smallfile import read_small_file

__all__ = ["MAX_CONFIG_BYTES", "Conversion", "PromtailConfigError", "convert_promtail",
           "read_promtail_config"]

#: a Promtail configuration larger than this is refused
MAX_CONFIG_BYTES = 1024 * 1024
#: deeper nesting is refused (a Promtail configuration is about 6 levels deep)
_MAX_DEPTH = 64
#: YAML nodes visited at most (anchors and aliases may repeat a node many times)
_MAX_NODES = 200_000
#: the labels Loki 3 takes service_name from, in its order (limits.go, discover_service_name)
_SERVICE_LABELS = ("service_name", "service", "app", "application", "app_name", "name",
                   "app_kubernetes_io_name", "container", "container_name",
                   "k8s_container_name", "component", "workload", "job", "k8s_job_name")
#: Promtail label names that carry a level
_LEVEL_LABELS = ("level", "severity", "lvl", "loglevel", "log_level", "levelname")
#: what each role of a field lands on in the event, in words
_WHERE = {"actor_id": "structured metadata actor_id", "trace_id": "structured metadata "
          "trace_id", "logger": "structured metadata logger", "message": "the message",
          "exception": "the exception", "time": "the entry's time"}
#: how the event contract writes the values of a label (docs/events.md)
_NORMALISED = {
    "level": "its values are DEBUG, INFO, WARNING, ERROR, CRITICAL (info -> INFO, warn -> "
             "WARNING)",
    "type": "its values are UPPER_SNAKE, and a service's distinct types are bounded "
            "(type_limit)",
    "actor": "its values are USER, CREATOR, ADMIN, SYSTEM, GUEST (SYSTEM when absent)",
}
#: Go time layouts the sidecar's ISO-8601 reader reads
_ISO_LAYOUT = re.compile(
    r"2006-01-02(?:[T ]15:04(?::05(?:[.,](?:0+|9+))?)?(?:Z07:00|Z0700|-07:00|-0700|Z)?)?")
_NAMED_TIME_FORMATS = ("RFC3339", "RFC3339Nano", "Unix", "UnixMs", "UnixUs", "UnixNs")
_SIMPLE_KEY = re.compile(r'[A-Za-z_@][A-Za-z0-9_@-]*(?:\.[A-Za-z_@][A-Za-z0-9_@-]*)?|"([^"\\]+)"')


class PromtailConfigError(ValueError):
    """The file cannot be read as a Promtail configuration, or nothing in it converts."""


@dataclass
class Conversion:
    """The sidecar configuration, and what the conversion changed or left out."""

    config: dict[str, Any]
    #: ``file:line: where: what`` for each part with no equivalent
    left_out: list[str] = field(default_factory=list)
    #: ``file:line: where: what`` for each part whose meaning changes
    changed: list[str] = field(default_factory=list)

    def text(self, source_name: str) -> str:
        """The configuration as YAML, the lists in comments on top."""
        head = [f"# Converted from Promtail's {source_name} by shipper sidecar convert-promtail "
                "(docs/promtail.md).",
                "# Check it with: shipper sidecar --config FILE --check"]
        for title, notes in (("Left out", self.left_out), ("Changed", self.changed)):
            if notes:
                head.append(f"# {title}:")
                head.extend(f"#   {note}" for note in notes)
        # one line per value, however long: a regular expression stays as written
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=1 << 20)
        return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------- reading


def read_promtail_config(path: str) -> str:
    """The text of the file at ``path``; :class:`PromtailConfigError` when it is not a regular
    file of UTF-8 text within :data:`MAX_CONFIG_BYTES` (a FIFO is refused, never waited on)."""
    try:
        data = read_small_file(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise PromtailConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PromtailConfigError(f"{path}: {exc}: not a Promtail configuration") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromtailConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte "
                                  f"{exc.start})") from None


def _load(text: str, name: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document and the line of each key and list item, by its path."""
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise PromtailConfigError(f"{name}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a "
                                  "Promtail configuration")
    try:
        depth = 0
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise PromtailConfigError(f"{name}: nested deeper than {_MAX_DEPTH} "
                                              "levels: not a Promtail configuration")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise PromtailConfigError(f"{name}: not valid YAML: {' '.join(str(exc).split())}"
                                  ) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        budget = [_MAX_NODES]
        _walk(node, (), lines, budget, name)
    return data, lines


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
          budget: list[int], name: str) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise PromtailConfigError(f"{name}: more than {_MAX_NODES} values (anchors repeated "
                                  "over and over?): not a Promtail configuration")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines.setdefault((*path, key.value), key.start_mark.line + 1)
                _walk(value, (*path, key.value), lines, budget, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, budget, name)


def _shown(value: object) -> str:
    """A value in a note: scalars as JSON (one line, cut), anything else by its kind."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 120 else text[:117] + "..."
    return "a mapping" if isinstance(value, Mapping) else "a list" \
        if isinstance(value, list) else type(value).__name__


# --------------------------------------------------------------------------- notes


class _Notes:
    def __init__(self, name: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.name = name
        self.lines = lines
        self._left: list[tuple[int, str]] = []
        self._changed: list[tuple[int, str]] = []

    def _note(self, path: tuple[Any, ...], what: str) -> tuple[int, str]:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        return line, f"{self.name}:{line}: {where or '(top)'}: {what}"

    def left(self, path: tuple[Any, ...], what: str) -> None:
        self._left.append(self._note(path, what))

    def change(self, path: tuple[Any, ...], what: str) -> None:
        self._changed.append(self._note(path, what))

    @property
    def left_out(self) -> list[str]:
        """What has no equivalent, in the order of the file's lines."""
        return [text for _, text in sorted(self._left, key=lambda note: note[0])]

    @property
    def changed(self) -> list[str]:
        """What changes meaning, in the order of the file's lines."""
        return [text for _, text in sorted(self._changed, key=lambda note: note[0])]


# --------------------------------------------------------------------------- small readers


def _python_regex(expr: object) -> tuple[str | None, str]:
    """A Go (RE2) regular expression as Python's ``re`` reads it the same way, or None and
    why not."""
    if not isinstance(expr, str) or not expr:
        return None, f"{_shown(expr)} is not a regular expression"
    if re.search(r"\[:\^?[a-z]+:\]|\\[pPQCE]|\(\?[a-zA-Z]*U", expr):
        return None, (f"{_shown(expr)} uses RE2 syntax Python's re reads otherwise (POSIX "
                      "classes, \\p, \\Q...\\E, \\C or the U flag)")
    python = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", expr).replace(r"\z", r"\Z")
    try:
        re.compile(python)
    except re.error as exc:
        return None, f"{_shown(expr)} is not read by Python's re ({exc})"
    return python, ""


def _duration(value: object) -> float | None:
    try:
        return parse_seconds(value, allow_zero=False) if value is not None else None
    except UnitError:
        return None


def _time_format_ok(layout: object) -> bool:
    return isinstance(layout, str) and (layout in _NAMED_TIME_FORMATS or
                                        _ISO_LAYOUT.fullmatch(layout) is not None)


def _expand_braces(pattern: str, limit: int = 64) -> list[str]:
    """doublestar's ``{a,b}`` alternatives, which the sidecar's globs do not read, as separate
    patterns (at most ``limit``)."""
    if pattern.count("{") > 16:
        raise ValueError("more than 16 {...} alternatives")
    match = re.search(r"(?<!\$)\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    out: list[str] = []
    for choice in match.group(1).split(","):
        out.extend(_expand_braces(pattern[:match.start()] + choice + pattern[match.end():],
                                  limit))
        if len(out) > limit:
            raise ValueError(f"more than {limit} patterns")
    return out


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _as_set(match: re.Match[str]) -> str:
    """``${VAR:-default}`` as its default, ``${VAR}`` as an absolute stand-in: whether a path
    is absolute, before the environment is known."""
    return match.group(2) if match.group(2) is not None else "/"


def _stand_ins(text: str) -> dict[str, str]:
    """A value for each ``${VAR}`` without a default, of the kind its place needs."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        for match in _ENV_REF.finditer(line):
            if match.group(2) is not None:
                continue
            before = line[:match.start()].rstrip()
            out.setdefault(match.group(1), "/stand-in" if before.endswith(
                ("-", "promtail_positions:", "ca_bundle:", "bearer_token_file:"))
                else "http://stand-in" if before.endswith("url:") else "stand-in")
    return out


def _rename_group(pattern: str, old: str, new: str) -> str:
    return pattern.replace(f"(?P<{old}>", f"(?P<{new}>").replace(f"(?P={old})", f"(?P={new})")


# --------------------------------------------------------------------------- pipelines


@dataclass
class _Parsing:
    """What a job's pipeline stages make of its lines, in the sidecar's terms."""

    format: str | None = None  # json, logfmt, regex
    #: extracted name -> the line's key (json, logfmt) or the regex's group; None: not known
    fields: dict[str, str | None] = field(default_factory=dict)
    regex: str | None = None
    renames: dict[str, str] = field(default_factory=dict)
    timezone: str | None = None
    multiline: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": {"json": "json", "logfmt": "logfmt"}.get(
            self.format or "", "text")}
        if self.regex is not None:
            pattern = self.regex
            for old, new in self.renames.items():
                pattern = _rename_group(pattern, old, new)
            if "(?P<level>" not in pattern:  # the level as the sidecar finds it in text lines
                pattern = f"^(?=(?:.*?{DEFAULT_LEVEL_PATTERN})?)(?:.*?(?:{pattern}))?"
            out["level_pattern"] = pattern
        if self.timezone:
            out["timezone"] = self.timezone
        if self.multiline:
            out["multiline"] = self.multiline
        return out


class _Stages:
    """Reads one job's ``pipeline_stages`` into a :class:`_Parsing`, noting as it goes."""

    def __init__(self, notes: _Notes) -> None:
        self.notes = notes
        self.parsing = _Parsing()
        #: extracted names written by a stage left out (template, replace, ...)
        self.made_by: dict[str, str] = {}

    def run(self, stages: object, path: tuple[Any, ...]) -> _Parsing:
        if stages is None:
            return self.parsing
        if not isinstance(stages, list):
            self.notes.left(path, f"{_shown(stages)}, not a list of stages")
            return self.parsing
        handlers: dict[str, Callable[[Any, tuple[Any, ...]], None]] = {
            "json": self.json, "logfmt": self.logfmt, "regex": self.regex,
            "labels": self.labels, "structured_metadata": self.structured_metadata,
            "timestamp": self.timestamp, "output": self.output, "multiline": self.multiline,
            "drop": self.drop, "static_labels": self.static_labels,
        }
        for i, stage in enumerate(stages):
            where = (*path, i)
            if not isinstance(stage, Mapping) or len(stage) != 1:
                self.notes.left(where, f"{_shown(stage)}: a stage is a mapping of one name")
                continue
            (kind, config), = stage.items()
            handler = handlers.get(str(kind))
            if kind in ("labeldrop", "labelallow"):
                self.notes.change((*where, kind), "nothing to drop: the sidecar ships only "
                                  "its own labels (service_name, env, level, type, actor)")
            elif handler is None:
                self.notes.left((*where, kind), f"the {kind} stage has no equivalent in the "
                                "sidecar")
                made = config.get("source") if isinstance(config, Mapping) else None
                if isinstance(made, str):
                    self.made_by[made] = str(kind)
            elif not isinstance(config, Mapping):
                self.notes.left((*where, kind), f"{_shown(config)}: expected its settings")
            else:
                handler(config, (*where, kind))
        return self.parsing

    def _unknown(self, config: Mapping[str, Any], path: tuple[Any, ...], *known: str) -> None:
        for key in config:
            if key not in known:
                self.notes.left((*path, key), "not converted")

    def _parser(self, kind: str, config: Mapping[str, Any], path: tuple[Any, ...]) -> bool:
        if self.parsing.format is not None:
            self.notes.left(path, f"a second parsing stage ({kind} after "
                            f"{self.parsing.format}): the sidecar parses each line once")
            return False
        if config.get("source"):
            self.notes.left((*path, "source"), f"{kind} of the extracted field "
                            f"{_shown(config['source'])}: the sidecar parses the whole line")
            return False
        return True

    def json(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        if not self._parser("json", config, path):
            return
        self.parsing.format = "json"
        expressions = config.get("expressions") or {}
        for name, expr in expressions.items() if isinstance(expressions, Mapping) else ():
            text = str(expr or name).strip()
            match = _SIMPLE_KEY.fullmatch(text)
            self.parsing.fields[str(name)] = (match.group(1) or text) if match else None
        if config.get("drop_malformed"):
            self.notes.left((*path, "drop_malformed"), "lines that are not JSON are shipped "
                            "as text lines, with metadata.parse_error saying why")
        self._unknown(config, path, "expressions", "source", "drop_malformed")
        self.notes.change(path, "every key of the line is kept: the known ones fill the "
                          "event (docs/sidecar.md), the others its metadata")

    def logfmt(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        if not self._parser("logfmt", config, path):
            return
        self.parsing.format = "logfmt"
        mapping = config.get("mapping") or {}
        for name, key in mapping.items() if isinstance(mapping, Mapping) else ():
            self.parsing.fields[str(name)] = str(key or name)
        self._unknown(config, path, "mapping", "source")

    def regex(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        if not self._parser("regex", config, path):
            return
        python, why = _python_regex(config.get("expression"))
        if python is None:
            self.notes.left((*path, "expression"), why)
            return
        self.parsing.format = "regex"
        self.parsing.regex = python
        for group in re.compile(python).groupindex:
            self.parsing.fields[group] = group
        self._unknown(config, path, "expression", "source")

    def _origin(self, source: str, path: tuple[Any, ...], what: str) -> str | None:
        """The line's key (or group) an extracted name comes from; None, noted, when no stage
        extracts it or its expression is not a plain key."""
        if source in self.made_by:
            self.notes.left(path, f"{what}: {_shown(source)} is made by the "
                            f"{self.made_by[source]} stage, left out")
            return None
        if source not in self.parsing.fields:
            self.notes.change(path, f"{what}: no stage extracts {_shown(source)}, so Promtail "
                              "set nothing either")
            return None
        origin = self.parsing.fields[source]
        if origin is None:
            self.notes.left(path, f"{what}: {_shown(source)} comes from a JSON expression "
                            "that is not a plain key; the sidecar reads keys of the line")
        return origin

    def _role(self, origin: str, role: str, path: tuple[Any, ...], what: str) -> bool:
        """Make the line's ``origin`` fill ``role`` (a regex group is renamed); False when the
        sidecar reads ``role`` from other keys."""
        if self.parsing.format == "regex":
            if role not in ("level", "time", "message"):
                return False
            if origin != role:
                if f"(?P<{role}>" in (self.parsing.regex or "") or \
                        role in self.parsing.renames.values():
                    self.notes.left(path, f"{what}: the regex already has a group {role}")
                    return True
                self.parsing.renames[origin] = role
            return True
        return role_of(origin) == role

    def labels(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for label, source in config.items():
            where = (*path, label)
            what = f"label {label}"
            origin = self._origin(str(source or label), where, what)
            if origin is None:
                continue
            wanted = "level" if label in _LEVEL_LABELS else str(label) if label in (
                "type", "actor", "env") else "service" if label in _SERVICE_LABELS else None
            if wanted is not None and self._role(origin, wanted, where, what):
                target = "service_name" if wanted == "service" else wanted
                becomes = f"becomes the {target} label" if target != label else "stays"
                normal = _NORMALISED.get(target)
                if normal or target != label:
                    self.notes.change(where, f"{what} {becomes}" + (f"; {normal}" if normal
                                                                    else ""))
                continue
            if wanted == "level":
                self.notes.left(where, f"{what}: the sidecar reads the level from the keys "
                                "level, levelname, log.level, severity, lvl (or a regex group "
                                f"level); {_shown(origin)} stays in metadata")
                continue
            self.notes.change(where, f"{what} is not a label in the sidecar: "
                              f"{self._lands(origin)}")

    def _lands(self, origin: str) -> str:
        role = role_of(origin) if self.parsing.format != "regex" else None
        if role in _WHERE:
            return f"{_shown(origin)} becomes {_WHERE[role]}"
        if role is not None:
            return f"{_shown(origin)} becomes the {role} label"
        # LogQL's json parser names a nested field by its path, joined with _
        extracted = re.sub(r"[^A-Za-z0-9_]", "_", f"metadata_{origin}")
        return f"it stays in the line, metadata.{origin} (| json | {extracted}=...)"

    def structured_metadata(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for name, source in config.items():
            where = (*path, name)
            what = f"structured metadata {name}"
            origin = self._origin(str(source or name), where, what)
            if origin is None:
                continue
            role = role_of(origin) if self.parsing.format != "regex" else None
            if role in ("actor_id", "trace_id", "logger"):
                if role != name:
                    self.notes.change(where, f"{what} becomes structured metadata {role}")
                continue
            self.notes.change(where, f"{what}: the sidecar's structured metadata is "
                              f"actor_id, trace_id and logger; {self._lands(origin)}")

    def timestamp(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        what = "the timestamp"
        origin = self._origin(str(config.get("source") or ""), (*path, "source"), what)
        layouts = [config.get("format"), *(config.get("fallback_formats") or [])]
        bad = [layout for layout in layouts if not _time_format_ok(layout)]
        if bad:
            self.notes.left((*path, "format"), f"the time layout {_shown(bad[0])}: the sidecar "
                            "reads ISO-8601 (RFC3339) times and epoch numbers; the entry's "
                            "time is when the line is read")
        elif origin is not None and not self._role(origin, "time", path, what):
            self.notes.left((*path, "source"), f"{what} from {_shown(origin)}: the sidecar "
                            "reads it from createdAt, created_at, ts, time, timestamp, "
                            "@timestamp or asctime")
        location = config.get("location")
        if location is not None:
            try:
                zoneinfo.ZoneInfo(str(location))
                self.parsing.timezone = str(location)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.notes.left((*path, "location"), f"{_shown(location)} is not a time zone "
                                "known here")
        self._unknown(config, path, "source", "format", "fallback_formats", "location",
                      "action_on_failure")

    def output(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        what = "the output"
        origin = self._origin(str(config.get("source") or ""), (*path, "source"), what)
        if origin is not None and not self._role(origin, "message", path, what):
            self.notes.left((*path, "source"), f"{what} {_shown(origin)}: the sidecar's "
                            "message is the key message, msg or event")
        self._unknown(config, path, "source")

    def multiline(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        python, why = _python_regex(config.get("firstline"))
        if python is None:
            self.notes.left((*path, "firstline"), why)
            return
        wait = _duration(config.get("max_wait_time", "3s"))
        lines = config.get("max_lines", 128)
        if wait is None or isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
            self.notes.left(path, "max_wait_time or max_lines is not a duration or a count")
            return
        # Promtail's firstline matches anywhere in the line; the sidecar's start at its start
        start = python if python.startswith("^") else f".*?(?:{python})"
        self.parsing.multiline = {"start": start, "timeout": format_seconds(wait),
                                  "max_lines": lines}
        self.notes.change(path, "the lines after the first become the event's exception; "
                          "the first line is parsed")
        self._unknown(config, path, "firstline", "max_wait_time", "max_lines")

    def drop(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        rule = ", ".join(f"{k}: {_shown(v)}" for k, v in config.items())
        self.notes.left(path, f"drop ({rule}): the sidecar has no filter; these lines are "
                        "shipped")

    def static_labels(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for name, value in config.items():
            self.parsing.labels[str(name)] = str(value)


# --------------------------------------------------------------------------- the file


_IGNORED_CLIENT = {
    "drop_rate_limited_batches": "the sidecar never drops a batch Loki pushes back: it waits, "
                                 "then keeps it in the spool",
    "max_retries": "retries are bounded by time (retry_budget, 30s); what is left goes to the "
                   "spool",
}


class _Converter:
    def __init__(self, data: Mapping[str, Any], notes: _Notes) -> None:
        self.data = data
        self.notes = notes
        self.loki: dict[str, Any] = {}
        self.external: dict[str, str] = {}
        self.envs: set[str] = set()
        self.out: dict[str, Any] = {}
        self.sources: list[dict[str, Any]] = []
        self.has = {f.name for f in dataclasses.fields(ShipperConfig)}

    def run(self) -> dict[str, Any]:
        left = self.notes.left
        for key, value in self.data.items():
            if key == "clients":
                self.clients(value)
            elif key == "client":
                self.clients([value])
            elif key == "positions":
                self.positions(value)
            elif key == "server":
                self.notes.change(("server",), "the sidecar serves /metrics and /healthz on "
                                  "metrics_listen (127.0.0.1:3501), not on Promtail's server")
            elif key == "scrape_configs":
                pass  # after the clients: their external_labels apply to every job
            else:
                left((key,), "no equivalent in the sidecar")
        scrape = self.data.get("scrape_configs")
        if not isinstance(scrape, list):
            left(("scrape_configs",), f"{_shown(scrape)}: expected a list of jobs")
        else:
            for i, job in enumerate(scrape):
                self.job(job, ("scrape_configs", i))
        if self.loki:
            self.out = {"loki": self.loki, **self.out}
        if len(self.envs) == 1:
            self.out["env"] = next(iter(self.envs))
        if self.sources:
            self.notes.change(("scrape_configs",), "Promtail's filename label is not shipped")
        self.out["sources"] = self.sources
        return self.out

    def clients(self, clients: object) -> None:
        if not isinstance(clients, list) or not clients:
            self.notes.left(("clients",), f"{_shown(clients)}: expected a list of clients")
            return
        for i in range(1, len(clients)):
            self.notes.left(("clients", i), "the sidecar ships to one Loki: only the first "
                            "client is converted")
        client = clients[0]
        path: tuple[Any, ...] = ("clients", 0)
        if not isinstance(client, Mapping):
            self.notes.left(path, f"{_shown(client)}: expected a client's settings")
            return
        simple = {"url": "url", "tenant_id": "tenant", "bearer_token": "bearer_token",
                  "bearer_token_file": "bearer_token_file", "timeout": "timeout",
                  "batchwait": "batch_max_wait", "batchsize": "batch_max_bytes"}
        for key, value in client.items():
            where = (*path, key)
            if key in simple and simple[key] in self.has and isinstance(value, (str, int)):
                self.loki[simple[key]] = value
            elif key == "basic_auth" and isinstance(value, Mapping):
                self.basic_auth(value, where)
            elif key == "tls_config" and isinstance(value, Mapping):
                self.tls(value, where)
            elif key == "backoff_config" and isinstance(value, Mapping):
                for name, ours in (("min_period", "backoff_min"), ("max_period", "backoff_max")):
                    if name in value:
                        self.loki[ours] = value[name]
                if "max_retries" in value:
                    self.notes.change((*where, "max_retries"), _IGNORED_CLIENT["max_retries"])
            elif key == "external_labels" and isinstance(value, Mapping):
                self.external.update({str(k): str(v) for k, v in value.items()})
            elif key in _IGNORED_CLIENT:
                self.notes.change(where, _IGNORED_CLIENT[key])
            else:
                self.notes.left(where, "not converted")

    def basic_auth(self, auth: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for key, value in auth.items():
            ours = {"username": "username", "password": "password",
                    "password_file": "password_file"}.get(key)
            if ours in self.has:
                self.loki[ours] = value
            else:
                self.notes.left((*path, key), "not converted (give the password in "
                                "loki.password, e.g. ${LOKI_PASSWORD})")

    def tls(self, tls: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for key, value in tls.items():
            if key == "ca_file":
                self.loki["ca_bundle"] = value
            elif key == "insecure_skip_verify":
                if value is True:
                    self.loki["verify_tls"] = False
            else:
                self.notes.left((*path, key), "not converted")

    def positions(self, positions: object) -> None:
        if not isinstance(positions, Mapping):
            self.notes.left(("positions",), f"{_shown(positions)}: expected its settings")
            return
        for key, value in positions.items():
            if key == "filename" and isinstance(value, str) and value:
                self.out["promtail_positions"] = value
                self.notes.change(("positions", key), "read once at start-up "
                                  "(promtail_positions); the sidecar keeps its own positions "
                                  "in positions_file")
            else:
                self.notes.change(("positions", key), "the sidecar saves its positions every "
                                  "positions_interval (2s) and moves a damaged file aside")

    def job(self, job: object, path: tuple[Any, ...]) -> None:
        if not isinstance(job, Mapping):
            self.notes.left(path, f"{_shown(job)}: expected a job")
            return
        parsing = _Stages(self.notes).run(job.get("pipeline_stages"),
                                          (*path, "pipeline_stages"))
        statics = job.get("static_configs")
        for key in job:
            if key not in ("job_name", "static_configs", "pipeline_stages"):
                hint = {"docker_sd_configs": " (a docker source follows containers)",
                        "loki_push_api": " (an http source takes Loki's push API)"}.get(
                    str(key), "")
                self.notes.left((*path, key), f"not converted{hint}")
        if statics is None:
            return
        if not isinstance(statics, list):
            self.notes.left((*path, "static_configs"), "expected a list")
            return
        for i, static in enumerate(statics):
            self.static(static, (*path, "static_configs", i), parsing)

    def static(self, static: object, path: tuple[Any, ...], parsing: _Parsing) -> None:
        labels = static.get("labels") if isinstance(static, Mapping) else None
        if not isinstance(labels, Mapping) or "__path__" not in labels:
            self.notes.left(path, "a target without __path__: nothing to tail")
            return
        paths = self.globs(labels["__path__"], (*path, "labels", "__path__"))
        if not paths:
            return
        source: dict[str, Any] = {"type": "file", "paths": paths}
        if "__path_exclude__" in labels:
            exclude = self.globs(labels["__path_exclude__"], (*path, "labels",
                                                              "__path_exclude__"))
            if exclude:
                source["exclude"] = exclude
        every = {**self.external, **parsing.labels,
                 **{str(k): str(v) for k, v in labels.items()}}
        service = next((name for name in _SERVICE_LABELS if every.get(name)), None)
        if service is not None:
            source["service"] = every[service]
            if service != "service_name":
                self.notes.change((*path, "labels", service),
                                  f"label {service}={every[service]}: service_name="
                                  f"{every[service]}, as Loki 3 derives it; {service} is not "
                                  "shipped as a label")
        for name, value in every.items():
            if name.startswith("__") or name == service:
                continue
            where = (*path, "labels", name)
            if name == "env":
                if self.envs and value not in self.envs:
                    self.notes.left(where, f"env={value}: the sidecar has one env for all "
                                    f"sources ({', '.join(sorted(self.envs))})")
                    continue
                self.envs.add(value)
            else:
                self.notes.left(where, f"label {name}={value}: the sidecar's labels are "
                                "service_name, env, level, type and actor (docs/events.md)")
        source.update(parsing.settings())
        self.sources.append(source)

    def globs(self, value: object, path: tuple[Any, ...]) -> list[str]:
        if not isinstance(value, str) or not value:
            self.notes.left(path, f"{_shown(value)}: expected a glob")
            return []
        try:
            patterns = _expand_braces(value)
        except ValueError as exc:
            self.notes.left(path, f"{_shown(value)}: {exc}")
            return []
        relative = [p for p in patterns if not os.path.isabs(_ENV_REF.sub(_as_set, p))]
        if relative:
            self.notes.left(path, f"{_shown(relative[0])}: the sidecar needs absolute paths")
            return []
        return patterns


def convert_promtail(text: str, name: str = "promtail.yaml") -> Conversion:
    """Convert a Promtail configuration (its text; ``name`` for the notes). Raises
    :class:`PromtailConfigError` when it is not one or no file target converts."""
    data, lines = _load(text, name)
    if not isinstance(data, Mapping):
        raise PromtailConfigError(f"{name}: {_shown(data)}: expected a Promtail configuration "
                                  "(a mapping with scrape_configs)")
    notes = _Notes(name, lines)
    config = _Converter(data, notes).run()
    if not config["sources"]:
        raise PromtailConfigError(
            f"{name}: no static_configs target with __path__ converts, so there is nothing "
            "for the sidecar to tail:\n" + "\n".join(notes.left_out))
    if "${" in json.dumps(config):
        notes.change((), "${VAR} is read from the environment when the sidecar starts (Promtail "
                     "did so only with -config.expand-env=true)")
    conversion = Conversion(config, notes.left_out, notes.changed)
    _check_loads(conversion, name)
    return conversion


def _check_loads(conversion: Conversion, name: str) -> None:
    """The sidecar's own loader takes the result (``${VAR}`` given a stand-in)."""
    text = conversion.text(name)
    environ = {**os.environ, **_stand_ins(text)}
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "sidecar.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_config(path, environ=environ)
        except SidecarConfigError as exc:
            raise PromtailConfigError(f"{name}: the converted configuration does not load: "
                                      f"{str(exc).replace(path, 'sidecar.yaml')}") from None

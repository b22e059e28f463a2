"""Promtail's pipeline stages in the sidecar's terms, for ``shipper sidecar convert-promtail``
(shipper/sidecar/promtail_convert.py): :class:`Stages` reads one job's ``pipeline_stages`` into a
:class:`Parsing` (the format, the level pattern, the time zone, multi-line joining of a file
source), and notes in :class:`Notes`, with its line, each stage or field that has no equivalent
and each whose meaning changes.

A label a stage extracts is mapped to what the event contract makes of the same field of the
line (:func:`~shipper.sidecar.formats.role_of`): a level to the ``level`` label, a trace id to
structured metadata, any other field to the event's metadata. A regular expression's named
groups are renamed to ``level``, ``time`` and ``message`` where the stages used them so.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shipper._units import UnitError, format_seconds, format_size, parse_seconds
from shipper.sidecar.config import DEFAULT_LEVEL_PATTERN, FileSourceConfig
from shipper.sidecar.drop import DropError, read_rules
from shipper.sidecar.formats import role_of

__all__ = ["SERVICE_LABELS", "Notes", "Parsing", "Stages", "shown"]

#: the labels Loki 3 takes service_name from, in its order (limits.go, discover_service_name)
SERVICE_LABELS = ("service_name", "service", "app", "application", "app_name", "name",
                  "app_kubernetes_io_name", "container", "container_name",
                  "k8s_container_name", "component", "workload", "job", "k8s_job_name")
#: lines are cut to this before a drop rule sees them (the converted source keeps the default)
MAX_LINE_BYTES = FileSourceConfig(paths=("/",)).max_line_bytes
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


#: what must not reach a note as it is: line breaks (a note is a YAML comment) and controls
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def shown(value: object) -> str:
    """A value in a note: scalars as JSON (one line, cut), anything else by its kind."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 120 else text[:117] + "..."
    return "a mapping" if isinstance(value, Mapping) else "a list" \
        if isinstance(value, list) else type(value).__name__


# --------------------------------------------------------------------------- notes


class Notes:
    """What a conversion left out and what it changes, each as ``file:line: where: what``."""

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
        # one line whatever the file's keys hold: a note is also a comment atop the YAML
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}",
                            f"{self.name}:{line}: {where or '(top)'}: {what}")
        return line, text

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
        return None, f"{shown(expr)} is not a regular expression"
    if re.search(r"\[:\^?[a-z]+:\]|\\[pPQCE]|\(\?[a-zA-Z]*U", expr):
        return None, (f"{shown(expr)} uses RE2 syntax Python's re reads otherwise (POSIX "
                      "classes, \\p, \\Q...\\E, \\C or the U flag)")
    python = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", expr).replace(r"\z", r"\Z")
    try:
        re.compile(python)
    except re.error as exc:
        return None, f"{shown(expr)} is not read by Python's re ({exc})"
    return python, ""


def _duration(value: object) -> float | None:
    try:
        return parse_seconds(value, allow_zero=False) if value is not None else None
    except UnitError:
        return None


def _time_format_ok(layout: object) -> bool:
    return isinstance(layout, str) and (layout in _NAMED_TIME_FORMATS or
                                        _ISO_LAYOUT.fullmatch(layout) is not None)


def _rename_group(pattern: str, old: str, new: str) -> str:
    return pattern.replace(f"(?P<{old}>", f"(?P<{new}>").replace(f"(?P={old})", f"(?P={new})")


# --------------------------------------------------------------------------- pipelines


@dataclass
class Parsing:
    """What a job's pipeline stages make of its lines, in the sidecar's terms."""

    format: str | None = None  # json, logfmt, regex
    #: extracted name -> the line's key (json, logfmt) or the regex's group; None: not known
    fields: dict[str, str | None] = field(default_factory=dict)
    regex: str | None = None
    renames: dict[str, str] = field(default_factory=dict)
    timezone: str | None = None
    multiline: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: the drop stages, as the source's drop rules
    drop: list[dict[str, Any]] = field(default_factory=list)

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
        if self.drop:
            out["drop"] = self.drop
        return out


class Stages:
    """Reads one job's ``pipeline_stages`` into a :class:`Parsing`, noting as it goes."""

    def __init__(self, notes: Notes) -> None:
        self.notes = notes
        self.parsing = Parsing()
        #: extracted names written by a stage left out (template, replace, ...)
        self.made_by: dict[str, str] = {}
        #: the regex groups a stage made the level, time or message (and the regex's place)
        self.claimed: set[str] = set()
        self.regex_at: tuple[Any, ...] = ()

    def run(self, stages: object, path: tuple[Any, ...]) -> Parsing:
        if stages is None:
            return self.parsing
        if not isinstance(stages, list):
            self.notes.left(path, f"{shown(stages)}, not a list of stages")
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
                self.notes.left(where, f"{shown(stage)}: a stage is a mapping of one name")
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
                self.notes.left((*where, kind), f"{shown(config)}: expected its settings")
            else:
                handler(config, (*where, kind))
        for role in ("level", "time", "message"):  # what the sidecar reads by a group's name
            if f"(?P<{role}>" in (self.parsing.regex or "") and role not in self.claimed:
                self.notes.change(self.regex_at, f"the group {role} gives the event's {role} "
                                  "(Promtail used a group only through a stage)")
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
                            f"{shown(config['source'])}: the sidecar parses the whole line")
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
        self.regex_at = path
        for group in re.compile(python).groupindex:
            self.parsing.fields[group] = group
        self._unknown(config, path, "expression", "source")

    def _origin(self, source: str, path: tuple[Any, ...], what: str) -> str | None:
        """The line's key (or group) an extracted name comes from; None, noted, when no stage
        extracts it or its expression is not a plain key."""
        if source in self.made_by:
            self.notes.left(path, f"{what}: {shown(source)} is made by the "
                            f"{self.made_by[source]} stage, left out")
            return None
        if source not in self.parsing.fields:
            self.notes.change(path, f"{what}: no stage extracts {shown(source)}, so Promtail "
                              "set nothing either")
            return None
        origin = self.parsing.fields[source]
        if origin is None:
            self.notes.left(path, f"{what}: {shown(source)} comes from a JSON expression "
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
            self.claimed.add(role)
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
                "type", "actor", "env") else "service" if label in SERVICE_LABELS else None
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
                                f"level); {shown(origin)} stays in metadata")
                continue
            self.notes.change(where, f"{what} is not a label in the sidecar: "
                              f"{self._lands(origin)}")

    def _lands(self, origin: str) -> str:
        role = role_of(origin) if self.parsing.format != "regex" else None
        if role in _WHERE:
            return f"{shown(origin)} becomes {_WHERE[role]}"
        if role is not None:
            return f"{shown(origin)} becomes the {role} label"
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
            self.notes.left((*path, "format"), f"the time layout {shown(bad[0])}: the sidecar "
                            "reads ISO-8601 (RFC3339) times and epoch numbers; the entry's "
                            "time is when the line is read")
        elif origin is not None and not self._role(origin, "time", path, what):
            self.notes.left((*path, "source"), f"{what} from {shown(origin)}: the sidecar "
                            "reads it from createdAt, created_at, ts, time, timestamp, "
                            "@timestamp or asctime")
        location = config.get("location")
        if location is not None:
            try:
                zoneinfo.ZoneInfo(str(location))
                self.parsing.timezone = str(location)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.notes.left((*path, "location"), f"{shown(location)} is not a time zone "
                                "known here")
        self._unknown(config, path, "source", "format", "fallback_formats", "location",
                      "action_on_failure")

    def output(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        what = "the output"
        origin = self._origin(str(config.get("source") or ""), (*path, "source"), what)
        if origin is not None and not self._role(origin, "message", path, what):
            self.notes.left((*path, "source"), f"{what} {shown(origin)}: the sidecar's "
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
        """A drop stage as one of the source's ``drop`` rules (shipper/sidecar/drop.py)."""
        written = ", ".join(f"{k}: {shown(v)}" for k, v in config.items())
        what = f"drop ({written})"
        rule: dict[str, Any] = {}
        normal: list[str] = []  # the normalised fields (level, type, actor) it matches
        names = config.get("source")
        if names is not None:
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                self.notes.left((*path, "source"), f"{what}: {shown(names)} is not a field "
                                "name or a list of them")
                return
            sources = []
            for name in names:
                origin = self._origin(name, (*path, "source"), what)
                if origin is None:  # noted: the rule never held in Promtail, or cannot here
                    return
                if self.parsing.format == "regex":
                    origin = self.parsing.renames.get(origin, origin)
                    if role_of(origin) not in (None, origin):
                        self.notes.left((*path, "source"), f"{what}: the group "
                                        f"{shown(origin)} is kept in metadata, and a drop "
                                        f"rule's {shown(origin)} reads the event's "
                                        f"{role_of(origin)}")
                        return
                elif role_of(origin) == "time":
                    self.notes.left((*path, "source"), f"{what}: {shown(origin)} is read into "
                                    "the entry's time, not kept as text")
                    return
                sources.append(origin)
            rule["source"] = sources[0] if len(sources) == 1 else sources
            normal = sorted({role_of(s) or "" for s in sources} & {"level", "type", "actor"})
            if normal and ("expression" in config or "value" in config):
                how = "the expression ignores case" if "expression" in config else \
                    "the value is read the same way, so every spelling of it is dropped"
                self.notes.change(path, f"{what}: matched against the event's {normal[0]}: "
                                  f"{_NORMALISED[normal[0]].split(' (')[0]}; {how}")
        if "expression" in config:
            python, why = _python_regex(config["expression"])
            if python is None:
                self.notes.left((*path, "expression"), f"{what}: {why}")
                return
            normal = [] if names is None else normal
            rule["expression"] = f"(?i){python}" if normal else python
        for key in ("value", "separator", "older_than", "drop_counter_reason"):
            if key in config:
                rule[key] = config[key]
        if "longer_than" in config:  # Promtail's sizes are powers of 1024 (KB = KiB)
            rule["longer_than"] = re.sub(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt])i?b\s*$",
                                         lambda m: f"{m.group(1)}{m.group(2).upper()}iB",
                                         str(config["longer_than"]))
        self._unknown(config, path, "source", "value", "expression", "separator",
                      "older_than", "longer_than", "drop_counter_reason")
        try:
            (checked,) = read_rules([rule])
        except DropError as exc:
            self.notes.left(path, f"{what}: {exc.key.removeprefix('[0].') or 'the rule'}: "
                            f"{shown(exc.value)}: expected {exc.expected}")
            return
        if checked.longer_than is not None and checked.longer_than >= MAX_LINE_BYTES:
            self.notes.left((*path, "longer_than"), f"{what}: the sidecar cuts lines to "
                            f"max_line_bytes ({format_size(MAX_LINE_BYTES)}) first")
            return
        self.parsing.drop.append(rule)

    def static_labels(self, config: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for name, value in config.items():
            self.parsing.labels[str(name)] = str(value)



"""Per-level retention as code: ``loki/retention.yaml`` → Loki's ``limits_config``, and back.

``loki/retention.yaml`` is the one source of truth. This module

* loads and validates it (:meth:`RetentionPolicy.load`): periods in Loki's duration syntax or
  ``forever``; selectors that are well-formed label matchers naming only the stream labels of
  the event contract (``service_name``, ``env``, ``level``, ``actor``, ``type``);
* renders the ``retention_period`` / ``retention_stream`` block of ``limits_config``
  (:meth:`RetentionPolicy.render`) and writes it between the markers in ``loki/config.yaml``
  (:meth:`RetentionPolicy.render_into`), leaving every other line of that file alone;
* compares a live Loki's ``GET /config`` with the policy (:func:`check`, :func:`check_url`);
* tells which rule wins for a label set and when its entries are deleted (:func:`explain`),
  evaluating the selectors the way Loki's compactor does.

Loki's rules, which the rendering follows:

* A ``retention_stream`` selector sees stream labels only, never structured metadata.
* Of the rules whose selector matches a stream, the highest ``priority`` wins; on equal
  priority the *shorter* period wins; when none matches, ``retention_period`` applies.
* A ``retention_stream`` period must be at least 24h; ``0s`` is refused there. Only
  ``retention_period: 0s`` means "keep forever".

So "forever" for a level or a selector (CRITICAL, for audit) cannot be written as a
``retention_stream`` period. It is rendered as :data:`FOREVER_PERIOD` (100 years) at
:data:`FOREVER_PRIORITY`, a priority no other rule may use, so no shorter rule can ever outrank
it. Streams no rule matches get ``default`` as ``retention_period`` (``forever`` there renders
as ``0s``, which Loki reads as "never delete").
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import string
import tempfile
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from shipper._units import UnitError, format_duration, parse_duration
from shipper.event import Actor, Level, normalize_type

__all__ = [
    "BLOCK_BEGIN",
    "BLOCK_END",
    "DEFAULT_RETENTION_FILE",
    "FOREVER_PERIOD",
    "FOREVER_PRIORITY",
    "LEVEL_PRIORITY",
    "MIN_PERIOD",
    "RENDER_FORMATS",
    "RETENTION_FILE_ENV",
    "SELECTOR_PRIORITY",
    "STREAM_LABELS",
    "CheckRow",
    "Explanation",
    "Matcher",
    "RetentionError",
    "RetentionPolicy",
    "RetentionRule",
    "Selector",
    "check",
    "check_url",
    "explain",
    "format_check_table",
    "parse_labels",
    "resolve_retention_file",
]

#: Where ``shipper retention`` looks for the policy, relative to the current directory.
DEFAULT_RETENTION_FILE: Final = Path("loki") / "retention.yaml"
#: Environment variable naming another policy file.
RETENTION_FILE_ENV: Final = "SHIPPER_RETENTION_FILE"

#: The stream labels of the event contract (DESIGN.md); nothing else is a label.
STREAM_LABELS: Final = ("service_name", "env", "level", "actor", "type")

#: Priority of the per-level rules.
LEVEL_PRIORITY: Final = 1
#: Priority of an extra selector that names none: above the levels, so a more specific rule
#: (security events, access logs) decides whatever the event's level.
SELECTOR_PRIORITY: Final = 2
#: Priority of every ``forever`` rule. Finite rules must stay below it.
FOREVER_PRIORITY: Final = 100
#: What ``forever`` becomes in ``retention_stream``, where 0s is refused: 100 years.
FOREVER_PERIOD: Final = dt.timedelta(days=365 * 100)
#: Loki refuses shorter retention periods.
MIN_PERIOD: Final = dt.timedelta(hours=24)

#: Where a rendered block can go: a Loki config file, or a grafana/loki Helm values file.
RENDER_FORMATS: Final = ("loki", "helm")
#: The markers around the rendered block inside ``limits_config`` of loki/config.yaml.
BLOCK_BEGIN: Final = "# BEGIN shipper retention"
BLOCK_END: Final = "# END shipper retention"

_FOREVER = "forever"
# Loki's /config is thousands of lines: libyaml's loader when PyYAML was built with it.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RetentionError(ValueError):
    """A policy, selector, config file or live Loki answer that cannot be used; the message
    names what was wrong and where."""


# --------------------------------------------------------------------------- label matchers

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS: Final = ("=~", "!~", "!=", "=")
# RE2 (Go, and so Loki) has no lookaround, backreferences or atomic groups.
_NOT_RE2 = re.compile(r"\(\?(?:=|!|<=|<!|>|P=)|\\[1-9]")
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}
_HEX_ESCAPE_SIZES: Final = {"x": 2, "u": 4, "U": 8}
_QUOTE_ESCAPES: Final = {
    "\\": "\\\\",
    '"': '\\"',
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    # Prometheus anchors label regexes at both ends and lets "." match a newline.
    return re.compile(pattern, re.DOTALL)


def _check_regex(pattern: str, where: str) -> None:
    if _NOT_RE2.search(pattern):
        raise RetentionError(
            f"{where}: regex {pattern!r} uses lookaround, a backreference or an atomic group, "
            "which Loki's regex engine (RE2) does not support"
        )
    try:
        _regex(pattern)
    except re.error as exc:
        raise RetentionError(f"{where}: invalid regex {pattern!r}: {exc}") from exc


def _go_quote(value: str) -> str:
    out: list[str] = []
    for ch in value:
        if ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``name`` ``op`` ``value`` with op ``=``, ``!=``, ``=~`` or ``!~``.

    A missing label reads as the empty string, and regexes are anchored at both ends, as in
    Loki (``{type=~"AUTH"}`` does not match ``AUTH_LOGIN``).
    """

    name: str
    op: str
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = _regex(self.value).fullmatch(value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_go_quote(self.value)}"


class _SelectorParser:
    """``{name op "value", ...}`` with Go string literals, as LogQL's stream selector."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> RetentionError:
        shown = self.text[self.pos : self.pos + 12] or "end of text"
        return RetentionError(
            f"selector {self.text!r}: {what} at position {self.pos} (at {shown!r}); "
            'expected a stream selector like {level="INFO", type=~"AUTH_.*"}'
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def take(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def parse(self) -> tuple[Matcher, ...]:
        self.skip_ws()
        if not self.take("{"):
            raise self.fail("missing '{'")
        matchers: list[Matcher] = []
        self.skip_ws()
        if self.take("}"):
            raise self.fail("no matcher (Loki needs at least one)")
        while True:
            self.skip_ws()
            matchers.append(self.matcher())
            self.skip_ws()
            if self.take(","):
                continue
            if self.take("}"):
                break
            raise self.fail("expected ',' or '}'")
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after '}' (only a stream selector is allowed)")
        return tuple(matchers)

    def matcher(self) -> Matcher:
        name = _LABEL_NAME.match(self.text, self.pos)
        if name is None:
            raise self.fail("expected a label name")
        self.pos = name.end()
        self.skip_ws()
        for op in _OPS:
            if self.take(op):
                break
        else:
            raise self.fail(f"expected =, !=, =~ or !~ after {name.group()!r}")
        self.skip_ws()
        return Matcher(name.group(), op, self.string())

    def string(self) -> str:
        if self.take("`"):
            end = self.text.find("`", self.pos)
            if end < 0:
                raise self.fail("unterminated `raw string`")
            value = self.text[self.pos : end]
            self.pos = end + 1
            return value
        if not self.take('"'):
            raise self.fail("expected a quoted value")
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\n":
                raise self.fail("newline inside a string")
            if ch != "\\":
                out.append(ch)
                continue
            out.append(self.escape())

    def escape(self) -> str:
        if self.pos >= len(self.text):
            raise self.fail("unterminated escape")
        ch = self.text[self.pos]
        if ch in _SIMPLE_ESCAPES:
            self.pos += 1
            return _SIMPLE_ESCAPES[ch]
        if ch in _HEX_ESCAPE_SIZES:
            size = _HEX_ESCAPE_SIZES[ch]
            digits = self.text[self.pos + 1 : self.pos + 1 + size]
            valid = len(digits) == size and all(c in string.hexdigits for c in digits)
            base, consumed = 16, 1 + size
        elif ch in string.octdigits:
            digits = self.text[self.pos : self.pos + 3]
            valid = len(digits) == 3 and all(c in string.octdigits for c in digits)
            base, consumed = 8, 3
        else:
            raise self.fail(
                f"invalid escape \\{ch} (LogQL strings are Go strings: write \\\\{ch} for a "
                "literal backslash, e.g. \\\\. for a literal dot in a regex)"
            )
        if not valid:
            raise self.fail(f"malformed escape \\{ch}")
        code = int(digits, base)
        if ch not in "uU" and code > 0x7F:
            raise self.fail("byte escape above \\x7f (write the character itself)")
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise self.fail(f"escape \\{ch}{digits if ch in 'uU' else ''} is not a character")
        self.pos += consumed
        return chr(code)


@dataclass(frozen=True)
class Selector:
    """A stream selector: matchers that must all match (a missing label reads as "")."""

    matchers: tuple[Matcher, ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``{name op "value", ...}``; checks the syntax and every regex."""
        matchers = _SelectorParser(text).parse()
        for m in matchers:
            if m.op in ("=~", "!~"):
                _check_regex(m.value, f"selector {text!r}")
        return cls(matchers)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    @property
    def key(self) -> frozenset[tuple[str, str, str]]:
        """Identity regardless of matcher order: ``{a="1",b="2"}`` is ``{b="2", a="1"}``."""
        return frozenset((m.name, m.op, m.value) for m in self.matchers)

    def __str__(self) -> str:
        return "{" + ", ".join(str(m) for m in self.matchers) + "}"


def parse_labels(text: str) -> dict[str, str]:
    """Parse a label set written with ``=`` only: ``{level="INFO",actor="USER"}``."""
    matchers = _SelectorParser(text).parse()
    labels: dict[str, str] = {}
    for m in matchers:
        if m.op != "=":
            raise RetentionError(
                f"label set {text!r}: {m} is a matcher, not a label; write the stream's labels "
                'with = only, e.g. {level="INFO", actor="USER"}'
            )
        if m.name in labels:
            raise RetentionError(f"label set {text!r}: label {m.name!r} is given twice")
        labels[m.name] = m.value
    return labels


# --------------------------------------------------------------------------- the policy

_LEVEL_NAMES: Final = tuple(lvl.value for lvl in Level)
_ACTOR_NAMES: Final = tuple(a.value for a in Actor)


def _validate_contract(selector: Selector, text: str, where: str) -> None:
    """Selectors in retention.yaml may name only contract labels, with values that can occur."""
    for m in selector.matchers:
        if m.name not in STREAM_LABELS:
            raise RetentionError(
                f"{where}: selector {text} names label {m.name!r}, which is not a stream label "
                f"(stream labels: {', '.join(STREAM_LABELS)}); retention selectors see stream "
                "labels only, never structured metadata"
            )
        allowed = {"level": _LEVEL_NAMES, "actor": _ACTOR_NAMES}.get(m.name)
        positive = m.op in ("=", "=~")
        if allowed is not None and positive and not any(m.matches(v) for v in allowed):
            raise RetentionError(
                f"{where}: selector {text}: {m} matches no {m.name} the shipper sends "
                f"({', '.join(allowed)}); values are upper case"
            )
        if m.name == "type" and m.op == "=" and m.value != normalize_type(m.value):
            raise RetentionError(
                f"{where}: selector {text}: type {m.value!r} is never sent; event types are "
                f"UPPER_SNAKE (did you mean {normalize_type(m.value)!r}?)"
            )
    # Loki refuses a selector whose every matcher also matches a missing label.
    if all(m.matches("") for m in selector.matchers):
        raise RetentionError(
            f"{where}: selector {text} matches the empty value with every matcher; Loki needs "
            'at least one matcher that selects something, e.g. {level="INFO"} or '
            '{type=~"AUTH_.+"}'
        )


def _parse_period(value: object, where: str, *, is_default: bool = False) -> dt.timedelta | None:
    """A period from retention.yaml: a duration (>= 24h) or ``forever`` (None)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise RetentionError(f"{where}: period {value!r} needs a unit, e.g. {value}d")
    if not isinstance(value, str):
        raise RetentionError(f"{where}: period {value!r}: expected a duration like 30d or forever")
    text = value.strip()
    if text.lower() == _FOREVER:
        return None
    try:
        period = parse_duration(text)
    except UnitError as exc:
        raise RetentionError(f"{where}: {exc}") from None
    if period == dt.timedelta(0):
        if is_default:
            return None  # retention_period: 0s is Loki's own "forever"
        raise RetentionError(
            f"{where}: period {text!r}: Loki refuses 0s in retention_stream; write 'forever' "
            "to keep these entries"
        )
    if period < MIN_PERIOD:
        raise RetentionError(f"{where}: period {text!r} is shorter than 24h, which Loki refuses")
    if period >= FOREVER_PERIOD:
        raise RetentionError(f"{where}: period {text!r} is 100 years or more: write 'forever'")
    if dt.timedelta(seconds=int(period.total_seconds())) != period:
        raise RetentionError(f"{where}: period {text!r} must be a whole number of seconds")
    return period


def _describe_period(period: dt.timedelta | None) -> str:
    return _FOREVER if period is None else format_duration(period)


@dataclass(frozen=True)
class RetentionRule:
    """One ``retention_stream`` rule: ``period`` None means forever."""

    name: str
    selector: Selector
    priority: int
    period: dt.timedelta | None

    @property
    def forever(self) -> bool:
        return self.period is None

    @property
    def loki_period(self) -> dt.timedelta:
        """The period written into Loki's config (``forever`` → :data:`FOREVER_PERIOD`)."""
        return FOREVER_PERIOD if self.period is None else self.period

    def describe(self) -> str:
        period = _describe_period(self.period)
        if self.period is None:
            period += f" (as {format_duration(FOREVER_PERIOD)})"
        return f"{self.selector} ({self.name}): priority {self.priority}, {period}"


def resolve_retention_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The policy file: ``explicit``, else ``$SHIPPER_RETENTION_FILE``, else
    ``loki/retention.yaml`` under the current directory."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(RETENTION_FILE_ENV, "").strip()
    return Path(env) if env else DEFAULT_RETENTION_FILE


@dataclass(frozen=True)
class RetentionPolicy:
    """The retention policy: ``rules`` in rendering order (highest priority first) and
    ``default`` for streams that match no rule (None: forever)."""

    rules: tuple[RetentionRule, ...]
    default: dt.timedelta | None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RetentionPolicy:
        """Read and validate a retention.yaml."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RetentionError(
                f"{path}: no such file (run from the project root, pass --file, or set "
                f"{RETENTION_FILE_ENV})"
            ) from None
        except OSError as exc:
            raise RetentionError(f"{path}: cannot read: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RetentionError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "retention policy") -> RetentionPolicy:
        """Validate the parsed YAML of a retention.yaml (see loki/retention.yaml for the form)."""
        if not isinstance(data, Mapping):
            raise RetentionError(f"{source}: expected a mapping with levels, selectors, default")
        unknown = sorted(set(data) - {"levels", "selectors", "default"})
        if unknown:
            raise RetentionError(
                f"{source}: unknown key(s) {', '.join(map(str, unknown))} "
                "(allowed: levels, selectors, default)"
            )
        for required in ("levels", "default"):
            if required not in data:
                raise RetentionError(f"{source}: '{required}' is missing")
        default = _parse_period(data["default"], f"{source}: default", is_default=True)

        levels = data["levels"]
        if not isinstance(levels, Mapping):
            raise RetentionError(f"{source}: levels must map level names to periods")
        rules: list[RetentionRule] = []
        for name, value in levels.items():
            if name not in _LEVEL_NAMES:
                raise RetentionError(
                    f"{source}: levels: {name!r} is not a level (levels: {', '.join(_LEVEL_NAMES)})"
                )
            period = _parse_period(value, f"{source}: levels.{name}")
            rules.append(
                RetentionRule(
                    name=f"level {name}",
                    selector=Selector((Matcher("level", "=", name),)),
                    priority=FOREVER_PRIORITY if period is None else LEVEL_PRIORITY,
                    period=period,
                )
            )

        selectors = data.get("selectors")
        if selectors is None:
            selectors = []
        if not isinstance(selectors, list):
            raise RetentionError(f"{source}: selectors must be a list of {{selector, period}}")
        for index, entry in enumerate(selectors):
            rules.append(_selector_rule(entry, f"{source}: selectors[{index}]"))

        seen: dict[frozenset[tuple[str, str, str]], RetentionRule] = {}
        for rule in rules:
            twin = seen.get(rule.selector.key)
            if twin is not None:
                raise RetentionError(
                    f"{source}: selector {rule.selector} ({rule.name}) is the same as "
                    f"{twin.selector} ({twin.name}); give each selector one period"
                )
            seen[rule.selector.key] = rule
        order = {id(rule): i for i, rule in enumerate(rules)}
        rules.sort(key=lambda r: (-r.priority, order[id(r)]))
        return cls(rules=tuple(rules), default=default)

    # ------------------------------------------------------------------ rendering

    def limits(self) -> dict[str, Any]:
        """The ``limits_config`` keys this policy sets, as Loki's YAML has them."""
        return {
            "retention_period": "0s" if self.default is None else format_duration(self.default),
            "retention_stream": [
                {
                    "selector": str(rule.selector),
                    "priority": rule.priority,
                    "period": format_duration(rule.loki_period),
                }
                for rule in self.rules
            ],
        }

    def render(self, indent: str = "  ", fmt: str = "loki") -> str:
        """The block between the markers, indented for ``limits_config`` (ends with a newline).

        ``fmt`` is where the block goes: ``loki`` (a Loki config file's ``limits_config``) or
        ``helm`` (``loki.limits_config`` of a values file for the grafana/loki Helm chart,
        which the chart writes into Loki's config as it is); only the command in the header
        comment differs."""
        _check_format(fmt)
        limits = self.limits()
        default = (
            "0s  # default, for streams no rule matches: forever (0s = never delete)"
            if self.default is None
            else f"{limits['retention_period']}  # default, for streams no rule matches"
        )
        lines = [
            f"{BLOCK_BEGIN}: rendered from loki/retention.yaml; do not edit by hand.",
            "# Change retention.yaml, then: shipper retention render "
            + ("--format helm " if fmt == "helm" else "")
            + "--write <this file>",
            "# Highest priority wins; on equal priority the shorter period wins; no match:",
            "# retention_period. forever is rendered as "
            f"{format_duration(FOREVER_PERIOD)} at priority {FOREVER_PRIORITY}",
            "# (a retention_stream period must be >= 24h; 0s is refused there).",
            f"retention_period: {default}",
        ]
        if self.rules:
            lines.append("retention_stream:")
        for rule, item in zip(self.rules, limits["retention_stream"], strict=True):
            note = f"{rule.name}: {_describe_period(rule.period)}"
            lines += [
                f"  - selector: {_yaml_single_quoted(item['selector'])}  # {note}",
                f"    priority: {item['priority']}",
                f"    period: {item['period']}",
            ]
        lines.append(BLOCK_END)
        return "".join(f"{indent}{line}\n" for line in lines)

    def render_snippet(self, fmt: str = "loki") -> str:
        """The block with the keys around it, ready to paste: under ``limits_config:`` for a
        Loki config, under ``loki:`` / ``limits_config:`` for a Helm values file."""
        _check_format(fmt)
        if fmt == "helm":
            return "loki:\n  limits_config:\n" + self.render("    ", fmt)
        return "limits_config:\n" + self.render("  ", fmt)

    def render_into(self, config_path: str | os.PathLike[str], fmt: str = "loki") -> bool:
        """Replace the marked block in a Loki config file (``fmt="loki"``) or a grafana/loki
        Helm values file (``fmt="helm"``) with :meth:`render`, keeping every other line
        (comments included). Returns False when the file was already up to date."""
        _check_format(fmt)
        path = Path(config_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RetentionError(f"{path}: cannot read: {exc}") from exc
        updated = _replace_block(text, self, str(path), fmt)
        if updated == text:
            return False
        mode = path.stat().st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(updated)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


def _selector_rule(entry: object, where: str) -> RetentionRule:
    if not isinstance(entry, Mapping):
        raise RetentionError(f"{where}: expected a mapping with selector and period")
    unknown = sorted(set(entry) - {"name", "selector", "period", "priority"})
    if unknown:
        raise RetentionError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))} "
            "(allowed: name, selector, period, priority)"
        )
    for required in ("selector", "period"):
        if required not in entry:
            raise RetentionError(f"{where}: '{required}' is missing")
    text = entry["selector"]
    if not isinstance(text, str):
        raise RetentionError(f"{where}: selector {text!r} must be text like '{{level=\"INFO\"}}'")
    selector = Selector.parse(text)
    _validate_contract(selector, text, where)
    period = _parse_period(entry["period"], f"{where} ({text})")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise RetentionError(f"{where}: name must be non-empty text")
    priority = entry.get("priority")
    if period is None:
        if priority is not None:
            raise RetentionError(
                f"{where} ({text}): a forever rule always has priority {FOREVER_PRIORITY}, "
                "so that nothing outranks it; remove 'priority'"
            )
        priority = FOREVER_PRIORITY
    elif priority is None:
        priority = SELECTOR_PRIORITY
    elif isinstance(priority, bool) or not isinstance(priority, int):
        raise RetentionError(f"{where} ({text}): priority {priority!r} must be an integer")
    elif not 1 <= priority < FOREVER_PRIORITY:
        raise RetentionError(
            f"{where} ({text}): priority {priority} must be 1..{FOREVER_PRIORITY - 1} "
            f"({FOREVER_PRIORITY} is reserved for forever rules)"
        )
    return RetentionRule(
        name=name.strip() if isinstance(name, str) else str(selector),
        selector=selector,
        priority=priority,
        period=period,
    )


def _yaml_single_quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_BEGIN_LINE = re.compile(r"^([ \t]*)" + re.escape(BLOCK_BEGIN) + r"\b")
_END_LINE = re.compile(r"^[ \t]*" + re.escape(BLOCK_END) + r"\b")


def _check_format(fmt: str) -> None:
    if fmt not in RENDER_FORMATS:
        raise RetentionError(
            f"format {fmt!r}: expected one of {', '.join(RENDER_FORMATS)} (loki: a Loki config "
            "file; helm: a values file for the grafana/loki Helm chart)"
        )


def _limits_section(data: object, fmt: str) -> object:
    """``limits_config`` of a parsed Loki config (``fmt="loki"``) or ``loki.limits_config`` of
    a parsed Helm values file (``fmt="helm"``); None when absent."""
    if not isinstance(data, Mapping):
        return None
    if fmt == "helm":
        data = data.get("loki")
        if not isinstance(data, Mapping):
            return None
    return data.get("limits_config")


def _replace_block(text: str, policy: RetentionPolicy, source: str, fmt: str = "loki") -> str:
    """``text`` with the lines from the BEGIN marker to the END marker replaced."""
    section = "loki.limits_config" if fmt == "helm" else "limits_config"
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if _BEGIN_LINE.match(line)]
    ends = [i for i, line in enumerate(lines) if _END_LINE.match(line)]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        found = f"found {len(begins)} begin and {len(ends)} end marker(s)"
        raise RetentionError(
            f"{source}: needs exactly one '{BLOCK_BEGIN} ...' line followed by one "
            f"'{BLOCK_END}' line inside {section} ({found}); add them where the "
            "retention block belongs"
        )
    start, end = begins[0], ends[0]
    match = _BEGIN_LINE.match(lines[start])
    assert match is not None
    indent = match.group(1)
    outside = "".join(lines[:start] + lines[end + 1 :])
    _check_outside(outside, source, fmt)
    updated = "".join(lines[:start]) + policy.render(indent, fmt) + "".join(lines[end + 1 :])
    try:
        limits = _limits_section(yaml.safe_load(updated), fmt)
    except yaml.YAMLError as exc:
        raise RetentionError(f"{source}: not valid YAML with the block written: {exc}") from exc
    if not isinstance(limits, Mapping) or "retention_period" not in limits:
        other = "loki" if fmt == "helm" else "helm"
        if isinstance(_limits_section(yaml.safe_load(updated), other), Mapping):
            raise RetentionError(
                f"{source}: the retention markers are inside "
                f"{'limits_config' if other == 'loki' else 'loki.limits_config'}: this is "
                f"{'a Loki config' if other == 'loki' else 'a Helm values file'}; use "
                f"--format {other}"
            )
        raise RetentionError(
            f"{source}: the retention markers are not inside {section}; move them there"
        )
    return updated


def _check_outside(outside: str, source: str, fmt: str = "loki") -> None:
    try:
        data = yaml.safe_load(outside) or {}
    except yaml.YAMLError as exc:
        raise RetentionError(f"{source}: not valid YAML: {exc}") from exc
    limits = _limits_section(data, fmt)
    if isinstance(limits, Mapping):
        for key in ("retention_period", "retention_stream"):
            if key in limits:
                raise RetentionError(
                    f"{source}: limits_config.{key} is set outside the shipper retention block; "
                    "remove it (retention.yaml is the one place for retention)"
                )


# --------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class Explanation:
    """Which rule decides the retention of a stream with ``labels``, and why."""

    labels: tuple[tuple[str, str], ...]
    matched: tuple[RetentionRule, ...]
    winner: RetentionRule | None
    period: dt.timedelta | None  # None: forever
    reason: str
    notes: tuple[str, ...]

    @property
    def forever(self) -> bool:
        return self.period is None

    def deleted_after(self, timestamp: dt.datetime) -> dt.datetime | None:
        """The moment an entry stamped ``timestamp`` becomes eligible for deletion (None:
        never, by retention)."""
        return None if self.period is None else timestamp + self.period

    def describe(self, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        label_text = "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in self.labels) + "}"
        lines = [f"labels:   {label_text}"]
        if self.matched:
            lines.append("matching rules:")
            for rule in self.matched:
                mark = "  <- wins" if rule is self.winner else ""
                lines.append(f"  {rule.describe()}{mark}")
        else:
            lines.append("matching rules: none")
        lines.append(f"decision: {self.reason}")
        if self.period is None:
            if self.winner is not None:
                lines.append(
                    "deleted:  in effect never. Loki cannot write forever in retention_stream "
                    "(periods must be >= 24h, 0s is refused), so this rule is rendered as "
                    f"{format_duration(FOREVER_PERIOD)} at priority {FOREVER_PRIORITY}, which no "
                    "other rule may use: retention would delete such an entry "
                    f"{format_duration(FOREVER_PERIOD)} after its timestamp. Only a deletion "
                    "request (POST /loki/api/v1/delete) removes it sooner."
                )
            else:
                lines.append(
                    "deleted:  never by retention (retention_period 0s); only a deletion "
                    "request (POST /loki/api/v1/delete) removes it."
                )
        else:
            due = now + self.period
            lines.append(
                f"deleted:  {format_duration(self.period)} after the entry's timestamp (one "
                f"written now: from {due:%Y-%m-%d %H:%M} UTC), at the compactor's next "
                "retention run plus retention_delete_delay. Loki deletes whole chunks, judged "
                "by the chunk's newest entry, so an entry can outlive its period by its "
                "chunk's time span."
            )
        lines += [f"note:     {note}" for note in self.notes]
        return "".join(
            textwrap.fill(line, width=100, subsequent_indent=" " * 10, break_on_hyphens=False)
            + "\n"
            for line in lines
        )


def explain(policy: RetentionPolicy, labels: Mapping[str, str] | str) -> Explanation:
    """Evaluate the policy for one stream the way Loki's compactor does."""
    stream = parse_labels(labels) if isinstance(labels, str) else dict(labels)
    matched = tuple(rule for rule in policy.rules if rule.selector.matches(stream))
    winner: RetentionRule | None = None
    for rule in matched:  # Loki's RetentionPeriodFor, rule by rule
        if winner is not None:
            if winner.priority > rule.priority:
                continue
            if winner.priority == rule.priority and winner.loki_period <= rule.loki_period:
                continue
        winner = rule
    if winner is None:
        period = policy.default
        reason = (
            "no retention_stream rule matches, so retention_period applies: the default, "
            f"{_describe_period(policy.default)}"
        )
    else:
        period = winner.period
        rivals = [r for r in matched if r is not winner]
        tied = [r for r in rivals if r.priority == winner.priority]
        if not rivals:
            reason = f"{winner.name} is the only matching rule"
        elif tied:
            reason = (
                f"{winner.name} shares the highest priority ({winner.priority}) with "
                f"{', '.join(r.name for r in tied)}; on equal priority Loki keeps the shorter "
                "period"
            )
        else:
            reason = (
                f"{winner.name} has the highest priority ({winner.priority}) of the "
                f"{len(matched)} matching rules"
            )
        reason += f": {_describe_period(period)}"
    return Explanation(
        labels=tuple(stream.items()),
        matched=matched,
        winner=winner,
        period=period,
        reason=reason,
        notes=tuple(_label_notes(stream)),
    )


def _label_notes(labels: Mapping[str, str]) -> Iterable[str]:
    extra = [name for name in labels if name not in STREAM_LABELS]
    if extra:
        yield (
            f"{', '.join(extra)} is not a stream label of the shipper ({', '.join(STREAM_LABELS)})"
        )
    level = labels.get("level")
    if level is None:
        yield "no level label: no per-level rule can match"
    elif level not in _LEVEL_NAMES:
        yield f"level {level!r} is not one the shipper sends ({', '.join(_LEVEL_NAMES)})"
    actor = labels.get("actor")
    if actor is not None and actor not in _ACTOR_NAMES:
        yield f"actor {actor!r} is not one the shipper sends ({', '.join(_ACTOR_NAMES)})"


# --------------------------------------------------------------------------- drift check


@dataclass(frozen=True)
class CheckRow:
    """One line of the drift table."""

    selector: str
    policy: str
    live: str
    ok: bool

    @property
    def status(self) -> str:
        return "OK" if self.ok else "DRIFT"


def _live_rule_text(priority: object, period: object) -> str:
    return f"{period}, priority {priority}"


def check(policy: RetentionPolicy, live_config_yaml: str) -> list[CheckRow]:
    """Compare a live Loki's ``GET /config`` (YAML text) with the policy, rule by rule.

    Durations compare by value (``720h0m0s`` is ``30d``), selectors by their matchers (order
    and spacing do not matter). Also checks that the compactor applies retention at all.
    """
    try:
        live = yaml.load(live_config_yaml, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise RetentionError(f"the live config is not YAML: {exc}") from exc
    if not isinstance(live, Mapping) or not isinstance(live.get("limits_config"), Mapping):
        raise RetentionError("the live config has no limits_config: is this Loki's GET /config?")
    limits: Mapping[str, Any] = live["limits_config"]
    rows: list[CheckRow] = []

    compactor = live.get("compactor")
    enabled = compactor.get("retention_enabled") if isinstance(compactor, Mapping) else None
    rows.append(
        CheckRow("(compactor.retention_enabled)", "true", str(enabled).lower(), enabled is True)
    )

    expected_default = dt.timedelta(0) if policy.default is None else policy.default
    live_default = limits.get("retention_period")
    rows.append(
        CheckRow(
            "(default: retention_period)",
            "forever (0s)" if policy.default is None else format_duration(policy.default),
            str(live_default),
            _same_duration(live_default, expected_default),
        )
    )

    live_rules = limits.get("retention_stream") or []
    if not isinstance(live_rules, list):
        raise RetentionError("the live config's limits_config.retention_stream is not a list")
    by_key: dict[frozenset[tuple[str, str, str]], list[Mapping[str, Any]]] = {}
    unparsable: list[Mapping[str, Any]] = []
    for item in live_rules:
        if not isinstance(item, Mapping):
            raise RetentionError(f"the live config has a retention_stream item {item!r}")
        try:
            key = Selector.parse(str(item.get("selector"))).key
        except RetentionError:
            unparsable.append(item)
            continue
        by_key.setdefault(key, []).append(item)

    for rule in policy.rules:
        want = f"{_describe_period(rule.period)}, priority {rule.priority}"
        if rule.period is None:
            want = f"forever (as {format_duration(FOREVER_PERIOD)}), priority {rule.priority}"
        found = by_key.pop(rule.selector.key, [])
        if not found:
            rows.append(CheckRow(str(rule.selector), want, "missing", False))
            continue
        for item in found:
            ok = item.get("priority") == rule.priority and _same_duration(
                item.get("period"), rule.loki_period
            )
            live_text = _live_rule_text(item.get("priority"), item.get("period"))
            if len(found) > 1:
                live_text += " (duplicate)"
                ok = False
            rows.append(CheckRow(str(rule.selector), want, live_text, ok))
    extra = [item for items in by_key.values() for item in items] + unparsable
    rows += [
        CheckRow(
            str(item.get("selector")),
            "not in policy",
            _live_rule_text(item.get("priority"), item.get("period")),
            False,
        )
        for item in extra
    ]
    return rows


def _same_duration(live: object, expected: dt.timedelta) -> bool:
    if not isinstance(live, str):
        return False
    try:
        return parse_duration(live) == expected
    except UnitError:
        return False


def format_check_table(rows: Iterable[CheckRow]) -> str:
    """The drift table: selector, policy, live, OK/DRIFT."""
    table = [("SELECTOR", "POLICY", "LIVE", "STATUS")]
    table += [(r.selector, r.policy, r.live, r.status) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        + "\n"
        for row in table
    )


def _fetch_live_config(url: str, timeout: float = 10.0) -> str:
    """``GET {url}/config`` of a running Loki, as text, through the shipper's Loki client (so
    ``LOKI_TENANT``, ``LOKI_USERNAME``/``LOKI_PASSWORD``, ``LOKI_BEARER_TOKEN`` and
    ``LOKI_CA_BUNDLE`` apply as for pushes)."""
    from shipper.config import ConfigError, ShipperConfig
    from shipper.loki.client import LokiClient, LokiError

    base = url.strip().rstrip("/")
    if not re.match(r"https?://[^/\s]+", base):
        raise RetentionError(f"--url {url!r}: expected Loki's base URL, like http://localhost:3100")
    try:
        client = LokiClient(ShipperConfig.load(url=base, timeout=timeout, spool=False))
    except ConfigError as exc:
        raise RetentionError(f"cannot talk to Loki at {base}: {exc}") from exc
    try:
        return client.config_yaml()
    except LokiError as exc:
        if exc.status is None:
            raise RetentionError(f"cannot reach Loki at {base}: {exc}") from exc
        raise RetentionError(str(exc)) from exc
    finally:
        client.close()


def check_url(policy: RetentionPolicy, url: str, timeout: float = 10.0) -> list[CheckRow]:
    """:func:`check` against the Loki at ``url`` (its base URL, e.g. http://localhost:3100)."""
    return check(policy, _fetch_live_config(url, timeout))

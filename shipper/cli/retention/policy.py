"""The retention policy: ``loki/retention.yaml`` loaded, validated and rendered into Loki's
``limits_config``.

``loki/retention.yaml`` is the one source of truth. This module

* loads and validates it (:meth:`RetentionPolicy.load`): periods in Loki's duration syntax or
  ``forever``; selectors that are well-formed label matchers naming only the stream labels of
  the event contract (``service_name``, ``env``, ``level``, ``actor``, ``type``);
* renders the ``retention_period`` / ``retention_stream`` block of ``limits_config``
  (:meth:`RetentionPolicy.render`) and writes it between the markers in ``loki/config.yaml``
  (:meth:`RetentionPolicy.render_into`), leaving every other line of that file alone.

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
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from shipper._units import UnitError, format_duration, parse_duration
from shipper.event import Actor, Level, normalize_type
from shipper.loki.selector import Matcher, Selector, SelectorError

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
    "RetentionError",
    "RetentionPolicy",
    "RetentionRule",
    "describe_period",
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


class RetentionError(ValueError):
    """A policy, selector, config file or live Loki answer that cannot be used; the message
    names what was wrong and where."""


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


def describe_period(period: dt.timedelta | None) -> str:
    """A policy period for a person: ``30d``, or ``forever`` for None."""
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
        period = describe_period(self.period)
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
        _check_keys(data, ("levels", "selectors", "default"), ("levels", "default"), source)
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
            + ("--target helm " if fmt == "helm" else "")
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
            note = f"{rule.name}: {describe_period(rule.period)}"
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


def _check_keys(data: Mapping[Any, Any], allowed: tuple[str, ...], required: tuple[str, ...],
                where: str) -> None:
    unknown = sorted(map(str, set(data) - set(allowed)))
    if unknown:
        raise RetentionError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    for key in required:
        if key not in data:
            raise RetentionError(f"{where}: '{key}' is missing")


def _selector_rule(entry: object, where: str) -> RetentionRule:
    if not isinstance(entry, Mapping):
        raise RetentionError(f"{where}: expected a mapping with selector and period")
    _check_keys(entry, ("name", "selector", "period", "priority"), ("selector", "period"), where)
    text = entry["selector"]
    if not isinstance(text, str):
        raise RetentionError(f"{where}: selector {text!r} must be text like '{{level=\"INFO\"}}'")
    try:
        selector = Selector.parse(text)
    except SelectorError as exc:
        raise RetentionError(str(exc)) from None
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
                f"--target {other}"
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

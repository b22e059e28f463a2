"""A file or docker source's ``drop`` rules: which parsed lines are not shipped, and the count
of those that were not, by reason.

Modelled on Promtail's ``drop`` stage: a rule drops a line when ALL the conditions it gives
hold (``source`` with ``value`` or ``expression``, ``expression`` on the whole line,
``older_than``, ``longer_than``); a line any rule drops is counted under that rule's
``drop_counter_reason`` and not submitted. :func:`read_rules` reads and checks the YAML list
once, at configuration load (every regular expression compiled there, errors naming the rule
and its key); :class:`DropFilter` applies the rules to each parsed line of one source.

Python's ``re`` has no timeout, so a pattern is bounded where that is cheap to check: at most
:data:`MAX_PATTERN` characters, no quantified group that holds a quantifier itself (``(a+)+``,
the classic catastrophic backtracking), and it only ever sees a line already cut to the
source's ``max_line_bytes``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from shipper._units import UnitError, parse_duration_ns, parse_size
from shipper.event import LogEvent, normalize_actor, normalize_level, normalize_type
from shipper.sidecar.formats import role_of

__all__ = ["DEFAULT_REASON", "MAX_PATTERN", "MAX_RULES", "DropError", "DropFilter",
           "DropRule", "read_rules"]

DEFAULT_REASON = "drop_stage"
#: rules a source may have; patterns' length; names in one rule's source
MAX_RULES, MAX_PATTERN, MAX_SOURCES = 64, 1000, 16
_KEYS = ("source", "value", "expression", "separator", "older_than", "longer_than",
         "drop_counter_reason")
#: the event's fields a source may name (its role, role_of); the rest are metadata keys
_FIELDS = ("message", "level", "type", "actor", "actor_id", "trace_id", "logger", "exception",
           "service", "env")
#: a reason is a Prometheus label value: short and printable
_REASON = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class DropError(ValueError):
    """A rule that cannot be used: the message says which key and what was expected."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(key, value, expected)
        self.key, self.value, self.expected = key, value, expected


class DropRule(NamedTuple):
    """One rule, read and checked (see :func:`read_rules`)."""

    #: the event's fields (role names) or metadata keys whose values are matched, in order
    source: tuple[str, ...] = ()
    #: what the joined values of ``source`` (or the whole line) must match; None: presence
    pattern: re.Pattern[str] | None = None
    separator: str = ";"
    older_than_ns: int | None = None
    longer_than: int | None = None
    reason: str = DEFAULT_REASON
    #: the rule as written, for the sidecar's log
    text: str = ""


# --------------------------------------------------------------------------- reading


def read_rules(value: object) -> tuple[DropRule, ...]:
    """The ``drop`` list of a source's YAML, each rule checked; raises :class:`DropError`
    naming ``[i].key`` of the first problem."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DropError("", value, "a list of rules, each a mapping such as {source: level, "
                                   "value: debug}")
    if len(value) > MAX_RULES:
        raise DropError("", f"({len(value)} rules)", f"at most {MAX_RULES} rules")
    return tuple(_rule(item, f"[{i}]") for i, item in enumerate(value))


def _rule(item: object, where: str) -> DropRule:
    if not isinstance(item, Mapping) or not item:
        raise DropError(where, item, "a mapping of " + ", ".join(_KEYS))
    for key in item:
        if key not in _KEYS:
            import difflib  # only for a misspelt name: not at every start
            close = difflib.get_close_matches(str(key), _KEYS, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise DropError(f"{where}.{key}", item[key], f"one of the keys {', '.join(_KEYS)}"
                                                         f"{hint}")
    if "value" in item and not item.get("source"):
        raise DropError(f"{where}.value", item["value"], "a source whose value it is")
    if not any(k in item for k in ("source", "expression", "older_than", "longer_than")):
        raise DropError(where, dict(item), "at least one of source, expression, older_than "
                                           "or longer_than")
    source = _sources(item.get("source"), f"{where}.source")
    if "value" in item and "expression" in item:
        raise DropError(f"{where}.value", item["value"], "either value or expression, not both")
    if "value" in item and not source:
        raise DropError(f"{where}.value", item["value"], "a source whose value it is")
    pattern = None
    if "expression" in item:
        pattern = _pattern(item["expression"], f"{where}.expression")
    elif "value" in item:
        pattern = re.compile(r"\A" + re.escape(_value(item["value"], source, f"{where}.value"))
                             + r"\Z")
    separator = _text(item.get("separator", ";"), f"{where}.separator", empty=True)
    older = None
    if "older_than" in item:
        try:
            older = parse_duration_ns(str(item["older_than"]))
        except UnitError:
            older = 0
        if older <= 0:
            raise DropError(f"{where}.older_than", item["older_than"],
                            "a positive duration, e.g. '24h', '30m'")
    longer = None
    if "longer_than" in item:
        try:
            longer = parse_size(item["longer_than"])
        except UnitError:
            longer = 0
        if longer <= 0:
            raise DropError(f"{where}.longer_than", item["longer_than"],
                            "a positive size: bytes, or e.g. '8KiB'")
    reason = item.get("drop_counter_reason", DEFAULT_REASON)
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        raise DropError(f"{where}.drop_counter_reason", reason,
                        "1 to 64 letters, digits or _ . : -")
    text = ", ".join(f"{k}: {item[k]!r}" for k in _KEYS if k in item)
    return DropRule(source, pattern, separator, older, longer, reason, text[:300])


def _text(value: object, key: str, *, empty: bool = False) -> str:
    """A scalar as the text a field is matched as (a boolean as JSON writes it), at most
    :data:`MAX_PATTERN` characters."""
    text = _string(value)
    if text is None or (not empty and text == ""):
        raise DropError(key, value, "a string")
    if len(text) > MAX_PATTERN:
        raise DropError(key, f"({len(text)} characters)", f"at most {MAX_PATTERN} characters")
    return text


def _sources(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(
            isinstance(n, str) and n for n in names):
        raise DropError(key, value, "a field name or a list of field names")
    if len(names) > MAX_SOURCES:
        raise DropError(key, f"({len(names)} names)", f"at most {MAX_SOURCES} names")
    out = []
    for name in names:
        role = role_of(name)
        if role == "time":
            raise DropError(key, name, "a field kept as text: the line's time is read into "
                                       "the entry's time (use older_than)")
        out.append(role or name)
    return tuple(out)


def _value(value: object, source: tuple[str, ...], key: str) -> str:
    """``value`` as the event carries the field: a level, actor or type normalised."""
    text = _text(value, key, empty=True)
    if len(source) != 1 or source[0] not in ("level", "actor", "type"):
        return text
    if source[0] == "type":
        return normalize_type(text)
    normal, unknown = normalize_level(text) if source[0] == "level" else normalize_actor(text)
    if unknown is not None:
        raise DropError(key, value, f"a {source[0]} name (the event's {source[0]} is one of "
                                    f"{', '.join(type(normal).__members__)})")
    return str(normal)


def _pattern(value: object, key: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise DropError(key, value, "a regular expression (a string)")
    if len(value) > MAX_PATTERN:
        raise DropError(key, f"({len(value)} characters)",
                        f"a regular expression of at most {MAX_PATTERN} characters")
    nested = _nested_quantifier(value)
    if nested:
        raise DropError(key, value, f"no quantified group holding a quantifier ({nested}): "
                                    "it can take exponential time on a line, and Python's re "
                                    "has no timeout")
    try:
        return re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise DropError(key, value, f"a valid regular expression ({exc})") from None


def _nested_quantifier(pattern: str) -> str:
    """The first group that holds an unbounded quantifier and is itself repeated (``(a+)+``,
    ``(?:\\w*x)*``), as written; "" when there is none. Character classes and escapes are
    skipped; a bounded repeat (``?``, ``{0,3}``) of a group is not counted."""
    opened: list[tuple[int, bool]] = []  # (where the group starts, holds a quantifier)
    i, n, holds = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i += 2 if pattern[i + 1:i + 2] == "^" else 1
            i += 1 if pattern[i:i + 1] == "]" else 0
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            continue
        if c == "(":
            opened.append((i, holds))
            holds = False
        elif c == ")" and opened:
            start, outer = opened.pop()
            repeat = re.match(r"[*+]|\{\d*,\}|\{\d*,?(\d+)\}", pattern[i + 1:])
            if holds and repeat and (repeat.group(1) is None or int(repeat.group(1)) > 1):
                return pattern[start:i + 1 + repeat.end()]
            holds = outer or holds
        elif c in "*+" or (c == "{" and re.match(r"\{\d*,\d*\}", pattern[i:])):
            holds = True
        i += 1
    return ""


# --------------------------------------------------------------------------- applying


def _field(event: LogEvent, name: str) -> object:
    if name in _FIELDS:
        return getattr(event, name)
    return event.metadata.get(name)


def _string(value: object) -> str | None:
    """A field's value as the rule matches it (Promtail's getString): text, numbers, booleans
    as JSON writes them; None for anything else (the rule does not hold)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def _line_longer(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


class DropFilter:
    """One source's rules applied to its parsed lines; counts what each reason dropped and says
    the first line each rule drops on the sidecar's log."""

    def __init__(self, rules: tuple[DropRule, ...], name: str,
                 report: Callable[[str], None]) -> None:
        self.rules = rules
        self.name = name
        self._report = report
        self._lock = threading.Lock()
        self.dropped: dict[str, int] = {rule.reason: 0 for rule in rules}
        self._said: set[int] = set()

    @classmethod
    def of(cls, rules: tuple[DropRule, ...], name: str,
           report: Callable[[str], None]) -> DropFilter | None:
        """The filter of ``rules``; None when there are none (a source pays nothing)."""
        return cls(rules, name, report) if rules else None

    def drops(self, event: LogEvent, text: str, rest: str | None, now_ns: int) -> bool:
        """True (counted) when a rule drops the line ``text`` (``rest``: the lines a
        multi-line record joined to it), parsed as ``event``."""
        for index, rule in enumerate(self.rules):
            if self._holds(rule, event, text, rest, now_ns):
                with self._lock:
                    self.dropped[rule.reason] += 1
                    first = index not in self._said
                    self._said.add(index)
                if first:
                    self._report(f"{self.name}: drop rule {index} ({rule.text}) dropped its "
                                 "first line; the lines it drops are counted in "
                                 "shipper_sidecar_lines_dropped_total{source=\"" + self.name +
                                 "\", reason=\"" + rule.reason + "\"}")
                return True
        return False

    @staticmethod
    def _holds(rule: DropRule, event: LogEvent, text: str, rest: str | None,
               now_ns: int) -> bool:
        """All the conditions of ``rule`` hold, cheapest first (as Promtail checks them)."""
        if rule.longer_than is not None and not _line_longer(
                text if rest is None else f"{text}\n{rest}", rule.longer_than):
            return False
        if rule.older_than_ns is not None and \
                event.timestamp_ns >= now_ns - rule.older_than_ns:
            return False
        source, pattern = rule.source, rule.pattern
        if not source:
            return pattern is None or pattern.search(
                text if rest is None else f"{text}\n{rest}") is not None
        if len(source) == 1:  # the usual rule: one field
            value = _field(event, source[0])
            if pattern is None or value is None:
                return value is not None or (pattern is not None and
                                             pattern.search("") is not None)
            string = _string(value)
            return string is not None and pattern.search(string) is not None
        values = [_field(event, name) for name in source]
        if pattern is None:  # every field present
            return all(v is not None for v in values)
        strings = []  # Promtail joins the values present; one it cannot read keeps the line
        for value in values:
            if value is not None:
                string = _string(value)
                if string is None:
                    return False
                strings.append(string)
        return pattern.search(rule.separator.join(strings)) is not None

    def keep(self, texts: list[str], rests: list[str | None] | None,
             events: list[LogEvent]) -> list[LogEvent]:
        """``events`` (event ``i`` parsed from ``texts[i]``) less those a rule drops."""
        now_ns = time.time_ns()
        drops = self.drops
        return [event for i, event in enumerate(events)
                if not drops(event, texts[i], rests[i] if rests is not None else None, now_ns)]

    def samples(self, elsewhere: Callable[[], Mapping[str, int]] | None = None,
                ) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """``lines_dropped`` by reason: this process's counts plus ``elsewhere``'s (the
        worker processes', which apply the same rules with ``workers: N``)."""
        with self._lock:
            counts = dict(self.dropped)
        for reason, n in (elsewhere() if elsewhere is not None else {}).items():
            counts[reason] = counts.get(reason, 0) + n
        for reason, n in sorted(counts.items()):
            yield "lines_dropped", (self.name, reason), n

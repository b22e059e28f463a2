"""Filters → LogQL: the one place shipper builds queries.

Every value a person types (a service, a type fragment, an actor id, a module, a search text)
reaches Loki inside a double-quoted LogQL string built by :func:`quote`, and every value used as
a regular expression is first made literal by :func:`regex_escape` (Go's ``regexp.QuoteMeta``,
plus ``/`` as Grafana's ``${var:regex}`` escapes it, so a selector reads exactly like the
dashboards').
So no input can end a string, add a matcher or a pipeline stage, or change what a regex means:
``tests/test_admin_logql.py`` proves it with Grafana's LogQL grammar on generated input.

What each filter becomes (the event contract, DESIGN.md):

==============  ==========================================================================
``service``     ``service_name=~"<a>|<b>"`` (stream label; ``.+`` when none is given)
``level``       ``level="ERROR"`` or ``level=~"ERROR|CRITICAL"`` (stream label)
``actor``       ``actor="ADMIN"`` or ``actor=~"ADMIN|USER"`` (stream label)
``type``        ``type=~"(?i).*<text>.*"``: partial, case-insensitive (stream label)
``actor_id``    ``| actor_id="<id>"`` (structured metadata, exact)
``logger``      ``| logger="<m>" or logger=~"<m>\\..*"``: the module and its children
``search``      ``| json message="message" | message=~"(?is).*<t>.*" or type=~... or
                actor_id=~...``: case-insensitive, in the message, the type and the actor id
==============  ==========================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shipper.event import Actor, Level, normalize_actor, normalize_level
from shipper.typelabel import AUDIT_CANCEL_TYPE, AUDIT_DELETE_TYPE

__all__ = [
    "AUDIT_DELETE_TYPE",
    "FilterError",
    "Filters",
    "count_by",
    "duration",
    "label_name",
    "log_query",
    "metric_query",
    "quote",
    "regex_escape",
    "stream_selector",
    "type_query",
]

_REGEX_META = frozenset("\\.+*?()|[]{}^$/")
#: what Loki accepts as a label name (Prometheus' syntax)
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FilterError(ValueError):
    """A filter value shipper cannot use; the message names the filter and the value."""


def quote(value: str) -> str:
    """A LogQL double-quoted string whose decoded value is exactly ``value``.

    Backslash and double quote are escaped, and every control character (newline, tab, NUL,
    DEL, ...) is written as ``\\u00XX``, so the literal is always one line and always closed.
    """
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def regex_escape(value: str) -> str:
    """Go's ``regexp.QuoteMeta`` and ``/`` (as Grafana's ``${var:regex}``): every RE2
    metacharacter gets a backslash, so the pattern matches ``value`` literally."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in value)


def _check_text(name: str, value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"--{name}: {value!r} is not valid UTF-8") from None
    return value


def _alternation(values: Iterable[str]) -> str:
    return "|".join(regex_escape(v) for v in values)


@dataclass(frozen=True)
class Filters:
    """What to read, delete or count. Build with :meth:`create` (it validates and normalises);
    an empty ``Filters()`` matches every event of every service."""

    services: tuple[str, ...] = ()
    levels: tuple[Level, ...] = ()
    actors: tuple[Actor, ...] = ()
    #: partial, case-insensitive match on the type label
    type: str | None = None
    #: exact match on the actor_id structured metadata
    actor_id: str | None = None
    #: the module: this logger and its children (prefix match at a dot)
    logger: str | None = None
    #: case-insensitive text in the message, the type or the actor id
    search: str | None = None

    @classmethod
    def create(
        cls,
        *,
        services: Sequence[str] = (),
        levels: Sequence[str] = (),
        actors: Sequence[str] = (),
        type: str | None = None,
        actor_id: str | None = None,
        logger: str | None = None,
        search: str | None = None,
    ) -> Filters:
        """Validate and normalise (``warn`` → WARNING, ``admin`` → ADMIN); empty strings mean
        "no filter". Raises :class:`FilterError` naming the bad value."""
        svc = tuple(dict.fromkeys(_check_text("service", s) for s in services if s))
        lvls: list[Level] = []
        for raw in levels:
            level, original = normalize_level(raw)
            if original is not None:
                raise FilterError(f"--level: unknown level {raw!r} (one of "
                                  f"{', '.join(lvl.value for lvl in Level)})")
            lvls.append(level)
        acts: list[Actor] = []
        for raw in actors:
            actor, original = normalize_actor(raw)
            if original is not None or not raw:
                raise FilterError(f"--actor: unknown actor {raw!r} (one of "
                                  f"{', '.join(a.value for a in Actor)})")
            acts.append(actor)
        return cls(
            services=svc,
            levels=tuple(sorted(set(lvls), key=list(Level).index)),
            actors=tuple(sorted(set(acts), key=list(Actor).index)),
            type=_check_text("type", type) if type else None,
            actor_id=_check_text("actor-id", actor_id) if actor_id else None,
            logger=_check_text("logger", logger) if logger else None,
            search=_check_text("search", search) if search else None,
        )

    def replace(self, **changes: object) -> Filters:
        import dataclasses

        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """The filters that are set, as plain values (for audit events and JSON output)."""
        out: dict[str, object] = {}
        if self.services:
            out["service"] = list(self.services)
        if self.levels:
            out["level"] = [lvl.value for lvl in self.levels]
        if self.actors:
            out["actor"] = [a.value for a in self.actors]
        for name in ("type", "actor_id", "logger", "search"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


def _enum_matcher(label: str, values: Sequence[str]) -> str:
    if len(values) == 1:
        return f"{label}={quote(values[0])}"
    return f"{label}=~{quote(_alternation(values))}"


def stream_selector(filters: Filters, *, exclude_types: Sequence[str] = ()) -> str:
    """``{service_name=~..., level=..., actor=..., type=~..., type!=...}``."""
    matchers = [
        "service_name=~" + quote(_alternation(filters.services) if filters.services else ".+")
    ]
    if filters.levels:
        matchers.append(_enum_matcher("level", [lvl.value for lvl in filters.levels]))
    if filters.actors:
        matchers.append(_enum_matcher("actor", [a.value for a in filters.actors]))
    if filters.type:
        matchers.append("type=~" + quote(f"(?i).*{regex_escape(filters.type)}.*"))
    matchers.extend(f"type!={quote(t)}" for t in exclude_types)
    return "{" + ", ".join(matchers) + "}"


def _pipeline(filters: Filters) -> str:
    stages: list[str] = []
    if filters.actor_id:
        stages.append(f"| actor_id={quote(filters.actor_id)}")
    if filters.logger:
        child = quote(regex_escape(filters.logger) + "\\..*")
        stages.append(f"| logger={quote(filters.logger)} or logger=~{child}")
    if filters.search:
        text = quote(f"(?is).*{regex_escape(filters.search)}.*")
        stages.append('| json message="message"')
        stages.append(f"| message=~{text} or type=~{text} or actor_id=~{text}")
    return " ".join(stages)


def log_query(filters: Filters, *, keep_audit: bool = False) -> str:
    """The log query for ``filters``: a stream selector and the pipeline stages.

    ``keep_audit=True`` adds ``type!="LOGS_DELETED", type!="LOGS_DELETE_CANCELLED"``: a deletion
    built from this query can never remove the audit events of deletions and of their
    cancellations, whatever the filters say.
    """
    audit = (AUDIT_DELETE_TYPE, AUDIT_CANCEL_TYPE) if keep_audit else ()
    selector = stream_selector(filters, exclude_types=audit)
    pipeline = _pipeline(filters)
    return f"{selector} {pipeline}" if pipeline else selector


def type_query(filters: Filters, type_: str) -> str:
    """:func:`log_query` for the events of one ``type``, matched exactly (``type="..."``; the
    ``type`` filter matches a fragment instead): ``shipper doctor`` reads the heartbeats so."""
    filters = filters.replace(type=None)
    selector = f"{stream_selector(filters)[:-1]}, type={quote(type_)}}}"
    pipeline = _pipeline(filters)
    return f"{selector} {pipeline}" if pipeline else selector


def duration(seconds: float) -> str:
    """A LogQL range: whole milliseconds, written in the largest unit that divides them."""
    ms = max(1, math.ceil(seconds * 1000 - 1e-6))
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def metric_query(template: str, filters: Filters, seconds: float, *,
                 extra_stages: str = "", keep_audit: bool = False) -> str:
    """Fill a metric template: ``{logs}`` becomes the log query (with ``extra_stages``
    appended), ``{range}`` the range. E.g. ``sum by (level) (count_over_time({logs} [{range}]))``.
    """
    logs = log_query(filters, keep_audit=keep_audit)
    if extra_stages:
        logs = f"{logs} {extra_stages}"
    return template.replace("{range}", duration(seconds)).replace("{logs}", logs)


def label_name(name: str) -> str:
    """``name`` when it can be a Loki label name (``[A-Za-z_][A-Za-z0-9_]*``); else a
    :class:`FilterError` naming it. Names are written into LogQL unquoted, so this is their
    only guard."""
    if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
        raise FilterError(f"not a label name: {str(name)[:100]!r} (letters, digits and _, "
                          "not starting with a digit)")
    return name


def count_by(labels: Sequence[str], filters: Filters, seconds: float) -> str:
    """``sum by (<labels>) (count_over_time(<log query> [<range>]))``: the entries of each
    stream (each distinct set of ``labels``) that match ``filters``."""
    by = ", ".join(label_name(n) for n in labels)
    template = f"sum by ({by}) (count_over_time({{logs}} [{{range}}]))" if by else \
        "sum (count_over_time({logs} [{range}]))"
    return metric_query(template, filters, seconds)

"""From one log line (or one multi-line record) to a :class:`~shipper.event.LogEvent`.

The JSON loggers apps use are read into the event contract by one field table:

============  ==============================================================================
field         keys (the first present wins; the others are kept in metadata)
============  ==============================================================================
message       ``message``, ``msg`` (pino, bunyan), ``event`` (structlog)
level         ``level`` (numbers are pino/bunyan's 10-60), ``levelname`` (python-json-logger),
              ``log.level`` (ECS, dotted or nested), ``severity``, ``lvl``
time          ``createdAt``, ``created_at``, ``ts``, ``time``, ``timestamp``, ``@timestamp``,
              ``asctime``: ISO-8601, or epoch seconds/ms/µs/ns (told apart by size)
type, actor   ``type``, ``actor``
actor_id      ``actorId``, ``actor_id``
trace_id      ``trace_id``, ``traceId``, ``trace.id`` (ECS), ``request_id``, ``requestId``,
              ``reqId`` (pino-http)
logger        ``logger``, ``logger_name``, ``name``, ``log.logger`` (ECS)
exception     ``exception``, ``exc_info``, ``stack_trace``, ``stack``, ``err.stack`` (pino),
              ``error.stack_trace`` (ECS)
service, env  ``service_name``, ``service``, ``service.name`` (ECS); ``env``
metadata      ``metadata`` (an object), plus every key not named above
============  ==============================================================================

logfmt lines go through the same table. Text lines take their level from a regex (INFO when it
does not match). A line that is not valid in its declared format is shipped as text with
``metadata.parse_error`` saying why: it is never dropped.
"""

from __future__ import annotations

import json
import operator
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from shipper._units import MAX_TIME_NS, MIN_TIME_NS
from shipper.event import (
    Actor,
    Level,
    LogEvent,
    env_label,
    event_source,
    make_event,
    metadata_value,
    new_event,
    normalize_actor,
    normalize_level,
    normalize_type,
    service_label,
)
from shipper.sidecar.linevalues import (
    DEFAULT_LEVEL_PATTERN,
    LEADING_TIME,
    level_of,
    parse_logfmt,
    parse_timestamp,
    zone,
)

__all__ = ["DEFAULT_LEVEL_PATTERN", "PLAN_CACHE_BYTES", "TRUNCATED", "LineParser", "cut_line",
           "level_of", "parse_logfmt", "parse_timestamp", "plan_cache_size", "role_of"]

_loads = json.loads
_fast_loads: Callable[[str], Any]
try:  # over twice as fast as json.loads on a log line, integers of any size kept exactly
    import msgspec

    _fast_loads = msgspec.json.Decoder().decode
except ImportError:  # pragma: no cover - without the sidecar extra: the standard library
    _fast_loads = json.loads
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr).encode

#: what ends a line cut to max_line_bytes (the same words as the pipeline's own truncation)
TRUNCATED = "...[truncated by shipper: {n} bytes]"


def cut_line(head: bytes, total: int) -> str:
    """The text of a line cut to ``head`` (its first bytes), marked with its full size."""
    return head.decode("utf-8", "replace") + TRUNCATED.format(n=total)


# --------------------------------------------------------------------------- the field table

# The slots of the field table, and for each key its slot and rank (the lower rank wins when a
# line has several keys for one slot; the others are kept in metadata).
(_MESSAGE, _LEVEL, _TIME, _TYPE, _ACTOR, _ACTOR_ID, _TRACE_ID, _LOGGER, _EXCEPTION, _SERVICE,
 _ENV, _METADATA) = range(12)
_SLOTS = 12
_NONE = 99  # the rank of an empty slot
_ROLES: dict[str, tuple[int, int]] = {
    "message": (_MESSAGE, 0), "msg": (_MESSAGE, 1), "event": (_MESSAGE, 2),
    "level": (_LEVEL, 0), "levelname": (_LEVEL, 1), "log.level": (_LEVEL, 2),
    "severity": (_LEVEL, 3), "lvl": (_LEVEL, 4),
    "createdAt": (_TIME, 0), "created_at": (_TIME, 1), "ts": (_TIME, 2),
    "time": (_TIME, 3), "timestamp": (_TIME, 4), "@timestamp": (_TIME, 5),
    "asctime": (_TIME, 6),
    "type": (_TYPE, 0),
    "actor": (_ACTOR, 0),
    "actorId": (_ACTOR_ID, 0), "actor_id": (_ACTOR_ID, 1),
    "trace_id": (_TRACE_ID, 0), "traceId": (_TRACE_ID, 1), "trace.id": (_TRACE_ID, 2),
    "request_id": (_TRACE_ID, 3), "requestId": (_TRACE_ID, 4), "reqId": (_TRACE_ID, 5),
    "logger": (_LOGGER, 0), "logger_name": (_LOGGER, 1), "log.logger": (_LOGGER, 2),
    "name": (_LOGGER, 3),
    "exception": (_EXCEPTION, 0), "exc_info": (_EXCEPTION, 1),
    "stack_trace": (_EXCEPTION, 2), "stack": (_EXCEPTION, 3),
    "error.stack_trace": (_EXCEPTION, 4),
    "service_name": (_SERVICE, 0), "service": (_SERVICE, 1), "service.name": (_SERVICE, 2),
    "env": (_ENV, 0),
    "metadata": (_METADATA, 0),
}
_SLOT_NAMES = ("message", "level", "time", "type", "actor", "actor_id", "trace_id", "logger",
               "exception", "service", "env", "metadata")


def role_of(key: str) -> str | None:
    """What the field table makes of a line's key: ``message``, ``level``, ``time``, ``type``,
    ``actor``, ``actor_id``, ``trace_id``, ``logger``, ``exception``, ``service``, ``env``
    (``log.level`` and the other dotted names too); None for a key kept in metadata."""
    role = _ROLES.get(key)
    return None if role is None or role[0] == _METADATA else _SLOT_NAMES[role[0]]


# objects whose members fill slots: ECS's log/trace/service/error and pino's err
_NESTED: dict[str, dict[str, tuple[int, int]]] = {
    "log": {"level": (_LEVEL, 2), "logger": (_LOGGER, 2)},
    "trace": {"id": (_TRACE_ID, 2)},
    "service": {"name": (_SERVICE, 2)},
    "error": {"stack_trace": (_EXCEPTION, 4), "stack": (_EXCEPTION, 5)},
    "err": {"stack": (_EXCEPTION, 5)},
}


def _nested(name: str, value: dict[str, Any], table: Mapping[str, tuple[int, int]],
            vals: list[Any], ranks: list[int], keys: list[str]) -> dict[str, Any]:
    rest = {}
    for key, item in value.items():
        role = table.get(key)
        if role is None or item is None or ranks[role[0]] <= role[1]:
            rest[key] = item
            continue
        slot, rank = role
        vals[slot] = item
        ranks[slot] = rank
        keys[slot] = f"{name}.{key}"
    return rest


def _assign(obj: Mapping[str, Any]) -> tuple[list[Any], list[str], dict[str, Any]]:
    """The field table applied to one object: slot values, the key each came from, metadata."""
    vals: list[Any] = [None] * _SLOTS
    ranks = [_NONE] * _SLOTS
    keys: list[str] = [""] * _SLOTS
    meta: dict[str, Any] = {}
    roles = _ROLES.get
    for key, value in obj.items():
        role = roles(key)
        if value is None:
            continue
        if role is None or value.__class__ is dict:
            nested = _NESTED.get(key) if value.__class__ is dict else None
            if nested is not None:
                rest = _nested(key, value, nested, vals, ranks, keys)
                if rest:
                    meta[key] = rest
            elif role is None:
                meta[key] = value
                continue
            if role is None or nested is not None:
                continue
        slot, rank = role
        old = ranks[slot]
        if old <= rank:
            meta[key] = value
            continue
        if slot == _MESSAGE and rank == 2 and value.__class__ is not str:
            meta[key] = value  # structlog's 'event' is text; anything else is data
            continue
        if old != _NONE:  # a better key for the slot: the one found before is metadata
            meta[keys[slot]] = vals[slot]
        vals[slot] = value
        ranks[slot] = rank
        keys[slot] = key
    return vals, keys, meta


#: key order → (the slot values of a line's values, the metadata names, their values, the key
#: each slot came from, the position of a structlog ``event`` that must be text to be the
#: message, else -1, the keys that fill slots when the metadata keeps the line's order of
#: the others, else None, the key order itself, and how many lines the batch path has taken
#: through the plan); None: no plan for those keys
_Plan = tuple[Callable[[tuple[Any, ...]], Any], tuple[str, ...],
              Callable[[tuple[Any, ...]], Any], list[str], int, "tuple[str, ...] | None",
              tuple[str, ...], list[int]]
_PLANS: dict[tuple[str, ...], _Plan | None] = {}
#: key order → the code made for the lines of exactly those keys (see :func:`_make_converter`);
#: None: those keys get none. Kept as long as their plan is.
_Converter = Callable[[dict[str, Any], int, str, "str | None", Any], "LogEvent | None"]
_CONVERTERS: dict[tuple[str, ...], _Converter | None] = {}
#: lines of one key order the batch path takes through its plan before it makes that key
#: order's converter: making one costs about 0.1 ms, which lines whose keys keep changing
#: never pay
_CONVERT_AFTER = 64

#: what the plans may hold, estimated from their keys (:func:`_plan_cost`); the oldest plans
#: go first past it, and a key set that alone costs more than an eighth of it is not kept
PLAN_CACHE_BYTES = 4 * 1024 * 1024
_MAX_PLANS = 1024
#: per key of a plan: its name's str object, its slots in the key tuple and the metadata names,
#: the index an itemgetter reads it by (measured with tracemalloc: about 100 bytes + its length)
_KEY_COST = 104
_PLAN_COST = 1024  # the tuples, itemgetters and list of one plan, whatever its keys
_plan_costs: dict[tuple[str, ...], int] = {}
_plan_bytes = 0
_plans_lock = threading.Lock()


def _plan_cost(names: tuple[str, ...]) -> int:
    return _PLAN_COST + _KEY_COST * len(names) + sum(map(len, names))


def plan_cache_size() -> tuple[int, int]:
    """How many key sets have a plan kept, and the bytes they are estimated to hold."""
    return len(_PLANS), _plan_bytes


def _keep_plan(names: tuple[str, ...], plan: _Plan | None, cost: int) -> None:
    """Keep ``plan`` within :data:`PLAN_CACHE_BYTES`, the oldest plans going first (the
    sources' threads share the plans)."""
    global _plan_bytes
    with _plans_lock:
        if names in _PLANS:
            return
        _make_room(cost, 1)
        _PLANS[names] = plan
        _plan_costs[names] = cost
        _plan_bytes += cost


def _make_room(cost: int, plans: int) -> None:
    """Drop the oldest plans (and their converters) until ``cost`` more bytes and ``plans``
    more plans fit (under ``_plans_lock``)."""
    global _plan_bytes
    while _PLANS and (_plan_bytes + cost > PLAN_CACHE_BYTES
                      or len(_PLANS) + plans > _MAX_PLANS):
        oldest = next(iter(_PLANS))
        del _PLANS[oldest]
        _CONVERTERS.pop(oldest, None)
        _plan_bytes -= _plan_costs.pop(oldest)


def _plan(names: tuple[str, ...]) -> _Plan | None:
    """Where each key of lines with exactly these keys goes: :func:`_assign` run once with
    text placeholders (for lines whose values are neither None nor ECS objects, which is
    checked per line), turned into two ``itemgetter``s over the line's values. Keys that open
    ECS objects get no plan: their lines take the table. Nor do key sets that alone would
    cost more than an eighth of :data:`PLAN_CACHE_BYTES` (such a plan is neither made nor
    kept: their lines take the table too)."""
    cost = _plan_cost(names)
    if cost > PLAN_CACHE_BYTES // 8:
        return None
    plan: _Plan | None = None
    if not any(name in _NESTED for name in names):
        vals, keys, meta = _assign({name: str(i) for i, name in enumerate(names)})
        empty = len(names)  # the None after a line's values
        slots = [empty if value is None else int(value) for value in vals]
        positions = [int(value) for value in meta.values()]
        text_only = int(vals[_MESSAGE]) if keys[_MESSAGE] == "event" else -1
        # what is left of the line's object once the slots' keys are taken out is its
        # metadata, unless a key was moved to the metadata after others (a better one came)
        in_order = positions == sorted(positions)
        slot_names = tuple(name for i, name in enumerate(names) if i not in set(positions))
        plan = (operator.itemgetter(*slots), tuple(meta), _getter(positions), keys, text_only,
                slot_names if in_order else None, names, [0])
    _keep_plan(names, plan, cost)
    return plan


def _getter(positions: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """``itemgetter`` that always returns a tuple (its one-position form returns the item)."""
    if len(positions) == 1:
        only = positions[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*positions) if positions else (lambda values: ())


#: what a converter adds to its plan's cost (its function, code object and defaults: 4.6 KB
#: with tracemalloc for keys that fill every slot, less for fewer)
_CONVERTER_COST = 5120


def _make_converter(plan: _Plan) -> _Converter | None:
    """The code that makes the event of a line with the plan's keys, in one function for those
    keys: it reads the keys that fill slots, checks their kinds as :meth:`LineParser._json_many`
    does, normalises through :func:`_norms`' cache, deletes the slot keys from the object
    (what is left is the metadata) and fills the event as :func:`~shipper.event.make_event`
    does, with no step for a slot the keys leave empty. It returns None, the object
    untouched, for a line that needs more (the batch path then takes the plan), and is called
    only for lines that hold no JSON ``null``. None: no converter for these keys (a service,
    env or metadata key, which the general path handles, or metadata out of the line's order).

    The keys reach the code as its default arguments, never as source text."""
    _, _, _, keys, _, slot_names, names, _ = plan
    if slot_names is None or keys[_SERVICE] or keys[_ENV] or keys[_METADATA]:
        return None
    position = {name: i for i, name in enumerate(names)}
    defaults: list[str] = []
    body: list[str] = []

    def read(slot: int, variable: str) -> str:
        key = keys[slot]
        if not key:
            return "None"
        i = position[key]
        defaults.append(f"_k{i}=_KEYS[{i}]")
        body.append(f"    {variable} = o[_k{i}]")
        return variable

    message = read(_MESSAGE, "message")
    level = read(_LEVEL, "level")
    when = read(_TIME, "when")
    type_ = read(_TYPE, "type_")
    actor = read(_ACTOR, "actor")
    actor_id = read(_ACTOR_ID, "actor_id")
    trace_id = read(_TRACE_ID, "trace_id")
    logger = read(_LOGGER, "logger")
    exception = read(_EXCEPTION, "exception")
    for text in (message, logger, exception):
        if text != "None":
            body.append(f"    if {text}.__class__ is not str: return None")
    if when == "None":
        body.append("    ts = default_ns")
    else:  # epoch s or ms (parse_timestamp's first two sizes), else parse_timestamp
        body += ["    if when.__class__ is int and 0 <= when < 100_000_000_000_000:",
                 "        ts = when * (1_000_000_000 if when < 100_000_000_000 else 1_000_000)",
                 "    else:",
                 "        ts = _parse_timestamp(when, tz)",
                 "        if ts is None: return None"]
    body += ["    try:",
             f"        norms = _norms_of(({level}, {actor}, {type_}))",
             "    except TypeError:",
             "        return None",
             f"    if (norms is None or norms[5] is not {level}.__class__"
             f" or norms[6] is not {actor}.__class__ or norms[7] is not {type_}.__class__):",
             f"        norms = _norms({level}, {actor}, {type_})",
             "    if norms is None or not _MIN_NS <= ts <= _MAX_NS: return None"]
    body += [f"    del o[_k{position[name]}]" for name in slot_names]
    body += ["    if norms[1] is not None: o.setdefault('original_level', norms[1])",
             "    if norms[3] is not None: o.setdefault('original_actor', norms[3])"]
    for text in (actor_id, trace_id):
        if text != "None":
            body.append(f"    if {text}.__class__ is not str or len({text}) > 128"
                        f" or not {text}.isprintable(): {text} = _metadata_value({text})")
    fill, names_used = event_source("event", {
        "service": "service", "level": "norms[0]",
        "message": '""' if message == "None" else "message", "actor": "norms[2]",
        "type": "norms[4]", "timestamp_ns": "ts", "env": "env",
        "actor_id": f"{actor_id} or None", "trace_id": f"{trace_id} or None",
        "logger": f"{logger} or None", "metadata": "o", "exception": f"{exception} or None"})
    source = "\n".join([f"def convert(o, default_ns, service, env, tz, {', '.join(defaults)}):",
                        *body, *fill, "    return event"])
    namespace: dict[str, Any] = {
        "_KEYS": names, "_norms_of": _NORMS.get, "_norms": _norms, "_MIN_NS": _MIN_NS,
        "_MAX_NS": _MAX_NS, "_parse_timestamp": parse_timestamp,
        "_metadata_value": metadata_value, **names_used}
    exec(compile(source, "<shipper json converter>", "exec"), namespace)
    return cast(_Converter, namespace["convert"])


def _add_converter(plan: _Plan) -> None:
    """Make and keep the converter of ``plan``'s keys, while the plan is kept (its cost is
    added to the plan's); the plan's use count is set so far back that it is never asked
    again."""
    global _plan_bytes
    names, uses = plan[6], plan[7]
    uses[0] = -(1 << 62)
    try:
        converter = _make_converter(plan)
    except Exception:  # never expected; the plan serves these keys as before
        converter = None
    with _plans_lock:
        if _PLANS.get(names) is not plan or names in _CONVERTERS:
            return
        if converter is not None:
            # room for it, this plan kept (it is the newest but for plans made since)
            _PLANS[names] = _PLANS.pop(names)
            _make_room(_CONVERTER_COST, 0)
            if _PLANS.get(names) is not plan:
                return
            _plan_costs[names] += _CONVERTER_COST
            _plan_bytes += _CONVERTER_COST
        _CONVERTERS[names] = converter


_MIN_NS = MIN_TIME_NS
_MAX_NS = MAX_TIME_NS
#: (level, actor, type) as a line gives them → what the event makes of them, and the classes
#: of the three (see _norms)
_Norms = tuple[Level, "str | None", Actor, "str | None", str, type, type, type]
_NORMS: dict[tuple[object, object, object], _Norms] = {}


def _norms(level: object, actor: object, type_: object) -> _Norms | None:
    """The event's level (and the original when it is not a known level), actor (likewise)
    and type for a line's raw level, actor and type, as :meth:`LineParser._event` and
    :func:`~shipper.event.new_event` make them, with the classes of the three; kept in
    ``_NORMS`` for up to 4,096 combinations of short texts (and whole numbers for the level),
    where :meth:`LineParser._json_many` looks them up. None for other kinds of values: the
    caller takes the general path."""
    for value, numbers in ((level, True), (actor, False), (type_, False)):
        cls = value.__class__
        if not (value is None or (cls is str and len(value) <= 64)  # type: ignore[arg-type]
                or (numbers and cls is int)):
            return None
    classes = (level.__class__, actor.__class__, type_.__class__)
    raw: object = Level.INFO
    if level is not None:
        known = level_of(level)
        raw = level if known is None else known
    lvl, level_original = normalize_level(raw)
    act, actor_original = normalize_actor(actor)
    found = (lvl, level_original, act, actor_original, normalize_type(type_), *classes)
    if len(_NORMS) >= 4096:
        _NORMS.clear()
    _NORMS[level, actor, type_] = found
    return found


class LineParser:
    """Parses the lines of one source into events.

    ``parse(text, continuation, default_ns)``: ``text`` is one line (without its newline);
    ``continuation`` the joined following lines of a multi-line record, which become the
    event's exception (added after an exception the line already has); ``default_ns`` the time
    of an event whose line has none (the time it was read, or Docker's timestamp).
    """

    def __init__(
        self,
        *,
        format: str = "auto",
        level_pattern: str | None = None,
        timezone: str = "UTC",
        service: str,
        env: str | None = None,
    ) -> None:
        self.format = format
        self.service = service
        self.env = env
        self._tz = zone(timezone)
        self._pattern = re.compile(level_pattern or DEFAULT_LEVEL_PATTERN)
        self._groups = [g for g in self._pattern.groupindex if g != "level"]
        self._time_group = "time" in self._pattern.groupindex
        self._level_group: int | str = "level" if "level" in self._pattern.groupindex else (
            1 if self._pattern.groups else 0)
        self.invalid = 0  # lines not valid in their declared format (shipped as text)
        self.parse = {  # type: ignore[method-assign]
            "json": self._json, "logfmt": self._logfmt, "text": self._text, "auto": self._auto,
        }[format]

    def parse_many(self, texts: list[str], first_ns: int, rests: list[str | None] | None,
                   out: list[LogEvent]) -> None:
        """:meth:`parse` each text into ``out``: text ``i`` with continuation ``rests[i]``
        (multi-line records) and, when it carries no time, ``first_ns + i``. Appending (not
        returning a list) keeps the events parsed before an unexpected error for the caller."""
        parse = self.parse
        add = out.append
        if rests is None and self.format == "json":
            self._json_many(texts, first_ns, out)
        elif rests is None:
            for i, text in enumerate(texts):
                add(parse(text, None, first_ns + i))
        else:
            for i, text in enumerate(texts):
                add(parse(text, rests[i], first_ns + i))

    def _json_many(self, texts: list[str], first_ns: int, out: list[LogEvent]) -> None:
        """:meth:`parse_many` for JSON lines without continuations, the sidecar's hot path:
        a line whose keys have a plan (see :func:`_plan`) and whose fields are the usual kinds
        (text, a number for the level and the time, no ``metadata`` object, no service or env
        of its own) is made into its event here, in one step, with the level, actor and type
        normalised once per combination (:func:`_norms`). Once a key order's plan has taken
        :data:`_CONVERT_AFTER` lines, its lines with no JSON ``null`` take code made for those
        keys (:func:`_make_converter`), which does the same in fewer steps. Any other line
        takes :meth:`_json`: the event is the same either way."""
        loads = _fast_loads
        plans = _PLANS
        converters = _CONVERTERS
        norms_of = _NORMS.get
        add = out.append
        slow = self._json
        make = make_event
        service = service_label(self.service)
        env = env_label(self.env) if self.env else None
        tz = self._tz
        for i, text in enumerate(texts):
            try:
                obj = loads(text)
            except (ValueError, RecursionError):
                add(slow(text, None, first_ns + i))
                continue
            if obj.__class__ is not dict:
                add(slow(text, None, first_ns + i))
                continue
            names = tuple(obj)
            convert = converters.get(names)
            # None can only come from a JSON null: a line with none takes its keys' converter
            if convert is not None and "null" not in text:
                event = convert(obj, first_ns + i, service, env, tz)
                if event is not None:
                    add(event)
                    continue
            plan = plans.get(names)
            if plan is None:
                add(self.from_fields(obj, None, first_ns + i))
                continue
            uses = plan[7]
            uses[0] += 1
            if uses[0] >= _CONVERT_AFTER:
                _add_converter(plan)
            values = (*obj.values(), None)  # the last: what an empty slot reads
            slot_values, meta_names, meta_values, _, text_only, slot_names, _, _ = plan
            (message, level, when, type_, actor, actor_id, trace_id, logger, exception,
             service_given, env_given, metadata_given) = slot_values(values)
            if (values.count(None) != 1 or metadata_given is not None
                    or (text_only >= 0 and values[text_only].__class__ is not str)
                    or service_given is not None or env_given is not None
                    or (message is not None and message.__class__ is not str)
                    or (exception is not None and exception.__class__ is not str)
                    or (logger is not None and logger.__class__ is not str)):
                add(self.from_fields(obj, None, first_ns + i))
                continue
            if when is None:
                ts = first_ns + i
            elif when.__class__ is int and 0 <= when < 100_000_000_000_000:
                # epoch s or ms (parse_timestamp's first two sizes)
                ts = when * (1_000_000_000 if when < 100_000_000_000 else 1_000_000)
            else:
                parsed = parse_timestamp(when, tz)
                if parsed is None:
                    add(self.from_fields(obj, None, first_ns + i))
                    continue
                ts = parsed
            # the normal level, actor and type of this combination, from _norms' cache when
            # the three have the classes it was made for (True == 1 and 1.0 == 1 find 1's
            # entry, and read differently), else from _norms
            try:
                norms = norms_of((level, actor, type_))
            except TypeError:  # a list or an object: no key, the general path
                norms = None
            if (norms is None or norms[5] is not level.__class__
                    or norms[6] is not actor.__class__ or norms[7] is not type_.__class__):
                norms = _norms(level, actor, type_)
            if norms is None or not _MIN_NS <= ts <= _MAX_NS:
                add(self.from_fields(obj, None, first_ns + i))
                continue
            if slot_names is not None:  # the object is ours: what is left is the metadata
                meta = obj
                for name in slot_names:
                    del meta[name]
            else:
                meta = (dict(zip(meta_names, meta_values(values), strict=True)) if meta_names
                        else {})
            if norms[1] is not None:
                meta.setdefault("original_level", norms[1])
            if norms[3] is not None:
                meta.setdefault("original_actor", norms[3])
            if actor_id is not None and (actor_id.__class__ is not str or len(actor_id) > 128
                                         or not actor_id.isprintable()):
                actor_id = metadata_value(actor_id)
            if trace_id is not None and (trace_id.__class__ is not str or len(trace_id) > 128
                                         or not trace_id.isprintable()):
                trace_id = metadata_value(trace_id)
            add(make(service, norms[0], "" if message is None else message, norms[2],
                     norms[4], ts, env,
                     actor_id or None,  # (text, or None: "" is no id)
                     trace_id or None, logger or None, meta, exception or None))

    def parse(self, text: str, continuation: str | None, default_ns: int) -> LogEvent:
        raise NotImplementedError  # replaced per format in __init__  # pragma: no cover

    # ------------------------------------------------------------------ formats

    def _auto(self, text: str, continuation: str | None, default_ns: int) -> LogEvent:
        if text[:1] == "{" or text.lstrip()[:1] == "{":
            return self._json(text, continuation, default_ns)
        if "=" in text:
            fields = parse_logfmt(text, strict=True)
            if fields is not None and len(fields) >= 2:
                return self.from_fields(fields, continuation, default_ns)
        return self._text(text, continuation, default_ns)

    def _json(self, text: str, continuation: str | None, default_ns: int) -> LogEvent:
        try:
            obj = _fast_loads(text)
        except (ValueError, RecursionError):
            try:  # what msgspec refuses and json reads: NaN, Infinity, lone surrogates
                obj = _loads(text)
            except ValueError as exc:
                return self._invalid(text, continuation, default_ns, f"not valid JSON: {exc}")
            except RecursionError:
                return self._invalid(text, continuation, default_ns, "JSON nested too deep")
        if obj.__class__ is not dict:
            return self._invalid(text, continuation, default_ns,
                                 f"a JSON {type(obj).__name__}, not an object")
        return self.from_fields(obj, continuation, default_ns)

    def _logfmt(self, text: str, continuation: str | None, default_ns: int) -> LogEvent:
        fields = parse_logfmt(text)
        if fields is None:
            return self._invalid(text, continuation, default_ns, "not logfmt: no key=value pair")
        return self.from_fields(fields, continuation, default_ns)

    def _text(self, text: str, continuation: str | None, default_ns: int,
              metadata: dict[str, Any] | None = None) -> LogEvent:
        match = self._pattern.search(text, 0, 4096)
        level: object = Level.INFO
        message = text
        ts = default_ns
        meta: dict[str, Any] = metadata if metadata is not None else {}
        if not self._time_group and (text[:1].isdigit() or text[:1] == "["):
            leading = LEADING_TIME.match(text)
            if leading is not None:
                ts = parse_timestamp(leading.group(1), self._tz) or default_ns
        if match is not None:
            raw = match.group(self._level_group)
            if raw is not None:  # an unknown word: INFO, and LogEvent keeps the original
                found = level_of(raw)
                level = raw if found is None else found
            for name in self._groups:
                value = match.group(name)
                if value is None:
                    continue
                if name == "message":
                    message = value
                elif name == "time":
                    parsed = parse_timestamp(value, self._tz)
                    if parsed is None:
                        meta["time"] = value
                    else:
                        ts = parsed
                else:
                    meta[name] = value
        return new_event(self.service, self.env, level, message, ts, None, None, None, None,
                         None, meta, continuation)

    def _invalid(self, text: str, continuation: str | None, default_ns: int,
                 reason: str) -> LogEvent:
        self.invalid += 1
        return self._text(text, continuation, default_ns,
                          {"parse_error": f"{self.format}: {reason}"})

    # ------------------------------------------------------------------ the field table

    def from_fields(self, obj: Mapping[str, Any], continuation: str | None,
                    default_ns: int) -> LogEvent:
        """An event from a parsed JSON object or logfmt line (see the module's table)."""
        if obj.__class__ is dict:
            # the lines of one logger have the same keys in the same order: which key fills
            # which slot was worked out once for them (see _plan)
            names = (*obj,)
            plan = _PLANS.get(names)
            if plan is None and names not in _PLANS:
                plan = _plan(names)
            if plan is not None:
                values = (*obj.values(), None)  # the last: what an empty slot reads
                slot_values, meta_names, meta_values, keys, text_only, *_ = plan
                if (values.count(None) == 1
                        and (text_only < 0 or values[text_only].__class__ is str)):
                    meta = (dict(zip(meta_names, meta_values(values), strict=True))
                            if meta_names else {})
                    return self._event(slot_values(values), keys, meta, continuation,
                                       default_ns)
        vals, keys, meta = _assign(obj)
        return self._event(vals, keys, meta, continuation, default_ns)

    def _event(self, vals: Sequence[Any], keys: list[str], meta: dict[str, Any],
               continuation: str | None, default_ns: int) -> LogEvent:
        given = vals[_METADATA]
        if given is not None:
            if given.__class__ is dict:
                for key, value in given.items():
                    meta.setdefault(key, value)
            else:
                meta["metadata"] = given
        ts = default_ns
        when = vals[_TIME]
        if when is not None:
            parsed = parse_timestamp(when, self._tz)
            if parsed is None:  # keep what the line said; ship it at the time it was read
                meta[keys[_TIME]] = when
            else:
                ts = parsed
        level: object = Level.INFO
        raw = vals[_LEVEL]
        if raw is not None:
            known = level_of(raw)
            # an unknown name: LogEvent.create maps it to INFO and keeps it (original_level)
            level = raw if known is None else known
        message = vals[_MESSAGE]
        if message is None:
            message = ""
        elif message.__class__ is not str:
            message = _dumps(message)
        exception = vals[_EXCEPTION]
        if exception is not None and exception.__class__ is not str:
            exception = _dumps(exception)
        if continuation:
            exception = f"{exception}\n{continuation}" if exception else continuation
        service = vals[_SERVICE]
        env = vals[_ENV]
        logger = vals[_LOGGER]
        # LogEvent.create, without copying the metadata dict made here
        return new_event(
            service if service.__class__ is str and service else self.service,
            env if env.__class__ is str and env else self.env,
            level, message, ts, vals[_ACTOR], vals[_TYPE], vals[_ACTOR_ID], vals[_TRACE_ID],
            logger if logger is None or logger.__class__ is str else str(logger),
            meta, exception or None)

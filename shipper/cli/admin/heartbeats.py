"""What the last ``SHIPPER_HEALTH`` heartbeats say about shipping, per service and host.

:func:`read_health` reads the heartbeats of a time range through
:class:`~shipper.loki.read_api.LokiReader` and judges each service on each host
(:class:`HostHealth`): a process silent for three of its intervals without a final heartbeat,
events dropped, entries refused by Loki, a spool that holds events (growing, or old), a process
offline, a sidecar file far behind. ``shipper doctor`` prints one line per service and host.

Heartbeats are events like any other, so an app may log one of its own: a heartbeat whose
metadata is not a shipper heartbeat's (a count that is not a whole number of zero or more, no
``pid``) is left out and counted in :attr:`HostHealth.unreadable`, never trusted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipper._units import NS, format_seconds, format_size
from shipper.event import HEALTH_TYPE
from shipper.loki.logql import Filters, type_query
from shipper.loki.read_api import LokiReader
from shipper.loki.reader import Record
from shipper.loki.timerange import TimeRange

__all__ = ["LAG_LIMIT", "SILENT_INTERVALS", "SPOOL_AGE_LIMIT_S", "Beat", "HostHealth",
           "judge", "parse_beat", "read_health"]

#: a process is silent when its last heartbeat is older than this many of its intervals
SILENT_INTERVALS = 3
#: a spool whose oldest segment is older than this holds events Loki should have by now
SPOOL_AGE_LIMIT_S = 15 * 60
#: a sidecar file further behind than this (the Sidecar lag alert's threshold)
LAG_LIMIT = 10 * 2**20
#: the heartbeats read at most (newest first): about a week of one process, an hour of 160
MAX_BEATS = 10_000
_COUNTS = ("accepted", "sent", "dropped", "refused")
#: no counter or size of a real heartbeat comes near this (2**53: floats stay exact below it)
_MAX_COUNT = 2**53
#: the reasons a heartbeat writes (``dropped_queue_full``); other keys are not counted
_REASON_KEY = re.compile(r"(?:dropped|refused)_[a-z0-9_]{1,60}")
#: the reasons a problem names at most (the rest are summed)
_SHOWN_REASONS = 8


@dataclass(frozen=True)
class Beat:
    """One heartbeat, its numbers checked."""

    service: str
    host: str
    pid: int
    role: str
    timestamp_ns: int
    interval_s: float
    final: bool
    offline: bool
    counts: Mapping[str, int]
    #: ``dropped_<reason>`` and ``refused_<reason>`` → n
    reasons: Mapping[str, int]
    spool_bytes: int
    spool_oldest_age_s: float
    lag_max_bytes: int
    lag_max_path: str


def _count(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 <= value <= _MAX_COUNT and value == int(value)):
        raise ValueError(f"metadata.{key} is {str(value)[:40]}, not a whole number from 0 to "
                         "2**53")
    return int(value)


def _seconds(meta: Mapping[str, Any], key: str, default: float) -> float:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 <= value <= _MAX_COUNT):
        raise ValueError(f"metadata.{key} is {str(value)[:40]}, not a number of seconds")
    return float(value)


def parse_beat(record: Record) -> Beat:
    """A heartbeat as read back; ValueError naming the field that is not a shipper
    heartbeat's."""
    meta = record.metadata
    if not isinstance(meta, Mapping):
        raise ValueError("its line has no metadata object")
    pid = meta.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= _MAX_COUNT:
        raise ValueError(f"metadata.pid is {str(pid)[:40]}, not a process id")
    reasons = {key: _count(meta, key) for key in meta
               if isinstance(key, str) and _REASON_KEY.fullmatch(key)}
    return Beat(
        service=record.service or "", host=str(meta.get("host") or "?")[:200], pid=pid,
        role=str(meta.get("role") or "app")[:40], timestamp_ns=record.timestamp_ns,
        interval_s=_seconds(meta, "interval_s", 60.0) or 60.0, final=meta.get("final") is True,
        offline=meta.get("offline") is True, counts={k: _count(meta, k) for k in _COUNTS},
        reasons=reasons, spool_bytes=_count(meta, "spool_bytes"),
        spool_oldest_age_s=_seconds(meta, "spool_oldest_age_s", 0.0),
        lag_max_bytes=_count(meta, "lag_max_bytes"),
        lag_max_path=str(meta.get("lag_max_path") or "")[:500])


@dataclass
class HostHealth:
    """One service on one host over the range read: healthy, or what is wrong, with the
    numbers."""

    service: str
    host: str
    #: pid → its heartbeats, newest first
    processes: dict[int, list[Beat]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: heartbeats of this service that are not a shipper's (left out), with the first reason
    unreadable: int = 0
    unreadable_reason: str = ""

    @property
    def healthy(self) -> bool:
        return not self.problems

    def totals(self) -> dict[str, int]:
        """accepted, sent, dropped, refused summed over every heartbeat of the range."""
        out = dict.fromkeys(_COUNTS, 0)
        for beats in self.processes.values():
            for beat in beats:
                for key in _COUNTS:
                    out[key] += beat.counts[key]
        return out

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for beats in self.processes.values():
            for beat in beats:
                for key, n in beat.reasons.items():
                    out[key] = out.get(key, 0) + n
        return {key: n for key, n in sorted(out.items()) if n}

    def summary(self, span_s: float) -> str:
        t = self.totals()
        running = sum(1 for beats in self.processes.values() if not beats[0].final)
        return (f"{len(self.processes)} process(es), {running} running; in the last "
                f"{format_seconds(span_s)}: accepted {t['accepted']}, sent {t['sent']}, "
                f"dropped {t['dropped']}, refused {t['refused']}")


def _why(reasons: Mapping[str, int], prefix: str) -> str:
    mine = sorted(((n, key.removeprefix(prefix)) for key, n in reasons.items()
                   if key.startswith(prefix)), key=lambda item: (-item[0], item[1]))
    parts = [f"{reason}: {n}" for n, reason in mine[:_SHOWN_REASONS]]
    rest = mine[_SHOWN_REASONS:]
    if rest:
        parts.append(f"{len(rest)} more reasons: {sum(n for n, _ in rest)}")
    return f" ({', '.join(parts)})" if parts else ""


def judge(health: HostHealth, now_ns: int) -> HostHealth:
    """Fill ``problems`` and ``notes`` from the heartbeats."""
    health.problems.clear()
    health.notes.clear()
    totals, reasons = health.totals(), health.reasons()
    if totals["dropped"]:
        health.problems.append(f"{totals['dropped']} events dropped{_why(reasons, 'dropped_')}")
    if totals["refused"]:
        health.problems.append(f"{totals['refused']} entries refused by Loki"
                               f"{_why(reasons, 'refused_')}")
    for pid, beats in sorted(health.processes.items()):
        last = beats[0]
        age = max(now_ns - last.timestamp_ns, 0) / NS
        who = f"pid {pid} ({last.role})"
        if last.final:
            health.notes.append(f"{who} stopped cleanly {format_seconds(round(age))} ago")
            continue
        if age > SILENT_INTERVALS * last.interval_s:
            health.problems.append(f"{who} silent for {format_seconds(round(age))} (heartbeat "
                                   f"every {format_seconds(last.interval_s)}, no final one)")
        if last.offline:
            health.problems.append(f"{who} offline: cannot reach Loki, events go to its spool")
        if last.spool_bytes:
            oldest = beats[-1]
            growing = last.spool_bytes > oldest.spool_bytes and len(beats) > 1
            text = (f"{who} spool holds {format_size(last.spool_bytes)}, oldest "
                    f"{format_seconds(round(last.spool_oldest_age_s))}"
                    + (f", grew from {format_size(oldest.spool_bytes)}" if growing else ""))
            if growing or last.spool_oldest_age_s > SPOOL_AGE_LIMIT_S:
                health.problems.append(text)
            else:
                health.notes.append(text)
        if last.lag_max_bytes > LAG_LIMIT:
            health.problems.append(f"{who} is {format_size(last.lag_max_bytes)} behind in "
                                   f"{last.lag_max_path or 'a file'}")
    if health.unreadable:
        health.notes.append(f"{health.unreadable} heartbeat(s) left out, not a shipper's: "
                            f"{health.unreadable_reason}")
    return health


def group(records: Iterable[Record], now_ns: int) -> list[HostHealth]:
    """The heartbeats by service and host, each judged (sorted by service, then host)."""
    by_key: dict[tuple[str, str], HostHealth] = {}
    for record in records:
        try:
            beat = parse_beat(record)
        except ValueError as exc:
            meta = record.metadata if isinstance(record.metadata, Mapping) else {}
            key = (record.service or "", str(meta.get("host") or "?")[:200])
            health = by_key.setdefault(key, HostHealth(*key))
            health.unreadable += 1
            health.unreadable_reason = health.unreadable_reason or str(exc)
            continue
        health = by_key.setdefault((beat.service, beat.host), HostHealth(beat.service, beat.host))
        health.processes.setdefault(beat.pid, []).append(beat)
    for health in by_key.values():
        for beats in health.processes.values():
            beats.sort(key=lambda b: b.timestamp_ns, reverse=True)
    return [judge(by_key[key], now_ns) for key in sorted(by_key)]


def read_health(reader: LokiReader, *, since_s: float, now_ns: int,
                services: Sequence[str] = ()) -> list[HostHealth]:
    """Every service and host that sent heartbeats in the last ``since_s`` seconds."""
    query = type_query(Filters.create(services=services), HEALTH_TYPE)
    span = TimeRange(now_ns - int(since_s * NS), now_ns)
    records = list(reader.read(query, span, limit=MAX_BEATS))
    found = group(records, now_ns)
    if len(records) >= MAX_BEATS:
        for health in found:
            health.notes.append(f"only the newest {MAX_BEATS} heartbeats were read: narrow "
                                "with --service or --health-since")
    return found

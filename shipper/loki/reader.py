"""Reading events back from Loki: every entry of a range, in order, in windows and pages.

Loki refuses a query whose range is longer than ``max_query_length`` (30d1h by default) and
returns at most ``limit`` entries per query (``max_entries_limit_per_query``, 5000 by default).
:func:`iter_records` splits the range into windows no longer than the first, and pages through
each window: the next page starts AT the timestamp of the last entry seen (not after it, since
entries that share that nanosecond may have been cut off by the limit), and the entries already
seen at that timestamp are skipped by identity (stream, structured metadata, timestamp, line).
So nothing is read twice and nothing is missed at window or page edges, including entries that
share a nanosecond timestamp on a page boundary. A page filled entirely by one timestamp is
re-read at the largest limit Loki allows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from shipper._units import NS, format_time
from shipper.loki.client import LokiClient, LokiError, QueryLimits

__all__ = ["NotALogQuery", "ReadError", "Record", "iter_records", "parse_streams", "windows"]

Direction = Literal["forward", "backward"]

#: labels Loki adds to a stream that are not part of the event
_LOKI_ADDED = frozenset({"detected_level", "__error__", "__error_details__", "message",
                         "message_extracted"})


class ReadError(Exception):
    """Reading cannot go on (e.g. more entries share one nanosecond than a query may return)."""


class NotALogQuery(LokiError):
    """The query is a metric query: Loki answered ``result_type`` where entries were asked."""

    def __init__(self, result_type: str) -> None:
        super().__init__(f"expected a log query, Loki answered a {result_type} result", 200)
        self.result_type = result_type


@dataclass(frozen=True)
class Record:
    """One entry as read back, with the event fields taken apart."""

    timestamp_ns: int
    #: the stream as Loki returned it: labels and structured metadata merged
    stream: Mapping[str, str]
    line: str
    key: tuple[Any, ...] = field(compare=False, repr=False, default=())

    @cached_property
    def _body(self) -> tuple[Any, Any, Any]:
        try:
            body = json.loads(self.line)
        except (ValueError, RecursionError):  # not JSON, or nested too deep for Python: text
            body = None
        if isinstance(body, dict) and "message" in body:
            return body.get("message"), body.get("metadata") or {}, body.get("exception")
        return self.line, {}, None

    @property
    def time(self) -> dt.datetime:
        """When the event happened (UTC, to the microsecond; ``timestamp_ns`` is exact)."""
        return dt.datetime.fromtimestamp(self.timestamp_ns // 1000 / 1e6, dt.UTC)

    @property
    def service(self) -> str | None:
        return self.stream.get("service_name")

    @property
    def level(self) -> str | None:
        return self.stream.get("level")

    @property
    def actor(self) -> str | None:
        return self.stream.get("actor")

    @property
    def type(self) -> str | None:
        return self.stream.get("type")

    @property
    def actor_id(self) -> str | None:
        return self.stream.get("actor_id")

    @property
    def trace_id(self) -> str | None:
        return self.stream.get("trace_id")

    @property
    def logger(self) -> str | None:
        return self.stream.get("logger")

    @property
    def message(self) -> Any:
        """The event's message (the whole line when it is not a shipper JSON line)."""
        return self._body[0]

    @property
    def metadata(self) -> Any:
        return self._body[1]

    @property
    def exception(self) -> Any:
        return self._body[2]

    def fields(self) -> dict[str, Any]:
        """time, service, env, level, actor, type, actor_id, trace_id, logger, message,
        metadata, exception: the event contract's fields, from labels, metadata and line."""
        message, metadata, exception = self._body
        s = self.stream
        return {
            "time": format_time(self.timestamp_ns),
            "service": s.get("service_name"),
            "env": s.get("env"),
            "level": s.get("level"),
            "actor": s.get("actor"),
            "type": s.get("type"),
            "actor_id": s.get("actor_id"),
            "trace_id": s.get("trace_id"),
            "logger": s.get("logger"),
            "message": message,
            "metadata": metadata,
            "exception": exception,
        }


def parse_streams(data: Mapping[str, Any]) -> list[Record]:
    """A ``streams`` result → records, oldest first (ties in a stable order)."""
    out: list[Record] = []
    for stream in data.get("result", []):
        labels = {k: v for k, v in (stream.get("stream") or {}).items() if k not in _LOKI_ADDED}
        frozen = tuple(sorted(labels.items()))
        for value in stream.get("values", []):
            ts, line = int(value[0]), value[1]
            out.append(Record(ts, labels, line, (frozen, ts, line)))
    out.sort(key=lambda r: (r.timestamp_ns, r.key))
    return out


def windows(start_ns: int, end_ns: int, max_length_s: float,
            direction: Direction = "forward") -> list[tuple[int, int]]:
    """``[start, end)`` cut into consecutive windows no longer than ``max_length_s`` (less a
    second of margin; 0 means no limit), in reading order."""
    if max_length_s <= 0:
        return [(start_ns, end_ns)]
    step = max(int((max_length_s - 1) * NS), NS)
    out = []
    cursor = start_ns
    while cursor < end_ns:
        out.append((cursor, min(cursor + step, end_ns)))
        cursor += step
    return out if direction == "forward" else out[::-1]


def iter_records(
    client: LokiClient,
    query: str,
    start_ns: int,
    end_ns: int,
    *,
    direction: Direction = "forward",
    limits: QueryLimits | None = None,
    page_size: int | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> Iterator[Record]:
    """Every entry of ``query`` in ``[start_ns, end_ns)``, oldest first (``forward``) or newest
    first (``backward``), each exactly once. ``page_size`` defaults to Loki's per-query limit;
    ``on_page(cursor_ns, entries)`` is told after every page (for progress bars)."""
    limits = limits or client.query_limits()
    size = min(page_size or limits.max_entries_per_query, limits.max_entries_per_query)
    forward = direction == "forward"
    cursor = start_ns if forward else end_ns
    seen_at_cursor: set[tuple[Any, ...]] = set()
    for w_start, w_end in windows(start_ns, end_ns, limits.max_query_length_s, direction):
        lo, hi = w_start, w_end
        while lo < hi:
            page_lo, page_hi = (max(lo, cursor), hi) if forward else (lo, min(hi, cursor + 1))
            page = _page(client, query, page_lo, page_hi, size, direction)
            fresh = [r for r in page if _inside(r, start_ns, end_ns, cursor, forward)
                     and r.key not in seen_at_cursor]
            if not forward:
                fresh.reverse()
            for record in fresh:
                if record.timestamp_ns != cursor:
                    cursor = record.timestamp_ns
                    seen_at_cursor = set()
                seen_at_cursor.add(record.key)
                yield record
            if on_page is not None:
                on_page(cursor, len(fresh))
            if len(page) < size:
                break  # the window is done
            if not fresh:
                # a full page and nothing new: every entry of it shares the cursor's
                # nanosecond. Read that nanosecond alone, as much as Loki allows, and move on.
                yield from _one_nanosecond(client, query, cursor, limits, direction,
                                           seen_at_cursor)
                if forward:
                    lo = cursor + 1
                else:
                    hi = cursor
                seen_at_cursor = set()
                cursor = lo if forward else hi
            elif forward:
                lo = cursor
            else:
                hi = cursor + 1


def _inside(record: Record, start: int, end: int, cursor: int, forward: bool) -> bool:
    ts = record.timestamp_ns
    if not start <= ts < end:
        return False
    return ts >= cursor if forward else ts <= cursor


def _page(client: LokiClient, query: str, lo: int, hi: int, size: int,
          direction: Direction) -> list[Record]:
    data = client.query_range(query, lo, hi, limit=size, direction=direction)
    if data.get("resultType") != "streams":
        raise NotALogQuery(str(data.get("resultType")))
    return parse_streams(data)


def _one_nanosecond(client: LokiClient, query: str, ts: int, limits: QueryLimits,
                    direction: Direction, seen: set[tuple[Any, ...]]) -> Iterator[Record]:
    page = _page(client, query, ts, ts + 1, limits.max_entries_per_query, direction)
    if len(page) >= limits.max_entries_per_query:
        raise ReadError(
            f"more than {limits.max_entries_per_query} entries share the timestamp "
            f"{format_time(ts)}; raise Loki's max_entries_limit_per_query to read them all")
    for record in page:
        if record.timestamp_ns == ts and record.key not in seen:
            seen.add(record.key)
            yield record

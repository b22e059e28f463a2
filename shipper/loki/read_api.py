"""The public read API: :class:`LokiReader`, Loki read from Python the way the ``shipper``
commands read it (they use it too: one read path).

Events by the event contract's filters, paged across Loki's per-query entry limit and its
``max_query_length`` windows with nothing read twice (:mod:`shipper.loki.reader`); LogQL of
one's own (log queries → :class:`~shipper.loki.reader.Record`, metric queries →
:class:`Sample`); label names and values; series, with a count of each. Every range is
``since="1h"`` or ``start=``/``end=`` (:func:`shipper.loki.timerange.time_range`); every
failure is a :class:`~shipper.loki.client.LokiError` carrying Loki's own message.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from shipper._units import NS
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient, LokiError, QueryLimits
from shipper.loki.logql import (
    Filters,
    count_by,
    duration,
    label_name,
    log_query,
    stream_selector,
)
from shipper.loki.reader import NotALogQuery, Record, iter_records, windows
from shipper.loki.timerange import Since, TimeLike, TimeRange, time_range

__all__ = ["MAX_LOGQL_BYTES", "LokiReader", "Sample", "Series", "parse_samples"]

Order = Literal["desc", "asc"]
#: Loki's default step: the range over 250 points, at least one second
_DEFAULT_POINTS = 250
#: the longest LogQL sent: Loki reads the query from the URL, and Go refuses a request whose
#: header passes 1 MB (URL-encoding can triple the text)
MAX_LOGQL_BYTES = 64 * 1024


def _checked(logql: str) -> str:
    size = len(logql.encode("utf-8", "replace"))
    if not logql.strip():
        raise LokiError("the LogQL query is empty", None, "parse_error")
    if size > MAX_LOGQL_BYTES:
        raise LokiError(f"the LogQL query is {size} bytes: at most {MAX_LOGQL_BYTES} are sent "
                        "(Loki reads a query from the URL)", None, "parse_error")
    return logql


@dataclass(frozen=True)
class Sample:
    """One value of a metric query: the series' labels (``metric``), when and what."""

    metric: Mapping[str, str]
    timestamp_ns: int
    value: float

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_ns // 1000 / 1e6, dt.UTC)


@dataclass(frozen=True)
class Series:
    """One stream: its labels, and how many entries it holds in the range (``None``: not
    counted)."""

    labels: Mapping[str, str]
    count: int | None = None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LokiError(f"Loki answered a sample that is not a number: {str(value)[:100]!r}") \
            from None


def _stamp(value: Any) -> int:
    """A sample's time (seconds as Loki writes them, ``1795315596.398``) → nanoseconds."""
    seconds = _number(value)
    if not math.isfinite(seconds):
        raise LokiError(f"Loki answered a sample time that is not a time: {value!r}")
    return round(seconds * 1000) * 1_000_000


def parse_samples(data: Mapping[str, Any]) -> list[Sample]:
    """A ``vector``, ``matrix`` or ``scalar`` result → samples, ordered by series then
    time."""
    kind = data.get("resultType")
    result = data.get("result")
    out: list[Sample] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [Sample({}, _stamp(result[0]), _number(result[1]))]
    if kind not in ("vector", "matrix") or not isinstance(result, list):
        raise LokiError(f"expected a metric result, Loki answered a {kind} result")
    for series in result:
        metric = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
        points = series.get("values", []) if kind == "matrix" else [series.get("value")]
        for point in points:
            if not isinstance(point, list) or len(point) != 2:
                raise LokiError(f"Loki answered a sample that is not [time, value]: {point!r}")
            out.append(Sample(metric, _stamp(point[0]), _number(point[1])))
    return out


class LokiReader:
    """Read one Loki: ``LokiReader("http://loki:3100")``, ``LokiReader.from_env()`` (the
    ``LOKI_*`` variables and ``$SHIPPER_CONFIG``, as the handler and the commands read them)
    or ``LokiReader(config=ShipperConfig(...))``. Use it as a context manager, or
    :meth:`close` it.

    Every method takes the range as ``since`` (``"1h"``, seconds, a timedelta; back from
    ``end``) or ``start``/``end`` (``"2026-01-31T12:00:00Z"``, ``"now-2h"``, nanoseconds, an
    aware datetime); without any, the last hour.
    """

    def __init__(self, url: str | None = None, *, config: ShipperConfig | None = None,
                 client: LokiClient | None = None) -> None:
        if client is None:
            if config is None:
                config = ShipperConfig.load(url=url, spool=False)
            elif url is not None:
                config = config.replace(url=url)
            if not config.url:
                raise LokiError("no Loki URL: pass one (LokiReader('http://loki:3100')) or set "
                                "LOKI_URL", None, "unreachable")
            client = LokiClient(config)
        self.client = client
        self._limits: QueryLimits | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> LokiReader:
        """The connection the handler would use (``LOKI_URL``, ``LOKI_TENANT``, ...,
        ``$SHIPPER_CONFIG``), with ``overrides`` (``url=``, ``timeout=``) winning."""
        return cls(config=ShipperConfig.load(spool=False, **overrides))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LokiReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def limits(self) -> QueryLimits:
        """Loki's read limits (``GET /config``, read once; Loki's defaults if hidden)."""
        if self._limits is None:
            self._limits = self.client.query_limits()
        return self._limits

    # ------------------------------------------------------------------------- events

    def events(self, *, service: str | Sequence[str] = (), level: str | Sequence[str] = (),
               actor: str | Sequence[str] = (), type: str | None = None,
               actor_id: str | None = None, logger: str | None = None,
               search: str | None = None, since: Since | None = None,
               start: TimeLike | None = None, end: TimeLike | None = None,
               order: Order = "desc", limit: int | None = None) -> Iterator[Record]:
        """The events that match every filter given, newest first (``order="asc"``: oldest
        first), ``limit`` at most (None: all of them), paged transparently."""
        filters = Filters.create(services=_many(service), levels=_many(level),
                                 actors=_many(actor), type=type, actor_id=actor_id,
                                 logger=logger, search=search)
        return self.read(log_query(filters), self.span(since, start, end), order=order,
                         limit=limit)

    def read(self, logql: str, span: TimeRange, *, order: Order = "desc",
             limit: int | None = None) -> Iterator[Record]:
        """The entries of a log query in ``span`` (a :class:`TimeRange`): each once."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be 1 or more, got {limit}")
        page = None if limit is None else min(limit + 1, self.limits.max_entries_per_query)
        clamped = self.clamp(span)
        if clamped is None:
            return
        records = iter_records(self.client, logql, clamped.start_ns, clamped.end_ns,
                               direction="forward" if order == "asc" else "backward",
                               limits=self.limits, page_size=page)
        for n, record in enumerate(records):
            if limit is not None and n >= limit:
                return
            yield record

    # -------------------------------------------------------------------------- LogQL

    def query(self, logql: str, *, since: Since | None = None, start: TimeLike | None = None,
              end: TimeLike | None = None, order: Order = "desc", limit: int | None = None,
              step: float | None = None) -> Iterator[Record | Sample]:
        """A LogQL query of one's own over a range: a log query yields :class:`Record`\\ s
        (paged like :meth:`events`), a metric query :class:`Sample`\\ s (the range cut into
        Loki's ``max_query_length`` windows, at one ``step`` in seconds; default: the range
        over 250 points, as Loki picks it)."""
        return self.query_span(logql, self.span(since, start, end), order=order, limit=limit,
                               step=step)

    def query_span(self, logql: str, span: TimeRange, *, order: Order = "desc",
                   limit: int | None = None, step: float | None = None,
                   ) -> Iterator[Record | Sample]:
        """:meth:`query` over a :class:`TimeRange`."""
        _checked(logql)
        try:
            records = self.read(logql, span, order=order, limit=limit)
            first = next(records, None)
        except NotALogQuery:
            yield from self._matrix(logql, span, step)
            return
        if first is not None:
            yield first
            yield from records

    def instant(self, logql: str, *, at: TimeLike | None = None) -> list[Sample]:
        """A metric query at one moment (``at``, default now): Loki's instant query."""
        _checked(logql)
        at_ns = self.span(None, None, at).end_ns if at is not None else None
        return parse_samples(self.client.query(logql, time_ns=at_ns))

    def _matrix(self, logql: str, span: TimeRange, step: float | None) -> Iterator[Sample]:
        seconds = step if step is not None else max(1, span.seconds // _DEFAULT_POINTS)
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"step: must be more than zero seconds, got {step}")
        merged: dict[tuple[tuple[str, str], ...], dict[int, Sample]] = {}
        for lo, hi in self._windows(span, "forward"):
            data = self.client.query_range(logql, lo, hi, step=duration(seconds),
                                           direction="forward")
            for sample in parse_samples(data):
                key = tuple(sorted(sample.metric.items()))
                merged.setdefault(key, {})[sample.timestamp_ns] = sample
        for key in sorted(merged):
            points = merged[key]
            for ts in sorted(points):
                yield points[ts]

    # ---------------------------------------------------------------- labels, series

    def labels(self, name: str | None = None, *, service: str | Sequence[str] = (),
               level: str | Sequence[str] = (), actor: str | Sequence[str] = (),
               type: str | None = None, actor_id: str | None = None,
               logger: str | None = None, search: str | None = None,
               since: Since | None = None, start: TimeLike | None = None,
               end: TimeLike | None = None) -> list[str]:
        """Label names (``name`` None) or the values of label ``name``, sorted, of the
        streams the filters select in the range."""
        filters = Filters.create(services=_many(service), levels=_many(level),
                                 actors=_many(actor), type=type, actor_id=actor_id,
                                 logger=logger, search=search)
        return self.label_list(name, filters, self.span(since, start, end))

    def label_list(self, name: str | None, filters: Filters, span: TimeRange) -> list[str]:
        """:meth:`labels` with :class:`Filters` and a :class:`TimeRange`."""
        if name is not None:
            label_name(name)
        if _has_pipeline(filters):
            # the label APIs take a stream selector only: count what matches instead
            found = self.series_list(filters, span, count=True)
            if name is None:
                return sorted({k for s in found for k in s.labels})
            return sorted({s.labels[name] for s in found if s.labels.get(name)})
        selector = stream_selector(filters)
        values: set[str] = set()
        for lo, hi in self._windows(span):
            if name is None:
                values.update(self.client.labels(lo, hi, query=selector))
            else:
                values.update(self.client.label_values(name, lo, hi, query=selector))
        return sorted(values)

    def series(self, *, service: str | Sequence[str] = (), level: str | Sequence[str] = (),
               actor: str | Sequence[str] = (), type: str | None = None,
               actor_id: str | None = None, logger: str | None = None,
               search: str | None = None, since: Since | None = None,
               start: TimeLike | None = None, end: TimeLike | None = None,
               count: bool = False) -> list[Series]:
        """The streams the filters select in the range, sorted by their labels; with
        ``count=True``, and always when a filter reads more than the stream labels
        (``actor_id``, ``logger``, ``search``), each with its number of matching entries (a
        ``count_over_time`` metric query; streams without one are left out)."""
        filters = Filters.create(services=_many(service), levels=_many(level),
                                 actors=_many(actor), type=type, actor_id=actor_id,
                                 logger=logger, search=search)
        return self.series_list(filters, self.span(since, start, end), count=count)

    def series_list(self, filters: Filters, span: TimeRange, *,
                    count: bool = False) -> list[Series]:
        """:meth:`series` with :class:`Filters` and a :class:`TimeRange`."""
        selector = stream_selector(filters)
        found: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for lo, hi in self._windows(span):
            for labels in self.client.series(selector, lo, hi):
                found.setdefault(tuple(sorted(labels.items())), labels)
        if not (count or _has_pipeline(filters)):
            return [Series(found[k]) for k in sorted(found)]
        names = sorted({k for labels in found.values() for k in labels})
        counts: dict[tuple[str, ...], float] = {}
        for lo, hi in self._windows(span):
            data = self.client.query(count_by(names, filters, (hi - lo) / NS), time_ns=hi)
            for sample in parse_samples(data):
                key = tuple(sample.metric.get(n, "") for n in names)
                counts[key] = counts.get(key, 0.0) + sample.value
        out = []
        for stream in sorted(found):
            labels = found[stream]
            n = int(counts.get(tuple(labels.get(name, "") for name in names), 0))
            if n or not _has_pipeline(filters):
                out.append(Series(labels, n))
        return out

    # ------------------------------------------------------------------------ helpers

    def span(self, since: Since | None = None, start: TimeLike | None = None,
             end: TimeLike | None = None) -> TimeRange:
        """The range these arguments mean (see the class); the last hour without any."""
        return time_range(since, start, end)

    def clamp(self, span: TimeRange) -> TimeRange | None:
        """``span`` from the oldest time Loki can hold on (its first schema period, and never
        before 1970: Loki refuses those), so ``since="100y"`` costs no years of empty
        windows; None when nothing of it is left."""
        start = max(span.start_ns, self.limits.oldest_ns, 0)
        return TimeRange(start, span.end_ns) if start < span.end_ns else None

    def _windows(self, span: TimeRange,
                 direction: Literal["forward", "backward"] = "backward",
                 ) -> list[tuple[int, int]]:
        clamped = self.clamp(span)
        if clamped is None:
            return []
        return windows(clamped.start_ns, clamped.end_ns, self.limits.max_query_length_s,
                       direction)


def _many(value: str | Sequence[str]) -> Sequence[str]:
    return (value,) if isinstance(value, str) else value


def _has_pipeline(filters: Filters) -> bool:
    return bool(filters.actor_id or filters.logger or filters.search)

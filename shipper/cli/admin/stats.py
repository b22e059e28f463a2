"""``shipper stats``: counts by level, actor and type, the error rate and the top types and
actor ids for a range, with the Overview dashboard's own expressions.

:data:`STATS` holds the metric templates; ``tests/test_admin_stats.py`` reads
``grafana/dashboards/overview.json`` and holds each one equal to its panel's expression, so the
command and the dashboard always count the same way. A range longer than Loki's
``max_query_length`` is counted window by window and added up (top-k is then taken from the
sums, which is what ``topk`` over the whole range would give).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shipper._units import NS, format_time
from shipper.cli.admin import common
from shipper.cli.admin.output import render_table, write_rows
from shipper.cli.formats import add_format_arg, resolve_format
from shipper.cli.help import Subparsers
from shipper.event import Level
from shipper.loki.client import LokiClient, LokiError, QueryLimits
from shipper.loki.logql import Filters, metric_query
from shipper.loki.reader import windows
from shipper.loki.timerange import TimeRange

__all__ = ["ERROR_LEVELS", "STATS", "Stat", "add_parser", "collect", "count_by_service",
           "error_rate_expression", "stat_expression"]

ERROR_LEVELS = (Level.ERROR, Level.CRITICAL)


@dataclass(frozen=True)
class Stat:
    """One count: a ``sum by`` over ``count_over_time`` (``{logs}`` and ``{range}`` are filled
    by :func:`~shipper.loki.logql.metric_query`), optionally the top ``topk`` of it."""

    name: str
    title: str
    group_by: tuple[str, ...]
    template: str
    topk: int | None = None
    #: pipeline stages after the filters' own (e.g. ``| actor_id!=""``)
    extra_stages: str = ""
    #: count only these levels (the error rate's numerator)
    levels: tuple[Level, ...] = ()


def _sum_by(*labels: str) -> str:
    by = f" by ({', '.join(labels)})" if labels else ""
    return f"sum{by} (count_over_time({{logs}} [{{range}}]))"


STATS: dict[str, Stat] = {s.name: s for s in (
    Stat("total", "Events", (), _sum_by()),
    Stat("by_level", "Events by level", ("level",), _sum_by("level")),
    Stat("by_actor", "Events by actor", ("actor",), _sum_by("actor")),
    Stat("by_type", "Events by type", ("type",), _sum_by("type")),
    Stat("top_types", "Top types", ("type",), _sum_by("type"), topk=10),
    Stat("top_actors", "Top actors", ("actor", "actor_id"), _sum_by("actor", "actor_id"),
         topk=10, extra_stages='| actor_id!=""'),
    Stat("events_by_service", "Events per service", ("service_name",), _sum_by("service_name")),
    Stat("errors_by_service", "ERROR and CRITICAL events per service", ("service_name",),
         _sum_by("service_name"), levels=ERROR_LEVELS),
)}


def _filters_for(stat: Stat, filters: Filters) -> Filters:
    return filters.replace(levels=stat.levels) if stat.levels else filters


def stat_expression(stat: Stat, filters: Filters, seconds: float) -> str:
    """The exact expression one window runs (with ``topk`` when the stat has one)."""
    inner = metric_query(stat.template, _filters_for(stat, filters), seconds,
                         extra_stages=stat.extra_stages)
    return f"topk({stat.topk}, {inner})" if stat.topk else inner


def error_rate_expression(filters: Filters, seconds: float) -> str:
    """ERROR and CRITICAL events over all events, per service: the Overview's error rate."""
    return (f"{stat_expression(STATS['errors_by_service'], filters, seconds)} / "
            f"{stat_expression(STATS['events_by_service'], filters, seconds)}")


Counts = dict[tuple[str, ...], float]


def _run(client: LokiClient, stat: Stat, filters: Filters, span: TimeRange,
         limits: QueryLimits, *, use_topk: bool = True) -> Counts:
    parts = windows(span.start_ns, span.end_ns, limits.max_query_length_s)
    single = use_topk and len(parts) == 1
    totals: dict[tuple[str, ...], float] = {}
    for start, end in parts:
        if single:
            expr = stat_expression(stat, filters, (end - start) / NS)
        else:
            expr = metric_query(stat.template, _filters_for(stat, filters), (end - start) / NS,
                                extra_stages=stat.extra_stages)
        data = client.query(expr, time_ns=end)
        if data.get("resultType") != "vector":
            raise LokiError(f"expected a vector, Loki answered a {data.get('resultType')} result")
        for sample in data.get("result", []):
            metric = sample.get("metric", {})
            key = tuple(str(metric.get(label, "")) for label in stat.group_by)
            totals[key] = totals.get(key, 0.0) + float(sample["value"][1])
    counts: Counts = {k: float(v) for k, v in totals.items()}
    if stat.topk and not single:
        counts = dict(sorted(counts.items(), key=lambda kv: -kv[1])[: stat.topk])
    return counts


def count_by_service(client: LokiClient, filters: Filters, span: TimeRange, *,
                     keep_audit: bool = False,
                     limits: QueryLimits | None = None) -> dict[str, int]:
    """How many entries match ``filters`` in ``span``, per service that has any, most first
    (``sum by (service_name) (count_over_time(...))``, window by window)."""
    limits = limits or client.query_limits()
    totals: dict[str, float] = {}
    for start, end in windows(span.start_ns, span.end_ns, limits.max_query_length_s):
        expr = metric_query(STATS["events_by_service"].template, filters, (end - start) / NS,
                            keep_audit=keep_audit)
        for sample in client.query(expr, time_ns=end).get("result", []):
            service = str(sample.get("metric", {}).get("service_name", ""))
            totals[service] = totals.get(service, 0.0) + float(sample["value"][1])
    return {k: int(v) for k, v in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])) if v}


def collect(client: LokiClient, filters: Filters, span: TimeRange,
            limits: QueryLimits | None = None) -> dict[str, Any]:
    """Every stat for the range, as plain data (what ``--format json`` prints)."""
    limits = limits or client.query_limits()
    run = {name: _run(client, stat, filters, span, limits) for name, stat in STATS.items()
           if name not in ("by_type",)}
    run["by_type"] = _run(client, STATS["by_type"], filters, span, limits, use_topk=False)
    total = int(sum(run["total"].values()))
    by_level = {k[0]: int(v) for k, v in run["by_level"].items()}
    errors = sum(by_level.get(lvl.value, 0) for lvl in ERROR_LEVELS)
    events = {k[0]: v for k, v in run["events_by_service"].items()}
    errs = {k[0]: v for k, v in run["errors_by_service"].items()}
    return {
        "range": {"start": format_time(span.start_ns), "end": format_time(span.end_ns)},
        "filters": filters.describe(),
        "total": total,
        "by_level": _ordered(by_level, [lvl.value for lvl in Level]),
        "by_actor": _sorted({k[0]: int(v) for k, v in run["by_actor"].items()}),
        "by_type": _sorted({k[0]: int(v) for k, v in run["by_type"].items()}),
        "errors": errors,
        "error_rate": errors / total if total else 0.0,
        "error_rate_by_service": {svc: errs.get(svc, 0.0) / n for svc, n in sorted(events.items())
                                  if n},
        "top_types": [{"type": k[0], "count": int(v)} for k, v in _top(run["top_types"])],
        "top_actors": [{"actor": k[0], "actor_id": k[1], "count": int(v)}
                       for k, v in _top(run["top_actors"])],
    }


def _top(counts: Counts) -> list[tuple[tuple[str, ...], float]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _ordered(counts: Mapping[str, int], order: Sequence[str]) -> dict[str, int]:
    known = {k: counts[k] for k in order if k in counts}
    return {**known, **{k: v for k, v in counts.items() if k not in known}}


def add_parser(sub: Subparsers) -> None:
    stats = common.new_parser(
        sub, "stats", help="counts by level, actor and type, the error rate, top types",
        description="Count the events of a range: in all, by level, by actor and by type, "
        "the error rate (ERROR and CRITICAL over all events, also per service), the 10 most "
        "frequent types and actor ids. These are the Overview dashboard's expressions, so the "
        "numbers are the ones it shows for the same range. Filters narrow what is counted.",
        example_lines=(
            "shipper stats --since 24h",
            "shipper stats --service shop --since 7d --json",
            "shipper stats --start 2026-01-01 --end 2026-04-01 --actor user",
        ))
    common.add_filter_args(stats)
    common.add_range_args(stats)
    add_format_arg(stats, ("auto", "table", "json"))
    common.add_connection_args(stats)
    stats.set_defaults(handler=common.run("stats", _stats))


def _stats(args: argparse.Namespace) -> int:
    filters = common.filters_from(args)
    span = common.range_from(args)
    fmt = resolve_format(args)
    client = common.loki_client(args)
    try:
        result = collect(client, filters, span)
    finally:
        client.close()
    if fmt == "json":
        write_rows([result], "jsonl", sys.stdout, ())
        return common.EXIT_OK
    out = sys.stdout
    out.write(f"{result['total']} events, {span.describe()}; error rate "
              f"{result['error_rate']:.2%} ({result['errors']} ERROR or CRITICAL)\n")
    for title, data, key in (("by level", result["by_level"], "level"),
                             ("by actor", result["by_actor"], "actor"),
                             ("by type", result["by_type"], "type")):
        rows = [{key: k, "count": v, "share": f"{v / result['total']:.1%}"} for k, v in
                data.items()] if result["total"] else []
        if rows:
            render_table(rows, (key, "count", "share"), out, title=title)
    if result["error_rate_by_service"]:
        render_table([{"service": k, "error rate": f"{v:.2%}"} for k, v in
                      result["error_rate_by_service"].items()], ("service", "error rate"), out,
                     title="error rate by service")
    if result["top_actors"]:
        render_table(result["top_actors"], ("actor", "actor_id", "count"), out,
                     title="top actor ids")
    return common.EXIT_OK

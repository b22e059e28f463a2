"""``shipper query`` (filtered or LogQL reads, paginated; metric and instant queries) and
``shipper tail`` (follow new events), both one line per event on a terminal."""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from shipper._units import NS, format_time
from shipper.cli.admin import common
from shipper.cli.admin.output import event_line, json_default, terminal_width, write_rows
from shipper.cli.args import positive_duration_arg, positive_int_arg
from shipper.cli.formats import EVENTS_PIPED, Format, add_format_arg, resolve_format
from shipper.cli.help import Subparsers
from shipper.loki.client import LokiClient, LokiError
from shipper.loki.logql import Filters, log_query
from shipper.loki.read_api import LokiReader, Sample
from shipper.loki.reader import Record, iter_records, parse_streams
from shipper.loki.timerange import TimeRange

__all__ = ["COLUMNS", "EVENT_FIELDS", "add_parser", "follow", "read_page", "sample_row"]

#: what a query prints on a terminal (JSON carries every field)
COLUMNS = ("time", "level", "actor", "type", "actor_id", "message", "metadata")
MAX_LIMIT = 5000
#: every field of an event, in the order JSON and CSV carry them
EVENT_FIELDS = ("time", "service", "env", "level", "actor", "type", "actor_id", "trace_id",
                "logger", "message", "metadata", "exception")
_FILTER_FLAGS = ("service", "level", "actor", "type", "actor_id", "logger", "search")


def columns_for(filters: Filters) -> tuple[str, ...]:
    """The query columns, with the service after the time unless one service is asked for."""
    if len(filters.services) == 1:
        return COLUMNS
    return ("time", "service", *COLUMNS[1:])


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def add_parser(sub: Subparsers) -> None:
    query = common.new_parser(
        sub, "query", help="read events: filters, a time range, pages, a table or JSON",
        description="Print the events that match the filters in a time range, newest first "
        "(--order asc for oldest first), --limit per page. On a terminal each event is one "
        "line: time, level, actor, type, actor id, message, and the metadata shortened to "
        "fit (--wide: the full table); piped, JSON lines with every field (service, env, "
        "trace_id, logger, exception too). No LogQL to type: the filters are turned into an "
        "escaped query, which --explain prints without running it.\n\n"
        "--logql runs a query of one's own instead, with the same connection, range, pages "
        "and formats: a log query prints events, a metric query its samples (one row per "
        "series and step; --instant: one value per series at --end or now). Exit 1 when "
        "nothing matches; exit 2 when Loki cannot parse --logql (its message is shown).",
        example_lines=(
            "shipper query --since 1h --level error --level critical",
            "shipper query --service shop --type login --actor-id user_42 --since 7d",
            "shipper query --logger shop.payments --search 'card declined' --limit 500",
            "shipper query --start 2026-01-01 --end 2026-01-02 --order asc --page 2",
            "shipper query --service shop --level error --explain",
            "shipper query --logql '{service_name=\"shop\"} |= \"timeout\"' --since 1h",
            "shipper query --logql 'sum by (level) (count_over_time({service_name=\"shop\"}"
            " [5m]))' --since 6h",
            "shipper query --instant --logql 'sum by (type) (count_over_time({level=\"ERROR\"}"
            " [1h]))'",
            "shipper query --since 1h | jq -r .message",
            "shipper query --since 1h --format json > last-hour.json",
        ))
    common.add_filter_args(query)
    common.add_range_args(query)
    own = query.add_argument_group("a query of one's own (instead of the filters)")
    own.add_argument("--logql", metavar="LOGQL",
                     help="run this LogQL (a log or metric query) over the range")
    own.add_argument("--instant", action="store_true",
                     help="with --logql: an instant metric query at --end (default: now)")
    own.add_argument("--step", type=positive_duration_arg, metavar="SPAN",
                     help="with a metric --logql: the step between samples (default: the "
                     "range over 250 points, as Loki picks it)")
    query.add_argument("--explain", action="store_true",
                       help="print the LogQL the command would run, and do not run it")
    query.add_argument("--limit", type=_limit, default=100,
                       help=f"events per page, 1 to {MAX_LIMIT} (default 100)")
    query.add_argument("--page", type=positive_int_arg, default=1, help="which page (default 1)")
    query.add_argument("--order", choices=("desc", "asc"), default="desc",
                       help="desc: newest first (default); asc: oldest first")
    query.add_argument("--wide", action="store_true",
                       help="on a terminal, the full table (metadata and long messages wrap "
                       "inside their cells) instead of one line per event")
    add_format_arg(query, piped=EVENTS_PIPED)
    common.add_connection_args(query)
    query.set_defaults(handler=common.run("query", _query))

    tail = common.new_parser(
        sub, "tail", help="follow new events as they arrive (auto-refresh)",
        description="Print the last --lines events that match, then every new one as it "
        "arrives, until Ctrl-C or SIGTERM (exit 0). Loki is polled every --interval; events "
        "that arrive up to --delay late (batching, a spool replay) are still shown, once.",
        example_lines=(
            "shipper tail --level error --level critical",
            "shipper tail --service shop --actor admin --lines 50",
            "shipper tail --search timeout --format jsonl | tee errors.jsonl",
        ))
    common.add_filter_args(tail)
    tail.add_argument("--lines", type=int, default=10, metavar="N",
                      help="events of the last hour to show first (default 10; 0: none)")
    tail.add_argument("--interval", type=positive_duration_arg, default=2.0, metavar="SPAN",
                      help="how often to ask Loki (default 2s)")
    tail.add_argument("--delay", type=positive_duration_arg, default=10.0, metavar="SPAN",
                      help="how late an event may arrive and still be shown (default 10s)")
    tail.add_argument("--wide", action="store_true",
                      help="on a terminal, every line whole (the metadata is not shortened "
                      "to the width)")
    add_format_arg(tail, ("auto", "table", "jsonl"), piped=EVENTS_PIPED,
                   auto_help="one line per event on a terminal, JSON lines when piped")
    common.add_connection_args(tail)
    tail.set_defaults(handler=common.run("tail", _tail))


# ------------------------------------------------------------------------------ query


def read_page(reader: LokiReader, logql: str, span: TimeRange, *, limit: int, page: int = 1,
              order: str = "desc", step: float | None = None,
              ) -> tuple[list[Record] | list[Sample], bool]:
    """Page ``page`` of ``limit`` events of a log query, and whether there are more after it;
    or every sample of a metric query (and False)."""
    skip = (page - 1) * limit
    results = reader.query_span(logql, span, order="asc" if order == "asc" else "desc",
                                limit=skip + limit + 1, step=step)
    first = next(results, None)
    if isinstance(first, Sample):
        return [first, *(r for r in results if isinstance(r, Sample))], False
    window = [r for r in itertools.islice(itertools.chain([first] if first else [], results),
                                          skip, skip + limit + 1) if isinstance(r, Record)]
    return window[:limit], len(window) > limit


def sample_row(sample: Sample) -> dict[str, Any]:
    """A metric sample as a row: its series' labels, the time and the value."""
    return {"metric": dict(sample.metric), "time": format_time(sample.timestamp_ns),
            "value": sample.value}


def _check_own_query(args: argparse.Namespace) -> None:
    given = [f"--{n.replace('_', '-')}" for n in _FILTER_FLAGS if getattr(args, n)]
    if args.logql is None:
        for flag, on in (("--instant", args.instant), ("--step", args.step is not None)):
            if on:
                raise common.CommandError(f"{flag} goes with --logql", common.EXIT_USAGE)
        return
    if given:
        raise common.CommandError(f"--logql replaces the filters: drop {', '.join(given)} "
                                  "(or write them into the LogQL)", common.EXIT_USAGE)
    if args.instant and (args.since is not None or args.start is not None):
        raise common.CommandError("--instant runs at one moment, --end (default now): "
                                  "--since and --start do not apply", common.EXIT_USAGE)


def _query(args: argparse.Namespace) -> int:
    _check_own_query(args)
    filters = common.filters_from(args)
    logql = args.logql if args.logql is not None else log_query(filters)
    if args.explain:
        print(logql)
        return common.EXIT_OK
    fmt = resolve_format(args)
    reader = LokiReader(client=common.loki_client(args))
    try:
        if args.instant:
            at = args.end
            return _print_samples(reader.instant(logql, at=at), fmt, "at " + (
                format_time(at) if at is not None else "now"))
        span = common.range_from(args)
        found, more = read_page(reader, logql, span, limit=args.limit, page=args.page,
                                order=args.order, step=args.step)
    except LokiError as exc:
        if args.logql is not None and exc.kind == "parse_error":
            raise common.CommandError(str(exc), common.EXIT_USAGE) from exc
        raise
    finally:
        reader.close()
    if found and isinstance(found[0], Sample):
        return _print_samples([s for s in found if isinstance(s, Sample)], fmt,
                              span.describe())
    records = [r for r in found if isinstance(r, Record)]
    rows = [r.fields() for r in records]
    if fmt == "table" and not args.wide:
        rows = [{**row, "time": format_time(r.timestamp_ns, digits=3)}
                for r, row in zip(records, rows, strict=True)]
        width = terminal_width(sys.stdout)
        several = len(filters.services) != 1
        widths = {n: max((len(str(r.get(n) or "")) for r in rows), default=0)
                  for n in ("service", "level", "actor", "type")}
        for row in rows:
            sys.stdout.write(event_line(row, width, service=several, widths=widths) + "\n")
    else:
        write_rows(rows, fmt, sys.stdout, columns_for(filters) if fmt == "table" else
                   EVENT_FIELDS)
    if not rows:
        print(f"shipper query: nothing matched {span.describe()}", file=sys.stderr)
        return common.EXIT_FAILED
    if fmt == "table":
        first_n = (args.page - 1) * args.limit + 1
        which = "newest" if args.order == "desc" else "oldest"
        note = f"events {first_n}-{first_n + len(rows) - 1} ({which} first)"
        if more:
            note += f"; more: --page {args.page + 1}"
        print(note, file=sys.stderr)
    return common.EXIT_OK


def _print_samples(samples: list[Sample], fmt: Format, where: str) -> int:
    rows = [sample_row(s) for s in samples]
    if fmt == "table":
        names = sorted({k for s in samples for k in s.metric})
        table = [{**dict(s.metric), "time": format_time(s.timestamp_ns),
                  "value": f"{s.value:g}"} for s in samples]
        write_rows(table, "table", sys.stdout, (*names, "time", "value"))
    else:
        write_rows(rows, fmt, sys.stdout, ("metric", "time", "value"))
    if not rows:
        print(f"shipper query: no samples {where}", file=sys.stderr)
        return common.EXIT_FAILED
    return common.EXIT_OK


# ------------------------------------------------------------------------------- tail


def follow(client: LokiClient, filters: Filters, emit: Callable[[Record], None], *,
           lines: int = 10, interval: float = 2.0, delay: float = 10.0,
           stop: threading.Event | None = None,
           clock: Callable[[], int] = time.time_ns) -> None:
    """Call ``emit`` for the last ``lines`` events of the last hour, oldest first, then for
    every new event, once each, until ``stop`` is set.

    Each poll reads ``[previous poll - delay, now)``: an event that reaches Loki up to
    ``delay`` after its own timestamp (batching, a spool replay) is still shown. The events
    already there when following starts are not shown again; events already shown are
    remembered while they are inside the window.
    """
    stop = stop or threading.Event()
    query = log_query(filters)
    limits = client.query_limits()
    delay_ns = int(delay * NS)
    shown: dict[tuple[Any, ...], int] = {}
    now = clock()
    # what is there now is not new; then the last lines (an event that arrives in between
    # is either among them or shown by the first poll)
    for record in iter_records(client, query, now - delay_ns, now, limits=limits):
        shown[record.key] = record.timestamp_ns
    if lines > 0:
        data = client.query_range(query, now - 3600 * NS, now, limit=lines,
                                  direction="backward")
        for record in parse_streams(data)[-lines:]:
            shown[record.key] = record.timestamp_ns
            emit(record)
    since = now
    while not stop.wait(interval):
        now = clock()
        for record in iter_records(client, query, since - delay_ns, now, limits=limits):
            if record.key not in shown:
                shown[record.key] = record.timestamp_ns
                emit(record)
        since = now
        for key in [k for k, ts in shown.items() if ts < since - delay_ns]:
            del shown[key]


def _tail(args: argparse.Namespace) -> int:
    filters = common.filters_from(args)
    fmt = resolve_format(args)
    out: IO[str] = sys.stdout
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = [signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)]

    def emit(record: Record) -> None:
        if fmt == "jsonl":
            out.write(json.dumps(record.fields(), ensure_ascii=False, default=json_default)
                      + "\n")
        else:
            width = None if args.wide else terminal_width(out)
            row = {**record.fields(), "time": format_time(record.timestamp_ns, digits=3)}
            out.write(event_line(row, width, service=True) + "\n")
        out.flush()

    client = common.loki_client(args)
    try:
        follow(client, filters, emit, lines=max(args.lines, 0), interval=args.interval,
               delay=args.delay, stop=stop)
    finally:
        client.close()
        for sig, handler in zip((signal.SIGINT, signal.SIGTERM), previous, strict=True):
            signal.signal(sig, handler)
    return common.EXIT_OK


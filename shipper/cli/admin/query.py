"""``shipper query`` (filtered, paginated reads) and ``shipper tail`` (follow new events)."""

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

from shipper._units import NS
from shipper.cli.admin import common
from shipper.cli.admin.output import json_default, write_rows
from shipper.cli.admin.timerange import TimeRange
from shipper.cli.args import positive_duration_arg
from shipper.cli.formats import EVENTS_PIPED, add_format_arg, resolve_format
from shipper.cli.help import Subparsers
from shipper.loki.client import LokiClient, QueryLimits
from shipper.loki.logql import Filters, log_query
from shipper.loki.reader import Record, iter_records, parse_streams

__all__ = ["COLUMNS", "add_parser", "follow", "read_page"]

#: what a query prints on a terminal (JSON carries every field)
COLUMNS = ("time", "level", "actor", "type", "actor_id", "message", "metadata")
MAX_LIMIT = 5000


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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_parser(sub: Subparsers) -> None:
    query = common.new_parser(
        sub, "query", help="read events: filters, a time range, pages, a table or JSON",
        description="Print the events that match the filters in a time range, newest first "
        "(--order asc for oldest first), --limit per page. Each row: time, level, actor, type, "
        "actor_id, message and metadata (JSON output has every field: service, env, trace_id, "
        "logger, exception too). No LogQL to type: the filters are turned into an escaped "
        "query. Exit 1 when nothing matches.",
        example_lines=(
            "shipper query --since 1h --level error --level critical",
            "shipper query --service shop --type login --actor-id user_42 --since 7d",
            "shipper query --logger shop.payments --search 'card declined' --limit 500",
            "shipper query --start 2026-01-01 --end 2026-01-02 --order asc --page 2",
            "shipper query --since 1h | jq -r .message",
            "shipper query --since 1h --format json > last-hour.json",
        ))
    common.add_filter_args(query)
    common.add_range_args(query)
    query.add_argument("--limit", type=_limit, default=100,
                       help=f"events per page, 1 to {MAX_LIMIT} (default 100)")
    query.add_argument("--page", type=_positive, default=1, help="which page (default 1)")
    query.add_argument("--order", choices=("desc", "asc"), default="desc",
                       help="desc: newest first (default); asc: oldest first")
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
    add_format_arg(tail, ("auto", "table", "jsonl"), piped=EVENTS_PIPED,
                   auto_help="one line per event on a terminal, JSON lines when piped")
    common.add_connection_args(tail)
    tail.set_defaults(handler=common.run("tail", _tail))


# ------------------------------------------------------------------------------ query


def read_page(client: LokiClient, filters: Filters, span: TimeRange, *, limit: int,
              page: int = 1, order: str = "desc",
              limits: QueryLimits | None = None) -> tuple[list[Record], bool]:
    """Page ``page`` of ``limit`` events, and whether there are more after it."""
    skip = (page - 1) * limit
    limits = limits or client.query_limits()
    records = iter_records(client, log_query(filters), span.start_ns, span.end_ns,
                           direction="forward" if order == "asc" else "backward",
                           limits=limits, page_size=min(skip + limit + 1, MAX_LIMIT))
    window = list(itertools.islice(records, skip, skip + limit + 1))
    return window[:limit], len(window) > limit


def _query(args: argparse.Namespace) -> int:
    filters = common.filters_from(args)
    span = common.range_from(args)
    fmt = resolve_format(args)
    client = common.loki_client(args)
    try:
        records, more = read_page(client, filters, span, limit=args.limit, page=args.page,
                                  order=args.order)
    finally:
        client.close()
    rows = [r.fields() for r in records]
    write_rows(rows, fmt, sys.stdout, columns_for(filters) if fmt == "table" else
               ("time", "service", "env", "level", "actor", "type", "actor_id", "trace_id",
                "logger", "message", "metadata", "exception"))
    if not rows:
        print(f"shipper query: nothing matched {span.describe()}", file=sys.stderr)
        return common.EXIT_FAILED
    if fmt == "table":
        first = (args.page - 1) * args.limit + 1
        which = "newest" if args.order == "desc" else "oldest"
        note = f"events {first}-{first + len(rows) - 1} ({which} first)"
        if more:
            note += f"; more: --page {args.page + 1}"
        print(note, file=sys.stderr)
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


def _tail_line(record: Record) -> str:
    f = record.fields()
    parts = [f["time"], f["service"] or "", f["level"] or "", f["actor"] or "", f["type"] or ""]
    if f["actor_id"]:
        parts.append(f"actor_id={f['actor_id']}")
    message = " ".join(str(f["message"]).split())
    parts.append(message)
    if f["metadata"]:
        parts.append(json.dumps(f["metadata"], ensure_ascii=False, default=json_default))
    return "  ".join(p for p in parts if p)


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
            out.write(_tail_line(record) + "\n")
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


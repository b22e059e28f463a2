"""``shipper export``: every matching event to CSV, a JSON array or JSON lines.

The range is read in windows under Loki's ``max_query_length`` and in pages under its per-query
line limit, with no duplicates and no gaps at the edges (see :mod:`shipper.loki.reader`).
The file is written to ``FILE.partial`` and renamed when complete, so an interrupted export
never leaves a file that looks whole.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shipper.cli.admin import common
from shipper.cli.admin.output import progress, write_rows
from shipper.cli.formats import EVENTS_PIPED, Format, add_format_arg, is_terminal
from shipper.cli.help import Subparsers
from shipper.loki.client import LokiClient, QueryLimits
from shipper.loki.logql import Filters, log_query
from shipper.loki.reader import Record, iter_records
from shipper.loki.timerange import TimeRange

__all__ = ["EXPORT_COLUMNS", "add_parser", "export_events"]

EXPORT_COLUMNS = ("time", "service", "env", "level", "actor", "type", "actor_id", "trace_id",
                  "logger", "message", "metadata", "exception")
_SUFFIX_FORMATS: dict[str, Format] = {".csv": "csv", ".json": "json", ".jsonl": "jsonl",
                                      ".ndjson": "jsonl"}


def add_parser(sub: Subparsers) -> None:
    export = common.new_parser(
        sub, "export", help="write every matching event to CSV, JSON or JSON lines",
        description="Write every event that matches the filters in the range, oldest first "
        "(--order desc for newest first), with every field: time, service, env, level, actor, "
        "type, actor_id, trace_id, logger, message, metadata (JSON; a JSON text column in CSV) "
        "and exception. In CSV, a cell a spreadsheet would run as a formula (it starts with =, "
        "+, -, @, a tab or a carriage return, or whitespace before one of the first four) gets "
        "a single quote in front, which shipper import takes off again. Any range: it is read "
        "in windows under Loki's max_query_length and in "
        "pages under its per-query line limit, each event exactly once. A progress bar shows "
        "on a terminal. Exit 1 when nothing matches (the file is then not written).",
        example_lines=(
            "shipper export --since 7d --level error --output errors.csv",
            "shipper export --service shop --start 2026-01-01 --end 2026-03-01 -o q1.jsonl",
            "shipper export --actor admin --since 90d --format json > admin-actions.json",
        ))
    common.add_filter_args(export)
    common.add_range_args(export)
    export.add_argument("-o", "--output", metavar="FILE",
                        help="write here (default: stdout); the format follows the suffix "
                        "(.csv, .json, .jsonl) unless --format is given")
    add_format_arg(export, ("auto", "csv", "json", "jsonl"), piped=EVENTS_PIPED,
                   auto_help="from the --output suffix, else JSON lines, one event per line; "
                   "json is one array")
    export.add_argument("--order", choices=("asc", "desc"), default="asc",
                        help="asc: oldest first (default); desc: newest first")
    export.add_argument("--page-size", type=int, metavar="N",
                        help="entries per query (default: Loki's max_entries_limit_per_query)")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_connection_args(export)
    export.set_defaults(handler=common.run("export", _export))


def export_events(client: LokiClient, filters: Filters, span: TimeRange, out: IO[str],
                  fmt: Format, *, order: str = "asc", page_size: int | None = None,
                  limits: QueryLimits | None = None, show_progress: bool = True) -> int:
    """Write every matching event to ``out``; returns how many."""
    limits = limits or client.query_limits()
    total = span.end_ns - span.start_ns
    with progress("export", total=100.0, enabled=show_progress) as bar:

        def on_page(cursor: int, _: int) -> None:
            done = cursor - span.start_ns if order == "asc" else span.end_ns - cursor
            bar.update(100.0 * done / total)

        records = iter_records(client, log_query(filters), span.start_ns, span.end_ns,
                               direction="forward" if order == "asc" else "backward",
                               limits=limits, page_size=page_size, on_page=on_page)
        count = write_rows(_rows(records), fmt, out, EXPORT_COLUMNS)
        bar.update(100.0)
    return count


def _rows(records: Iterator[Record]) -> Iterator[dict[str, Any]]:
    for record in records:
        yield record.fields()


def _export(args: argparse.Namespace) -> int:
    filters = common.filters_from(args)
    span = common.range_from(args)
    fmt: Format
    if args.format != "auto":
        fmt = args.format
    elif args.output:
        fmt = _SUFFIX_FORMATS.get(Path(args.output).suffix.lower(), "jsonl")
    else:
        fmt = args.piped_format
    if args.page_size is not None and args.page_size < 1:
        raise common.CommandError("--page-size must be 1 or more", common.EXIT_USAGE)
    client = common.loki_client(args)
    show = not args.no_progress and (args.output is not None or not is_terminal(sys.stdout))
    try:
        if args.output is None:
            count = export_events(client, filters, span, sys.stdout, fmt, order=args.order,
                                  page_size=args.page_size, show_progress=show)
        else:
            target = Path(args.output)
            partial = target.with_name(target.name + ".partial")
            try:
                with partial.open("w", encoding="utf-8", newline="") as out:
                    count = export_events(client, filters, span, out, fmt, order=args.order,
                                          page_size=args.page_size, show_progress=show)
                if count:
                    os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    finally:
        client.close()
    if not count:
        print(f"shipper export: nothing matched {span.describe()}", file=sys.stderr)
        return common.EXIT_FAILED
    where = args.output or "stdout"
    print(f"exported {count} events to {where} ({fmt})", file=sys.stderr)
    return common.EXIT_OK

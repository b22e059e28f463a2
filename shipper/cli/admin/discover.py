"""``shipper labels`` (label names, or one label's values) and ``shipper series`` (the
streams, with a count of each): what exists in a range, as logcli's ``labels`` and ``series``
show it, through :class:`shipper.loki.LokiReader`."""

from __future__ import annotations

import argparse
import json
import sys

from shipper.cli.admin import common
from shipper.cli.admin.output import write_rows
from shipper.cli.args import positive_int_arg
from shipper.cli.formats import Format, add_format_arg, resolve_format
from shipper.cli.help import Subparsers
from shipper.loki.logql import Filters, label_name, stream_selector
from shipper.loki.read_api import LokiReader
from shipper.loki.timerange import TimeRange

__all__ = ["add_parser"]

#: streams printed by default; Loki answers every stream of the range, which can be thousands
DEFAULT_SERIES_LIMIT = 1000


def _label(text: str) -> str:
    try:
        return label_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Subparsers) -> None:
    labels = common.new_parser(
        sub, "labels", help="label names, or the values of one label, in a range",
        description="Without NAME, the names of the labels of the streams in the range; with "
        "NAME, that label's values (service_name: the services, type: the event types, ...). "
        "Filters narrow the streams looked at: the stream labels (--service, --level, --actor, "
        "--type) as a selector; --actor-id, --logger and --search by counting the entries "
        "that match. --explain prints the selector. Exit 1 when nothing is found.",
        example_lines=(
            "shipper labels",
            "shipper labels service_name --since 7d",
            "shipper labels type --service shop --level error --since 24h",
            "shipper labels actor --json",
        ))
    labels.add_argument("name", nargs="?", type=_label, metavar="NAME",
                        help="a label name: list its values")
    common.add_filter_args(labels)
    common.add_range_args(labels, default="1h")
    labels.add_argument("--explain", action="store_true",
                        help="print the stream selector sent to Loki, and do not ask")
    add_format_arg(labels, ("auto", "table", "json"))
    common.add_connection_args(labels)
    labels.set_defaults(handler=common.run("labels", _labels))

    series = common.new_parser(
        sub, "series", help="the streams that match the filters, with a count of each",
        description="The streams (label sets) the filters select in the range, sorted. "
        "--count adds how many entries each holds in the range, by one metric query per "
        "max_query_length window (sum by the streams' labels of count_over_time): Loki "
        "counts, nothing is read. The filters that are not stream labels (--actor-id, "
        "--logger, --search) always count, and keep only streams with a matching entry. "
        "Loki refuses to count more than max_query_series (500) streams in one query: narrow "
        "the filters. Exit 1 when no stream matches.",
        example_lines=(
            "shipper series --service shop --since 24h",
            "shipper series --level error --count --since 7d",
            "shipper series --search timeout --since 1h --json",
        ))
    common.add_filter_args(series)
    common.add_range_args(series, default="1h")
    series.add_argument("--count", action="store_true",
                        help="count each stream's entries in the range (a count_over_time "
                        "query)")
    series.add_argument("--limit", type=positive_int_arg, default=DEFAULT_SERIES_LIMIT, metavar="N",
                        help=f"print at most N streams (default {DEFAULT_SERIES_LIMIT})")
    series.add_argument("--explain", action="store_true",
                        help="print the stream selector sent to Loki, and do not ask")
    add_format_arg(series, ("auto", "table", "json"))
    common.add_connection_args(series)
    series.set_defaults(handler=common.run("series", _series))


def _read(args: argparse.Namespace) -> tuple[Filters, TimeRange, Format, LokiReader] | None:
    """The filters, range, format and a reader for the command; None after --explain."""
    filters = common.filters_from(args)
    if args.explain:
        print(stream_selector(filters))
        return None
    span = common.range_from(args, default="1h")
    return filters, span, resolve_format(args), LokiReader(client=common.loki_client(args))


def _labels(args: argparse.Namespace) -> int:
    prepared = _read(args)
    if prepared is None:
        return common.EXIT_OK
    filters, span, fmt, reader = prepared
    try:
        found = reader.label_list(args.name, filters, span)
    finally:
        reader.close()
    if fmt == "json":
        print(json.dumps(found, ensure_ascii=False))
    else:
        sys.stdout.writelines(f"{value}\n" for value in found)
    if not found:
        what = f"no values of {args.name}" if args.name else "no labels"
        print(f"shipper labels: {what} in {span.describe()}", file=sys.stderr)
        return common.EXIT_FAILED
    return common.EXIT_OK


def _series(args: argparse.Namespace) -> int:
    prepared = _read(args)
    if prepared is None:
        return common.EXIT_OK
    filters, span, fmt, reader = prepared
    try:
        found = reader.series_list(filters, span, count=args.count)
    finally:
        reader.close()
    shown = found[: args.limit]
    counted = args.count or any(s.count for s in found)
    if fmt == "json":
        rows = [{"labels": dict(s.labels), **({"count": s.count} if counted else {})}
                for s in shown]
        write_rows(rows, "json", sys.stdout, ())
    else:
        names = sorted({k for s in shown for k in s.labels})
        table = [{**dict(s.labels), "count": s.count} for s in shown]
        write_rows(table, "table", sys.stdout, (*names, "count") if counted else names)
    if not found:
        print(f"shipper series: no stream matched {span.describe()}", file=sys.stderr)
        return common.EXIT_FAILED
    if len(found) > len(shown):
        print(f"shipper series: {len(found)} streams, {len(shown)} shown: narrow the filters "
              "or raise --limit", file=sys.stderr)
    return common.EXIT_OK

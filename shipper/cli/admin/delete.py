"""``shipper delete``: Loki's deletion API with a count, a confirmation and an audit event.

1. The filters become one log query (:func:`~shipper.loki.logql.log_query` with
   ``keep_audit=True``): it carries ``type!="LOGS_DELETED"``, so no deletion can remove the
   audit events of deletions, whatever the filters and the range. No filter at all means every
   service's events: that takes ``--all-services``, said in so many words.
2. The entries that query matches in the range are counted per service (the same query, as
   ``sum by (service_name) (count_over_time(...))``) and the count and the services are shown;
   deleting asks for confirmation unless ``--yes``. Nothing matched: nothing is requested
   (exit 1).
3. ``POST /loki/api/v1/delete`` with that query and the range in whole seconds.
4. An ADMIN event of type ``LOGS_DELETED`` is logged through a pipeline of its own (who, the
   query, the range, the count, Loki's request id). It goes to the deleted service when one
   ``--service`` is given, so the Security & audit dashboard shows it beside that service.
   That pipeline's type guard is built with ``audit=True``: the only one that writes the
   audit types (any other source's ``LOGS_DELETED`` is shipped as ``APP_LOGS_DELETED``).

Loki processes a request after ``delete_request_cancel_period`` (24h by default); until then
``--cancel ID`` withdraws it (also logged, as ``LOGS_DELETE_CANCELLED``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from typing import Any

from shipper._units import NS, format_time
from shipper.cli.admin import common
from shipper.cli.admin.output import render_table, write_rows
from shipper.cli.admin.stats import count_by_service
from shipper.cli.formats import add_format_arg, is_terminal, resolve_format
from shipper.cli.help import Subparsers
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.event import Actor, Level, LogEvent
from shipper.loki.client import LokiClient, LokiError
from shipper.loki.logql import Filters, log_query, quote
from shipper.loki.timerange import TimeRange
from shipper.typelabel import AUDIT_CANCEL_TYPE, AUDIT_DELETE_TYPE, TypeGuard

__all__ = ["AUDIT_CANCEL_TYPE", "add_parser", "audit_event", "deletion_range", "log_audit"]

#: where audit events go when no single --service names the deleted logs
DEFAULT_AUDIT_SERVICE = "shipper-admin"


def add_parser(sub: Subparsers) -> None:
    delete = common.new_parser(
        sub, "delete", help="delete events by filters and time range (with confirmation)",
        description="Delete the events that match the filters in a time range, through Loki's "
        "deletion API. Shows how many match, in how many services, and asks before deleting "
        "(--yes skips the question; without a terminal --yes is required). Without any "
        "filter every service's events in the range are deleted: that needs --all-services. "
        "The range is required and may not "
        "end in the future; it is rounded to whole seconds (start down, end up, both "
        "included, as Loki deletes). Every deletion is logged as an ADMIN event of type "
        "LOGS_DELETED (who, query, range, count); deletions never remove those events. Loki "
        "carries a request out after its delete_request_cancel_period (24h by default): "
        "until then --cancel ID withdraws it. Exit 1 when nothing matches or Loki refuses.",
        example_lines=(
            "shipper delete --service shop --level debug --since 7d",
            "shipper delete --service shop --actor-id user_42 --start 2026-01-01 "
            "--end 2026-02-01 --yes --admin-id admin_7",
            "shipper delete --all-services --start 2026-01-01 --end 2026-01-02",
            "shipper delete --status",
            "shipper delete --status --format csv > deletions.csv",
            "shipper delete --cancel 8f2c1e7a",
        ))
    common.add_filter_args(delete)
    common.add_range_args(delete, default=None)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--all-services", action="store_true",
                        help="delete without any filter: every service's events in the range "
                        "(refused without it; not with --service)")
    delete.add_argument("--admin-id", metavar="ID",
                        help="who deletes, for the audit event (default: the OS user)")
    actions = delete.add_mutually_exclusive_group()
    actions.add_argument("--status", action="store_true",
                         help="list deletion requests and their state, then exit")
    actions.add_argument("--cancel", metavar="ID", help="cancel deletion request ID, then exit")
    add_format_arg(delete, ("auto", "table", "json", "jsonl", "csv"))
    common.add_connection_args(delete)
    delete.set_defaults(handler=common.run("delete", _delete))


def who(admin_id: str | None) -> str:
    if admin_id:
        return admin_id
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def deletion_range(span: TimeRange, now_ns: int) -> tuple[int, int]:
    """The range as Loki's deletion API takes it: whole Unix seconds, both included; the start
    rounded down, the end up (but never past now: Loki refuses deletes in the future)."""
    start_s = span.start_ns // NS
    end_s = -(-span.end_ns // NS)
    if span.end_ns > now_ns:
        raise common.CommandError(
            f"the range ends in the future ({format_time(span.end_ns)}): Loki refuses deletes in "
            "the future", common.EXIT_USAGE)
    end_s = min(end_s, now_ns // NS)
    if end_s <= start_s:
        raise common.CommandError("the range is shorter than a second: Loki deletes by whole "
                                  "seconds", common.EXIT_USAGE)
    return start_s, end_s


def audit_event(*, event_type: str, service: str, admin: str, message: str,
                metadata: dict[str, Any]) -> LogEvent:
    return LogEvent.create(service=service, level=Level.WARNING, actor=Actor.ADMIN,
                           type=event_type, actor_id=admin, message=message, metadata=metadata,
                           logger="shipper.cli.admin", timestamp_ns=time.time_ns())


def log_audit(config: ShipperConfig, event: LogEvent, timeout: float = 30.0) -> bool:
    """Ship one audit event through a pipeline whose type guard may write the audit types;
    True when Loki has it (or, with a spool, when it is safe on disk for a later replay)."""
    pipeline = Pipeline(config, start_replay=False, health=False,
                        type_guard=TypeGuard(config.type_limit, audit=True))
    try:
        pipeline.submit(event)
        ok = pipeline.flush(timeout)
        stats = pipeline.stats()
    finally:
        pipeline.close(timeout)
    return ok and not stats["refused_total"] and not stats["dropped_total"]


def _audit_service(filters: Filters, config: ShipperConfig) -> str:
    if len(filters.services) == 1:
        return filters.services[0]
    if os.environ.get("SHIPPER_SERVICE"):
        return config.service
    return DEFAULT_AUDIT_SERVICE


def _delete(args: argparse.Namespace) -> int:
    config = common.shipper_config(args)
    client = LokiClient(config.replace(spool=False))
    try:
        if args.status:
            return _status(client, args)
        if args.cancel:
            return _cancel(client, config, args)
        return _request(client, config, args)
    finally:
        client.close()


def _status(client: LokiClient, args: argparse.Namespace) -> int:
    requests = client.delete_requests()
    rows = [{
        "request_id": r.get("request_id"),
        "status": r.get("status"),
        "query": r.get("query"),
        "start": _seconds(r.get("start_time")),
        "end": _seconds(r.get("end_time")),
        "created": _seconds(r.get("created_at")),
    } for r in requests]
    fmt = resolve_format(args)
    columns = ("request_id", "status", "created", "start", "end", "query")
    if fmt != "table":
        write_rows(rows, fmt, sys.stdout, columns)
    elif rows:
        render_table(rows, columns)
    else:
        print("no deletion requests")
    return common.EXIT_OK


def _seconds(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return format_time(round(float(value) * 1000) * 1_000_000)  # Loki keeps milliseconds
    except (TypeError, ValueError):
        return str(value)


def _cancel(client: LokiClient, config: ShipperConfig, args: argparse.Namespace) -> int:
    try:
        client.cancel_delete(args.cancel)
    except LokiError as exc:
        if exc.status == 404:
            raise common.CommandError(f"no deletion request {args.cancel!r} (404): see "
                                      "shipper delete --status") from exc
        raise
    admin = who(args.admin_id)
    event = audit_event(event_type=AUDIT_CANCEL_TYPE, service=_audit_service(Filters(), config),
                        admin=admin, message=f"Deletion request {args.cancel} cancelled by "
                        f"{admin}", metadata={"request_id": args.cancel})
    print(f"cancelled deletion request {args.cancel}")
    if not log_audit(config, event):
        print("shipper delete: the audit event could not be delivered", file=sys.stderr)
        return common.EXIT_FAILED
    return common.EXIT_OK


def _request(client: LokiClient, config: ShipperConfig, args: argparse.Namespace) -> int:
    filters = common.filters_from(args)
    _check_scope(filters, args.all_services)
    span = common.range_from(args, default=None)
    start_s, end_s = deletion_range(span, time.time_ns())
    query = log_query(filters, keep_audit=True)
    # Loki deletes [start_s, end_s], both ends included: count exactly that
    counted = TimeRange(start_s * NS, end_s * NS + 1)
    services = count_by_service(client, filters, counted, keep_audit=True)
    count = sum(services.values())
    where = f"between {format_time(start_s * NS)} and {format_time(end_s * NS)}"
    if count == 0:
        print(f"shipper delete: nothing matches {query} {where}; nothing was requested",
              file=sys.stderr)
        return common.EXIT_FAILED
    print(f"{count} entries match {query} {where}", file=sys.stderr)
    print(f"in {_services_text(services)}", file=sys.stderr)
    if not args.yes:
        if not is_terminal(sys.stdin):
            raise common.CommandError("not deleting without confirmation: run it on a terminal "
                                      "or pass --yes", common.EXIT_USAGE)
        answer = input(f"Delete these {count} entries of {_plural(len(services), 'service')}? "
                       "Type 'yes' to confirm: ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted", file=sys.stderr)
            return common.EXIT_FAILED
    request_id = client.delete(query, start_s, end_s)
    admin = who(args.admin_id)
    metadata = {"query": query, "start": format_time(start_s * NS), "end": format_time(end_s * NS),
                "count": count, "request_id": request_id, "filters": filters.describe(),
                "services": services}
    event = audit_event(event_type=AUDIT_DELETE_TYPE, service=_audit_service(filters, config),
                        admin=admin, message=f"{admin} deleted {count} log entries {where}",
                        metadata=metadata)
    print(f"deletion requested: {request_id or '(Loki gave no id)'}; Loki carries it out after "
          "its delete_request_cancel_period (see shipper delete --status)")
    if not log_audit(config, event):
        print("shipper delete: the deletion was requested but its audit event could not be "
              "delivered", file=sys.stderr)
        return common.EXIT_FAILED
    return common.EXIT_OK


def _check_scope(filters: Filters, all_services: bool) -> None:
    """No filter deletes every service's events: only with ``--all-services``, which may not
    stand beside a ``--service`` that says otherwise."""
    if all_services and filters.services:
        raise common.CommandError("--all-services and --service contradict each other: give "
                                  "one", common.EXIT_USAGE)
    if not all_services and not filters.describe():
        raise common.CommandError(
            "no filter: this would delete every service's events in the range. Name what to "
            "delete (--service, --level, --actor, --type, --actor-id, --logger, --search), or "
            "pass --all-services to delete them all", common.EXIT_USAGE)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _services_text(counts: dict[str, int], most: int = 10) -> str:
    """``2 services: "shop" (6), "blog" (1)``: the names quoted as LogQL writes them, so no
    name can pass for two or move the terminal."""
    shown = ", ".join(f"{quote(name)} ({n})" for name, n in list(counts.items())[:most])
    more = f" and {len(counts) - most} more" if len(counts) > most else ""
    return f"{_plural(len(counts), 'service')}: {shown}{more}"

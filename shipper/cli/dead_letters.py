"""``shipper spool dead-letters list|push``: the entries Loki refused for good, kept in the spool
directory's ``dead-letters`` with Loki's reason (:mod:`shipper.delivery.spool.deadletters`):
listed, and pushed again once Loki's limits have changed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from shipper._units import UnitError, format_seconds, format_size, format_time
from shipper.cli.args import duration_arg
from shipper.cli.formats import add_format_arg, resolve_format
from shipper.cli.help import CONNECTION_HELP, Subparsers, add_command
from shipper.delivery.spool.deadletters import (
    DeadLetter,
    DeadLetterReader,
    dead_letter_dir,
    dead_letter_status,
)
from shipper.redact import hide_url_credentials

__all__ = ["add_parser", "status_line"]

#: how ``--dir`` and ``--service`` are added, and the spool directory they name
AddWhere = Callable[[argparse.ArgumentParser], None]
SpoolDir = Callable[[argparse.Namespace], Path]

_EXIT_OK, _EXIT_FAILED, _EXIT_USAGE = 0, 1, 2


def add_parser(spool_sub: Subparsers, *, where: AddWhere, spool_dir: SpoolDir) -> None:
    """``dead-letters list|push`` under ``shipper spool``."""
    dead = add_command(
        spool_sub, "dead-letters", help="entries Loki refused for good: list them, push them again",
        description="Entries Loki refused with a 400 (too old, too far in the future, line "
        "too long, labels it cannot take, a request it cannot parse) are kept in the spool "
        "directory's dead-letters, with Loki's reason and message, under their own cap "
        "(dead_letter_max_bytes, the oldest dropped first). They are never sent again by "
        "themselves: list them, change Loki's limits, then push them.",
        example_lines=("shipper spool dead-letters list --service checkout",
                       "shipper spool dead-letters push --service checkout"))
    actions = dead.add_subparsers(dest="dead_letters_command", metavar="ACTION", required=True)

    listing = add_command(
        actions, "list", help="the dead letters, counted by Loki's reason",
        description="Count the dead letters by reason and show each one: its reason, the "
        "entry's time, stream and line. Read-only, safe while apps write to the spool.",
        example_lines=("shipper spool dead-letters list --service checkout",
                       "shipper spool dead-letters list --dir /var/lib/shipper/spool "
                       "--reason too_old --json"))
    where(listing)
    listing.add_argument("--reason", action="append", default=[], metavar="REASON",
                         help="only this reason, e.g. too_old, line_too_long (repeat for "
                         "several)")
    listing.add_argument("--limit", type=int, default=None, metavar="N",
                         help="show at most N dead letters (the counts cover all of them)")
    add_format_arg(listing, ("auto", "table", "json"))
    listing.set_defaults(handler=partial(_list, spool_dir))

    push = add_command(
        actions, "push", help="send the dead letters to Loki again",
        description="Push every dead letter to Loki again, oldest first (after changing the "
        "limit that refused them): what Loki stores is removed, what it refuses again stays, "
        f"with the new reason.\n\n{CONNECTION_HELP} Exit codes: 0 all stored, 1 some refused "
        "again or left (Loki unreachable or --timeout), 2 no Loki URL or a bad setting.",
        example_lines=("shipper spool dead-letters push --service checkout",
                       "shipper spool dead-letters push --dir /var/lib/shipper/spool "
                       "--url http://loki:3100"))
    where(push)
    push.add_argument("--url", help="Loki base or push URL (default: LOKI_URL)")
    push.add_argument("--timeout", type=duration_arg, default=600.0, metavar="DURATION",
                      help="give up after this long: 600, 90s, 10m (default 10m)")
    push.set_defaults(handler=partial(_push, spool_dir))


def status_fields(directory: Path) -> dict[str, Any]:
    """What ``shipper spool status --json`` adds: the dead letters, by reason."""
    status = dead_letter_status(dead_letter_dir(directory))
    return {"dead_letters": {"letters": status.letters, "bytes": status.bytes,
                             "by_reason": status.by_reason, "damaged": status.damaged}}


def status_line(directory: Path) -> str | None:
    """The line ``shipper spool status`` adds when the spool holds dead letters."""
    status = dead_letter_status(dead_letter_dir(directory))
    if not status.letters and not status.damaged:
        return None
    reasons = ", ".join(f"{_short(reason, 40)} {n}" for reason, n in status.by_reason.items())
    return (f"dead       {status.letters} dead letters ({reasons or 'unreadable'}): "
            "shipper spool dead-letters list")


def _time(ns: int) -> str:
    try:
        return format_time(ns)
    except UnitError:  # an entry Loki refused may lie outside what RFC 3339 can write
        return f"{ns}ns"


def _labels(letter: DeadLetter) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in letter.entry.labels) + "}"


def _short(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, control characters escaped (a line Loki
    refused may hold anything, terminal escapes included)."""
    text = json.dumps(" ".join(text.split()), ensure_ascii=False)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _list(spool_dir: SpoolDir, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        print("shipper spool dead-letters list: --limit must be 0 or more", file=sys.stderr)
        return _EXIT_USAGE
    fmt = resolve_format(args)
    directory = dead_letter_dir(spool_dir(args))
    wanted = set(args.reason)
    status = dead_letter_status(directory)
    shown: list[DeadLetter] = []
    reader = DeadLetterReader(directory)
    for letter in reader:
        if wanted and letter.reason not in wanted:
            continue
        if args.limit is not None and len(shown) >= args.limit:
            break
        shown.append(letter)
    if fmt == "json":
        print(json.dumps({"directory": status.directory, "letters": status.letters,
                          "bytes": status.bytes, "by_reason": status.by_reason,
                          "damaged": status.damaged,
                          "dead_letters": [letter.as_dict() for letter in shown]},
                         ensure_ascii=False, indent=1))
    elif fmt == "table":
        _table(status.directory, status.letters, status.bytes, status.by_reason,
               status.damaged, status.oldest_age_s, shown)
    return _EXIT_OK


def _table(directory: str, letters: int, size: int, by_reason: dict[str, int], damaged: int,
           oldest_age_s: float | None, shown: list[DeadLetter]) -> None:
    if not letters and not damaged:
        print(f"{directory}: no dead letters")
        return
    age = "" if oldest_age_s is None else f", the oldest refused {format_seconds(oldest_age_s)} ago"
    print(f"{directory}: {letters} dead letters, {format_size(size)}{age}")
    examples: dict[str, str] = {}
    for letter in shown:
        examples.setdefault(letter.reason, letter.message)
    for reason, n in by_reason.items():
        example = examples.get(reason)
        print(f"  {n:>6} {_short(reason, 40)}" + (f": {_short(example, 160)}" if example else ""))
    if damaged:
        print(f"  {damaged:>6} cannot be read (kept as they are)")
    if shown:
        print()
    for letter in shown:
        print(f"{_short(letter.reason, 40):<20} {_time(letter.entry.timestamp_ns):<30} "
              f"{_labels(letter)} {_short(letter.entry.line, 120)}")


def _push(spool_dir: SpoolDir, args: argparse.Namespace) -> int:
    from shipper.config import ConfigError, ShipperConfig
    from shipper.delivery.pipeline import Pipeline

    directory = spool_dir(args)
    try:
        config = ShipperConfig.load(url=args.url, spool_dir=str(directory), spool=True,
                                    service=args.service)
    except ConfigError as exc:
        print(f"shipper spool dead-letters push: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    if not config.url:
        print("shipper spool dead-letters push: no Loki URL: pass --url or set LOKI_URL",
              file=sys.stderr)
        return _EXIT_USAGE
    if not dead_letter_dir(directory).is_dir():
        print(f"{dead_letter_dir(directory)}: no dead letters")
        return _EXIT_OK
    pipeline = Pipeline(config, start_replay=False, health=False)
    try:
        result = pipeline.push_dead_letters(args.timeout)
    finally:
        pipeline.close(0)
    refused = sum(result.refused.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in result.refused.items())
    print(f"pushed {result.letters} dead letters to {hide_url_credentials(config.url)}: "
          f"{result.stored} stored, {refused} refused again"
          + (f" ({reasons}; kept with the new reason)" if refused else "")
          + f", {result.left} left")
    if result.damaged or result.lost:
        print(f"{result.damaged} cannot be read (kept as they are), {result.lost} lost "
              "(not written, or dropped at the cap)", file=sys.stderr)
    if result.left:
        print("shipper spool dead-letters push: Loki did not answer everything; the rest stay "
              "dead letters (run again later)", file=sys.stderr)
    return _EXIT_OK if result.complete and not refused and not result.lost else _EXIT_FAILED

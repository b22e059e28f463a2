"""The output flag of every command that prints results: ``--format`` (with ``--json`` as
``--format json``), and what its default ``auto`` means.

``auto`` is a table (lines for people) on a terminal and machine output when piped. Commands
that list events (``query``, ``tail``, ``export``) all print JSON lines when piped
(:data:`EVENTS_PIPED`): one event per line, written as it is read, so a pipe can start on the
first event; the others print one JSON document.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Literal

__all__ = ["EVENTS_PIPED", "FORMATS", "Format", "add_format_arg", "is_terminal",
           "resolve_format"]

Format = Literal["table", "json", "jsonl", "csv"]
FORMATS = ("auto", "table", "json", "jsonl", "csv")
#: what every command that lists events prints when piped
EVENTS_PIPED: Format = "jsonl"

_PIPED_TEXT = {"json": "JSON when piped", "jsonl": "JSON lines (one event per line) when piped",
               "csv": "CSV when piped", "table": "the same when piped"}


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def add_format_arg(parser: argparse.ArgumentParser, choices: tuple[str, ...] = FORMATS, *,
                   piped: Format = "json", auto_help: str | None = None) -> None:
    """``--format {choices}`` (default ``auto``) and, when JSON is a choice, ``--json``.

    ``piped`` is what ``auto`` prints when stdout is not a terminal; ``auto_help`` replaces
    the default's description when ``auto`` means something else (``export``: the suffix)."""
    if "auto" not in choices or piped not in choices:
        raise ValueError(f"--format: auto and {piped} must be among {choices}")
    meaning = auto_help or f"a table on a terminal, {_PIPED_TEXT[piped]}"
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--format", choices=choices, default="auto",
                       help=f"output format (default auto: {meaning})")
    if "json" in choices:
        group.add_argument("--json", dest="format", action="store_const", const="json",
                           help="the same as --format json")
    parser.set_defaults(piped_format=piped)


def resolve_format(args: argparse.Namespace, stream: IO[str] | None = None) -> Format:
    """The format ``--format`` asks for; ``auto``: a table on a terminal, else the command's
    piped format."""
    requested: str = args.format
    if requested != "auto":
        return requested  # type: ignore[return-value]
    piped: Format = args.piped_format
    return "table" if is_terminal(stream or sys.stdout) else piped

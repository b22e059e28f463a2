"""How every ``shipper`` parser writes its help: one formatter, one way to add a command.

:class:`HelpFormatter` wraps descriptions and epilogs to the terminal paragraph by paragraph
(blank lines separate paragraphs) and keeps indented lines - the example blocks - as they are
written; an example wider than the terminal is continued on the next line with a shell ``\\``
between two words (never inside quotes), so it can still be pasted. :func:`add_command` gives a
subcommand that formatter and its ``examples:`` epilog, so no command is without examples.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import TypeAlias

__all__ = ["CONNECTION_HELP", "DOCS_URL", "HelpFormatter", "Subparsers", "add_command",
           "examples", "new_root"]

#: the Documentation URL of pyproject.toml, printed at the end of ``shipper --help``
DOCS_URL = "https://github.com/shipper-logs/shipper#readme"
#: how every command that talks to Loki reaches it (``ShipperConfig.load``), for its help
CONNECTION_HELP = (
    "Loki is reached at $LOKI_URL (or --url), with $LOKI_TENANT, $LOKI_USERNAME/$LOKI_PASSWORD "
    "or $LOKI_BEARER_TOKEN, $LOKI_CA_BUNDLE, $LOKI_VERIFY_TLS and $LOKI_TIMEOUT, as the "
    "handler reads them (or a $SHIPPER_CONFIG file)."
)

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_CONTINUED = "    "  # how much deeper the continuation of a long example line starts


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with paragraphs wrapped and indented lines kept as written."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            # argparse measures the command names one indent shallower than it prints them,
            # which pushes the longest name's one line of help onto a second line
            deepest = self._current_indent + self._indent_increment
            longest = max((len(name) for name in action.choices), default=0)
            self._action_max_length = max(self._action_max_length, deepest + longest)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        prose: list[str] = []

        def flush_prose() -> None:
            if prose:
                out.extend(textwrap.wrap(" ".join(prose), max(width, 20), initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False))
                prose.clear()

        for line in text.strip("\n").splitlines():
            if not line.strip():
                flush_prose()
                out.append("")
            elif line[0].isspace():
                flush_prose()
                out.extend(_verbatim(indent + line.rstrip(), width + len(indent)))
            else:
                prose.append(line.strip())
        flush_prose()
        return "\n".join(out)


def _verbatim(line: str, width: int) -> list[str]:
    """``line`` as it is, or, when wider than ``width``, broken between two shell words (never
    inside quotes) with a ``\\`` at the end of each part."""
    lead = line[: len(line) - len(line.lstrip())]
    parts: list[str] = []
    rest = line
    while len(rest) > width:
        cut = _last_break(rest, width - 2)
        if cut is None:
            break
        parts.append(rest[:cut].rstrip() + " \\")
        rest = lead + _CONTINUED + rest[cut:].lstrip()
    parts.append(rest)
    return parts


def _last_break(line: str, limit: int) -> int | None:
    """The last space at or before ``limit`` that is outside quotes and after the first word."""
    quote = ""
    best: int | None = None
    started = False
    for i, char in enumerate(line):
        if i > limit:
            break
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == " " and started:
            best = i
        elif not char.isspace():
            started = True
    return best


def examples(*lines: str) -> str:
    """An ``examples:`` epilog: each line a command as it is typed."""
    if not lines:
        raise ValueError("a command's help needs at least one example")
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_command(sub: Subparsers, name: str, *, help: str, description: str,
                example_lines: tuple[str, ...], epilog: str = "") -> argparse.ArgumentParser:
    """A subcommand with :class:`HelpFormatter`, ``help`` as its one line in the list of
    commands, and an ``examples:`` epilog (``epilog`` follows it)."""
    text = examples(*example_lines) + (f"\n\n{epilog}" if epilog else "")
    return sub.add_parser(name, help=help, description=description, epilog=text,
                          formatter_class=HelpFormatter)


def new_root(prog: str, *, description: str, example_lines: tuple[str, ...]) -> (
        argparse.ArgumentParser):
    """The top-level parser: its examples, then the documentation's address last."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter,
        epilog=f"{examples(*example_lines)}\n\n'{prog} COMMAND --help' shows a command's "
        f"options and examples.\n\ndocumentation: {DOCS_URL}")

"""The ``shipper`` command: ``shipper spool ...``, ``shipper retention ...``, ``shipper demo``.

Each command group is registered by one ``_add_*`` function below and does its work through the
library modules, so everything the CLI does is also reachable from Python.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from shipper import __version__

_Handler = Callable[[argparse.Namespace], int]


def _add_retention(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``shipper retention render|check|explain`` (see shipper/retention.py)."""


def _add_spool(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``shipper spool status|push`` (see shipper/spool.py)."""


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``shipper demo`` (see shipper/demo.py)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shipper",
        description="Ship labeled system logs to Grafana Loki; manage the spool and retention.",
    )
    parser.add_argument("--version", action="version", version=f"shipper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_spool(sub)
    _add_retention(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: _Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

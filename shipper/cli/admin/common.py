"""What every admin command shares: the filter and time flags, the connection to Loki (read
from the environment exactly as the handler reads it), and one mapping of failures to exit
codes: 0 ok, 1 failed (or nothing matched where that matters), 2 usage or bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from shipper.cli.args import positive_duration_arg, time_arg
from shipper.cli.help import CONNECTION_HELP, Subparsers, add_command
from shipper.config import ConfigError, ShipperConfig
from shipper.loki.client import LokiClient, LokiError
from shipper.loki.logql import FilterError, Filters
from shipper.loki.reader import ReadError
from shipper.loki.timerange import TimeError, TimeRange, resolve_range

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "add_connection_args",
    "add_filter_args",
    "add_range_args",
    "filters_from",
    "loki_client",
    "new_parser",
    "range_from",
    "run",
    "shipper_config",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A command cannot go on; ``code`` is the exit code and the message one line."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


ENV_HELP = (
    f"{CONNECTION_HELP} Exit codes: 0 ok, 1 failed or nothing matched, 2 usage or bad input."
)


def new_parser(sub: Subparsers, name: str, *, help: str, description: str,
               example_lines: tuple[str, ...]) -> argparse.ArgumentParser:
    """An admin command: its description, then how Loki is reached and the exit codes."""
    return add_command(sub, name, help=help, description=f"{description}\n\n{ENV_HELP}",
                       example_lines=example_lines)


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="Loki's base URL (default: $LOKI_URL)")


def add_filter_args(parser: argparse.ArgumentParser) -> None:
    f = parser.add_argument_group("filters (all optional; together they must all match)")
    f.add_argument("--service", action="append", default=[], metavar="NAME",
                   help="service_name (repeat for several)")
    f.add_argument("--level", action="append", default=[], metavar="LEVEL",
                   help="DEBUG, INFO, WARNING, ERROR or CRITICAL (repeat for several; aliases "
                   "like warn are understood)")
    f.add_argument("--actor", action="append", default=[], metavar="ACTOR",
                   help="USER, CREATOR, ADMIN, SYSTEM or GUEST (repeat for several)")
    f.add_argument("--type", metavar="TEXT",
                   help="event type, partial and case-insensitive: login matches AUTH_LOGIN")
    f.add_argument("--actor-id", metavar="ID", help="exact actor id")
    f.add_argument("--logger", metavar="MODULE",
                   help="the module: this logger and its children (shop.auth matches "
                   "shop.auth and shop.auth.login, not shop.authz)")
    f.add_argument("--search", metavar="TEXT",
                   help="case-insensitive text in the message, the type or the actor id; "
                   "every character is taken literally")


def add_range_args(parser: argparse.ArgumentParser, *, default: str | None = "24h") -> None:
    r = parser.add_argument_group(
        "time range" + (f" (default: the last {default})" if default else " (required)"))
    r.add_argument("--since", type=positive_duration_arg, metavar="SPAN",
                   help="this far back from --end or now: 30m, 1h30m, 7d, 2w, or seconds (90)")
    r.add_argument("--start", type=time_arg, metavar="TIME", help="RFC 3339 "
                   "(2026-01-31T12:00:00Z, nanoseconds allowed), a date (2026-01-31, UTC) or "
                   "a time ago (2h, now-2h); included")
    r.add_argument("--end", type=time_arg, metavar="TIME",
                   help="as --start; excluded (default: now)")


def filters_from(args: argparse.Namespace) -> Filters:
    return Filters.create(services=args.service, levels=args.level, actors=args.actor,
                          type=args.type, actor_id=args.actor_id, logger=args.logger,
                          search=args.search)


def range_from(args: argparse.Namespace, *, default: str | None = "24h") -> TimeRange:
    return resolve_range(args.since, args.start, args.end, default_since=default)


def shipper_config(args: argparse.Namespace, **overrides: Any) -> ShipperConfig:
    """The configuration the handler would use (environment, $SHIPPER_CONFIG), with --url."""
    config = ShipperConfig.load(url=getattr(args, "url", None), **overrides)
    if not config.url:
        raise CommandError("no Loki URL: set LOKI_URL (e.g. http://localhost:3100) or pass "
                           "--url", EXIT_USAGE)
    return config


def loki_client(args: argparse.Namespace) -> LokiClient:
    return LokiClient(shipper_config(args, spool=False))


def run(name: str, body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace],
                                                                          int]:
    """Wrap a command: its failures become one line on stderr and an exit code."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except (FilterError, TimeError, ConfigError) as exc:
            _fail(name, str(exc))
            return EXIT_USAGE
        except CommandError as exc:
            _fail(name, str(exc))
            return exc.code
        except (LokiError, ReadError) as exc:
            _fail(name, str(exc))
            return EXIT_FAILED
        except BrokenPipeError:  # `shipper query | head`: the reader left, nothing is wrong
            sys.stderr.close()
            return EXIT_OK

    return handler


def _fail(name: str, message: str) -> None:
    print(f"shipper {name}: {message}", file=sys.stderr)

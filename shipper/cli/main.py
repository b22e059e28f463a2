"""The ``shipper`` command: builds the parser of every command and runs the one asked for;
``shipper spool ...``, ``shipper retention ...`` and ``shipper demo`` are defined here.

Each command group is registered by one ``add_parser``/``_add_*`` function and does its work
through the library modules, so everything the CLI does is also reachable from Python. Every
parser is made by :func:`shipper.cli.help.add_command` (wrapped help, examples) and every output
flag by :func:`shipper.cli.formats.add_format_arg`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shipper._version import __version__
from shipper.cli import admin, dead_letters, sidecar
from shipper.cli.args import duration_arg, positive_duration_arg
from shipper.cli.formats import add_format_arg, resolve_format
from shipper.cli.help import CONNECTION_HELP, Subparsers, add_command, new_root

_Handler = Callable[[argparse.Namespace], int]


def _add_retention(sub: Subparsers) -> None:
    """``shipper retention render|check|explain`` (see shipper/cli/retention/)."""
    retention = add_command(
        sub, "retention", help="render, check and explain the per-level retention policy",
        description="Per-level retention: render loki/retention.yaml into Loki's config (or "
        "the Helm chart's values), check a live Loki for drift, explain which rule decides a "
        "stream. Exit codes: 0 ok, 1 drift (check), 2 bad input or Loki unreachable.",
        example_lines=(
            "shipper retention render --write loki/config.yaml",
            "shipper retention check",
            "shipper retention explain '{level=\"INFO\",type=\"AUTH_LOGIN\"}'",
        ))
    actions = retention.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    policy_help = (
        "the retention policy (default: $SHIPPER_RETENTION_FILE, else loki/retention.yaml "
        "under the current directory)"
    )

    render = add_command(
        actions, "render", help="print the retention block, or write it into a config",
        description="Print the limits_config retention block rendered from the policy, or "
        "write it between the '# BEGIN/END shipper retention' markers of a Loki config or a "
        "Helm values file, keeping the rest of the file.",
        example_lines=(
            "shipper retention render",
            "shipper retention render --write loki/config.yaml",
            "shipper retention render --target helm --write k8s/loki-values.yaml",
        ))
    render.add_argument("--file", help=policy_help)
    render.add_argument(
        "--target",
        choices=["loki", "helm"],
        default="loki",
        help="loki: the block for limits_config of a Loki config file (default); helm: for "
        "loki.limits_config of a values file for the grafana/loki Helm chart",
    )
    render.add_argument(
        "--write",
        metavar="CONFIG",
        help="replace the block between the '# BEGIN/END shipper retention' markers of this "
        "file (loki/config.yaml, loki/config.scale.yaml; with --target helm "
        "k8s/loki-values.yaml), keeping the rest of the file",
    )
    render.set_defaults(handler=_retention_render)

    check = add_command(
        actions, "check", help="compare a live Loki's /config with the policy",
        description="Read GET /config of a running Loki and compare its retention with the "
        f"policy, one row per rule.\n\n{CONNECTION_HELP} Exit codes: 0 the same, 1 drift, 2 "
        "bad input or Loki unreachable.",
        example_lines=(
            "shipper retention check",
            "shipper retention check --url http://localhost:3100",
            "shipper retention check --file loki/retention.yaml --json",
        ))
    check.add_argument("--url", help="Loki's base URL, e.g. http://localhost:3100 (default: "
                       "$LOKI_URL)")
    check.add_argument("--file", help=policy_help)
    check.add_argument(
        "--timeout", type=positive_duration_arg, default=None, metavar="DURATION",
        help="how long to wait to connect and to read (default: $LOKI_TIMEOUT, else 10s)"
    )
    add_format_arg(check, ("auto", "table", "json"))
    check.set_defaults(handler=_retention_check)

    explain = add_command(
        actions, "explain", help="which rule decides a stream's retention, and when",
        description="Evaluate the policy's rules for a stream's labels the way Loki's "
        "compactor does, name the rule that wins and say when an entry of that stream is "
        "deleted.",
        example_lines=(
            "shipper retention explain '{level=\"CRITICAL\",type=\"AUTH_FAILED\"}'",
            "shipper retention explain '{level=\"INFO\"}' --file loki/retention.yaml",
        ))
    explain.add_argument("selector", metavar="LABELS", help='e.g. \'{level="INFO",actor="USER"}\'')
    explain.add_argument("--file", help=policy_help)
    explain.set_defaults(handler=_retention_explain)


def _retention_failed(args: argparse.Namespace, exc: Exception) -> int:
    print(f"shipper retention {args.retention_command}: {exc}", file=sys.stderr)
    return 2


def _retention_render(args: argparse.Namespace) -> int:
    from shipper.cli.retention import RetentionError, RetentionPolicy, resolve_retention_file

    try:
        policy = RetentionPolicy.load(resolve_retention_file(args.file))
        if args.write is None:
            # loki: the block as it sits in limits_config; helm: with the keys around it
            text = policy.render() if args.target == "loki" else policy.render_snippet("helm")
            sys.stdout.write(text)
            return 0
        changed = policy.render_into(args.write, args.target)
    except RetentionError as exc:
        return _retention_failed(args, exc)
    apply = "helm upgrade the release" if args.target == "helm" else "restart Loki"
    state = f"retention block updated; {apply} to apply it" if changed else "already up to date"
    print(f"{args.write}: {state}")
    return 0


def _retention_check(args: argparse.Namespace) -> int:
    import json

    from shipper.cli.retention import (
        RetentionError,
        RetentionPolicy,
        check_url,
        format_check_table,
        resolve_retention_file,
    )
    from shipper.config import ConfigError, ShipperConfig

    try:
        config = ShipperConfig.load(url=args.url, timeout=args.timeout, spool=False)
    except ConfigError as exc:
        return _retention_failed(args, exc)
    if not config.url:
        print("shipper retention check: no Loki URL: set LOKI_URL (e.g. http://localhost:3100) "
              "or pass --url", file=sys.stderr)
        return 2
    try:
        policy = RetentionPolicy.load(resolve_retention_file(args.file))
        rows = check_url(policy, config)  # its credentials too (a user:password@ of --url)
    except RetentionError as exc:
        return _retention_failed(args, exc)
    if resolve_format(args) == "json":
        print(json.dumps([{"selector": row.selector, "policy": row.policy, "live": row.live,
                           "status": row.status, "ok": row.ok} for row in rows], indent=1))
    else:
        sys.stdout.write(format_check_table(rows))
    drift = [row for row in rows if not row.ok]
    if drift:
        print(f"{len(drift)} of {len(rows)} rows drift from the policy", file=sys.stderr)
        return 1
    return 0


def _retention_explain(args: argparse.Namespace) -> int:
    from shipper.cli.retention import (
        RetentionError,
        RetentionPolicy,
        explain,
        resolve_retention_file,
    )

    try:
        policy = RetentionPolicy.load(resolve_retention_file(args.file))
        sys.stdout.write(explain(policy, args.selector).describe())
    except RetentionError as exc:
        return _retention_failed(args, exc)
    return 0


def _add_spool(sub: Subparsers) -> None:
    """``shipper spool status|push`` (see shipper/delivery/spool/__init__.py)."""
    spool = add_command(
        sub, "spool", help="what waits in the on-disk spool; push it to Loki",
        description="The spool keeps events on disk while Loki cannot take them; the handler "
        "replays it by itself. status reads a spool without changing it (safe while apps "
        "write to it); push sends it to Loki now, oldest first; dead-letters lists what Loki "
        "refused for good, and pushes it again.",
        example_lines=(
            "shipper spool status --service checkout",
            "shipper spool push --dir /var/lib/shipper/spool",
            "shipper spool dead-letters list --service checkout",
        ))
    spool_sub = spool.add_subparsers(dest="spool_command", metavar="ACTION", required=True)

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", help="spool directory (default: SHIPPER_SPOOL_DIR, else the "
                                     "per-service directory under the user cache dir)")
        p.add_argument("--service", help="service whose default spool directory to use "
                                         "(default: SHIPPER_SERVICE)")

    status = add_command(
        spool_sub, "status", help="what is waiting in the spool",
        description="Segments, records and bytes waiting in a spool directory, the age of the "
        "oldest, and damaged records (skipped on replay). The directory is only read.",
        example_lines=(
            "shipper spool status --service checkout",
            "shipper spool status --dir /var/lib/shipper/spool --json",
        ))
    where(status)
    add_format_arg(status, ("auto", "table", "json"))
    status.set_defaults(handler=_spool_status)

    push = add_command(
        spool_sub, "push", help="send everything spooled to Loki, oldest first",
        description="Replay the spool to Loki now, oldest first, through the same pipeline as "
        f"the handler; what Loki does not take stays in the spool.\n\n{CONNECTION_HELP} Exit "
        "codes: 0 all sent, 1 some left in the spool, 2 no Loki URL or a bad setting.",
        example_lines=(
            "shipper spool push --service checkout",
            "shipper spool push --dir /var/lib/shipper/spool --url http://loki:3100",
        ))
    where(push)
    push.add_argument("--url", help="Loki base or push URL (default: LOKI_URL)")
    push.add_argument("--timeout", type=duration_arg, default=600.0, metavar="DURATION",
                      help="give up after this long: 600, 90s, 10m (default 10m)")
    push.set_defaults(handler=_spool_push)
    dead_letters.add_parser(spool_sub, where=where, spool_dir=_spool_dir)


def _spool_dir(args: argparse.Namespace) -> Path:
    from shipper.config import ShipperConfig

    overrides = {"spool_dir": args.dir, "service": args.service, "spool": True}
    return ShipperConfig.load(**overrides).resolved_spool_dir() or Path(args.dir)


def _spool_status(args: argparse.Namespace) -> int:
    import json

    from shipper.delivery.spool import spool_status

    directory = _spool_dir(args)
    if resolve_format(args) == "json":  # a missing directory: empty figures
        print(json.dumps({**dataclasses.asdict(spool_status(directory)),
                          **dead_letters.status_fields(directory)}, indent=2, sort_keys=True))
        return 0
    if not directory.exists():
        print(f"{directory}: no spool here (nothing waiting)")
        return 0
    stats = spool_status(directory)
    age = stats.oldest_segment_age_s
    print(f"spool      {stats.directory}")
    print(f"segments   {stats.segments}")
    print(f"records    {stats.records}")
    print(f"bytes      {stats.bytes}")
    print(f"oldest     {'-' if age is None else f'{age:.0f} s ago'}")
    if stats.corrupt_records or stats.torn_tails:
        print(f"damaged    {stats.corrupt_records} corrupt records, {stats.torn_tails} torn tails "
              "(skipped on replay)")
    dead = dead_letters.status_line(directory)
    if dead:
        print(dead)
    return 0


def _spool_push(args: argparse.Namespace) -> int:
    from shipper.config import ConfigError, ShipperConfig
    from shipper.delivery.pipeline import Pipeline
    from shipper.redact import hide_url_credentials

    try:
        config = ShipperConfig.load(url=args.url, spool_dir=str(_spool_dir(args)), spool=True,
                                    service=args.service)
    except ConfigError as exc:
        print(f"shipper spool push: {exc}", file=sys.stderr)
        return 2
    if not config.url:
        print("shipper spool push: no Loki URL: pass --url or set LOKI_URL", file=sys.stderr)
        return 2
    pipeline = Pipeline(config, start_replay=False, health=False)
    try:
        done = pipeline.drain_spool(args.timeout)
    finally:
        stats = pipeline.stats()
        pipeline.close(0)
    print(f"replayed {stats['replayed']} events to {hide_url_credentials(config.url)}; "
          f"refused {stats['refused_total']}, dropped {stats['dropped_total']}")
    if not done:
        print("shipper spool push: Loki did not accept everything; what is left stays in the "
              "spool (run again later)", file=sys.stderr)
        return 1
    return 0


def _add_demo(sub: Subparsers) -> None:
    """``shipper demo`` (see shipper/cli/demo/)."""

    demo = add_command(
        sub, "demo", help="send realistic marketplace traffic through the handler",
        description="Logs demo events the way an app does (SystemLog and logging through a "
        "LokiHandler): logins, bookings, payments, webhooks, API errors, admin actions, one "
        "DATA_CORRUPTION, at --rate events per second, then flushes and prints the handler's "
        "stats as JSON. Without LOKI_URL or --url the events go to the spool. Exit codes: 0 "
        "all delivered (without a URL: all spooled), 1 some refused, dropped or not delivered "
        "in time (they wait in the spool), 2 bad options.",
        example_lines=(
            "shipper demo --count 500",
            "shipper demo --backfill 7d --duration 10m --rate 20",
            "shipper demo --forever --service shop --file /var/log/shipper/shop.jsonl",
            "shipper demo --scenario incident --duration 10m",
        ))
    how_long = demo.add_mutually_exclusive_group()
    how_long.add_argument("--count", type=int, metavar="N",
                          help="send N live events (default 200, or none after --backfill)")
    how_long.add_argument("--duration", type=duration_arg, metavar="DURATION",
                          help="send live events for this long (seconds, or e.g. 90s, 10m)")
    how_long.add_argument("--forever", action="store_true",
                          help="send live events until stopped (Ctrl-C, SIGTERM)")
    demo.add_argument("--rate", type=float, default=5.0, metavar="EVENTS_PER_S",
                      help="live events per second (default 5)")
    demo.add_argument("--backfill", type=duration_arg, metavar="SPAN",
                      help="first fill history this far back (e.g. 7d, 36h), oldest first, at "
                      "most Loki's reject_old_samples_max_age (1w by default); skipped when "
                      "the service's streams got entries in the last hour or so")
    demo.add_argument("--backfill-rate", type=float, default=60.0, metavar="EVENTS_PER_H",
                      help="backfilled events per hour, on average (default 60)")
    demo.add_argument("--criticals", type=int, default=1, metavar="N",
                      help="DATA_CORRUPTION events in the run (default 1)")
    demo.add_argument("--scenario", choices=("normal", "incident"), default="normal",
                      help="normal traffic (default), or an incident: 30 s of normal traffic, "
                      "then slow and failing requests, failed payments and users staying away, "
                      "for --duration (default 10m) - every alert rule fires once. The day "
                      "before is filled first (the user-activity rule compares with it), so "
                      "give it a --service of its own (default marketplace-incident)")
    demo.add_argument("--seed", type=int, help="random seed: the same seed, the same events")
    demo.add_argument("--service", help="service_name label (default $SHIPPER_SERVICE, else "
                      "marketplace)")
    demo.add_argument("--env", help="env label (default $SHIPPER_ENV, else none)")
    demo.add_argument("--url", help="Loki base URL (default $LOKI_URL; unset: the spool)")
    demo.add_argument("--file", metavar="PATH",
                      help="also append every event as a JSON line, the shape the promtail/ "
                      "and Alloy configs read")
    demo.add_argument("--flush-timeout", type=duration_arg, default=60.0, metavar="DURATION",
                      help="how long to wait for delivery at the end (default 1m)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from shipper.cli.demo import DemoError, DemoOptions, run_demo

    try:
        options = DemoOptions(
            rate=args.rate, count=args.count, duration=args.duration, forever=args.forever,
            backfill=args.backfill, backfill_rate=args.backfill_rate, seed=args.seed,
            service=args.service, env=args.env, url=args.url, file=args.file,
            criticals=args.criticals, flush_timeout=args.flush_timeout, scenario=args.scenario,
        )
        return run_demo(options)
    except DemoError as exc:
        print(f"shipper demo: error: {exc}", file=sys.stderr)
        return 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``shipper`` parser with every command, or only ``command``'s (``sidecar``)."""
    parser = new_root(
        "shipper",
        description="Ship labeled system logs to Grafana Loki, read and manage them there: "
        "query, follow, export, count, delete and import events, check the setup, send the "
        "daily digest, manage the spool and retention, run the sidecar.",
        example_lines=(
            "shipper query --since 1h --level error",
            "shipper tail --service shop",
            "shipper doctor",
            "shipper sidecar --config sidecar.yaml",
        ))
    parser.add_argument("--version", action="version", version=f"shipper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command == "sidecar":
        sidecar.add_parser(sub)
        return parser
    from shipper.cli.report import add_parser as add_report

    admin.add_parser(sub)
    add_report(sub)
    _add_spool(sub)
    _add_retention(sub)
    _add_demo(sub)
    sidecar.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the sidecar runs for months but starts at every deploy and every restart: its parser
    # alone spares it importing the other commands (the same help and errors as the full one)
    parser = build_parser("sidecar" if argv[:1] == ["sidecar"] else None)
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

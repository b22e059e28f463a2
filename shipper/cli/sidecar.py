"""``shipper sidecar --config FILE [--check]``: registered by :func:`add_parser`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from shipper.cli.help import Subparsers, add_command

__all__ = ["add_parser"]


def add_parser(sub: Subparsers) -> None:
    sidecar = add_command(
        sub, "sidecar", help="ship other apps' files, stdout, HTTP or OTLP logs",
        description="Ship what other apps write to files, to stdout (Docker), or send over "
        "HTTP or OTLP, through the same pipeline as the handler. Runs until SIGTERM (drains "
        "within drain_timeout and saves positions); SIGHUP reopens files. Exit codes: 0 "
        "stopped cleanly or --check passed, 1 a source failed while running, 2 bad "
        "configuration or start-up failure.",
        example_lines=(
            "shipper sidecar --config sidecar.yaml --check",
            "shipper sidecar --config /etc/shipper/sidecar.yaml",
        ))
    sidecar.add_argument("--config", required=True, metavar="FILE",
                         help="the sidecar's YAML file (see docs/sidecar.md)")
    sidecar.add_argument("--check", action="store_true",
                         help="validate the file, print a summary and exit (0 valid, 2 not)")
    sidecar.set_defaults(handler=_sidecar)


def _sidecar(args: argparse.Namespace) -> int:
    from shipper.redact import hide_url_credentials
    from shipper.sidecar.config import SidecarConfigError, load_config

    try:
        config = load_config(args.config)
    except SidecarConfigError as exc:
        print(f"shipper sidecar: {exc}", file=sys.stderr)
        return 2
    if args.check:
        kinds = Counter(source.type for source in config.sources)
        listing = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        workers = f"; {config.workers} worker processes" if config.workers > 1 else ""
        print(f"{args.config}: ok: {listing} source{'s' if len(config.sources) > 1 else ''}; "
              f"service {config.loki.service}; "
              f"Loki {hide_url_credentials(config.loki.url or '(none: spool only)')}"
              f"{workers}")
        return 0
    from shipper.sidecar.runner import run
    from shipper.sidecar.workers import tune_gc

    tune_gc()
    return run(config)


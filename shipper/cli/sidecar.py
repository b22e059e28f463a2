"""``shipper sidecar --config FILE [--check]`` and ``shipper sidecar convert-promtail FILE``:
registered by :func:`add_parser`."""

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
            "shipper sidecar convert-promtail promtail.yaml > sidecar.yaml",
        ))
    sidecar.add_argument("--config", metavar="FILE",
                         help="the sidecar's YAML file (see docs/sidecar.md); required unless "
                         "a subcommand is given")
    sidecar.add_argument("--check", action="store_true",
                         help="validate the file, print a summary and exit (0 valid, 2 not)")
    sidecar.set_defaults(handler=_sidecar, sidecar_parser=sidecar)
    actions = sidecar.add_subparsers(dest="sidecar_command", metavar="ACTION")
    convert = add_command(
        actions, "convert-promtail", help="print a sidecar config equivalent to a Promtail one",
        description="Print on stdout the sidecar configuration equivalent to a Promtail "
        "configuration: its static_configs file targets and labels, the pipeline stages "
        "json, logfmt, regex, labels, structured_metadata, timestamp, output and multiline, "
        "the first client, and its positions file as promtail_positions. On stderr it lists "
        "what it left out and what changes meaning, each with its line in the file (the "
        "same lists head the output as comments). Exit codes: 0 everything converted, 3 "
        "converted but something was left out (read the list), 2 the file cannot be read, "
        "is not a Promtail configuration, or has no file target to convert (nothing printed). "
        "See docs/promtail.md.",
        example_lines=(
            "shipper sidecar convert-promtail promtail.yaml",
            "shipper sidecar convert-promtail /etc/promtail/config.yml > sidecar.yaml",
        ))
    convert.add_argument("promtail_config", metavar="FILE", help="Promtail's YAML file")
    convert.set_defaults(handler=_convert_promtail)


def _convert_promtail(args: argparse.Namespace) -> int:
    from shipper.sidecar.promtail_convert import (
        PromtailConfigError,
        convert_promtail,
        read_promtail_config,
    )

    name = args.promtail_config
    try:
        conversion = convert_promtail(read_promtail_config(name), name)
    except PromtailConfigError as exc:
        print(f"shipper sidecar convert-promtail: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(conversion.text(name))
    for title, notes in (("left out", conversion.left_out), ("changed", conversion.changed)):
        for note in notes:
            print(f"{title}: {note}", file=sys.stderr)
    return 3 if conversion.left_out else 0


def _check_promtail_positions(path: str | None) -> int:
    """``--check``: what ``promtail_positions`` holds (2 when start-up would refuse it)."""
    if path is None:
        return 0
    from shipper.sidecar.promtail import PromtailPositionsError, read_promtail_positions

    try:
        found = read_promtail_positions(path)
    except FileNotFoundError:
        print(f"promtail_positions: {path} does not exist: files start as start_at says")
        return 0
    except PromtailPositionsError as exc:
        print(f"shipper sidecar: promtail_positions: {exc}", file=sys.stderr)
        return 2
    for line in found.notes():
        print(f"promtail_positions: {line}")
    return 0


def _sidecar(args: argparse.Namespace) -> int:
    from shipper.redact import hide_url_credentials
    from shipper.sidecar.config import SidecarConfigError, load_config

    if args.config is None:
        args.sidecar_parser.error("the following arguments are required: --config (or an "
                                  "ACTION such as convert-promtail)")
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
        return _check_promtail_positions(config.promtail_positions)
    from shipper.sidecar.runner import run
    from shipper.sidecar.workers import tune_process

    tune_process()
    return run(config)


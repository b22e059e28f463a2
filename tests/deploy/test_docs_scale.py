"""docs/scale.md states what is true of the repository: the files it names exist, the settings
it lists are the ones loki/config.scale.yaml reads, the commands it shows use real options, and
its LogQL parses with Grafana's grammar."""

from __future__ import annotations

import re
from pathlib import Path

from shipper.cli.main import build_parser
from shipper.config import ENV_VARS
from tests.support._grafana import describe_failures, parse_logql

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "scale.md"


def _text() -> str:
    return PAGE.read_text(encoding="utf-8")


def test_every_repository_path_the_page_names_exists() -> None:
    named = set(re.findall(r"(?<![\w/.])((?:loki|k8s|grafana|bench|tests|deploy)/[\w./-]*\w|"
                           r"docker-compose[\w.]*\.yml)", _text()))
    assert {"loki/config.scale.yaml", "docker-compose.scale.yml", "k8s/loki-values.yaml"} <= named
    named.discard("grafana/loki")  # the Helm chart's name, not a path
    # the sidecar's own benchmark, which bench/scale.py runs when the sidecar is in the tree
    if not (REPO / "shipper" / "sidecar").is_dir():
        named.discard("bench/sidecar.py")
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert missing == []


def test_the_settings_listed_are_the_ones_the_config_reads() -> None:
    # LOKI_URL, LOKI_TENANT, LOKI_USERNAME, ... are the shipper's own settings, LOKI_GATEWAY_*
    # the gateway's users (.env.example)
    listed = {name for name in re.findall(r"`(LOKI_[A-Z0-9_]+)`", _text())
              if name not in ENV_VARS and not name.startswith("LOKI_GATEWAY_")}
    config = (REPO / "loki" / "config.scale.yaml").read_text(encoding="utf-8")
    read = set(re.findall(r"\$\{(LOKI_[A-Z0-9_]+)", config))
    # LOKI_INSTANCE_ADDR is left to its default (the container's own address) on this page
    assert listed == read - {"LOKI_INSTANCE_ADDR"}


def test_the_shipper_commands_shown_parse() -> None:
    # the commands of the code blocks (whole lines), not the names in the prose
    commands = re.findall(r"^shipper (retention [^\n#]+?)\s*(?:#.*)?$", _text(), re.MULTILINE)
    assert len(commands) >= 3
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(command.split())
        assert args.handler is not None, command


def test_the_logql_on_the_page_parses() -> None:
    queries = [q for q in re.findall(r"`([^`\n]*\{[^`\n]*\}[^`\n]*)`", _text())
               if "count_over_time" in q]
    assert queries
    results = parse_logql(queries)
    assert all(r["ok"] for r in results), describe_failures(results)

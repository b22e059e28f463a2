"""What ``shipper sidecar`` loads to start: the command line of the sidecar alone, and the code
of the sources its configuration names, nothing it never uses (every module costs each start
its CPU)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import pytest

from shipper.cli.main import build_parser, main
from tests.support.sidecar_process import SidecarProcess, json_lines

#: modules a file-only sidecar with one process never uses
UNUSED_BY_A_FILE_SIDECAR = (
    "shipper.sidecar.sources.http",  # HTTP, OTLP and their decoders
    "shipper.sidecar.sources.otlp",
    "shipper.sidecar.sources.wire",
    "shipper.sidecar.sources.docker",
    "multiprocessing",  # worker processes (workers: N)
    "difflib",  # the "did you mean" of a misspelt setting
    "shipper.cli.report",  # the other commands
    "shipper.cli.admin.query",
    "shipper.cli.admin.doctor",
    "shipper.loki.read_api",
)


def _imported(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` says the process imported."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_a_file_only_sidecar_starts_without_loading_other_sources_workers_or_commands(
        tmp_path: Path, processes: list[SidecarProcess]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(json_lines("a", 0, 10))
    proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(logs / "*.log")],
                                      "format": "json"}], loki_url=None)
    proc.command = [sys.executable, "-X", "importtime", "-m", "shipper"]
    processes.append(proc)
    proc.start()
    assert proc.finish(signal.SIGTERM) == 0, proc.stderr
    imported = _imported(proc.stderr)
    assert {"shipper.sidecar.runner", "shipper.sidecar.sources.file"} <= imported  # read right
    assert sorted(imported.intersection(UNUSED_BY_A_FILE_SIDECAR)) == []


def _sidecar_parser(root: argparse.ArgumentParser) -> argparse.ArgumentParser:
    (sub,) = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = sub.choices["sidecar"]
    return parser


def test_the_sidecars_own_parser_is_the_full_commands_sidecar_parser() -> None:
    alone, full = _sidecar_parser(build_parser("sidecar")), _sidecar_parser(build_parser())
    assert alone.format_help() == full.format_help()
    (convert_alone,), (convert_full,) = (
        [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        for p in (alone, full))
    assert (convert_alone.choices["convert-promtail"].format_help()
            == convert_full.choices["convert-promtail"].format_help())


def _outcome(run: object, capsys: pytest.CaptureFixture[str]) -> tuple[object, str]:
    """What running ``run()`` ends with (its return or exit code) and says on stderr."""
    assert callable(run)
    try:
        code = run()
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("words", [["sidecar", "--no-such-option"], ["sidecar"],
                                   ["sidecar", "convert-promtail"], ["sidecar", "--check"]])
def test_sidecar_errors_read_as_with_every_command_parsed(
        words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    def with_every_command() -> object:
        args = build_parser().parse_args(words)
        return args.handler(args)

    expected = _outcome(with_every_command, capsys)
    assert expected[0] == 2 and expected[1]
    assert _outcome(lambda: main(words), capsys) == expected

"""One convention for every ``shipper`` command: ``--format`` (``--json`` its alias), JSON lines
for every command that lists events when piped, help wrapped to the terminal with examples in
every command and subcommand, and the top-level help listing each command on one line and ending
with the documentation's address."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper._units import format_time
from shipper.cli.formats import EVENTS_PIPED
from shipper.cli.help import DOCS_URL, HelpFormatter
from shipper.cli.main import build_parser, main
from tests.support.fakeloki import FakeLoki

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
#: positional arguments a command needs before it parses
REQUIRED: dict[tuple[str, ...], list[str]] = {
    ("import",): ["rows.csv"],
    ("retention", "explain"): ['{level="INFO"}'],
    ("sidecar",): ["--config", "sidecar.yaml"],
}
#: the commands that list events
LISTINGS = (("query",), ("tail",), ("export",))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for name, sub in _subcommands(parser).items():
        yield (*path, name), sub
        yield from _walk(sub, (*path, name))


COMMANDS = [path for path, _ in _walk(build_parser())]


def _parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    return dict(_walk(build_parser()))[path]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_command_is_walked() -> None:
    assert {"query", "tail", "labels", "series", "export", "stats", "delete", "import", "doctor",
            "report", "spool", "retention", "demo", "sidecar"} == {path[0] for path in COMMANDS}
    assert {("spool", "status"), ("spool", "push"), ("retention", "render"),
            ("retention", "check"), ("retention", "explain")} <= set(COMMANDS)


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("columns", [100, 80])
@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "shipper")
def test_no_help_line_is_wider_than_the_terminal(
    path: tuple[str, ...], columns: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    parser = _parser(path) if path else build_parser()
    assert parser.formatter_class is HelpFormatter
    text = parser.format_help()
    wide = [line for line in text.splitlines() if len(line) > columns]
    assert not wide, f"shipper {' '.join(path)} --help, COLUMNS={columns}:\n" + "\n".join(wide)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_and_subcommand_has_an_example(path: tuple[str, ...]) -> None:
    text = _parser(path).format_help()
    assert "\nexamples:\n" in text
    assert f"\n  shipper {' '.join(path)}" in text.split("\nexamples:\n", 1)[1]


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "shipper")
def test_every_example_is_a_command_line_shipper_takes(path: tuple[str, ...]) -> None:
    parser = _parser(path) if path else build_parser()
    epilog = (parser.epilog or "").split("examples:\n", 1)[1]
    for line in epilog.split("\n\n", 1)[0].splitlines():
        words = shlex.split(line, comments=True)
        words = words[next(i for i, w in enumerate(words) if w == "shipper") + 1:]
        words = list(itertools.takewhile(lambda w: w not in ("|", ">"), words))
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            pytest.fail(f"example refused ({exc.code}): {line}")


def test_the_top_level_help_lists_each_command_on_one_line_and_ends_with_the_docs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["urls"]["Documentation"] == DOCS_URL
    for columns in (80, 100):
        monkeypatch.setenv("COLUMNS", str(columns))
        text = build_parser().format_help()
        lines = text.splitlines()
        for name in _subcommands(build_parser()):
            (line,) = [i for i, line in enumerate(lines) if re.match(rf"^    {name}\b", line)]
            assert re.match(rf"^    {name} +\S", lines[line]), lines[line]  # its help beside it
            assert not lines[line + 1].startswith(" " * 6), f"{name}: two lines at {columns}"
        assert lines[-1] == f"documentation: {DOCS_URL}"


def test_long_example_lines_are_continued_between_words_never_in_quotes() -> None:
    formatter = HelpFormatter("shipper", width=40)
    text = formatter._fill_text(
        "Prose that is long enough to be wrapped on two lines at least.\n\nexamples:\n"
        "  shipper query --search 'card declined today' --since 1h --limit 500", 40, "")
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines), lines
    assert lines[:2] == ["Prose that is long enough to be wrapped", "on two lines at least."]
    example = [line for line in lines if line.startswith("  ")]
    assert all(line.endswith(" \\") for line in example[:-1])
    joined = " ".join(line.removesuffix(" \\").strip() for line in example)
    assert joined == "shipper query --search 'card declined today' --since 1h --limit 500"


# ----------------------------------------------------------------------------- --format


def test_format_means_output_everywhere_and_json_is_its_alias() -> None:
    with_json = [path for path in COMMANDS if "--json" in _options(_parser(path))]
    assert set(with_json) == {("query",), ("labels",), ("series",), ("export",), ("stats",),
                              ("delete",), ("import",),
                              ("doctor",), ("report",), ("spool", "status"),
                              ("spool", "dead-letters", "list"), ("retention", "check")}
    for path in COMMANDS:
        parser = _parser(path)
        options = _options(parser)
        assert not options & {"--output-format"}, path
        if "--format" not in options:
            continue
        argv = [*path, *REQUIRED.get(path, [])]
        action = next(a for a in parser._actions if "--format" in a.option_strings)
        assert action.default == "auto" and "auto" in (action.choices or ()), path
        if "--json" in options:
            parser_ = build_parser()
            assert parser_.parse_args([*argv, "--json"]) == parser_.parse_args(
                [*argv, "--format", "json"]), path


@pytest.mark.parametrize("path", LISTINGS, ids=" ".join)
def test_every_command_that_lists_events_prints_json_lines_when_piped(
    path: tuple[str, ...],
) -> None:
    assert EVENTS_PIPED == "jsonl"
    assert build_parser().parse_args(list(path)).piped_format == EVENTS_PIPED
    assert "JSON lines" in _parser(path).format_help()


def test_json_and_its_alias_give_the_same_bytes_and_listings_pipe_json_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("SHIPPER_CONFIG", raising=False)
    now = time.time_ns()
    start, end = now - 600 * NS, now + NS
    span = ["--start", format_time(start), "--end", format_time(end)]
    with FakeLoki(rate_limit=False) as fake:
        monkeypatch.setenv("LOKI_URL", fake.url)
        for i in range(3):
            fake.add({"service_name": "shop", "level": "ERROR", "actor": "USER",
                      "type": "PAYMENT_FAILED"}, now - (100 - i) * NS,
                     json.dumps({"message": f"declined {i}", "metadata": {"n": i}}))

        def run(*argv: str) -> str:
            code = main(list(argv))
            out, err = capsys.readouterr()
            assert code == 0, err
            return out

        for argv in (["query", *span], ["export", *span, "--no-progress"],
                     ["stats", *span], ["delete", "--status"], ["spool", "status"]):
            assert run(*argv, "--json") == run(*argv, "--format", "json"), argv
        for argv in (["query", *span], ["export", *span, "--no-progress"]):
            piped = run(*argv)
            assert piped == run(*argv, "--format", "jsonl")
            rows = [json.loads(line) for line in piped.splitlines()]
            assert sorted(row["message"] for row in rows) == [
                "declined 0", "declined 1", "declined 2"], argv

"""The docs are tested as they are read: every Python block runs in a fresh interpreter against
the fake Loki and what it promises must arrive; every ``shipper`` command line parses, and those
that need no server run and print what the docs show; the configuration reference covers every
setting; the changelog keeps its form. The convention is in tests/support/docsnippets.py and
docs/development.md."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from configdoc import _resolve, expand, markers, settings

from shipper.cli.main import build_parser
from shipper.config import ENV_VARS, ShipperConfig
from shipper.event import HEALTH_TYPE
from tests.support.docsnippets import (
    HARNESS_DIR,
    ROOT,
    Block,
    Command,
    Project,
    SnippetError,
    all_blocks,
    blocks,
    check_loki_urls,
    parse_expect,
    scripts_and_projects,
    shipper_commands,
    stored_events,
    substitute_url,
    unmatched,
)
from tests.support.fakeloki import FakeLoki

RUN_TIMEOUT = 90

try:
    _BLOCKS = all_blocks()
    _SINGLES, _PROJECTS = scripts_and_projects(_BLOCKS)
    _COMMANDS = shipper_commands(_BLOCKS)
    _COLLECT_ERROR: str | None = None
except SnippetError as exc:  # reported by test_every_block_follows_the_convention
    _BLOCKS, _SINGLES, _PROJECTS, _COMMANDS = [], [], [], []
    _COLLECT_ERROR = str(exc)


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def _env(tmp: Path, url: str, pythonpath: list[Path] | None = None) -> dict[str, str]:
    """A clean environment: no LOKI_*/SHIPPER_* from the developer's shell, LOKI_URL at the
    fake, and a home and cache of its own (so a spool of its own)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOKI_", "SHIPPER_", "DJANGO_")) and k != "PYTHONPATH"}
    env.update(LOKI_URL=url, HOME=str(tmp / "home"), XDG_CACHE_HOME=str(tmp / "cache"),
               PYTHONDONTWRITEBYTECODE="1")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    (tmp / "home").mkdir(exist_ok=True)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, check=False)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n" \
           f"{result.stderr[-3000:]}"


def _check_arrived(fake: FakeLoki, where: str, expects: list, nothing: bool,
                   result: subprocess.CompletedProcess[str]) -> None:
    events = stored_events(fake.stored())
    if not any(m.key == "type" and m.value == HEALTH_TYPE for e in expects for m in e.matchers):
        # the heartbeat a pipeline ships when it closes is no part of what a block documents
        events = [e for e in events if e.get("type") != HEALTH_TYPE]
    problems = unmatched([] if nothing else expects, events)
    assert not problems, f"{where}: what the docs promise did not arrive:\n  " + \
        "\n  ".join(problems) + "\n" + _output(result)


# ----------------------------------------------------------------------------- the convention


def test_every_block_follows_the_convention() -> None:
    assert _COLLECT_ERROR is None, _COLLECT_ERROR
    assert any(b.path.name == "README.md" and b.lang == "python" for b in _BLOCKS)
    assert _SINGLES and _PROJECTS and _COMMANDS


def test_a_python_block_without_a_promise_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```python\nprint('hi')\n```\n\nMore text.\n")
    with pytest.raises(SnippetError, match=r"page.md:3: a python block needs"):
        scripts_and_projects(blocks(page))


def test_a_fragment_without_its_harness_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('```python title="gunicorn.conf.py"\nworkers = 2\n```\n'
                    "<!-- snippet: harness=no_such_server\nexpect: type=X\n-->\n")
    missing = r"no harness tests/support/docs_harness/no_such_server.py"
    with pytest.raises(SnippetError, match=missing):
        scripts_and_projects(blocks(page))


def test_expectations_take_one_stored_event_each_and_leave_none_unexplained() -> None:
    login = {"service_name": "shop", "type": "LOGIN", "level": "INFO",
             "metadata": {"ip": "203.0.113.9", "ok": True}}
    other = {"service_name": "shop", "type": "LOGOUT", "level": "INFO"}
    assert unmatched([parse_expect("type=LOGIN metadata.ip=203.0.113.9 metadata.ok=true")],
                     [login]) == []
    assert unmatched([parse_expect("type=LOGIN count=2")], [login]) == [
        "expected, not stored: type=LOGIN count=2"]
    assert unmatched([parse_expect("type=LOGIN")], [login, other]) == [
        "stored, not expected: service_name='shop' level='INFO' type='LOGOUT'"]
    # a greedy first match would take `login` for the looser line and fail the stricter one
    assert unmatched([parse_expect("level=INFO"), parse_expect("type~=LOG.N")],
                     [login, other]) == []
    with pytest.raises(SnippetError, match="unknown event key 'levle'"):
        parse_expect("levle=INFO")


def test_snippets_reach_loki_only_through_the_documented_url() -> None:
    with pytest.raises(SnippetError, match="not http://localhost:3100"):
        check_loki_urls('LokiHandler("http://localhost:3100")', "page.md:1")


# ----------------------------------------------------------------------------- running blocks


@pytest.mark.parametrize("block", _SINGLES, ids=lambda b: b.where)
def test_python_block_runs_in_a_fresh_interpreter_and_its_events_arrive(
        block: Block, fake: FakeLoki, tmp_path: Path) -> None:
    check_loki_urls(block.code, block.where)
    code = substitute_url(block.code, fake.url)
    env = _env(tmp_path, fake.url)
    if block.lang == "pycon":
        (tmp_path / "session.txt").write_text(code, encoding="utf-8")
        argv = [sys.executable, "-m", "doctest", "-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE",
                "session.txt"]
    else:
        (tmp_path / "snippet.py").write_text(code, encoding="utf-8")
        argv = [sys.executable, "snippet.py"]
    result = _run(argv, tmp_path, env)
    assert result.returncode == 0, f"{block.where} failed:\n{_output(result)}"
    _check_arrived(fake, block.where, block.expects, block.nothing or not block.expects, result)


@pytest.mark.parametrize("project", _PROJECTS, ids=lambda p: f"{p.where}[{p.harness}]")
def test_fragments_run_in_their_harness_and_their_events_arrive(
        project: Project, fake: FakeLoki, tmp_path: Path) -> None:
    app = tmp_path / "project"
    for name, code in project.files.items():
        check_loki_urls(code, project.where)
        target = app / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(substitute_url(code, fake.url), encoding="utf-8")
    env = _env(tmp_path, fake.url, pythonpath=[app, ROOT])
    result = _run([sys.executable, str(HARNESS_DIR / f"{project.harness}.py")], app, env)
    assert result.returncode == 0, f"{project.where} ({project.harness}) failed:\n" \
                                   f"{_output(result)}"
    _check_arrived(fake, project.where, project.expects, project.nothing, result)


def test_every_shipper_command_line_in_the_docs_parses() -> None:
    parser = build_parser()
    wrong = []
    for command in _COMMANDS:
        err = StringIO()
        try:
            with redirect_stdout(StringIO()), redirect_stderr(err):
                parser.parse_args(list(command.argv[1:]))
        except SystemExit as exc:
            if exc.code not in (0, None):
                wrong.append(f"{command.where}: {' '.join(command.argv)}\n  {err.getvalue()}")
    assert not wrong, "command lines in the docs that shipper refuses:\n" + "\n".join(wrong)


@pytest.mark.parametrize("command", [c for c in _COMMANDS if c.runs_without_server],
                         ids=lambda c: f"{c.where} {' '.join(c.argv[1:4])}")
def test_shipper_command_without_a_server_runs_and_prints_what_the_docs_show(
        command: Command, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "loki", tmp_path / "loki")
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")  # the Helm values `render --write`s
    env = _env(tmp_path, "http://127.0.0.1:9")  # nothing listens there: no server is needed
    env.update(dict(command.env))
    script = Path(sys.executable).with_name("shipper")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "shipper.cli"]
    result = _run([*argv, *command.argv[1:]], tmp_path, env)
    assert result.returncode == 0, f"{command.where}: {' '.join(command.argv)}\n" \
                                   f"{_output(result)}"
    if command.output is not None:
        shown = [line.rstrip() for line in command.output.strip("\n").splitlines()]
        printed = [line.rstrip() for line in result.stdout.strip("\n").splitlines()]
        assert printed == shown, f"{command.where}: the docs show other output than " \
                                 f"`{' '.join(command.argv)}` prints:\n{result.stdout}"


# ----------------------------------------------------------------------------- configuration


def _configuration_page() -> str:
    return (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def _table_names(markdown: str) -> list[str]:
    """First-column names of the settings tables (those with the generated header)."""
    names: list[str] = []
    inside = False
    for line in markdown.splitlines():
        if line.startswith("| setting | environment variable | type | default | meaning |"):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside and (match := re.match(r"^\| `([^`]+)` \|", line)):
            names.append(match.group(1))
    return names


def test_configuration_page_lists_exactly_the_settings_of_shipperconfig() -> None:
    page = _configuration_page()
    found = markers(page)
    assert "shipper.config:ShipperConfig" in [m["target"] for m in found], \
        "docs/configuration.md lost its ShipperConfig table marker"
    rendered = expand(page)
    assert not markers(rendered)
    names = set(_table_names(rendered))
    fields = {f.name for f in dataclasses.fields(ShipperConfig)}
    assert not fields - names, f"settings missing from the page: {sorted(fields - names)}"
    every_table = {row.name for m in found
                   for row in settings(_resolve(m["target"]),
                                       _resolve(m["env"]) if m["env"] else None)}
    assert not names - every_table, \
        f"the page names settings that do not exist: {sorted(names - every_table)}"
    for var in ENV_VARS:
        assert f"`{var}`" in rendered, f"{var} is missing from docs/configuration.md"


def test_configuration_page_lists_every_setting_of_the_sidecars_schema() -> None:
    from shipper.sidecar import config as sidecar

    page = _configuration_page()
    targets = {m["target"] for m in markers(page)}
    names = set(_table_names(expand(page)))
    for cls in (sidecar.SidecarConfig, sidecar.FileSourceConfig, sidecar.HttpSourceConfig,
                sidecar.DockerSourceConfig):
        assert f"shipper.sidecar.config:{cls.__name__}" in targets, \
            f"docs/configuration.md has no table for {cls.__name__}"
        missing = {row.name for row in settings(cls)} - names
        assert not missing, f"{cls.__name__} settings missing from the page: {sorted(missing)}"


# ----------------------------------------------------------------------------- README, changelog


def test_readme_stays_a_short_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; the reference belongs in docs/"


def test_changelog_keeps_the_keep_a_changelog_form() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "keepachangelog.com" in text
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings and headings[0] == "[Unreleased]", headings
    for heading in headings[1:]:
        assert re.fullmatch(r"\[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}", heading), heading
    kinds = set(re.findall(r"^### (.+)$", text, flags=re.MULTILINE))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds

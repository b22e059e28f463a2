"""``promtail_positions``: Promtail's positions.yaml read once at start-up, as Promtail 3.6
writes it (clients/pkg/promtail/positions), hostile files refused with their name and bad entries
named with the others kept; files found at start-up go on where Promtail stopped unless that
cannot be their position; the sidecar's own positions always win."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.sidecar.config import FileSourceConfig, SidecarConfigError, load_config
from shipper.sidecar.formats import LineParser
from shipper.sidecar.positions import Positions, PositionsStore
from shipper.sidecar.promtail import (
    MAX_POSITIONS_BYTES,
    PromtailPositionsError,
    adopt_promtail_positions,
    read_promtail_positions,
)
from shipper.sidecar.runner import Sidecar, StartupError
from shipper.sidecar.sources.file import FileSource
from tests.sidecar.test_file import Sink, expect, lines, start
from tests.support.docsnippets import ROOT
from tests.support.fakeloki import FakeLoki
from tests.support.sidecar_process import SidecarProcess, json_lines, wait_until

#: what Promtail 3.6 writes (yaml.v2 Marshal of File{Positions map[string]string}: keys sorted,
#: offsets quoted strings, a journal cursor as it comes)
PROMTAIL_WRITES = """\
positions:
  /var/log/app/api.log: "2048"
  /var/log/app/worker.log: "0"
  cursor-journal: s=4c1f0d0e6a9b4a1c8e7d3f2a1b0c9d8e;i=2a1;b=7d3f2a1b;m=3c4d5e6f
  cursor-varlogs-nginx: "1764950400"
"""


@pytest.fixture
def running() -> Iterator[list[object]]:
    sources: list[object] = []
    yield sources
    for source in sources:
        source.stop(time.monotonic() + 2)  # type: ignore[attr-defined]


def make(tmp_path: Path, sink: Sink, *, promtail: dict[str, int],
         report: Callable[[str], None] = lambda message: None, **options: Any) -> FileSource:
    config = FileSourceConfig(paths=(str(tmp_path / "*.log"),), poll_interval=0.02,
                              scan_interval=0.05, **options)
    return FileSource(config, parser=LineParser(service="shop"), submit=sink,
                      report=report, promtail=promtail)


def write(tmp_path: Path, text: str | bytes, name: str = "positions.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# ----------------------------------------------------------------------------- reading


def test_promtails_own_file_gives_its_file_offsets_and_counts_its_cursors(
        tmp_path: Path) -> None:
    found = read_promtail_positions(write(tmp_path, PROMTAIL_WRITES))
    assert dict(found.files) == {"/var/log/app/api.log": 2048, "/var/log/app/worker.log": 0}
    assert found.cursors == 2 and found.skipped_total == 0
    assert "2 file positions, 2 cursors" in found.summary()


@pytest.mark.parametrize("text", ["", "positions:\n", "positions: {}\n", "# none\n"])
def test_an_empty_positions_file_holds_no_positions_as_promtail_reads_it(
        tmp_path: Path, text: str) -> None:
    assert dict(read_promtail_positions(write(tmp_path, text)).files) == {}


@pytest.mark.parametrize(("entry", "why"), [
    ('/var/log/b.log: "-5"', 'the offset "-5" is negative'),
    ("/var/log/b.log: twelve", 'the offset "twelve" is not a whole number'),
    ('/var/log/b.log: "1.5"', 'the offset "1.5" is not a whole number'),
    ('/var/log/b.log: ""', 'the offset "" is not a whole number'),
    ("/var/log/b.log: ~", 'the offset "~" is not a whole number'),
    ("/var/log/b.log: [1, 2]", "the offset is a list, not a number"),
    ("/var/log/b.log: {a: 1}", "the offset is a mapping, not a number"),
    ('/var/log/b.log: "' + "9" * 5000 + '"', "is larger than any file"),
    ('/var/log/b.log: "9223372036854775808"', "is larger than any file"),
    ('relative/b.log: "5"', "not an absolute path"),
    ('"": "5"', "an empty path"),
    ('"/var/log/b\\0.log": "5"', "cannot hold a NUL byte"),
    ('/var/log/b.log.gz: "5"', "a compressed file"),
    ('[/var/log/b.log]: "5"', "the key is a list, not a path"),
])
def test_a_bad_entry_is_named_by_its_line_and_the_others_are_kept(
        tmp_path: Path, entry: str, why: str) -> None:
    text = f'positions:\n  /var/log/a.log: "10"\n  {entry}\n  /var/log/c.log: "30"\n'
    found = read_promtail_positions(write(tmp_path, text))
    assert dict(found.files) == {"/var/log/a.log": 10, "/var/log/c.log": 30}
    assert found.skipped_total == 1
    (said,) = found.skipped
    assert said.startswith("line 3: ") and why in said
    assert "\n" not in said and len(said) < 400


def test_a_path_given_twice_is_used_for_neither_and_said_once(tmp_path: Path) -> None:
    text = 'positions:\n  /var/log/a.log: "10"\n  /var/log/./a.log: "99"\n  /x.log: "1"\n'
    found = read_promtail_positions(write(tmp_path, text))
    assert dict(found.files) == {"/x.log": 1}
    assert found.skipped_total == 1 and "given more than once" in found.skipped[0]


def test_a_path_with_a_newline_is_that_file_and_is_named_on_one_line(tmp_path: Path) -> None:
    text = 'positions:\n  "/var/log/a\\nb.log": "7"\n  "/var/log/x\\ny.log": nope\n'
    found = read_promtail_positions(write(tmp_path, text))
    assert dict(found.files) == {"/var/log/a\nb.log": 7}
    assert all("\n" not in note for note in found.notes())
    assert '"/var/log/x\\ny.log"' in found.skipped[0]


def test_thousands_of_bad_entries_name_ten_and_count_the_rest(tmp_path: Path) -> None:
    text = "positions:\n" + "".join(f'  /var/log/{i}.log: "-{i + 1}"\n' for i in range(5000))
    found = read_promtail_positions(write(tmp_path, text + '  /var/log/ok.log: "3"\n'))
    assert dict(found.files) == {"/var/log/ok.log": 3}
    assert found.skipped_total == 5000 and len(found.skipped) == 10
    notes = found.notes()
    assert len(notes) == 12 and notes[-1].endswith("and 4990 more entries skipped")


@pytest.mark.parametrize(("content", "why"), [
    ("[" * 100_000, "not valid YAML"),
    ("positions:\n  /a: &x [" + "[" * 2000 + "]" * 2000 + "]\n", "not valid YAML"),
    ("positions: [1, 2]\n", "'positions' is a list"),
    ("positions: 3\n", "'positions' is a single value"),
    ("- /a\n- /b\n", "expected 'positions:'"),
    ("positions: {}\nextra: 1\n", '"extra": expected only \'positions:\''),
    ("positions: {}\npositions: {}\n", "'positions' given twice"),
    ("positions: {/a: '1'}\n---\npositions: {}\n", "a second YAML document"),
    ("positions:\n  /a: '1'\n  /b: [\n", "not valid YAML"),
    (b"positions:\n  /a: '1'\x00\n", "NUL bytes"),
    (b"\xff\xfe\xfd garbage", "not valid YAML"),
])
def test_a_file_that_is_not_a_positions_file_is_refused_naming_it_and_why(
        tmp_path: Path, content: str | bytes, why: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(PromtailPositionsError) as caught:
        read_promtail_positions(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and why in message, message
    assert "\n" not in message and len(message) < 600


def test_tags_are_never_acted_on(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    text = (f'positions:\n  /a.log: !!python/object/apply:os.system ["touch {marker}"]\n'
            '  /b.log: !!int "4"\n')
    found = read_promtail_positions(write(tmp_path, text))
    assert dict(found.files) == {"/b.log": 4} and found.skipped_total == 1
    assert not marker.exists()


def test_a_file_larger_than_any_positions_file_is_refused_without_reading_it_all(
        tmp_path: Path) -> None:
    path = tmp_path / "positions.yaml"
    with path.open("wb") as f:
        f.write(b"positions:\n")
        f.truncate(MAX_POSITIONS_BYTES + 10)
    with pytest.raises(PromtailPositionsError, match="larger than 32 MiB"):
        read_promtail_positions(path)


def test_a_fifo_or_a_directory_is_refused_and_never_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PromtailPositionsError, match="not a regular file"):
        read_promtail_positions(fifo)
    with pytest.raises(PromtailPositionsError, match="a directory"):
        read_promtail_positions(tmp_path)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=300),
    st.text(alphabet='positons:/ab"\'-0123456789\n[]{}&*!|>#~,.', max_size=300)))
def test_no_content_ever_raises_anything_but_a_clear_error(tmp_path: Path, data: object) -> None:
    path = write(tmp_path, data if isinstance(data, bytes) else str(data))
    try:
        found = read_promtail_positions(path)
    except PromtailPositionsError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert all(isinstance(o, int) and o >= 0 for o in found.files.values())


# ----------------------------------------------------------------------------- adopting


def test_the_sidecars_own_positions_win_and_promtails_are_not_read(tmp_path: Path) -> None:
    said: list[str] = []
    path = write(tmp_path, "not: [even, yaml")
    assert adopt_promtail_positions(str(path), "/var/lib/shipper/positions.json",
                                    taken_over=True, say=said.append) == {}
    assert said and "the sidecar has positions of its own (/var/lib/shipper/positions.json)" \
        ", which win" in said[0]


def test_a_missing_promtail_file_is_said_and_files_start_as_start_at_says(
        tmp_path: Path) -> None:
    said: list[str] = []
    assert adopt_promtail_positions(str(tmp_path / "none.yaml"), "p.json", taken_over=False,
                                    say=said.append) == {}
    assert "does not exist" in said[0]


def test_files_found_at_start_up_go_on_where_promtail_stopped(
        tmp_path: Path, running: list[object]) -> None:
    """Today a Promtail user starts from zero: every file is read again from its start."""
    read, unread, fresh = tmp_path / "read.log", tmp_path / "unread.log", tmp_path / "new.log"
    read.write_text(lines("r", 0, 10))
    done = read.stat().st_size
    read.write_text(lines("r", 0, 10) + lines("r", 10, 15))
    unread.write_text(lines("u", 0, 3))
    fresh.write_text(lines("n", 0, 2))
    reports: list[str] = []
    sink = Sink()
    source = make(tmp_path, sink, start_at="end", promtail={str(read): done, str(unread): 0},
                  report=reports.append)
    start(running, source)
    expect(sink, [f"r{i}" for i in range(10, 15)] + [f"u{i}" for i in range(3)])
    assert any("2 files started where Promtail stopped, 0 from their start" in r
               for r in reports), reports


@pytest.mark.parametrize(("offset", "why"), [
    (10_000, "is beyond its size"),
    (5, "does not follow the end of a line"),
])
def test_a_promtail_offset_that_cannot_be_this_files_reads_it_from_its_start_saying_so(
        tmp_path: Path, running: list[object], offset: int, why: str) -> None:
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 4))
    reports: list[str] = []
    sink = Sink()
    source = make(tmp_path, sink, promtail={str(log): offset}, report=reports.append)
    start(running, source)
    expect(sink, [f"a{i}" for i in range(4)])
    assert any(f"{log}: Promtail's offset {offset} {why}" in r and "read from its start" in r
               for r in reports), reports


def test_a_file_that_appears_after_start_up_is_read_from_its_start_whatever_promtail_said(
        tmp_path: Path, running: list[object]) -> None:
    log = tmp_path / "later.log"
    sink = Sink()
    source = make(tmp_path, sink, promtail={str(log): 12})
    start(running, source)
    time.sleep(0.2)
    log.write_text(lines("l", 0, 3))
    expect(sink, ["l0", "l1", "l2"])


# ----------------------------------------------------------------------------- the sidecar


def sidecar_config(tmp_path: Path, promtail: Path | None, **extra: str) -> Path:
    lines_ = [
        "loki: {url: null}",
        f"spool_dir: {tmp_path / 'spool'}",
        f"positions_file: {tmp_path / 'positions.json'}",
        "metrics_listen: null",
        *(f"{k}: {v}" for k, v in extra.items()),
        "sources:",
        f"  - {{type: file, paths: ['{tmp_path}/logs/*.log']}}",
    ]
    if promtail is not None:
        lines_.insert(0, f"promtail_positions: {promtail}")
    path = tmp_path / "sidecar.yaml"
    path.write_text("\n".join(lines_) + "\n")
    return path


def test_a_damaged_promtail_file_stops_start_up_naming_it(tmp_path: Path) -> None:
    promtail = write(tmp_path, "positions: [")
    sidecar = Sidecar(load_config(sidecar_config(tmp_path, promtail)))
    with pytest.raises(StartupError, match=f"promtail_positions: {promtail}: not valid YAML"):
        sidecar.start()


def test_promtail_positions_cannot_be_the_sidecars_own_positions_file(tmp_path: Path) -> None:
    config = sidecar_config(tmp_path, tmp_path / "positions.json")
    with pytest.raises(SidecarConfigError, match="a file other than positions_file"):
        load_config(config)


def test_a_promtail_file_given_as_the_sidecars_own_is_moved_aside_naming_the_setting(
        tmp_path: Path) -> None:
    reports: list[str] = []
    path = write(tmp_path, PROMTAIL_WRITES, "positions.json")
    assert PositionsStore(path, reports.append).load() == Positions()
    assert not path.exists()
    (said,) = reports
    assert "it is a Promtail positions file (YAML), not the sidecar's: name it in " \
           "promtail_positions" in said and ".damaged-" in said


def test_check_says_what_promtails_file_holds_and_refuses_one_start_up_would_refuse(
        tmp_path: Path) -> None:
    def check(promtail: Path) -> subprocess.CompletedProcess[str]:
        config = sidecar_config(tmp_path, promtail)
        return subprocess.run([sys.executable, "-m", "shipper", "sidecar", "--config",
                               str(config), "--check"], check=False, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    good = check(write(tmp_path, PROMTAIL_WRITES))
    assert good.returncode == 0, good.stderr
    assert "promtail_positions: " in good.stdout and "2 file positions, 2 cursors" in good.stdout
    bad = check(write(tmp_path, "positions: [", "bad.yaml"))
    assert bad.returncode == 2 and f"promtail_positions: {tmp_path / 'bad.yaml'}: not valid " \
        "YAML" in bad.stderr


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "2-workers"])
def test_a_running_sidecar_ships_only_what_promtail_had_not_read_and_then_keeps_its_own(
        tmp_path: Path, workers: int) -> None:
    """The issue: a Promtail user's files were all read again from their start."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("a", 0, 100))
    done = len(json_lines("a", 0, 60).encode())
    promtail = write(tmp_path, f'positions:\n  {log}: "{done}"\n')
    with FakeLoki(rate_limit=False) as loki:
        proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(logs / "*.log")],
                                          "format": "json", "poll_interval": "20ms"}],
                              loki_url=loki.url, workers=workers,
                              promtail_positions=str(promtail))
        try:
            proc.start()
            assert wait_until(lambda: loki.count() >= 40)
            assert proc.finish() == 0
            got = sorted(json.loads(line)["message"] for line in loki.lines())
            assert got == sorted(f"a{i}" for i in range(60, 100))
            assert "1 file started where Promtail stopped" in proc.stderr
            # the second start: its own positions win, Promtail's file is not read again
            promtail.write_text("positions: [")
            log.write_text(log.read_text() + json_lines("a", 100, 110))
            proc.start()
            assert wait_until(lambda: loki.count() >= 50)
            assert proc.finish() == 0
            assert "the sidecar has positions of its own" in proc.stderr
            assert loki.count() == 50
        finally:
            proc.kill()


def test_after_its_own_positions_file_was_damaged_promtails_offsets_are_not_used_again(
        tmp_path: Path) -> None:
    """The sidecar ran here: a file without a position now is newer than Promtail's record,
    which would skip its first lines."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text(json_lines("a", 0, 5))
    promtail = write(tmp_path, f'positions:\n  {log}: "{len(json_lines("a", 0, 2))}"\n')
    (tmp_path / "positions.json").write_text("{damaged")
    with FakeLoki(rate_limit=False) as loki:
        proc = SidecarProcess(tmp_path, [{"type": "file", "paths": [str(logs / "*.log")],
                                          "format": "json", "poll_interval": "20ms"}],
                              loki_url=loki.url, promtail_positions=str(promtail))
        try:
            proc.start()
            assert wait_until(lambda: loki.count() >= 5)
            assert proc.finish() == 0
        finally:
            proc.kill()
        assert sorted(json.loads(line)["message"] for line in loki.lines()) == [
            f"a{i}" for i in range(5)]
    assert "not read: the sidecar has positions of its own" in proc.stderr

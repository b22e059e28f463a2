"""The file source, in process: rotation, truncation, re-creation, partial and overlong lines,
garbage, many files, positions. (tests/sidecar/test_process.py runs the real command.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.event import Level, LogEvent
from shipper.sidecar.config import FileSourceConfig, MultilineConfig
from shipper.sidecar.formats import LineParser, cut_line
from shipper.sidecar.positions import FilePosition, Positions, PositionsStore, fingerprint
from shipper.sidecar.sources.file import FileSource
from tests.support.waiting import wait_until


class Sink:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: LogEvent) -> None:
        with self._lock:
            self.events.append(event)

    def messages(self) -> list[str]:
        with self._lock:
            return [e.message for e in self.events]




def make(tmp_path: Path, sink: Sink, pattern: str = "*.log", saved: tuple[FilePosition, ...]
         = (), fmt: str = "auto", **options: Any) -> FileSource:
    settings: dict[str, Any] = {"paths": (str(tmp_path / pattern),), "poll_interval": 0.02,
                                "scan_interval": 0.05, "partial_line_timeout": 0.3}
    settings.update(options)
    config = FileSourceConfig(format=fmt, **settings)  # type: ignore[arg-type]
    parser = LineParser(format=fmt, service="shop", level_pattern=config.level_pattern)
    return FileSource(config, parser=parser, submit=sink, saved=saved)


@pytest.fixture
def running() -> Iterator[list[FileSource]]:
    sources: list[FileSource] = []
    yield sources
    for source in sources:
        source.stop(time.monotonic() + 2)


def start(running: list[FileSource], source: FileSource) -> FileSource:
    running.append(source)
    source.start()
    return source


def lines(prefix: str, start: int, stop: int) -> str:
    return "".join(f'{{"msg":"{prefix}{i}","level":"info"}}\n' for i in range(start, stop))


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def expect(sink: Sink, wanted: list[str], timeout: float = 10.0) -> None:
    """Every wanted message arrives exactly once (and nothing else)."""
    wait_until(lambda: len(sink.messages()) >= len(wanted), timeout)
    time.sleep(0.1)  # anything extra would show up now
    got = sink.messages()
    assert sorted(got) == sorted(wanted), (
        f"missing {sorted(set(wanted) - set(got))[:5]}, extra or repeated "
        f"{[m for m in got if got.count(m) > 1 or m not in wanted][:5]}")


def test_rotation_by_rename_mid_stream_loses_and_repeats_nothing(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 300))
    start(running, make(tmp_path, sink, pattern="app.log"))
    wait_until(lambda: len(sink.events) >= 100)
    with log.open("a") as old:  # the app still holds the old file when logrotate renames it
        os.rename(log, tmp_path / "app.log.1")
        old.write(lines("a", 300, 400))  # written after the rename, before the app reopens
        old.flush()
        log.write_text(lines("b", 0, 200))  # the app reopens: a new file at the old name
    append(log, lines("b", 200, 300))
    expect(sink, [f"a{i}" for i in range(400)] + [f"b{i}" for i in range(300)])


def test_a_file_renamed_within_the_globs_keeps_its_offset(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 50))
    start(running, make(tmp_path, sink, pattern="app*"))
    wait_until(lambda: len(sink.events) >= 50)
    os.rename(log, tmp_path / "app.1")
    append(tmp_path / "app.1", lines("a", 50, 60))
    log.write_text(lines("b", 0, 10))
    expect(sink, [f"a{i}" for i in range(60)] + [f"b{i}" for i in range(10)])


def test_copytruncate_mid_stream_reads_the_new_content_from_its_start(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 500))
    source = start(running, make(tmp_path, sink, pattern="app.log"))
    wait_until(lambda: len(sink.events) >= 500)
    shutil.copy(log, tmp_path / "app.log.1")
    with log.open("r+") as f:
        f.truncate(0)
    append(log, lines("b", 0, 100))
    wait_until(lambda: len(sink.events) >= 600)
    # truncated again and at once refilled past the old offset: the fingerprint tells
    with log.open("r+") as f:
        f.truncate(0)
    append(log, lines("c", 0, 1000))
    expect(sink, [f"a{i}" for i in range(500)] + [f"b{i}" for i in range(100)] +
           [f"c{i}" for i in range(1000)])
    assert source.truncations == 2


def test_a_file_deleted_and_recreated_is_read_from_its_start(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 100))
    start(running, make(tmp_path, sink))
    wait_until(lambda: len(sink.events) >= 100)
    log.unlink()
    log.write_text(lines("b", 0, 100))
    expect(sink, [f"a{i}" for i in range(100)] + [f"b{i}" for i in range(100)])


def test_a_partial_last_line_waits_for_its_newline_then_for_the_timeout(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text('{"msg":"whole"}\n{"msg":"ha')
    source = start(running, make(tmp_path, sink, partial_line_timeout=60))
    wait_until(lambda: sink.events)
    time.sleep(0.2)
    assert sink.messages() == ["whole"]
    assert source.snapshot()[0].offset == len('{"msg":"whole"}\n')
    append(log, 'lf"}\n')
    wait_until(lambda: len(sink.events) == 2)
    assert sink.messages() == ["whole", "half"]
    # a writer that never ends its last line: shipped as it is after partial_line_timeout
    sink2 = Sink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.log").write_text("no newline at the end")
    start(running, make(other, sink2, partial_line_timeout=0.2))
    assert wait_until(lambda: sink2.messages() == ["no newline at the end"], 5)


def test_invalid_json_a_1mb_line_and_binary_garbage_are_shipped_not_dropped(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    big = '{"msg":"' + "x" * (1 << 20) + '"}'
    garbage = bytes(range(256)) * 4
    with log.open("wb") as f:
        f.write(b'{"msg":"ok1"}\n{"msg": broken\n' + big.encode() + b"\n" + garbage +
                b'\n{"msg":"ok2"}\n\xff\xfe caf\xc3\xa9 \xe9t\xe9\n')
    source = start(running, make(tmp_path, sink, fmt="json", max_line_bytes=64 * 1024))
    events = wait_until(lambda: sink.events if len(sink.events) >= 7 else None)
    time.sleep(0.1)
    by_message = [e.message for e in sink.events]
    assert "ok1" in by_message and "ok2" in by_message
    broken = next(e for e in events if e.message == '{"msg": broken')
    assert broken.metadata["parse_error"].startswith("json: not valid JSON")
    cut = next(e for e in events if e.message.startswith('{"msg":"xxx'))
    assert cut.message.endswith(f"...[truncated by shipper: {len(big)} bytes]")
    assert len(cut.message.encode()) < 64 * 1024 + 100
    assert source.truncated_lines == 1
    decoded = [e for e in events if "caf" in e.message]
    assert decoded and decoded[0].message == "\ufffd\ufffd café \ufffdt\ufffd"
    assert sum("parse_error" in e.metadata for e in events) >= 4  # broken, cut, garbage...
    assert source.snapshot()[0].offset == log.stat().st_size


def test_an_overlong_line_is_not_held_in_memory_while_it_grows(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    source = start(running, make(tmp_path, sink, max_line_bytes=1024, read_chunk_bytes=4096,
                                 partial_line_timeout=60))
    with log.open("w") as f:
        for _ in range(64):  # 256 KiB of one line, written in pieces
            f.write("y" * 4096)
            f.flush()
        f.write("\nnext\n")
    wait_until(lambda: len(sink.events) == 2)
    assert sink.events[0].message == "y" * 1024 + "...[truncated by shipper: 262144 bytes]"
    assert sink.events[1].message == "next"
    assert source.snapshot()[0].offset == log.stat().st_size


@pytest.mark.slow
def test_a_thousand_files_matched_by_a_glob(tmp_path: Path,
                                            running: list[FileSource]) -> None:
    sink = Sink()
    for d in range(10):
        sub = tmp_path / f"svc{d}"
        sub.mkdir()
        for i in range(100):
            (sub / f"f{i}.log").write_text(lines(f"{d}-{i}-", 0, 3))
    source = start(running, make(tmp_path, sink, pattern="**/*.log", scan_interval=0.5))
    wanted = [f"{d}-{i}-{n}" for d in range(10) for i in range(100) for n in range(3)]
    expect(sink, wanted, timeout=30)
    for d in range(10):  # every one of them is still followed
        append(tmp_path / f"svc{d}" / "f99.log", lines(f"late{d}-", 0, 1))
    wait_until(lambda: len(sink.events) == 3010, 10)
    assert len(source.snapshot()) == 1000
    assert sorted(sink.messages()[-10:]) == [f"late{d}-0" for d in range(10)]


def test_new_files_are_picked_up_and_start_at_end_only_applies_at_start_up(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    (tmp_path / "old.log").write_text(lines("old", 0, 10))
    source = start(running, make(tmp_path, sink, start_at="end"))
    assert wait_until(lambda: source.files_opened == 1)
    time.sleep(0.1)
    assert sink.events == []
    append(tmp_path / "old.log", lines("old", 10, 12))
    (tmp_path / "new.log").write_text(lines("new", 0, 5))
    expect(sink, ["old10", "old11"] + [f"new{i}" for i in range(5)])


def test_a_restart_resumes_from_the_snapshot_neither_skipping_nor_rereading(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 100))
    first = start(running, make(tmp_path, sink))
    wait_until(lambda: len(sink.events) >= 100)
    first.stop(time.monotonic() + 2)
    saved = tuple(first.snapshot())
    append(log, lines("a", 100, 150))
    second = start(running, make(tmp_path, sink, saved=saved))
    expect(sink, [f"a{i}" for i in range(150)])
    assert second.snapshot()[0].offset == log.stat().st_size


def test_a_reused_inode_with_other_first_bytes_is_read_from_its_start(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("new", 0, 20))
    st = log.stat()
    stale = FilePosition(str(log), st.st_dev, st.st_ino, offset=300, fp_len=40,
                         fp=fingerprint(b"something else entirely, 40 bytes long."))
    start(running, make(tmp_path, sink, saved=(stale,)))
    expect(sink, [f"new{i}" for i in range(20)])


def test_multiline_records_are_joined_and_the_held_record_is_not_in_the_position(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    record = ("2026-11-20 09:15:02 ERROR payment failed\n"
              "Traceback (most recent call last):\n"
              '  File "pay.py", line 3, in charge\n'
              "ValueError: card declined\n")
    log.write_text(record + "2026-11-20 09:15:03 INFO next\n")
    source = start(running, make(tmp_path, sink, fmt="text", multiline=MultilineConfig(
        start=r"^\d{4}-\d{2}-\d{2} ", timeout=30.0)))
    first = wait_until(lambda: sink.events[:1])[0]
    assert first.level == Level.ERROR
    assert first.message == "2026-11-20 09:15:02 ERROR payment failed"
    assert first.exception == ('Traceback (most recent call last):\n  File "pay.py", line 3, '
                               "in charge\nValueError: card declined")
    time.sleep(0.1)
    assert len(sink.events) == 1  # "next" may still get continuation lines
    assert source.snapshot()[0].offset == len(record)


def test_sighup_reopen_finds_new_files_at_once(tmp_path: Path,
                                               running: list[FileSource]) -> None:
    sink = Sink()
    (tmp_path / "a.log").write_text(lines("a", 0, 1))
    source = start(running, make(tmp_path, sink, scan_interval=3600))
    wait_until(lambda: sink.events)
    (tmp_path / "b.log").write_text(lines("b", 0, 1))
    time.sleep(0.2)
    assert sink.messages() == ["a0"]
    source.reopen()
    expect(sink, ["a0", "b0"])


def test_stopping_ships_held_lines_and_reports_lag(tmp_path: Path) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 3) + '{"msg":"unfinished"}')
    source = make(tmp_path, sink, partial_line_timeout=60)
    source.start()
    wait_until(lambda: len(sink.events) == 3)
    assert [s.lag_bytes for s in source.status()] == [0]
    source.stop(time.monotonic() + 2)
    assert sink.messages()[-1] == "unfinished"
    assert source.snapshot()[0].offset == log.stat().st_size


# --------------------------------------------------------------------------- positions file


def test_positions_are_saved_atomically_and_read_back(tmp_path: Path) -> None:
    store = PositionsStore(tmp_path / "positions.json", report=lambda m: None)
    positions = Positions((FilePosition("/a.log", 1, 2, 30, 4, "ff"),), {"c1": 123})
    store.save(positions)
    assert store.load() == positions
    assert [p.name for p in tmp_path.iterdir()] == ["positions.json"]  # no temp file left


_GOOD_FILE = {"path": "/a.log", "dev": 1, "ino": 2, "offset": 30, "fp_len": 4, "fp": "ff"}


def _doc(**changes: Any) -> bytes:
    doc: dict[str, Any] = {"version": 1, "files": [dict(_GOOD_FILE)], "containers": {"c": 1}}
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("damage", [
    pytest.param(b"\x00\x00\x00\x00", id="nul-bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(b"not json at all", id="not-json"),
    pytest.param(b'{"version": 1, "files": [{"pa', id="cut-mid-key"),
    pytest.param(b'{"version": 1, "files": 3}', id="files-a-number"),
    pytest.param(b'{"version":1,"files":[{"path":"/a","dev":1}]}', id="a-position-cut-short"),
    pytest.param(b"[" * 100_000, id="100000-open-brackets"),
    pytest.param(b'{"a":' * 50_000, id="deep-objects"),
    pytest.param(b'{"version":1,"files":[],"containers":{"c":' + b"[" * 5_000 + b"]" * 5_000
                 + b"}}", id="deep-inside-a-valid-shape"),
    pytest.param(bytes(range(1, 256)) * 40, id="binary"),
    pytest.param(b'{"version":1,"files":[],"containers":{"\xff\xfe": 1}}', id="invalid-utf8"),
    pytest.param(_doc(version=True), id="version-true"),
    pytest.param(_doc(files=[{**_GOOD_FILE, "dev": True}]), id="bool-dev"),
    pytest.param(_doc(files=[{**_GOOD_FILE, "offset": -1}]), id="negative-offset"),
    pytest.param(_doc(files=[{**_GOOD_FILE, "offset": "30"}]), id="string-offset"),
    pytest.param(_doc(files=[{**_GOOD_FILE, "fp_len": 4.0}]), id="float-fp-len"),
    pytest.param(_doc(files=[["/a.log", 1, 2]]), id="a-list-for-a-position"),
    pytest.param(_doc(files=[{**_GOOD_FILE, "extra": 1}]), id="an-unknown-field"),
    pytest.param(_doc(containers={"c": False}), id="bool-timestamp"),
    pytest.param(_doc(containers=[]), id="containers-a-list"),
    pytest.param(_doc()[:-7], id="truncated"),
    pytest.param(b'{"version":1,"files":[{"offset":1' + b"0" * 5_000 + b"}]}",
                 id="a-5000-digit-number"),
])
def test_a_positions_file_damaged_in_any_way_is_moved_aside_saying_where(
        tmp_path: Path, damage: bytes) -> None:
    """100,000 '[' used to end the sidecar's start with a RecursionError traceback (exit 1)."""
    reports: list[str] = []
    path = tmp_path / "positions.json"
    path.write_bytes(damage)
    store = PositionsStore(path, report=reports.append)
    assert store.load() == Positions()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("positions.json.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damage
    assert len(reports) == 1 and "\n" not in reports[0] and len(reports[0]) < 600
    assert f"positions file {path} is damaged (" in reports[0]
    assert f"moved to {aside[0]};" in reports[0]
    store.save(Positions())
    assert store.load().files == () and len(reports) == 1


def test_a_positions_path_that_is_not_a_file_is_moved_aside_and_never_waited_on(
        tmp_path: Path) -> None:
    reports: list[str] = []
    cases = {"a-directory": lambda p: (p.mkdir(), (p / "inside").write_text("x")),
             "a-fifo": lambda p: os.mkfifo(p),
             "a-loop-of-links": lambda p: os.symlink(p.name, p),
             "larger-than-64MiB": lambda p: os.truncate(p.open("wb").name, 65 << 20)}
    for name, make_it in cases.items():
        where = tmp_path / name
        where.mkdir()
        path = where / "positions.json"
        make_it(path)
        store = PositionsStore(path, report=reports.append)
        assert store.load() == Positions(), name
        assert f"moved to {where}/positions.json.damaged-" in reports[-1], (name, reports)
        assert not os.path.lexists(path)
        store.save(Positions((FilePosition("/a.log", 1, 2, 3, 4, "ff"),)))
        assert store.load().files[0].offset == 3
    assert len(reports) == len(cases)
    assert "(it is a directory)" in reports[0] and "(it is not a regular file)" in reports[1]
    assert "Too many levels of symbolic links" in reports[2]
    assert "(it is larger than 64 MiB)" in reports[3]


def test_damaged_positions_files_are_never_moved_over_each_other(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    for damage in (b"one", b"two", b"three"):
        path.write_bytes(damage)
        assert PositionsStore(path, report=lambda m: None).load() == Positions()
    kept = sorted(p.read_bytes() for p in tmp_path.glob("positions.json.damaged-*"))
    assert kept == [b"one", b"three", b"two"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
_POSITION_FIELDS = st.fixed_dictionaries({}, optional={
    key: st.one_of(_JSON, st.just(value)) for key, value in _GOOD_FILE.items()})
_DAMAGED = st.one_of(
    st.binary(max_size=300),
    st.integers(1, 60_000).flatmap(lambda n: st.sampled_from([b"[" * n, b'{"a":' * n,
                                                              b"[{" * n])),
    st.integers(0, len(_doc()) - 1).map(lambda n: _doc()[:n]),
    st.builds(lambda v, f, c: json.dumps({"version": v, "files": f, "containers": c}).encode(),
              st.one_of(st.just(1), _JSON), st.one_of(st.lists(_POSITION_FIELDS, max_size=3),
                                                       _JSON),
              st.one_of(st.dictionaries(st.text(max_size=4), st.integers()), _JSON)),
    _JSON.map(lambda doc: json.dumps(doc).encode()),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=_DAMAGED)
def test_no_positions_file_content_ever_raises_and_damage_is_always_moved_aside(
        tmp_path_factory: pytest.TempPathFactory, damage: bytes) -> None:
    """Loading either reads the file as it is, or moves it aside (saying so, once) and starts
    without positions; nothing escapes, and a save afterwards is read back."""
    work = tmp_path_factory.mktemp("positions")
    path = work / "positions.json"
    path.write_bytes(damage)
    reports: list[str] = []
    store = PositionsStore(path, report=reports.append)
    loaded = store.load()
    aside = list(work.glob("positions.json.damaged-*"))
    if reports:
        assert len(reports) == 1 and "is damaged" in reports[0] and loaded == Positions()
        assert len(aside) == 1 and aside[0].read_bytes() == damage
        assert not path.exists()
    else:  # a document of the right shape: read, and left where it is
        assert not aside and path.read_bytes() == damage
        assert all(type(p.offset) is int and p.offset >= 0 for p in loaded.files)
    store.save(Positions((FilePosition("/b.log", 5, 6, 7, 8, "ee"),)))
    assert store.load().files[0].ino == 6


# --------------------------------------------------------------------------- a property


_OPS = st.lists(st.sampled_from(["write", "partial", "rename", "copytruncate", "recreate",
                                 "restart", "grow_many"]), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_any_sequence_of_writes_rotations_and_restarts_ships_every_line_once(
        tmp_path_factory: pytest.TempPathFactory, ops: list[str]) -> None:
    """The source stepped by hand (no thread, a clock that jumps a second per step): whatever
    the app and logrotate do between two polls, each complete line is shipped exactly once."""
    work = tmp_path_factory.mktemp("prop")
    log = work / "app.log"
    sink = Sink()
    written: list[str] = []
    clock = [1000.0]
    counter = [0]
    pending = [""]  # a partial line the app has started

    def source_from(saved: tuple[FilePosition, ...]) -> FileSource:
        return make(work, sink, pattern="app.log", saved=saved, partial_line_timeout=3600)

    def step(src: FileSource) -> None:
        src._scan(clock[0])
        for _ in range(100):
            clock[0] += 1.1
            if not src._poll_all(clock[0]):
                break

    def write(n: int) -> None:
        with log.open("a") as f:
            for _ in range(n):
                counter[0] += 1
                line = f"L{counter[0]}"
                f.write(f"{line}\n")  # the partial piece is in the file already
                written.append(pending[0] + line)
                pending[0] = ""

    def close(src: FileSource) -> None:
        for tail in list(src._tails.values()):
            os.close(tail.fd)

    log.write_text("")
    source = source_from(())
    step(source)
    for op in ops:
        if op == "write":
            write(3)
        elif op == "grow_many":
            write(400)
        elif op == "partial":
            piece = f"P{counter[0]}-"
            with log.open("a") as f:
                f.write(piece)
            pending[0] += piece
        elif op == "rename":  # logrotate create: rename, new file; the app writes on
            if pending[0]:
                write(1)  # the app ends its line in the old file before it reopens
            step(source)
            os.rename(log, work / f"app.log.{counter[0]}")
            log.write_text("")
        elif op == "copytruncate":
            step(source)  # what copytruncate loses (lines between copy and truncate) aside
            with log.open("r+") as f:
                f.truncate(0)
            if pending[0]:  # the partial line was in the truncated part
                written.append(pending[0])  # shipped by the truncation, as it was
                pending[0] = ""
        elif op == "recreate":
            if pending[0]:
                write(1)
            step(source)
            log.unlink()
            log.write_text("")
        elif op == "restart":  # a crash right after positions were saved
            saved = tuple(source.snapshot())
            close(source)
            source = source_from(saved)
        step(source)
    if pending[0]:
        write(1)
    step(source)
    source._stop_at = float("inf")
    source._drain()
    close(source)
    shipped = sink.messages()
    assert sorted(shipped) == sorted(written), (ops, shipped, written)


def test_the_sidecar_reads_no_further_ahead_than_its_worker_needs(tmp_path: Path) -> None:
    """While Loki does not answer, the tailer stops reading once the queue holds two takes of
    the worker (the file keeps the rest); once Loki answers, every line is delivered."""
    import yaml

    from shipper.delivery.transport import HttpResponse
    from shipper.sidecar.config import load_config
    from shipper.sidecar.runner import Sidecar

    class Gate:
        def __init__(self) -> None:
            self.open = threading.Event()
            self.entries = 0

        def request(self, method: str, url: str, *, headers: Any = None,
                    body: bytes | None = None, timeout: float) -> HttpResponse:
            self.open.wait()
            self.entries += sum(len(s["values"]) for s in json.loads(body or b"{}")["streams"])
            return HttpResponse(204)

        def close(self) -> None:
            self.open.set()

    log = tmp_path / "app.log"
    total = 60_000
    log.write_text("".join(f'{{"msg":"line {i}","level":"info"}}\n' for i in range(total)))
    config_file = tmp_path / "sidecar.yaml"
    config_file.write_text(yaml.safe_dump({
        "loki": {"url": "http://loki.test:3100"}, "service": "shop",
        "spool_dir": str(tmp_path / "spool"), "positions_file": str(tmp_path / "pos.json"),
        "sources": [{"type": "file", "paths": [str(log)], "format": "json"}]}))
    gate = Gate()
    sidecar = Sidecar(load_config(str(config_file)), transport=gate)
    sidecar.start()
    try:
        pipeline = sidecar.pipeline
        assert pipeline is not None
        source = sidecar.sources[0]
        wait_until(lambda: source.lines_read > 0, 10)
        # the tailer would have read the whole file within a second; it stops instead (a
        # reader waits up to a second for the sender's room before it leaves a batch to the
        # worker, so "stopped" is: no line more over two seconds)
        deadline = time.monotonic() + 20
        while True:
            read = source.lines_read
            time.sleep(2.0)
            if source.lines_read == read or time.monotonic() > deadline:
                break
        assert source.lines_read == read < total / 2  # it waits for the worker
        assert pipeline.load() < 0.5  # the HTTP source's mark is not reached either
        gate.open.set()
        wait_until(lambda: gate.entries >= total, 60)
        assert gate.entries == total
    finally:
        gate.open.set()
        sidecar.shutdown(5)


# --------------------------------------------------------------------------- hostile trees


def make_reporting(tmp_path: Path, sink: Sink, reports: list[str], pattern: str = "*.log",
                   **options: Any) -> FileSource:
    settings: dict[str, Any] = {"paths": (str(tmp_path / pattern),), "poll_interval": 0.02,
                                "scan_interval": 0.05, "partial_line_timeout": 0.3}
    settings.update(options)
    config = FileSourceConfig(**settings)
    return FileSource(config, parser=LineParser(service="shop"), submit=sink,
                      report=reports.append)


def test_a_symlink_loop_under_double_star_is_walked_once_and_every_file_ships(
        tmp_path: Path, running: list[FileSource]) -> None:
    """Two links to '.' made the glob expansion never finish: the file thread spun at full
    CPU and shipped nothing from any file."""
    sink = Sink()
    (tmp_path / "a.log").write_text(lines("a", 0, 3))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.log").write_text(lines("b", 0, 3))
    os.symlink(".", tmp_path / "l1")
    os.symlink(".", tmp_path / "l2")
    os.symlink("..", tmp_path / "sub" / "up")
    os.symlink("loop2", tmp_path / "loop1")  # a loop of links, not of directories
    os.symlink("loop1", tmp_path / "loop2")
    source = start(running, make(tmp_path, sink, pattern="**/*.log"))
    expect(sink, [f"a{i}" for i in range(3)] + [f"b{i}" for i in range(3)])
    assert wait_until(lambda: source.scans_cut == 0 and source.problem() is None
                      and source.files_opened == 2)
    append(tmp_path / "sub" / "b.log", lines("b", 3, 4))  # still followed, once
    expect(sink, [f"a{i}" for i in range(3)] + [f"b{i}" for i in range(4)])


def test_a_scan_cut_short_says_so_once_naming_the_pattern_and_keeps_what_it_follows(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    reports: list[str] = []
    for d in range(4):
        (tmp_path / f"d{d}").mkdir()
        for i in range(30):
            (tmp_path / f"d{d}" / f"f{i:02}.log").write_text(lines(f"{d}-{i}-", 0, 1))
    pattern = str(tmp_path / "**" / "*.log")
    source = start(running, make_reporting(tmp_path, sink, reports, pattern="**/*.log",
                                           max_scan_entries=50))
    # d0 (30 files) is reached; the walk stops in d1 (the names are walked in sorted order)
    assert wait_until(lambda: source.scans_cut >= 5)
    cut = [r for r in reports if "stopped" in r]
    assert len(cut) == 1, reports
    assert pattern in cut[0] and "max_scan_entries: 50" in cut[0] and "after 50" in cut[0]
    got = set(sink.messages())
    assert {f"0-{i}-0" for i in range(30)} <= got and not any(m.startswith("3-") for m in got)
    followed = len(source.snapshot())
    append(tmp_path / "d0" / "f00.log", lines("0-0-", 1, 2))  # not taken for gone
    assert wait_until(lambda: "0-0-1" in sink.messages())
    assert len(source.snapshot()) == followed and source.rotations == 0
    assert source.problem() is None


def test_a_scan_past_its_time_bound_stops_and_says_so(tmp_path: Path) -> None:
    sink = Sink()
    reports: list[str] = []
    for i in range(300):
        (tmp_path / f"f{i:03}.log").write_text("")
    source = make_reporting(tmp_path, sink, reports, scan_timeout=1e-9)
    source._scan(0.0)
    source._scan(1.0)
    assert source.scans_cut == 2
    assert len([r for r in reports if "stopped after 0s" in r]) == 1, reports
    assert "scan_timeout" in reports[0] and str(tmp_path / "*.log") in reports[0]


def test_a_glob_matching_more_files_than_max_files_follows_that_many_and_says_so_once(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    reports: list[str] = []
    for i in range(300):
        (tmp_path / f"f{i:03}.log").write_text("")
    source = start(running, make_reporting(tmp_path, sink, reports, max_files=100))
    assert wait_until(lambda: source.files_opened == 100)
    scans = source.files_opened
    time.sleep(0.3)  # several scans
    assert source.files_opened == scans == len(source.snapshot()) == 100
    assert len(reports) == 1 and "max_files (100)" in reports[0] and "200 of them" in reports[0]
    append(tmp_path / "f000.log", lines("x", 0, 1))
    expect(sink, ["x0"])


@pytest.mark.slow
def test_a_glob_matching_100_000_files_keeps_the_source_turning(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    reports: list[str] = []
    for i in range(100_000):
        with open(tmp_path / f"f{i:06}.log", "wb"):
            pass
    source = make_reporting(tmp_path, sink, reports, max_files=1_000, scan_interval=0.5)
    source.stalled_after = 5.0
    start(running, source)
    assert wait_until(lambda: source.files_opened == 1_000, 60)
    append(tmp_path / "f000000.log", lines("first", 0, 1))
    expect(sink, ["first0"], timeout=30)
    assert source.problem() is None
    assert [r for r in reports if "max_files" in r] == reports and len(reports) == 1


def test_fifos_devices_and_directories_named_like_logs_are_left_alone_never_waited_on(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    reports: list[str] = []
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", tmp_path / "zero.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "a.log").write_text(lines("a", 0, 2))
    source = start(running, make_reporting(tmp_path, sink, reports))
    expect(sink, ["a0", "a1"])
    time.sleep(0.2)  # several scans: said once each
    assert sorted(r.split(": ", 1)[1] for r in reports) == [
        f"{fifo} matches the globs but is a FIFO, not a regular file: left alone",
        f"{tmp_path / 'zero.log'} matches the globs but is a character device, not a regular "
        "file: left alone"]
    # a FIFO put in a log file's place between the scan's stat and the open: the open does
    # not wait for a writer (it used to block the source's thread for good)
    opened = threading.Event()

    def race() -> None:
        with pytest.raises(Exception, match="is a FIFO, not a regular file"):
            source._open(str(fifo), time.monotonic())
        opened.set()

    threading.Thread(target=race, daemon=True).start()
    try:
        assert opened.wait(10)
    finally:
        with contextlib.suppress(OSError):  # release a blocked open (on a source that waits)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert source.problem() is None


def test_a_file_replaced_by_a_directory_is_read_to_its_end_and_the_others_go_on(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    reports: list[str] = []
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 2))
    source = start(running, make_reporting(tmp_path, sink, reports))
    expect(sink, ["a0", "a1"])
    with log.open("a") as old:
        log.unlink()
        log.mkdir()  # a directory named like the log, in its place
        old.write(lines("a", 2, 3))  # the app still writes to the deleted file
    (tmp_path / "b.log").write_text(lines("b", 0, 1))
    expect(sink, ["a0", "a1", "a2", "b0"])
    assert wait_until(lambda: len(source.snapshot()) == 1)  # the deleted file was closed
    assert reports == [] and source.problem() is None


def test_links_to_kernel_pseudo_files_are_left_alone(tmp_path: Path,
                                                     running: list[FileSource]) -> None:
    """/proc and /sys files are not logs: their size is not their content (a /sys file of 4
    bytes says 4096, and the source spun reading nothing), and /proc/self/environ holds the
    sidecar's own secrets."""
    sink = Sink()
    reports: list[str] = []
    os.symlink("/proc/self/environ", tmp_path / "environ.log")
    os.symlink("/proc/self/status", tmp_path / "status.log")
    sysfile = "/sys/devices/system/cpu/online"
    if os.path.exists(sysfile):
        os.symlink(sysfile, tmp_path / "cpus.log")
    (tmp_path / "a.log").write_text(lines("a", 0, 1))
    source = start(running, make_reporting(tmp_path, sink, reports))
    expect(sink, ["a0"])
    time.sleep(0.2)
    assert sink.messages() == ["a0"]
    assert source.files_opened == 1
    refused = [r for r in reports if "a pseudo file of the kernel, not a log: left alone" in r]
    assert len(refused) == len(reports) == (3 if os.path.exists(sysfile) else 2), reports
    assert any("environ.log is /proc/" in r for r in refused)


def test_a_file_truncated_again_and_again_while_it_is_read_never_stops_the_source(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 2000))
    source = start(running, make(tmp_path, sink, pattern="app.log", read_chunk_bytes=4096))
    for round_ in range(30):
        with log.open("r+") as f:
            f.truncate(round_ * 37 % 500)
        append(log, lines(f"r{round_}-", 0, 50))
    append(log, "\n" + lines("last", 0, 3))
    assert wait_until(lambda: {"last0", "last1", "last2"} <= set(sink.messages()))
    assert source.alive and source.problem() is None


def test_an_unreadable_file_is_said_once_and_followed_once_it_can_be_read(
        tmp_path: Path, running: list[FileSource], monkeypatch: pytest.MonkeyPatch) -> None:
    sink = Sink()
    reports: list[str] = []
    secret = tmp_path / "secret.log"
    secret.write_text(lines("s", 0, 1))
    (tmp_path / "a.log").write_text(lines("a", 0, 1))
    real_open = os.open
    readable = threading.Event()

    def guarded_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(secret) and not readable.is_set():  # (root reads through chmod)
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    start(running, make_reporting(tmp_path, sink, reports))
    expect(sink, ["a0"])
    time.sleep(0.2)  # several scans
    assert reports == [f"file source file: cannot open {secret} (Permission denied); trying "
                       "again at each scan"]
    readable.set()
    expect(sink, ["a0", "s0"])


# --------------------------------------------------------------------------- health


def test_a_loop_that_stops_coming_round_is_a_problem_and_a_quiet_file_is_not(
        tmp_path: Path, running: list[FileSource]) -> None:
    sink = Sink()
    log = tmp_path / "app.log"
    log.write_text(lines("a", 0, 1))
    source = make(tmp_path, sink)
    source.stalled_after = 0.3
    start(running, source)
    expect(sink, ["a0"])
    time.sleep(1.0)  # nothing written: the loop turns all the same
    assert source.problem() is None
    hung = threading.Event()
    release = threading.Event()
    real_poll = source._poll

    def hanging_poll(tail: Any, now: float, draining: bool) -> bool:
        hung.set()
        release.wait()  # a read that does not return (a hung filesystem)
        return real_poll(tail, now, draining)

    source._poll = hanging_poll  # type: ignore[method-assign]
    assert hung.wait(5)
    problem = wait_until(source.problem, 5)
    assert problem and problem.startswith("file is stalled: its loop has not come round")
    assert f"at {log}" in problem
    assert source.alive  # stalled, not stopped
    source._poll = real_poll  # type: ignore[method-assign]
    release.set()
    assert wait_until(lambda: source.problem() is None, 5)
    append(log, lines("a", 1, 2))
    expect(sink, ["a0", "a1"])


#: pieces of lines that decide how a read is split: whitespace, carriage returns, bytes that
#: are not UTF-8 (alone, cut short, at a line's start or end), multi-byte characters
_LINE_PIECES = st.sampled_from([b"x", b"{", b'"', b" ", b"\t", b"\r", b"\x0b", b"\x0c",
                                b"\xff", b"\xe2\x82", b"\xc3", b"\xc3\xa9", b"\xe2\x82\xac",
                                b"\xf0\x9f\x98\x80", b"!", b"\x00", b"\xc2\xa0", b"~" * 600])
#: and of lines that start with neither whitespace nor a control character (the usual read)
_PLAIN_PIECES = st.sampled_from([b"x", b"{", b"!", b"\xff", b"\xe2\x82", b"\xc3\xa9",
                                 b"\xe2\x82\xac", b"\xc2\xa0", b" ", b"\r", b"~" * 600])
_LINES = st.one_of(
    st.lists(st.lists(_LINE_PIECES, max_size=8).map(b"".join), min_size=1, max_size=40),
    st.lists(st.tuples(st.sampled_from([b"x", b"{", b"\xff", b"\xc3\xa9"]),
                       st.lists(_PLAIN_PIECES, max_size=6).map(b"".join)).map(b"".join),
             min_size=1, max_size=40))


def _shipped_as_if_read_one_by_one(tmp_path: Path, raw_lines: list[bytes]) -> None:
    """Reads are decoded and split at once when that gives what each line on its own would:
    blank and whitespace-only lines skipped, one trailing carriage return dropped, bytes that
    are not UTF-8 replaced line by line, lines past max_line_bytes cut."""
    limit = 1024
    (tmp_path / "app.log").write_bytes(b"\n".join(raw_lines) + b"\n")
    parser = LineParser(format="text", service="shop")
    wanted = []
    for raw in raw_lines:
        if len(raw) > limit:
            text = cut_line(raw[:limit], len(raw))
        elif not raw or raw.isspace():
            continue
        else:
            text = raw.decode("utf-8", "replace").removesuffix("\r")
        wanted.append(parser.parse(text, None, 0).message)
    sink = Sink()
    source = make(tmp_path, sink, fmt="text", max_line_bytes=limit)
    source.start()
    try:
        wait_until(lambda: source.snapshot() and source.snapshot()[0].offset == sum(
            len(raw) + 1 for raw in raw_lines), timeout=5)
    finally:
        source.stop(time.monotonic() + 2)
    assert sink.messages() == wanted
    assert source.lines_read == len(raw_lines)


@pytest.mark.parametrize("raw_lines", [
    [b'{"msg":"a"}', b"x\r", b"y"],  # a carriage return before the newline
    [b"x" + b"~" * 300, b"y" + b"~" * 2000],  # within the limit in characters, not in bytes
    [b"ok", b"", b"ok2"], [b"ok", b"  \t ", b"ok2"], [b"ok", b"\x0b"],  # blank lines
    [b"\tindented", b" spaced", b"x"],  # kept, not blank
    [b"caf\xc3", b"\xa9 split", b"\xe2\x82", b"\xff\xfe", b"\xf0\x9f\x98\x80"],
    [b"\xc3\xa9" * 400],  # 800 bytes: 400 characters
], ids=["cr", "overlong", "empty", "whitespace", "vt", "indented", "not-utf8", "multibyte"])
def test_each_line_of_a_read_is_decoded_skipped_or_cut_as_if_read_on_its_own(
        tmp_path: Path, raw_lines: list[bytes]) -> None:
    _shipped_as_if_read_one_by_one(tmp_path, raw_lines)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_lines=_LINES)
def test_any_lines_are_decoded_skipped_or_cut_as_if_read_one_by_one(
        tmp_path_factory: pytest.TempPathFactory, raw_lines: list[bytes]) -> None:
    _shipped_as_if_read_one_by_one(tmp_path_factory.mktemp("lines"), raw_lines)

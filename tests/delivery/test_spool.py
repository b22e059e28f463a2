"""The on-disk spool: framing, rotation, ordering, damaged segments, the cap, disk errors,
locking between processes, SIGKILL'd writers and fork."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.delivery.spool import (
    MAX_RECORD_BYTES,
    ClaimedSegment,
    Spool,
    SpoolError,
    encode_record,
    spool_status,
)
from shipper.delivery.spool import format as spool_format
from shipper.delivery.spool import locks as spool_locks

fcntl = pytest.importorskip("fcntl")

ROOT = Path(__file__).resolve().parents[2]


class Reports:
    """Collects report(kind, message) calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str) -> None:
        self.calls.append((kind, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def message(self, kind: str) -> str:
        found = [m for k, m in self.calls if k == kind]
        assert len(found) == 1, self.calls
        return found[0]


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path, reports: Reports) -> Iterator[Spool]:
    s = Spool(spool_dir, report=reports)
    yield s
    s.close()


def payloads(prefix: str, n: int, size: int = 40) -> list[bytes]:
    """JSON-ish text payloads (what the pipeline spools), distinct and of ``size`` bytes."""
    out = []
    for i in range(n):
        head = f'["{prefix}",{i},"'
        out.append((head + "x" * max(0, size - len(head) - 2) + '"]').encode())
    return out


def drain(s: Spool) -> list[tuple[int, list[bytes]]]:
    """Claim, read and ack every segment: [(priority, payloads)] in claim order."""
    got = []
    while (seg := s.claim()) is not None:
        got.append((seg.priority, list(seg.records())))
        seg.ack()
    return got


def segment_files(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.iterdir() if p.name.endswith(".seg")),
        key=lambda p: p.name.split("-")[1],
    )


def only_segment(directory: Path) -> Path:
    files = segment_files(directory)
    assert len(files) == 1, files
    return files[0]


def write_sealed(directory: Path, records: list[bytes], reports: Reports | None = None) -> Path:
    """One sealed priority-0 segment holding ``records``."""
    s = Spool(directory, report=reports or Reports())
    assert s.append([(0, r) for r in records]) == len(records)
    s.close()
    return only_segment(directory)


def frame_offsets(data: bytes) -> list[int]:
    """Start offsets of the records of an undamaged segment."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        length = int.from_bytes(data[pos + 2:pos + 6], "little")
        pos += 10 + length
    return offsets


def read_all(directory: Path, reports: Reports) -> tuple[list[bytes], Spool]:
    s = Spool(directory, report=reports)
    seg = s.claim()
    assert seg is not None
    got = list(seg.records())
    seg.release()
    return got, s


# ------------------------------------------------------------------------------------ framing


def test_round_trip_keeps_payloads_byte_exact_in_write_order(spool: Spool) -> None:
    records = [b"", b"\x00\xff\xd5binary\xff\xd5", "ünïcode ✓".encode(), *payloads("a", 50)]
    records += [os.urandom(300 * 1024), b"y" * (spool_format._CHUNK + 12345)]
    assert spool.append([(1, r) for r in records]) == len(records)
    spool.seal()
    assert drain(spool) == [(1, records)]
    assert spool.stats().replayed_records == len(records)


def test_encode_record_is_the_written_frame(spool: Spool, spool_dir: Path) -> None:
    spool.append([(0, b"abc"), (0, b"")])
    spool.seal()
    assert only_segment(spool_dir).read_bytes() == encode_record(b"abc") + encode_record(b"")


@pytest.mark.parametrize("chunk", [3, 11, 64, 4096])
def test_reader_is_independent_of_its_read_size(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    records = [*payloads("c", 30, size=97), b"z" * 5000]
    path = write_sealed(spool_dir, records)
    data = path.read_bytes()
    garbage = b"\x00\x01garbage\xff\xd5\xff\xff\xff\x7f" + b"\xff" * 9
    offsets = frame_offsets(data)
    path.write_bytes(data[:offsets[10]] + garbage + data[offsets[10]:])
    monkeypatch.setattr(spool_format, "_CHUNK", chunk)
    got, s = read_all(spool_dir, reports)
    assert got == records
    assert s.stats().corrupt_records == 1


def test_segment_name_encodes_priority_creation_time_pid_and_sequence(
    spool: Spool, spool_dir: Path
) -> None:
    spool.append([(2, b"x")])
    prio, created, pid, seq = only_segment(spool_dir).stem.split("-")
    assert prio == "p2"
    assert len(created) == 20 and int(created) > 0
    assert int(pid) == os.getpid()
    assert len(seq) == 6


def test_directory_is_created_private(spool_dir: Path, reports: Reports) -> None:
    Spool(spool_dir / "a" / "b", report=reports).close()
    assert (spool_dir / "a" / "b").is_dir()
    assert (spool_dir / "a" / "b").stat().st_mode & 0o777 == 0o700
    assert reports.calls == []


def test_bad_sizes_are_refused_with_the_setting_named(spool_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(spool_dir, max_bytes=0)
    with pytest.raises(ValueError, match="segment_bytes"):
        Spool(spool_dir, segment_bytes=-1)


def test_fsync_mode_writes_durably_and_reads_back(spool_dir: Path, reports: Reports) -> None:
    s = Spool(spool_dir, fsync=True, report=reports)
    assert s.append([(0, b"a"), (2, b"b")]) == 2
    s.seal()
    assert sorted(drain(s)) == [(0, [b"a"]), (2, [b"b"])]


# ----------------------------------------------------------------------- rotation and ordering


def test_segments_rotate_at_segment_bytes(spool_dir: Path, reports: Reports) -> None:
    s = Spool(spool_dir, segment_bytes=1000, report=reports)
    records = payloads("r", 60, size=100)  # 110 bytes framed: 9 per segment
    for r in records:
        assert s.append([(0, r)]) == 1
    s.seal()
    files = segment_files(spool_dir)
    assert len(files) == 7
    assert all(f.stat().st_size <= 1000 for f in files)
    got = [p for _, batch in drain(s) for p in batch]
    assert got == records


def test_one_append_is_one_write_even_over_segment_bytes(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(spool_dir, segment_bytes=1000, report=reports)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    assert s.append([(0, r) for r in payloads("big", 30, size=100)]) == 30
    monkeypatch.undo()
    assert writes == [30 * 110]
    assert len(segment_files(spool_dir)) == 1


def test_claim_returns_oldest_first_across_priorities(spool: Spool) -> None:
    for priority in (1, 0, 2, 0):
        spool.append([(priority, f"p{priority}".encode())])
        spool.seal()
    assert [p for p, _ in drain(spool)] == [1, 0, 2, 0]


def test_claim_orders_by_creation_time_across_processes(spool_dir: Path, spool: Spool) -> None:
    spool_dir.mkdir(exist_ok=True)
    made = [(2, 300, 11), (0, 100, 99), (1, 200, 5), (0, 250, 7)]
    for priority, created, pid in made:
        name = f"p{priority}-{created:020d}-{pid}-000001.seg"
        (spool_dir / name).write_bytes(encode_record(f"{created}".encode()))
    got = drain(spool)
    assert [r[0] for _, r in got] == [b"100", b"200", b"250", b"300"]


def test_own_active_segment_is_sealed_and_claimed_when_nothing_else_is_free(
    spool: Spool, spool_dir: Path
) -> None:
    spool.append([(0, b"one"), (0, b"two")])
    seg = spool.claim()
    assert seg is not None
    assert seg.priority == 0
    assert list(seg.records()) == [b"one", b"two"]
    assert spool.append([(0, b"three")]) == 1  # goes to a new segment
    assert len(segment_files(spool_dir)) == 2
    seg.ack()
    assert drain(spool) == [(0, [b"three"])]
    assert spool.claim() is None


def test_claim_on_an_empty_spool_is_none(spool: Spool) -> None:
    assert spool.claim() is None


# --------------------------------------------------------------------------- damaged segments


@pytest.mark.parametrize("cut", [1, 7, 10, 11, 25])
def test_torn_tail_keeps_every_complete_record(
    spool_dir: Path, reports: Reports, cut: int
) -> None:
    records = payloads("t", 5)
    path = write_sealed(spool_dir, records)
    data = path.read_bytes()
    last = frame_offsets(data)[-1]
    path.write_bytes(data[:last + cut])  # a write cut off after `cut` bytes of the last record
    got, s = read_all(spool_dir, reports)
    assert got == records[:-1]
    stats = s.stats()
    assert (stats.torn_tails, stats.corrupt_records) == (1, 0)
    assert reports.kinds() == ["torn"]
    assert str(path) in reports.message("torn")
    assert f"byte {last}" in reports.message("torn")


def test_zero_filled_tail_after_power_loss_is_a_torn_tail(
    spool_dir: Path, reports: Reports
) -> None:
    records = payloads("z", 4)
    path = write_sealed(spool_dir, records)
    with path.open("ab") as f:
        f.write(b"\x00" * 4096)
    got, s = read_all(spool_dir, reports)
    assert got == records
    assert (s.stats().torn_tails, s.stats().corrupt_records) == (1, 0)


def test_corrupt_middle_record_is_skipped_and_the_rest_kept(
    spool_dir: Path, reports: Reports
) -> None:
    records = payloads("m", 5)
    path = write_sealed(spool_dir, records)
    data = bytearray(path.read_bytes())
    data[frame_offsets(bytes(data))[2] + 10 + 5] ^= 0x20  # a flipped bit in the payload
    path.write_bytes(bytes(data))
    got, s = read_all(spool_dir, reports)
    assert got == records[:2] + records[3:]
    assert (s.stats().corrupt_records, s.stats().torn_tails) == (1, 0)
    message = reports.message("corrupt")
    assert str(path) in message and "checksum" in message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b, o: b[:o + 2] + (2**31).to_bytes(4, "little") + b[o + 6:],
                     id="implausible-length"),
        pytest.param(lambda b, o: b[:o + 2] + (int.from_bytes(b[o + 2:o + 6], "little") + 3)
                     .to_bytes(4, "little") + b[o + 6:], id="length-off-by-three"),
        pytest.param(lambda b, o: b[:o] + b"\x00\x00" + b[o + 2:], id="bad-magic"),
        pytest.param(lambda b, o: b[:o + 6] + b"\x00\x00\x00\x00" + b[o + 10:], id="bad-crc"),
    ],
)
def test_damaged_header_loses_only_that_record(
    spool_dir: Path, reports: Reports, damage: object
) -> None:
    records = payloads("h", 6)
    path = write_sealed(spool_dir, records)
    data = path.read_bytes()
    path.write_bytes(damage(data, frame_offsets(data)[3]))  # type: ignore[operator]
    got, s = read_all(spool_dir, reports)
    assert got == records[:3] + records[4:]
    assert (s.stats().corrupt_records, s.stats().torn_tails) == (1, 0)


def test_resync_after_garbage_between_records(spool_dir: Path, reports: Reports) -> None:
    records = payloads("g", 6)
    path = write_sealed(spool_dir, records)
    data = path.read_bytes()
    at = frame_offsets(data)[4]
    # garbage holding a false magic with a plausible length and a record-shaped header
    garbage = os.urandom(50).replace(b"\xff", b"") + b"\xff\xd5\x05\x00\x00\x00abcdXYZ"
    path.write_bytes(data[:at] + garbage + data[at:])
    got, s = read_all(spool_dir, reports)
    assert got == records
    assert (s.stats().corrupt_records, s.stats().torn_tails) == (1, 0)


def test_a_segment_of_pure_garbage_yields_nothing_and_never_raises(
    spool_dir: Path, reports: Reports
) -> None:
    spool_dir.mkdir()
    (spool_dir / f"p0-{1:020d}-1-000001.seg").write_bytes(
        random.Random(7).randbytes(20_000)
    )
    s = Spool(spool_dir, report=reports)
    seg = s.claim()
    assert seg is not None
    assert list(seg.records()) == []
    seg.ack()
    assert s.stats().torn_tails + s.stats().corrupt_records >= 1
    assert s.claim() is None


@pytest.mark.parametrize("seed", range(12))
def test_any_single_damaged_byte_loses_at_most_its_own_record(
    spool_dir: Path, reports: Reports, seed: int
) -> None:
    rng = random.Random(seed)
    records = [
        ('{"m":"' + "".join(rng.choice("abcdefghij ✓") for _ in range(rng.randint(0, 120)))
         + '"}').encode()
        for _ in range(20)
    ]
    path = write_sealed(spool_dir, records)
    data = bytearray(path.read_bytes())
    offsets = frame_offsets(bytes(data))
    victim = rng.randrange(len(records))
    end = offsets[victim + 1] if victim + 1 < len(offsets) else len(data)
    where = rng.randrange(offsets[victim], end)
    data[where] ^= rng.randint(1, 255)
    path.write_bytes(bytes(data))
    got, s = read_all(spool_dir, reports)
    stats = s.stats()
    assert got == records[:victim] + records[victim + 1:]
    assert stats.corrupt_records + stats.torn_tails == 1


def test_records_counts_damage_once_per_segment_even_when_read_twice(
    spool_dir: Path, reports: Reports
) -> None:
    records = payloads("twice", 3)
    path = write_sealed(spool_dir, records)
    path.write_bytes(path.read_bytes()[:-3])
    s = Spool(spool_dir, report=reports)
    seg = s.claim()
    assert seg is not None
    assert list(seg.records()) == records[:2]
    assert list(seg.records()) == records[:2]
    seg.ack()
    assert s.stats().torn_tails == 1
    assert s.stats().replayed_records == 2


# ------------------------------------------------------------------------------------ the cap


def make_segments(directory: Path, priorities: list[int], per_segment: int = 4) -> list[str]:
    """One sealed segment per priority given (oldest first), each of ``per_segment`` 210-byte
    records; returns their names."""
    s = Spool(directory, report=Reports())
    for i, priority in enumerate(priorities):
        s.append([(priority, r) for r in payloads(f"s{i}", per_segment, size=200)])
        s.seal()
    s.close()
    return [p.name for p in segment_files(directory)]


def test_cap_evicts_info_first_then_warning_never_critical(
    spool_dir: Path, reports: Reports
) -> None:
    names = make_segments(spool_dir, [2, 1, 0, 1, 0])  # 5 segments of 840 bytes
    s = Spool(spool_dir, max_bytes=5 * 840 + 100, report=reports)
    # 420 bytes of WARNING: the oldest INFO segment (names[2]) goes
    assert s.append([(1, r) for r in payloads("w", 2, size=200)]) == 2
    left = {p.name for p in segment_files(spool_dir)}
    assert names[2] not in left and {names[0], names[1], names[3], names[4]} <= left
    assert s.stats().evicted_by_priority == {0: 4, 1: 0, 2: 0}
    # 2100 more bytes: the other INFO segment, then the oldest WARNING segment
    assert s.append([(1, r) for r in payloads("w2", 10, size=200)]) == 10
    left = {p.name for p in segment_files(spool_dir)}
    assert names[4] not in left and names[1] not in left
    assert {names[0], names[3]} <= left
    stats = s.stats()
    assert stats.evicted_by_priority == {0: 8, 1: 4, 2: 0}
    assert stats.evicted_records == 12
    assert stats.bytes <= 5 * 840 + 100
    assert reports.kinds() == ["full"]
    assert "cap" in reports.message("full")


def test_info_never_evicts_warning_and_is_refused_when_full(
    spool_dir: Path, reports: Reports
) -> None:
    names = make_segments(spool_dir, [1, 2])
    s = Spool(spool_dir, max_bytes=2 * 840 + 100, report=reports)
    assert s.append([(0, r) for r in payloads("i", 3, size=200)]) == 0
    stats = s.stats()
    assert stats.dropped == {"full": 3}
    assert stats.evicted_records == 0
    assert [p.name for p in segment_files(spool_dir)] == names
    assert reports.kinds() == ["full"]


def test_critical_is_written_over_the_cap(spool_dir: Path, reports: Reports) -> None:
    make_segments(spool_dir, [2, 2])
    s = Spool(spool_dir, max_bytes=2 * 840, report=reports)
    batch = [(2, r) for r in payloads("crit", 10, size=200)]
    assert s.append([*batch, (1, b"warn"), (0, b"info")]) == 10
    stats = s.stats()
    assert stats.bytes == 2 * 840 + 10 * 210 > stats.max_bytes  # type: ignore[operator]
    assert stats.dropped == {"full": 2}
    assert stats.evicted_records == 0
    s.seal()
    assert sum(len(r) for _, r in drain(s)) == 18


def test_eviction_skips_segments_held_by_a_claimer(spool_dir: Path, reports: Reports) -> None:
    names = make_segments(spool_dir, [0, 0])
    s = Spool(spool_dir, max_bytes=2 * 840 + 50, report=reports)
    held = s.claim()
    assert held is not None and held.path.name == names[0]
    assert s.append([(0, r) for r in payloads("new", 1, size=200)]) == 1
    left = [p.name for p in segment_files(spool_dir)]
    assert names[0] in left and names[1] not in left
    assert list(held.records()) == payloads("s0", 4, size=200)
    held.ack()


def test_eviction_counts_the_records_of_this_process_active_segment(
    spool_dir: Path, reports: Reports
) -> None:
    s = Spool(spool_dir, max_bytes=1000, report=reports)
    assert s.append([(0, r) for r in payloads("a", 4, size=200)]) == 4  # 840 bytes, active
    assert s.append([(0, r) for r in payloads("b", 2, size=200)]) == 2  # evicts the above
    assert s.stats().evicted_by_priority[0] == 4
    s.seal()
    assert drain(s) == [(0, payloads("b", 2, size=200))]


def test_eviction_counts_segments_this_process_sealed(spool_dir: Path, reports: Reports) -> None:
    s = Spool(spool_dir, max_bytes=1000, report=reports)
    assert s.append([(0, r) for r in payloads("a", 4, size=200)]) == 4
    s.seal()
    assert s.append([(0, r) for r in payloads("b", 3, size=200)]) == 3
    assert s.stats().evicted_by_priority == {0: 4, 1: 0, 2: 0}


def test_eviction_counts_the_complete_records_of_a_torn_segment(
    spool_dir: Path, reports: Reports
) -> None:
    path = write_sealed(spool_dir, payloads("torn", 4, size=200))
    path.write_bytes(path.read_bytes()[:-50])
    s = Spool(spool_dir, max_bytes=1000, report=reports)
    assert s.append([(0, r) for r in payloads("b", 3, size=200)]) == 3
    assert not path.exists()
    assert s.stats().evicted_by_priority == {0: 3, 1: 0, 2: 0}


# ------------------------------------------------------------------------ failures of the disk


def test_unwritable_directory_counts_refused_writes_and_reports_once(
    tmp_path: Path, reports: Reports
) -> None:
    blocker = tmp_path / "regular-file"
    blocker.write_text("not a directory")
    target = blocker / "spool"
    s = Spool(target, report=reports)
    assert s.append([(0, b"a"), (2, b"b")]) == 0
    assert s.append([(2, b"c")]) == 0
    assert s.stats().dropped == {"unwritable": 3}
    assert s.claim() is None
    message = reports.message("unwritable")
    assert reports.kinds() == ["unwritable"]
    assert str(target) in message and "Not a directory" in message


def test_directory_path_that_is_a_file_is_reported(tmp_path: Path, reports: Reports) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    s = Spool(target, report=reports)
    assert s.append([(0, b"a")]) == 0
    assert "not a directory" in reports.message("unwritable")


def test_strict_mode_raises_for_an_unusable_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(SpoolError, match=r"f/spool.*Not a directory"):
        Spool(tmp_path / "f" / "spool", strict=True, report=Reports())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_directory_refuses_writes(tmp_path: Path, reports: Reports) -> None:
    target = tmp_path / "ro"
    target.mkdir(mode=0o500)
    try:
        s = Spool(target, report=reports)
        assert s.append([(0, b"a")]) == 0
        assert s.stats().dropped == {"unwritable": 1}
        assert "Permission denied" in reports.message("unwritable")
    finally:
        target.chmod(0o700)


def test_default_report_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" / "spool"
    s = Spool(target)
    s.append([(0, b"a")])
    s.append([(0, b"a")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"shipper: spool {target}: cannot use {target}")


def test_disk_full_is_counted_reported_once_and_recovers(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(spool_dir, report=reports)
    assert s.append([(0, b"before")]) == 1

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    assert s.append([(0, b"lost1"), (0, b"lost2")]) == 0
    assert s.append([(2, b"lost3")]) == 0
    monkeypatch.undo()
    assert s.stats().dropped == {"disk_error": 3}
    assert reports.kinds() == ["disk_full"]
    message = reports.message("disk_full")
    assert "No space left on device" in message and "ENOSPC" in message
    assert str(spool_dir) in message
    assert s.append([(0, b"after")]) == 1
    s.seal()
    assert drain(s) == [(0, [b"before", b"after"])]


def test_short_write_then_disk_full_leaves_no_partial_record(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(spool_dir, report=reports)
    assert s.append([(0, b"first")]) == 1
    real_write = os.write
    calls = []

    def half_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    assert s.append([(0, b"x" * 1000)]) == 0
    monkeypatch.undo()
    assert s.append([(0, b"last")]) == 1
    s.seal()
    assert drain(s) == [(0, [b"first", b"last"])]
    assert (s.stats().torn_tails, s.stats().corrupt_records) == (0, 0)


def test_disk_full_when_creating_a_segment(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(spool_dir, report=reports)
    real_open = os.open

    def full_open(path: object, flags: int, *args: int, **kwargs: object) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", full_open)
    assert s.append([(1, b"a")]) == 0
    monkeypatch.undo()
    assert s.stats().dropped == {"disk_error": 1}
    assert reports.kinds() == ["disk_full"]
    assert list(spool_dir.iterdir()) == []


def test_directory_removed_while_running_is_recreated_and_reported(
    spool_dir: Path, reports: Reports
) -> None:
    s = Spool(spool_dir, report=reports)
    assert s.append([(0, b"a"), (0, b"b")]) == 2
    shutil.rmtree(spool_dir)
    assert s.append([(0, b"c")]) == 1
    assert spool_dir.is_dir()
    assert s.stats().dropped == {"removed": 2}
    assert reports.kinds() == ["removed"]
    s.seal()
    assert drain(s) == [(0, [b"c"])]


def test_invalid_records_are_counted_and_never_raise(spool: Spool, reports: Reports) -> None:
    bad: list[object] = [(5, b"x"), (0, "text"), ("0", b"x"), None, (True, b"x")]
    assert spool.append([*bad, (0, b"ok"), (0, bytearray(b"ba"))]) == 2  # type: ignore[list-item]
    assert spool.stats().dropped == {"invalid": 5}
    assert "priority must be 0, 1 or 2, got 5" in reports.message("invalid")
    assert spool.append(None) == 0  # type: ignore[arg-type]
    assert "internal" not in spool.stats().dropped  # no count known
    assert "internal" in reports.kinds()


def test_oversized_record_is_refused(spool: Spool, reports: Reports) -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_RECORD_BYTES + 1

    assert spool.append([(2, Huge(b"x")), (2, b"ok")]) == 1
    assert spool.stats().dropped == {"too_large": 1}
    assert reports.kinds() == ["too_large"]


# --------------------------------------------------------------------------- claim, ack, release


def test_ack_deletes_the_file_and_release_keeps_it(spool: Spool) -> None:
    spool.append([(0, b"a"), (0, b"b")])
    spool.seal()
    seg = spool.claim()
    assert seg is not None
    path = seg.path
    assert list(seg.records()) == [b"a", b"b"]
    seg.release()
    assert path.exists()
    assert spool.stats().replayed_records == 0
    again = spool.claim()
    assert again is not None and again.path == path
    again.ack()
    assert not path.exists()
    assert spool.stats().replayed_records == 2
    again.ack()  # idempotent
    with pytest.raises(ValueError, match="already acked"):
        list(again.records())


def test_leaving_a_claim_block_without_ack_releases(spool: Spool) -> None:
    spool.append([(0, b"a")])
    spool.seal()
    with spool.claim() as seg:  # type: ignore[union-attr]
        path = seg.path
    assert path.exists()
    assert spool.claim() is not None


def test_close_releases_claims_and_keeps_their_files(
    spool_dir: Path, reports: Reports
) -> None:
    a = Spool(spool_dir, report=reports)
    a.append([(0, b"a")])
    seg = a.claim()
    assert seg is not None
    b = Spool(spool_dir, report=reports)
    assert b.claim() is None
    a.close()
    assert not seg.held
    got = b.claim()
    assert got is not None and list(got.records()) == [b"a"]


def test_claim_skips_a_segment_replaced_between_listing_and_locking(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sealed(spool_dir, [b"old"])
    s = Spool(spool_dir, report=reports)
    real_try_lock = s._locks.try_lock
    replaced: list[bool] = []

    def ack_elsewhere_then_lock(fd: int) -> bool:
        if not replaced:  # another process acks it, and a new file takes the same name
            replaced.append(True)
            path.unlink()
            path.write_bytes(encode_record(b"new"))
        return real_try_lock(fd)

    monkeypatch.setattr(s._locks, "try_lock", ack_elsewhere_then_lock)
    assert s.claim() is None
    seg = s.claim()
    assert seg is not None and list(seg.records()) == [b"new"]


def test_empty_segment_left_by_a_dead_writer_is_removed(spool_dir: Path, spool: Spool) -> None:
    empty = spool_dir / f"p0-{5:020d}-1-000001.seg"
    empty.touch()
    assert spool.claim() is None
    assert not empty.exists()


def test_stale_hidden_temporary_segment_is_removed(spool_dir: Path, spool: Spool) -> None:
    stale = spool_dir / f".p0-{5:020d}-1-000001.seg.tmp"
    fresh = spool_dir / f".p0-{6:020d}-1-000002.seg.tmp"
    stale.touch()
    fresh.touch()
    os.utime(stale, (1, 1))
    assert spool.claim() is None
    assert not stale.exists() and fresh.exists()


def test_concurrent_appends_from_threads_lose_nothing(spool: Spool) -> None:
    def work(t: int) -> None:
        for i in range(100):
            assert spool.append([(t % 3, f"{t}-{i}-{j}".encode()) for j in range(5)]) == 5

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.seal()
    got = [r for _, batch in drain(spool) for r in batch]
    assert sorted(got) == sorted(f"{t}-{i}-{j}".encode()
                                 for t in range(4) for i in range(100) for j in range(5))
    for t in range(4):  # per thread, write order is kept
        mine = [r for r in got if r.startswith(f"{t}-".encode())]
        assert mine == [f"{t}-{i}-{j}".encode() for i in range(100) for j in range(5)]


# ---------------------------------------------------------------------------- other processes


def child(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_never_claim_the_same_segment(spool_dir: Path, reports: Reports) -> None:
    s = Spool(spool_dir, report=reports)
    s.append([(0, b"first")])
    s.seal()
    s.append([(1, b"second")])
    s.seal()
    proc = child(
        """
        import sys
        from shipper.delivery.spool import Spool
        seg = Spool(sys.argv[1]).claim()
        print(seg.path.name, list(seg.records()), flush=True)
        sys.stdin.readline()
        seg.release()
        """,
        str(spool_dir),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline().split()
        first = segment_files(spool_dir)[0].name
        assert line == [first, "[b'first']"]
        mine = s.claim()
        assert mine is not None and mine.path.name != first
        assert list(mine.records()) == [b"second"]
        assert s.claim() is None  # the child holds the other one
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        freed = s.claim()
        assert freed is not None and freed.path.name == first
    finally:
        proc.kill()
        proc.wait()


def test_records_of_a_sigkilled_writer_are_all_recovered(
    spool_dir: Path, reports: Reports
) -> None:
    proc = child(
        """
        import sys, time
        from shipper.delivery.spool import Spool
        s = Spool(sys.argv[1], segment_bytes=4096)
        for i in range(60):
            assert s.append([(i % 3, f"{i}-{j}".encode() * 3) for j in range(10)]) == 10
        print("written", flush=True)
        time.sleep(60)
        """,
        str(spool_dir),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
        # the child still holds its active segments
        assert spool_status(spool_dir).held_segments == 3
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    s = Spool(spool_dir, report=reports)
    got = drain(s)
    expected = {p: [f"{i}-{j}".encode() * 3 for i in range(60) if i % 3 == p for j in range(10)]
                for p in range(3)}
    for priority in range(3):
        assert [r for p, batch in got if p == priority for r in batch] == expected[priority]
    stats = s.stats()
    assert (stats.torn_tails, stats.corrupt_records, stats.replayed_records) == (0, 0, 600)
    assert list(spool_dir.glob("*.seg")) == []


def fork_child(body: object) -> int:
    """Run ``body()`` in a forked child; its exit status (0 when it returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if body() else 1  # type: ignore[operator]
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def locked_elsewhere(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "detected"])
def test_after_fork_in_child_keeps_the_parents_locks_and_files(
    spool_dir: Path, reports: Reports, explicit: bool
) -> None:
    s = Spool(spool_dir, report=reports)
    s.append([(0, b"to-claim")])
    s.seal()
    claimed = s.claim()
    assert claimed is not None
    s.append([(0, b"parent-1")])
    active = next(p for p in segment_files(spool_dir) if p != claimed.path)

    def in_child() -> bool:
        if explicit:
            s.after_fork_in_child()
        claimed.ack()  # the parent's claim: must neither delete nor unlock it
        ok = s.append([(0, b"child")]) == 1
        mine = [p for p in segment_files(spool_dir) if p.name.split("-")[2] == str(os.getpid())]
        ok = ok and len(mine) == 1 and s.stats().written == 1
        s.close()  # must not release the parent's claim or active segment
        return ok

    assert fork_child(in_child) == 0
    assert locked_elsewhere(active)
    assert claimed.path.exists() and locked_elsewhere(claimed.path)
    assert list(claimed.records()) == [b"to-claim"]
    assert s.append([(0, b"parent-2")]) == 1
    assert active.exists() and len(segment_files(spool_dir)) == 3
    claimed.ack()
    child_seg = s.claim()
    assert child_seg is not None
    assert list(child_seg.records()) == [b"child"]
    child_seg.ack()
    own = s.claim()
    assert own is not None and list(own.records()) == [b"parent-1", b"parent-2"]


def test_without_fcntl_locks_are_process_local_and_reported(
    spool_dir: Path, reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_locks, "_fcntl", None)
    a = Spool(spool_dir, report=reports)
    b = Spool(spool_dir, report=Reports())
    assert "only one process" in reports.message("locking")
    a.append([(0, b"x")])
    assert b.claim() is None  # a's active segment is held
    a.seal()
    seg = b.claim()
    assert seg is not None
    assert a.claim() is None
    seg.release()
    got = a.claim()
    assert got is not None and list(got.records()) == [b"x"]
    got.ack()
    assert list(spool_dir.iterdir()) == []


# -------------------------------------------------------------------------------- statistics


def test_stats_are_cheap_unless_counting(spool: Spool, spool_dir: Path) -> None:
    spool.append([(0, b"a"), (0, b"b"), (0, b"c"), (2, b"d"), (2, b"e")])
    stats = spool.stats()
    assert stats.directory == str(spool_dir)
    assert (stats.segments, stats.records, stats.written) == (2, None, 5)
    assert stats.bytes == 5 * 11
    assert stats.segments_by_priority == {0: 1, 1: 0, 2: 1}
    assert stats.active_segments == 2
    assert stats.oldest_segment_age_s is not None and stats.oldest_segment_age_s >= 0
    counted = spool.stats(count=True)
    assert counted.records == 5
    assert counted.records_by_priority == {0: 3, 1: 0, 2: 2}
    assert stats.max_bytes == 1 << 30


def test_spool_status_scans_read_only_and_marks_held_segments(
    spool_dir: Path, reports: Reports
) -> None:
    s = Spool(spool_dir, report=reports)
    s.append([(0, b"a"), (1, b"b"), (1, b"c")])
    status = spool_status(spool_dir)
    assert (status.segments, status.records, status.held_segments) == (2, 3, 2)
    assert status.records_by_priority == {0: 1, 1: 2, 2: 0}
    assert status.written == 0 and status.max_bytes is None
    s.seal()
    path = segment_files(spool_dir)[0]
    path.write_bytes(path.read_bytes()[:-1])  # torn
    before = sorted((p.name, p.stat().st_size) for p in spool_dir.iterdir())
    status = spool_status(spool_dir)
    assert (status.records, status.held_segments, status.torn_tails) == (2, 0, 1)
    assert sorted((p.name, p.stat().st_size) for p in spool_dir.iterdir()) == before
    assert s.claim() is not None  # status took no lock it kept


def test_spool_status_of_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    status = spool_status(missing)
    assert (status.segments, status.bytes, status.records) == (0, 0, 0)
    assert status.oldest_segment_age_s is None
    assert not missing.exists()
    with pytest.raises(SpoolError, match="does not exist"):
        spool_status(missing, strict=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="is not a directory"):
        spool_status(tmp_path / "file", strict=True)


def test_claimed_segment_repr_and_attributes(spool: Spool) -> None:
    spool.append([(2, b"abc")])
    seg = spool.claim()
    assert isinstance(seg, ClaimedSegment)
    assert seg.priority == 2 and seg.size == 13 and seg.created_ns > 0
    assert seg.path.name in repr(seg)
    seg.release()


def test_corrupt_record_holding_an_embedded_frame_yields_no_phantom(
    spool_dir: Path, reports: Reports
) -> None:
    tricky = b"prefix" + encode_record(b"phantom") + b"suffix"
    records = [b"before", tricky, b"after"]
    path = write_sealed(spool_dir, records)
    data = bytearray(path.read_bytes())
    data[frame_offsets(bytes(data))[1] + 10] ^= 0x01  # damage the payload's first byte
    path.write_bytes(bytes(data))
    got, s = read_all(spool_dir, reports)
    assert got == [b"before", b"after"]
    assert s.stats().corrupt_records == 1


def test_zeroed_header_is_not_read_as_an_empty_record(spool_dir: Path, reports: Reports) -> None:
    records = payloads("zh", 4)
    path = write_sealed(spool_dir, records)
    data = bytearray(path.read_bytes())
    at = frame_offsets(bytes(data))[2]
    data[at + 2:at + 10] = bytes(8)  # length and crc zeroed, magic intact
    path.write_bytes(bytes(data))
    got, s = read_all(spool_dir, reports)
    assert got == records[:2] + records[3:]
    assert s.stats().corrupt_records == 1


def _damage(rng: random.Random, data: bytearray, spans: list[tuple[int, int]]) -> set[int]:
    """Apply one random damage (bit flips, inserted garbage, truncation, zero-fill) and return
    the indexes of the records it touched; ``spans`` (record start/end offsets) is updated."""
    kind = rng.choice(["flip", "insert", "truncate", "zero"])
    where = rng.randrange(len(data))
    if kind == "flip":
        data[where] ^= rng.randint(1, 255)
        return {i for i, (a, b) in enumerate(spans) if a <= where < b}
    if kind == "insert":
        garbage = rng.randbytes(rng.randint(1, 40))
        data[where:where] = garbage
        touched = {i for i, (a, b) in enumerate(spans) if a < where < b}
        spans[:] = [(a + len(garbage) * (a >= where), b + len(garbage) * (b > where))
                    for a, b in spans]
        return touched
    if kind == "truncate":
        del data[where:]
        return {i for i, (_, b) in enumerate(spans) if b > where}
    n = rng.randint(1, 30)
    data[where:where + n] = bytes(len(data[where:where + n]))
    return {i for i, (a, b) in enumerate(spans) if a < where + n and where < b}


@pytest.mark.parametrize("seed", range(4))
def test_random_damage_keeps_every_untouched_record_and_invents_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "segment"
    for _ in range(150):
        records = [f'{{"i":{i},"m":"{"ab✓" * rng.randint(0, 60)}"}}'.encode()
                   for i in range(rng.randint(1, 25))]
        data = bytearray()
        spans = []
        for r in records:
            spans.append((len(data), len(data) + 10 + len(r)))
            data += encode_record(r)
        touched: set[int] = set()
        for _ in range(rng.randint(1, 4)):
            if data:
                touched |= _damage(rng, data, spans)
        path.write_bytes(bytes(data))
        monkeypatch.setattr(spool_format, "_CHUNK", rng.choice([1, 5, 64, 1 << 20]))
        fd = os.open(path, os.O_RDONLY)
        try:
            got = list(spool_format.Frames(fd))
        finally:
            os.close(fd)
        assert not [r for r in got if r not in records]  # nothing invented
        assert got == [r for r in records if r in got]  # in write order, none twice
        assert all(records[i] in got for i in range(len(records)) if i not in touched)


def test_a_report_callback_may_append_to_the_spool(spool_dir: Path) -> None:
    holder: list[Spool] = []
    seen: list[str] = []

    def report(kind: str, message: str) -> None:  # e.g. a logger whose handler spools
        seen.append(kind)
        holder[0].append([(2, f"spool report: {message}".encode())])

    s = Spool(spool_dir, max_bytes=500, report=report)
    holder.append(s)
    worker = threading.Thread(
        target=lambda: s.append([(0, r) for r in payloads("x", 5, size=200)]), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "append deadlocked in its report callback"
    assert seen == ["full"]
    s.seal()
    got = [r for _, batch in drain(s) for r in batch]
    assert len(got) == 1 and got[0].startswith(b"spool report: reached its cap")


def test_after_fork_in_child_does_nothing_in_the_opening_process(spool: Spool) -> None:
    spool.append([(0, b"a")])
    spool.after_fork_in_child()
    assert spool.append([(0, b"b")]) == 1
    assert spool.stats().active_segments == 1 and spool.stats().written == 2

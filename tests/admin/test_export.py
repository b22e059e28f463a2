"""Reading every entry of a range back from Loki (shipper/loki/reader.py) and `shipper export`:
windows under max_query_length, pages under the per-query limit, no duplicates and no gaps at
window and page edges, entries that share a nanosecond on an edge included."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper._units import NS, parse_time
from shipper.cli.admin.export import export_events
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient, QueryLimits
from shipper.loki.logql import Filters, log_query
from shipper.loki.reader import ReadError, iter_records, windows
from shipper.loki.timerange import TimeRange
from tests.support.fakeloki import FakeLoki

DAY = 86400 * NS
START = 1_750_000_000 * NS  # a fixed past instant: the fake keeps whatever it is given
STREAMS = [
    {"service_name": "shop", "level": level, "actor": actor, "type": type_}
    for level, actor, type_ in [("INFO", "USER", "LOGIN"), ("ERROR", "SYSTEM", "API_ERROR"),
                                ("WARNING", "ADMIN", "SETTINGS"), ("INFO", "GUEST", "VIEW")]
]


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


@pytest.fixture
def client(fake: FakeLoki) -> Iterator[LokiClient]:
    c = LokiClient(ShipperConfig(url=fake.url, spool=False, timeout=30))
    yield c
    c.close()


def _line(i: int) -> str:
    return json.dumps({"message": f"event {i}", "metadata": {"n": i}})


def seed(fake: FakeLoki, timestamps: list[int]) -> set[tuple[int, str]]:
    """One entry per timestamp (several may share one), spread over the streams."""
    expected = set()
    for i, ts in enumerate(timestamps):
        fake.add(STREAMS[i % len(STREAMS)], ts, _line(i), {"actor_id": f"u{i % 97}"})
        expected.add((ts, _line(i)))
    return expected


def test_windows_cover_the_range_exactly_and_each_is_under_the_limit() -> None:
    parts = windows(0, 65 * DAY + 7, 30 * 86400 + 3600)
    assert parts[0][0] == 0 and parts[-1][1] == 65 * DAY + 7
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert all(e - s <= (30 * 86400 + 3600) * NS for s, e in parts)
    assert windows(0, 10, 0) == [(0, 10)]
    assert windows(0, 3 * DAY, 86400, "backward")[0][1] == 3 * DAY


@pytest.mark.slow
def test_export_of_100000_events_over_60_days_has_each_exactly_once(
    fake: FakeLoki, client: LokiClient, tmp_path: Path,
) -> None:
    span = 60 * DAY
    step = span // 100_000
    timestamps = [START + i * step for i in range(100_000)]
    # entries that share a nanosecond across the first page edge (entries 4995..5004 of
    # 5000 per page) and around the first window edge (30d1h less a second)
    for i in range(4995, 5005):
        timestamps[i] = timestamps[4995]
    edge = START + (30 * 86400 + 3600 - 1) * NS
    near = min(range(len(timestamps)), key=lambda i: abs(timestamps[i] - edge))
    for offset, i in enumerate(range(near - 3, near + 4)):
        timestamps[i] = edge + (-1 if offset < 2 else 0 if offset < 5 else 1)
    expected = seed(fake, timestamps)
    assert len(expected) == 100_000

    out = tmp_path / "all.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        count = export_events(client, Filters(services=("shop",)),
                              TimeRange(START, START + span + NS), fh, "jsonl",
                              show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == len(rows) == 100_000
    got = {(r["time"], r["message"]) for r in rows}
    assert len(got) == 100_000
    times = [parse_time(r["time"]) for r in rows]
    assert times == sorted(times)
    assert set(times) == {t for t, _ in expected}
    # the fake refuses ranges over 30d1h and limits over 5000, as Loki does: 3 windows,
    # about 20 pages
    queries = [r.path for r in fake.requests if "query_range" in r.path]
    assert 20 <= len(queries) <= 40


def test_a_page_edge_inside_entries_that_share_a_nanosecond_loses_none(
    fake: FakeLoki, client: LokiClient,
) -> None:
    timestamps = [START + i * NS for i in range(30)]
    timestamps[5:17] = [START + 5 * NS] * 12  # 12 entries share one ns: pages of 7 cut them
    expected = seed(fake, timestamps)
    for direction in ("forward", "backward"):
        got = [(r.timestamp_ns, r.line) for r in iter_records(
            client, log_query(Filters()), START, START + 30 * NS, direction=direction,
            page_size=7)]
        assert len(got) == len(set(got)) == 30, direction
        assert set(got) == expected
        ts = [t for t, _ in got]
        assert ts == sorted(ts, reverse=direction == "backward")


def test_more_entries_in_one_nanosecond_than_loki_returns_is_said_plainly(
    fake: FakeLoki, client: LokiClient,
) -> None:
    fake.max_entries_limit = 10
    seed(fake, [START] * 12)
    with pytest.raises(ReadError, match="more than 10 entries share the timestamp"):
        list(iter_records(client, log_query(Filters()), START, START + NS,
                          limits=QueryLimits(3600, 10)))


def test_window_edges_lose_and_repeat_nothing(fake: FakeLoki, client: LokiClient) -> None:
    limits = QueryLimits(max_query_length_s=11, max_entries_per_query=4)  # windows of 10 s
    timestamps = [START + k * 10 * NS + d for k in range(6) for d in (-1, 0, 0, 1)
                  if START + k * 10 * NS + d >= START]
    expected = seed(fake, timestamps)
    got = [(r.timestamp_ns, r.line) for r in iter_records(
        client, log_query(Filters()), START, START + 60 * NS, limits=limits)]
    assert len(got) == len(expected) and set(got) == expected


def test_export_writes_csv_with_metadata_as_json_text(fake: FakeLoki, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake, [START + i * NS for i in range(5)])
    out = tmp_path / "events.csv"
    code = main(["export", "--url", fake.url, "--start", "2025-06-15T15:06:40Z",
                 "--end", "2025-06-15T15:07:00Z", "--level", "error", "-o", str(out)])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["message"] for r in rows] == ["event 1"]
    assert json.loads(rows[0]["metadata"]) == {"n": 1}
    assert rows[0]["level"] == "ERROR" and rows[0]["actor_id"] == "u1"
    assert "exported 1 events" in capsys.readouterr().err
    assert not (tmp_path / "events.csv.partial").exists()


def test_export_with_nothing_matching_exits_1_and_writes_no_file(fake: FakeLoki,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "none.json"
    assert main(["export", "--url", fake.url, "--since", "1h", "-o", str(out)]) == 1
    assert not out.exists()


HOSTILE = {
    # what app users can put in the fields of an event, one formula per column
    "labels": {"service_name": "=cmd|' /C calc'!A0", "env": "+1+1", "level": "@SUM(1+1)",
               "actor": "-2+3", "type": "=HYPERLINK(\"http://x.example\")"},
    "metadata": {"actor_id": "@actor", "trace_id": "\t=1+1", "logger": " =1+1"},
    "line": {"message": "=cmd|' /C calc'!A0", "metadata": {"note": "=1+1"},
             "exception": "\r=1+1"},
}


def test_csv_export_neutralises_formulas_in_every_column_and_json_keeps_them(
    fake: FakeLoki, tmp_path: Path,
) -> None:
    fake.add(HOSTILE["labels"], START, json.dumps(HOSTILE["line"]), HOSTILE["metadata"])
    fake.add(dict(HOSTILE["labels"], type="'=already"), START + NS,
             json.dumps({"message": "-5"}), {"actor_id": "plain"})
    span = ["--start", "2025-06-15T15:06:40Z", "--end", "2025-06-15T15:07:00Z"]
    assert main(["export", "--url", fake.url, *span, "-o", str(tmp_path / "e.csv")]) == 0
    assert main(["export", "--url", fake.url, *span, "-o", str(tmp_path / "e.jsonl")]) == 0
    with (tmp_path / "e.csv").open(encoding="utf-8", newline="") as fh:
        first, second = list(csv.DictReader(fh))
    assert first == {
        "time": "2025-06-15T15:06:40Z", "service": "'=cmd|' /C calc'!A0", "env": "'+1+1",
        "level": "'@SUM(1+1)", "actor": "'-2+3", "type": "'=HYPERLINK(\"http://x.example\")",
        "actor_id": "'@actor", "trace_id": "'\t=1+1", "logger": "' =1+1",
        "message": "'=cmd|' /C calc'!A0", "metadata": '{"note":"=1+1"}',
        "exception": "'\r=1+1"}
    # a quote that was there gets one more, so an import can take exactly one away
    assert second["type"] == "''=already" and second["message"] == "'-5"
    assert second["actor_id"] == "plain"
    # JSON lines are not for spreadsheets: the text as it is
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert rows[0]["service"] == "=cmd|' /C calc'!A0" and rows[0]["trace_id"] == "\t=1+1"
    assert rows[0]["message"] == "=cmd|' /C calc'!A0" and rows[0]["exception"] == "\r=1+1"
    assert rows[1]["type"] == "'=already" and rows[1]["message"] == "-5"


def test_query_as_csv_neutralises_formulas_too(fake: FakeLoki,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(HOSTILE["labels"], START, json.dumps(HOSTILE["line"]), HOSTILE["metadata"])
    assert main(["query", "--url", fake.url, "--start", "2025-06-15T15:06:40Z", "--end",
                 "2025-06-15T15:07:00Z", "--format", "csv"]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out, newline="")))
    assert row["message"] == "'=cmd|' /C calc'!A0" and row["service"].startswith("'=")


def test_a_stored_line_nested_too_deep_for_python_exports_as_text(
    fake: FakeLoki, tmp_path: Path,
) -> None:
    """Anyone who can push can store such a line; it must not stop the export of the rest."""
    deep = '{"message": ' + "[" * 100_000 + "]" * 100_000 + "}"
    fake.add(STREAMS[0], START, deep)
    fake.add(STREAMS[0], START + NS, json.dumps({"message": "after"}))
    out = tmp_path / "e.jsonl"
    assert main(["export", "--url", fake.url, "--start", "2025-06-15T15:06:40Z", "--end",
                 "2025-06-15T15:07:00Z", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["message"] for r in rows] == [deep, "after"]

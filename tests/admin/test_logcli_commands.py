"""What people who know logcli look for: `shipper labels`, `shipper series`, `shipper query
--logql` (log, metric and --instant queries), `--explain`, and one line per event on a
terminal (`--wide` for the full table), against the fake Loki."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest

from shipper._units import NS, parse_time
from shipper.cli.main import main
from tests.support.fakeloki import FakeLoki


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def add(fake: FakeLoki, ago_s: float, message: str, *, service: str = "shop",
        level: str = "INFO", type_: str = "AUTH_LOGIN", actor_id: str | None = None,
        metadata: dict[str, object] | None = None) -> None:
    fake.add({"service_name": service, "level": level, "actor": "USER", "type": type_},
             time.time_ns() - int(ago_s * NS),
             json.dumps({"message": message, "metadata": metadata or {}}),
             {"actor_id": actor_id} if actor_id else {})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch: pytest.MonkeyPatch, columns: int, *argv: str) -> tuple[int, str]:
    out = FakeTerminal()
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("SHIPPER_NO_RICH", "1")
    monkeypatch.setattr("sys.stdout", out)
    code = main(list(argv))
    return code, out.getvalue()


def test_labels_lists_names_or_one_labels_values_with_filters_as_a_selector(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 30, "a", type_="LOGIN")
    add(fake, 20, "b", type_="BURST", level="ERROR")
    add(fake, 10, "c", service="blog", type_="POST")
    code, out, _ = run(capsys, "labels", "--url", fake.url, "--since", "1h", "--format", "table")
    assert code == 0 and out.split() == ["actor", "level", "service_name", "type"]
    code, out, _ = run(capsys, "labels", "type", "--url", fake.url, "--service", "shop",
                       "--json")
    assert code == 0 and json.loads(out) == ["BURST", "LOGIN"]
    code, out, _ = run(capsys, "labels", "service_name", "--url", fake.url, "--level", "error")
    assert json.loads(out) == ["shop"]  # piped: one JSON document
    code, out, err = run(capsys, "labels", "type", "--url", fake.url, "--service", "nope")
    assert code == 1 and json.loads(out) == [] and "no values of type" in err


def test_labels_refuses_a_name_with_quotes_before_asking_loki(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["labels", 'ty"pe', "--url", fake.url])
    assert exc.value.code == 2
    assert "not a label name: 'ty\"pe'" in capsys.readouterr().err
    assert not fake.requests


def test_series_lists_streams_and_counts_them_with_count(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 30, "a", type_="LOGIN", actor_id="u1")
    add(fake, 25, "a2", type_="LOGIN")
    add(fake, 20, "b", type_="BURST")
    code, out, _ = run(capsys, "series", "--url", fake.url, "--json")
    streams = json.loads(out)
    assert code == 0 and sorted(s["labels"]["type"] for s in streams) == ["BURST", "LOGIN"]
    assert all("count" not in s for s in streams)
    code, out, _ = run(capsys, "series", "--url", fake.url, "--count", "--json")
    assert {s["labels"]["type"]: s["count"] for s in json.loads(out)} == {"LOGIN": 2,
                                                                         "BURST": 1}
    code, out, _ = run(capsys, "series", "--url", fake.url, "--actor-id", "u1", "--json")
    assert [(s["labels"]["type"], s["count"]) for s in json.loads(out)] == [("LOGIN", 1)]


def test_series_prints_a_bounded_number_of_streams_and_says_how_many_there_are(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    for i in range(30):
        add(fake, 10, "x", type_=f"T{i}")
    code, out, err = run(capsys, "series", "--url", fake.url, "--since", "30d", "--limit", "5",
                         "--json")
    assert code == 0 and len(json.loads(out)) == 5
    assert "30 streams, 5 shown" in err


def test_query_logql_runs_a_log_query_of_ones_own_with_pages_and_formats(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    for i in range(5):
        add(fake, 50 - i, f"timeout {i}" if i % 2 else f"ok {i}")
    code, out, _ = run(capsys, "query", "--url", fake.url, "--logql",
                       '{service_name="shop"} |= "timeout"', "--format", "json")
    assert code == 0 and [r["message"] for r in json.loads(out)] == ["timeout 3", "timeout 1"]
    code, out, _ = run(capsys, "query", "--url", fake.url, "--logql", '{service_name="shop"}',
                       "--order", "asc", "--limit", "2", "--page", "2", "--format", "jsonl")
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["ok 2", "timeout 3"]


def test_query_logql_metric_and_instant_queries_print_samples(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 30, "a")
    add(fake, 20, "b", level="ERROR")
    expr = 'sum by (level) (count_over_time({service_name="shop"} [1h]))'
    code, out, _ = run(capsys, "query", "--url", fake.url, "--logql", expr, "--since", "10m",
                       "--step", "5m", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["metric"]["level"] for r in rows} == {"INFO", "ERROR"}
    assert all(set(r) == {"metric", "time", "value"} for r in rows)
    code, out, _ = run(capsys, "query", "--url", fake.url, "--logql", expr, "--instant",
                       "--json")
    assert sorted((r["metric"]["level"], r["value"]) for r in json.loads(out)) == [
        ("ERROR", 1.0), ("INFO", 1.0)]
    code, out, _ = run(capsys, "query", "--url", fake.url, "--logql", expr, "--instant",
                       "--format", "table")
    assert out.splitlines()[0].split() == ["level", "time", "value"]


def test_explain_prints_the_logql_and_asks_nothing(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "query", "--url", fake.url, "--service", "shop", "--level",
                       "error", "--search", 'a"b', "--explain")
    assert code == 0
    assert out.startswith('{service_name=~"shop", level="ERROR"} | json message="message"')
    assert 'a\\"b' in out
    code, out, _ = run(capsys, "series", "--url", fake.url, "--level", "warn", "--explain")
    assert out == '{service_name=~".+", level="WARNING"}\n'
    assert not fake.requests


def test_a_logql_syntax_error_shows_lokis_message_and_exits_2(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "query", "--url", fake.url, "--logql", '{service_name="x"')
    assert code == 2 and out in ("", "[]\n")
    assert err.startswith("shipper query: Loki could not parse the query: parse error at")
    assert err.count("\n") == 1


def test_a_10_mb_logql_is_refused_with_its_size_and_not_sent(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "query", "--url", fake.url, "--logql",
                       '{service_name="' + "x" * 10 * 1024 * 1024 + '"}')
    assert code == 2 and "bytes: at most 65536 are sent" in err
    assert not [r for r in fake.requests if "query" in r.path]


@pytest.mark.parametrize(("argv", "message"), [
    (["--logql", "{a=\"b\"}", "--level", "error"], "--logql replaces the filters: drop --level"),
    (["--instant"], "--instant goes with --logql"),
    (["--logql", "sum(x)", "--instant", "--since", "1h"], "--since and --start do not apply"),
])
def test_own_query_flags_that_do_not_go_together_exit_2(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
) -> None:
    code, _, err = run(capsys, "query", "--url", fake.url, *argv)
    assert code == 2 and message in err


def test_since_100y_reads_window_by_window_and_ends(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 10, "recent")
    code, out, _ = run(capsys, "query", "--url", fake.url, "--since", "100y", "--json")
    assert code == 0 and [r["message"] for r in json.loads(out)] == ["recent"]
    code, out, _ = run(capsys, "labels", "service_name", "--url", fake.url, "--since", "100y")
    assert code == 0 and json.loads(out) == ["shop"]
    # nothing before Loki's first schema period (loki/config.yaml: 2024-04-01) is asked for
    starts = [int(p.split("start=")[1].split("&")[0]) for p in
              (r.path for r in fake.requests) if "start=" in p]
    assert min(starts) >= parse_time("2024-04-01")


def test_query_on_a_terminal_prints_one_line_per_event_fitted_to_the_width(
    fake: FakeLoki, monkeypatch: pytest.MonkeyPatch,
) -> None:
    add(fake, 20, "card declined\nfor order 7", level="ERROR", type_="PAYMENT_FAILED",
        actor_id="u2", metadata={"order": 7, "reason": "x" * 300, "nested": {"a": [1, 2]}})
    add(fake, 10, "login ok", actor_id="u1", metadata={"ip": "10.0.0.1"})
    code, out = on_terminal(monkeypatch, 120, "query", "--url", fake.url, "--service", "shop")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert all(len(line) <= 120 for line in lines)
    newest, oldest = lines
    for part in ("INFO", "USER", "AUTH_LOGIN", "actor_id=u1", "login ok", '{"ip":"10.0.0.1"}'):
        assert part in newest
    for part in ("ERROR", "PAYMENT_FAILED", "actor_id=u2", "card declined for order 7",
                 '{"order":7,"reason":"xxx'):
        assert part in oldest
    assert oldest.endswith("…")
    code, out = on_terminal(monkeypatch, 120, "query", "--url", fake.url, "--service", "shop",
                            "--wide")
    assert out.splitlines()[0].split() == ["time", "level", "actor", "type", "actor_id",
                                           "message", "metadata"]


def test_query_piped_is_still_json_lines(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 10, "login ok", metadata={"ip": "10.0.0.1"})
    code, out, _ = run(capsys, "query", "--url", fake.url)
    assert code == 0 and json.loads(out.splitlines()[0])["metadata"] == {"ip": "10.0.0.1"}


def test_tail_on_a_terminal_prints_one_line_per_event_fitted_to_columns(fake: FakeLoki) -> None:
    import os
    import pty
    import signal
    import subprocess
    import sys
    from pathlib import Path

    add(fake, 1, "boom\nsecond line", level="ERROR", actor_id="u1",
        metadata={"trace": "y" * 400})
    master, slave = pty.openpty()
    env = {**os.environ, "LOKI_URL": fake.url, "COLUMNS": "110", "SHIPPER_NO_RICH": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "tail", "--interval", "0.1s",
                             "--lines", "5"], stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    try:
        data = b""
        deadline = time.monotonic() + 20
        while b"\n" not in data and time.monotonic() < deadline:
            data += os.read(master, 4096)
        line = data.decode().splitlines()[0]
        assert "ERROR" in line and "actor_id=u1" in line and "boom second line" in line
        assert len(line) <= 110 and line.endswith("…") and "{\"trace\":\"yyy" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)

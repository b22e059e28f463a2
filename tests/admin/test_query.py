"""`shipper query` and `shipper tail` against the fake Loki, and every Loki error turned into
its one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper._units import NS
from shipper.cli.admin.query import follow
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient
from shipper.loki.logql import Filters
from shipper.loki.reader import Record
from tests.support import contract
from tests.support.fakeloki import FakeLoki, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def add(fake: FakeLoki, ago_s: float, message: str, *, service: str = "shop",
        level: str = "INFO", actor: str = "USER", type_: str = "AUTH_LOGIN",
        actor_id: str | None = None, logger: str | None = None,
        metadata: dict[str, object] | None = None) -> None:
    md = {k: v for k, v in (("actor_id", actor_id), ("logger", logger)) if v}
    fake.add({"service_name": service, "level": level, "actor": actor, "type": type_},
             time.time_ns() - int(ago_s * NS),
             json.dumps({"message": message, "metadata": metadata or {}}), md)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_query_filters_by_every_field_of_the_contract(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 50, "login ok", actor_id="u1", logger="shop.auth.login")
    add(fake, 40, "Card DECLINED for order 7", level="ERROR", type_="PAYMENT_FAILED",
        actor_id="u2", logger="shop.payments", metadata={"order": 7})
    add(fake, 30, "settings changed", actor="ADMIN", type_="SETTINGS", actor_id="a1",
        logger="shop.authz")
    add(fake, 20, "other service", service="blog", logger="shop.auth")
    add(fake, 10, "warned", level="WARNING", type_="API_SLOW", actor_id="declined-user")

    def messages(*flags: str) -> list[str]:
        code, out, err = run(capsys, "query", "--url", fake.url, "--since", "1h",
                             "--format", "json", *flags)
        assert code in (0, 1), err
        return [row["message"] for row in json.loads(out)]

    assert messages() == ["warned", "other service", "settings changed",
                          "Card DECLINED for order 7", "login ok"]
    assert messages("--service", "shop", "--order", "asc")[0] == "login ok"
    assert messages("--level", "error", "--level", "warn") == [
        "warned", "Card DECLINED for order 7"]
    assert messages("--actor", "admin") == ["settings changed"]
    assert messages("--type", "payment") == ["Card DECLINED for order 7"]
    assert messages("--actor-id", "u2") == ["Card DECLINED for order 7"]
    assert messages("--logger", "shop.auth") == ["other service", "login ok"]
    # message, type and actor id, case-insensitively
    assert messages("--search", "declined") == ["warned", "Card DECLINED for order 7"]
    assert messages("--search", "SETTINGS") == ["settings changed"]
    assert messages("--search", "no such text") == []


@pytest.mark.parametrize("since", ["90", "90s", "1m30s", "1.5m"])
def test_since_reads_the_one_grammar_where_a_bare_number_is_seconds(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str], since: str,
) -> None:
    add(fake, 30, "inside")
    add(fake, 150, "outside")
    code, out, err = run(capsys, "query", "--url", fake.url, "--since", since,
                         "--format", "json")
    assert code == 0, err
    assert [row["message"] for row in json.loads(out)] == ["inside"]


def test_start_and_end_read_rfc3339_with_nanoseconds_dates_and_times_ago(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 30, "recent")
    add(fake, 7200, "two hours ago")
    for flags, expected in ((["--start", "now-1h"], ["recent"]),
                            (["--start", "3h", "--end", "1h"], ["two hours ago"]),
                            (["--start", "2000-01-01", "--end", "2000-01-02T00:00:00.5+01:00"],
                             [])):
        code, out, err = run(capsys, "query", "--url", fake.url, "--format", "json", *flags)
        assert code == (0 if expected else 1), err
        assert [row["message"] for row in json.loads(out)] == expected


def test_query_json_rows_have_every_field_and_wide_table_rows_the_seven(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    add(fake, 5, "paid", actor_id="u9", logger="shop.pay", metadata={"amount": 42})
    code, out, _ = run(capsys, "query", "--url", fake.url, "--format", "json")
    row = json.loads(out)[0]
    assert code == 0
    assert {k: row[k] for k in ("service", "level", "actor", "type", "actor_id", "logger",
                                "message", "metadata")} == {
        "service": "shop", "level": "INFO", "actor": "USER", "type": "AUTH_LOGIN",
        "actor_id": "u9", "logger": "shop.pay", "message": "paid", "metadata": {"amount": 42}}
    code, out, _ = run(capsys, "query", "--url", fake.url, "--format", "table", "--wide",
                       "--service", "shop")
    header = out.splitlines()[0].split()
    assert header == ["time", "level", "actor", "type", "actor_id", "message", "metadata"]
    assert '{"amount":42}' in out and "paid" in out


def test_query_pages(fake: FakeLoki, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(7):
        add(fake, 100 - i, f"e{i}")
    pages = []
    for page in (1, 2, 3, 4):
        code, out, err = run(capsys, "query", "--url", fake.url, "--format", "json",
                             "--order", "asc", "--limit", "3", "--page", str(page))
        pages.append((code, [r["message"] for r in json.loads(out)]))
    assert pages == [(0, ["e0", "e1", "e2"]), (0, ["e3", "e4", "e5"]), (0, ["e6"]), (1, [])]
    code, _, err = run(capsys, "query", "--url", fake.url, "--format", "table", "--limit", "3")
    assert "events 1-3 (newest first); more: --page 2" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--level", "loud"], "--level: unknown level 'loud'"),
    (["--actor", "robot"], "--actor: unknown actor 'robot'"),
    (["--since", "1h", "--start", "2h"], "use --since or --start, not both"),
    (["--start", "1h", "--end", "2h"], "the range is empty"),
])
def test_bad_input_exits_2_with_one_line_naming_it(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
) -> None:
    code, _, err = run(capsys, "query", "--url", fake.url, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--since", "ages"], "argument --since: not a duration: 'ages'"),
    (["--since", "0"], "argument --since: zero duration: '0'"),
    (["--start", "yesterday"], "argument --start: not a time: 'yesterday'"),
    (["--end", "now+1h"], "argument --end: not a time: 'now+1h'"),
    (["--start", "2026-01-31T12:00:00"], "argument --start: no time zone in"),
])
def test_a_time_flag_it_cannot_read_is_refused_by_the_parser_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_limit_above_5000_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "--limit", "5001"])
    assert exc.value.code == 2
    assert "must be between 1 and 5000" in capsys.readouterr().err


def test_no_loki_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LOKI_URL", raising=False)
    monkeypatch.delenv("SHIPPER_CONFIG", raising=False)
    code, _, err = run(capsys, "query")
    assert code == 2 and "no Loki URL: set LOKI_URL" in err


def _error_line(capsys: pytest.CaptureFixture[str], url: str, *flags: str) -> str:
    code, out, err = run(capsys, "query", "--url", url, *flags)
    assert code == 1 and out in ("", "[]\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_every_loki_error_becomes_one_clear_line(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    fake.routes["GET /loki/api/v1/query_range"] = contract.answer("query_400_parse_error")
    assert _error_line(capsys, fake.url) == (
        "shipper query: Loki could not parse the query: parse error at line 0, col 26: syntax "
        "error: unexpected |=, expecting } or ,")

    fake.routes["GET /loki/api/v1/query_range"] = (429, "too many outstanding requests\n", {})
    assert _error_line(capsys, fake.url) == (
        "shipper query: Loki is rate limiting (429: too many outstanding requests): try again "
        "in a moment or narrow the time range")

    del fake.routes["GET /loki/api/v1/query_range"]
    fake.max_query_length_ns = 3600 * NS  # a Loki whose /config the proxy hides
    fake.config["limits_config"]["max_query_length"] = "30d1h"
    assert _error_line(capsys, fake.url, "--since", "2h") == (
        "shipper query: query too large: the query time range exceeds the limit (query "
        "length: 2h0m0s, limit: 30d1h)")

    port = free_port()
    line = _error_line(capsys, f"http://127.0.0.1:{port}")
    assert line.startswith(f"shipper query: Loki is unreachable at http://127.0.0.1:{port}: ")

    fake.routes["GET /loki/api/v1/query_range"] = (401, "no org id\n", {})
    assert "Loki refused the credentials (401: no org id)" in _error_line(capsys, fake.url)


def test_tail_shows_the_last_lines_then_each_new_event_once(fake: FakeLoki) -> None:
    for i in range(5):
        add(fake, 60 - i, f"old {i}")
    client = LokiClient(ShipperConfig(url=fake.url))
    seen: list[str] = []
    stop = threading.Event()

    def emit(record: Record) -> None:
        seen.append(record.fields()["message"])

    worker = threading.Thread(target=follow, args=(client, Filters(), emit),
                              kwargs={"lines": 2, "interval": 0.05, "delay": 5.0, "stop": stop})
    worker.start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    add(fake, 0, "new 1")
    add(fake, 3, "late but within the delay")
    add(fake, 0.5, "new 2", level="ERROR")
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # more polls: nothing is shown twice
    stop.set()
    worker.join(5)
    client.close()
    assert seen[:2] == ["old 3", "old 4"]
    assert sorted(seen[2:]) == ["late but within the delay", "new 1", "new 2"]


def test_tail_runs_until_sigterm_and_exits_0(fake: FakeLoki) -> None:
    add(fake, 1, "before")
    env = {**os.environ, "LOKI_URL": fake.url, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "shipper.cli", "tail", "--interval", "0.1s",
                             "--level", "error"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        time.sleep(1.0)
        add(fake, 0, "boom", level="ERROR", actor_id="u1")
        line = proc.stdout.readline() if proc.stdout else ""
        assert json.loads(line)["message"] == "boom"  # piped: JSON lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("command", ["query", "tail", "export", "stats", "delete", "import",
                                     "doctor"])
def test_every_admin_command_has_help_with_examples_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "examples:\n  shipper " + command in out
    assert "Exit codes" in out or "Exit 0" in out or "Exit 1" in out

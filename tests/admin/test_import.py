"""`shipper import`: seed tables (Prisma Log as CSV, MySQL activity_logs as JSON lines) through
the one pipeline, original timestamps kept, refused rows named with Loki's reason, resumable."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.cli.main import main
from shipper.delivery.spool.deadletters import DeadLetterReader
from tests.support import contract, fakeloki
from tests.support.fakeloki import FakeLoki

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PRISMA = ["id", "level", "type", "actor", "actorId", "message", "metadata", "createdAt"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeLoki]:
    monkeypatch.delenv("SHIPPER_SERVICE", raising=False)
    # the service's spool directory, where refused rows are kept as dead letters
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    with FakeLoki(rate_limit=False) as loki:
        monkeypatch.setenv("LOKI_URL", loki.url)
        yield loki


def prisma_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=PRISMA)
        writer.writeheader()
        writer.writerows(rows)
    return path


def prisma_row(i: int, age: dt.timedelta, **extra: Any) -> dict[str, Any]:
    return {"id": f"clx{i:04d}", "level": ["INFO", "warn", "ERROR"][i % 3],
            "type": ["userLogin", "PAYMENT_FAILED"][i % 2], "actor": ["USER", "admin"][i % 2],
            "actorId": f"user_{i}", "message": f"row {i}",
            "metadata": json.dumps({"ip": "10.0.0.1", "n": i}),
            "createdAt": (NOW - age).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            **extra}


def stored(fake: FakeLoki) -> dict[str, dict[str, Any]]:
    """message -> what Loki holds for it."""
    out = {}
    for s in fake.stored():
        line = json.loads(s.line)
        out[line["message"]] = {**dict(s.labels), **dict(s.metadata), "ts": s.ts,
                                "metadata": line["metadata"]}
    return out


def _sent(fake: FakeLoki) -> int:
    """Entries in every push request the fake received."""
    return sum(sum(len(s["values"]) for s in json.loads(r.body)["streams"])
               for r in fake.requests if r.path.endswith("/push"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prisma_rows_are_imported_with_their_own_time_and_old_ones_refused_by_name(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [prisma_row(i, dt.timedelta(hours=i)) for i in range(20)]
    rows += [prisma_row(i, dt.timedelta(days=9, hours=i)) for i in range(20, 23)]
    path = prisma_csv(tmp_path / "logs.csv", rows)
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--batch", "7",
                         "--format", "table")
    assert code == 1, err  # some rows were refused
    assert "imported 20 of 23 rows into service shop; refused 3" in out
    assert "3 refused (too_old): entry for stream" in out and "timestamp too old" in out
    assert "reject_old_samples_max_age" in out
    have = stored(fake)
    assert len(have) == 20
    first = have["row 0"]
    assert first["ts"] == int(NOW.timestamp()) * 10**9
    assert (first["service_name"], first["level"], first["actor"], first["type"]) == (
        "shop", "INFO", "USER", "USER_LOGIN")
    assert first["actor_id"] == "user_0"
    assert first["metadata"] == {"ip": "10.0.0.1", "n": 0, "import_id": "clx0000"}
    assert have["row 1"]["level"] == "WARNING" and have["row 1"]["actor"] == "ADMIN"
    refused = [json.loads(line) for line in (tmp_path / "logs.csv.refused.jsonl")
               .read_text().splitlines()]
    # rows go oldest first: the oldest refused row comes first
    assert [r["id"] for r in refused] == ["clx0022", "clx0021", "clx0020"]
    assert [r["_shipper_row"] for r in refused] == [23, 22, 21]
    assert all("timestamp too old" in r["_shipper_reason"] for r in refused)


def test_a_table_exported_newest_first_is_sent_oldest_first(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Loki refuses an entry more than its out-of-order window (1h) behind the newest entry of
    its stream: the rows must reach it in time order, whatever the file's order."""
    rows = [prisma_row(i, dt.timedelta(minutes=10 * i)) for i in range(30)]  # 5 hours, newest first
    path = prisma_csv(tmp_path / "desc.csv", rows)
    assert run(capsys, "import", str(path), "--service", "shop", "--batch", "4")[0] == 0
    pushes = [[int(v[0]) for s in json.loads(r.body)["streams"] for v in s["values"]]
              for r in fake.requests if r.path.endswith("/push")]
    assert sum(len(p) for p in pushes) == 30
    assert all(max(a) < min(b) for a, b in itertools.pairwise(pushes))  # request by request
    per_stream: dict[str, list[int]] = {}
    for r in fake.requests:
        if r.path.endswith("/push"):
            for s in json.loads(r.body)["streams"]:
                per_stream.setdefault(json.dumps(s["stream"]), []).extend(
                    int(v[0]) for v in s["values"])
    assert all(ts == sorted(ts) for ts in per_stream.values())


def test_refused_rows_can_be_imported_again_from_the_refused_file(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = prisma_csv(tmp_path / "logs.csv", [prisma_row(0, dt.timedelta(days=9))])
    assert run(capsys, "import", str(path), "--service", "shop")[0] == 1
    refused = tmp_path / "logs.csv.refused.jsonl"
    # once the limit is lifted (here: the fake accepts anything), the refused file imports
    # with the same columns; the _shipper_ bookkeeping columns stay out of the event
    import tests.support.fakeloki as fk
    old = fk.REJECT_OLD_NS
    fk.REJECT_OLD_NS = 30 * 24 * 3600 * 10**9
    try:
        code, out, _ = run(capsys, "import", str(refused), "--service", "shop")
    finally:
        fk.REJECT_OLD_NS = old
    assert code == 0, out
    assert stored(fake)["row 0"]["metadata"] == {"ip": "10.0.0.1", "n": 0,
                                                 "import_id": "clx0000"}


def test_rows_loki_refuses_are_dead_letters_the_spool_pushes_again(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refused rows go through the one dead-letter mechanism: kept in the service's spool
    directory with Loki's reason; FILE.refused.jsonl is the same refusals as rows."""
    rows = [prisma_row(0, dt.timedelta(hours=1)), prisma_row(1, dt.timedelta(days=9)),
            prisma_row(2, dt.timedelta(days=10))]
    path = prisma_csv(tmp_path / "logs.csv", rows)
    code, out, _ = run(capsys, "import", str(path), "--service", "shop", "--json")
    summary = json.loads(out)
    assert code == 1 and (summary["refused"], summary["dead_lettered"]) == (2, 2)
    spool = tmp_path / "spool"
    assert summary["dead_letters"] == str(spool / "dead-letters")
    letters = list(DeadLetterReader(spool / "dead-letters"))
    assert sorted(json.loads(letter.entry.line)["message"] for letter in letters) == [
        "row 1", "row 2"]
    assert {letter.reason for letter in letters} == {"too_old"}
    refused = [json.loads(line) for line in (tmp_path / "logs.csv.refused.jsonl")
               .read_text().splitlines()]
    assert sorted(r["_shipper_reason"] for r in refused) == sorted(
        letter.message for letter in letters)
    code, out, _ = run(capsys, "import", str(path), "--service", "shop", "--restart",
                       "--format", "table")
    assert "shipper spool dead-letters push --dir" in out
    # once the limit is lifted, the dead letters go to Loki as the rows would: stored once
    monkeypatch.setattr(fakeloki, "REJECT_OLD_NS", 30 * 24 * 3600 * 10**9)
    assert run(capsys, "spool", "dead-letters", "push", "--dir", str(spool))[0] == 0
    assert sorted(stored(fake)) == ["row 0", "row 1", "row 2"]
    assert stored(fake)["row 1"]["metadata"] == {"ip": "10.0.0.1", "n": 1,
                                                 "import_id": "clx0001"}
    assert list(DeadLetterReader(spool / "dead-letters")) == []


def test_a_row_loki_refuses_the_whole_push_for_costs_only_itself(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    status, body, _ = contract.answer("push_400_bad_json")
    fake.hook = lambda request: (status, body, {}) if b"poison" in request.body else None
    rows = [prisma_row(i, dt.timedelta(minutes=i)) for i in range(30)]
    rows[11]["message"] = "poison"
    path = prisma_csv(tmp_path / "logs.csv", rows)
    code, out, _ = run(capsys, "import", str(path), "--service", "shop", "--batch", "10",
                       "--json")
    summary = json.loads(out)
    assert code == 1
    assert (summary["imported"], summary["refused"]) == (29, 1)
    assert summary["reasons"]["bad_request"][0] == 1
    assert len(stored(fake)) == 29 and "poison" not in stored(fake)
    [row] = [json.loads(line) for line in (tmp_path / "logs.csv.refused.jsonl")
             .read_text().splitlines()]
    assert (row["id"], row["_shipper_row"]) == ("clx0011", 12)


def test_activity_logs_json_lines_with_mysql_times_and_extra_columns(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    local = (NOW + dt.timedelta(hours=2) - dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        {"id": 1, "level": "ERROR", "type": "API_ERROR", "actor": "SYSTEM", "actor_id": None,
         "message": "db down", "metadata": {"table": "orders"}, "created_at": local,
         "ip_address": "192.0.2.7"},
        {"id": 2, "level": "INFO", "action": "ignored", "message": "no time"},
        "not an object",
    ]
    path = tmp_path / "activity_logs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    code, out, _ = run(capsys, "import", str(path), "--service", "legacy", "--timezone", "+02:00",
                       "--format", "json")
    summary = json.loads(out)
    assert code == 1
    assert (summary["imported"], summary["refused"]) == (1, 3)
    assert summary["reasons"]["bad_row"][0] == 3
    event = stored(fake)["db down"]
    assert event["ts"] == int((NOW - dt.timedelta(minutes=5)).timestamp()) * 10**9
    assert event["metadata"] == {"table": "orders", "ip_address": "192.0.2.7", "import_id": 1}
    reasons = [json.loads(line)["_shipper_reason"] for line in
               (tmp_path / "activity_logs.jsonl.refused.jsonl").read_text().splitlines()]
    assert "no time" in reasons[0] and "not a JSON object" in reasons[1]
    assert "not a JSON object" in reasons[2]


def test_column_flags_and_unknown_columns(fake: FakeLoki, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "export.csv"
    path.write_text("when,action,user_id,description\n"
                    f"{NOW.isoformat()},checkout,u7,bought a hat\n")
    code, _, err = run(capsys, "import", str(path), "--service", "shop")
    assert code == 2 and "no time column" in err and "--time-column" in err
    code, _, err = run(capsys, "import", str(path), "--service", "shop", "--time-column", "at")
    assert code == 2 and "--time-column 'at': no such column" in err
    code, _, err = run(capsys, "import", str(path), "--service", "shop", "--time-column", "when",
                       "--type-column", "action", "--actor-id-column", "user_id",
                       "--env", "imported")
    assert code == 0, err
    event = stored(fake)["bought a hat"]
    assert event["type"] == "CHECKOUT" and event["actor_id"] == "u7"
    assert event["env"] == "imported"


def test_a_finished_import_is_not_repeated_and_options_must_match_the_checkpoint(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = prisma_csv(tmp_path / "logs.csv", [prisma_row(i, dt.timedelta(minutes=i))
                                              for i in range(5)])
    assert run(capsys, "import", str(path), "--service", "shop")[0] == 0
    pushes = len([r for r in fake.requests if r.path.endswith("/push")])
    code, out, _ = run(capsys, "import", str(path), "--service", "shop",
                       "--format", "table")
    assert code == 0 and "already imported" in out
    assert len([r for r in fake.requests if r.path.endswith("/push")]) == pushes
    code, _, err = run(capsys, "import", str(path), "--service", "other")
    assert code == 2 and "belongs to another import" in err and "--restart" in err
    (tmp_path / "logs.csv.shipper-import.json").write_text("{truncated")
    code, _, err = run(capsys, "import", str(path), "--service", "shop")
    assert code == 2 and "cannot be read" in err and "--restart" in err
    assert run(capsys, "import", str(path), "--service", "shop", "--restart")[0] == 0


@pytest.mark.slow
def test_an_interrupted_import_resumes_where_it_stopped(fake: FakeLoki, tmp_path: Path) -> None:
    n = 400
    path = prisma_csv(tmp_path / "big.csv", [prisma_row(i, dt.timedelta(seconds=i))
                                             for i in range(n)])
    fake.delay = 0.05  # each push takes a while: the import is caught mid-way
    env = {**os.environ, "LOKI_URL": fake.url, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "shipper.cli", "import", str(path), "--service", "shop",
            "--batch", "20", "--format", "json"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    checkpoint = tmp_path / "big.csv.shipper-import.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["rows_done"] >= 100:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # what a deploy or `kill` sends
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    first = json.loads(out)
    assert 100 <= first["rows_done"] < n and first["stopped"] == "interrupted"
    assert "run the same command again to resume" in err
    sent_before = _sent(fake)

    fake.delay = 0.0
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert second["resumed_at"] == first["rows_done"] and second["complete"]
    assert second["imported"] == n and second["refused"] == 0
    assert len(stored(fake)) == n
    sent = _sent(fake)
    assert sent_before >= first["rows_done"]
    assert sent <= n + 20  # at most the chunk in flight was sent twice (Loki keeps it once)

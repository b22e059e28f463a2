"""`shipper delete`: count, confirmation, Loki's deletion request, --status, --cancel, and the
LOGS_DELETED audit event that no deletion can remove."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.cli.admin import delete as delete_module
from shipper.cli.main import main
from tests.support import contract
from tests.support.fakeloki import FakeLoki

NS = 1_000_000_000


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeLoki]:
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.delenv("SHIPPER_SERVICE", raising=False)
    with FakeLoki(rate_limit=False) as loki:
        monkeypatch.setenv("LOKI_URL", loki.url)
        yield loki


def seed(fake: FakeLoki) -> None:
    now = time.time_ns()
    for i in range(6):
        level = "DEBUG" if i % 2 else "INFO"
        fake.add({"service_name": "shop", "level": level, "actor": "USER", "type": "VIEW"},
                 now - (600 + i) * NS, json.dumps({"message": f"view {i}"}), {"actor_id": "u1"})
    fake.add({"service_name": "blog", "level": "DEBUG", "actor": "USER", "type": "VIEW"},
             now - 700 * NS, json.dumps({"message": "blog view"}))


def audits(fake: FakeLoki, type_: str = "LOGS_DELETED") -> list[tuple[dict[str, str], dict]]:
    out = []
    for s in fake.stored():
        labels = dict(s.labels)
        if labels.get("type") == type_:
            out.append(({**labels, **dict(s.metadata)}, json.loads(s.line)))
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def confirm(monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    monkeypatch.setattr(delete_module, "is_terminal", lambda stream: True)
    monkeypatch.setattr("sys.stdin", io.StringIO(answer + "\n"))


def test_without_a_terminal_or_yes_nothing_is_deleted(fake: FakeLoki,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake)
    code, _, err = run(capsys, "delete", "--service", "shop", "--level", "debug",
                       "--since", "1h")
    assert code == 2
    assert "3 entries match" in err and "not deleting without confirmation" in err
    assert fake.deletes == [] and audits(fake) == []


def test_answering_no_deletes_nothing(fake: FakeLoki, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake)
    confirm(monkeypatch, "no")
    code, _, err = run(capsys, "delete", "--service", "shop", "--since", "1h")
    assert code == 1 and "not deleted" in err
    assert fake.deletes == []


def test_confirmed_deletion_is_requested_audited_and_spares_the_audit(
    fake: FakeLoki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(fake)
    confirm(monkeypatch, "yes")
    code, out, err = run(capsys, "delete", "--service", "shop", "--level", "debug",
                         "--since", "1h", "--admin-id", "admin_7")
    assert code == 0, err
    assert "3 entries match" in err
    (request,) = fake.deletes
    assert request["query"] == ('{service_name=~"shop", level="DEBUG", type!="LOGS_DELETED", '
                                'type!="LOGS_DELETE_CANCELLED"}')
    assert request["end_time"] - request["start_time"] == 3600
    assert f"deletion requested: {request['request_id']}" in out
    ((labels, line),) = audits(fake)
    assert labels["service_name"] == "shop" and labels["actor"] == "ADMIN"
    assert labels["level"] == "WARNING" and labels["actor_id"] == "admin_7"
    meta = line["metadata"]
    assert meta["count"] == 3 and meta["query"] == request["query"]
    assert meta["request_id"] == request["request_id"]
    assert meta["filters"] == {"service": ["shop"], "level": ["DEBUG"]}
    assert meta["start"].endswith("Z") and meta["end"].endswith("Z")

    # A second deletion whose range and filters cover the first one's audit event: the
    # compactor (here the fake) removes every matching entry, and the audit trail stays.
    time.sleep(1.1)
    code, _, err = run(capsys, "delete", "--service", "shop", "--since", "1h", "--yes")
    assert code == 0, err
    # the first request is not carried out yet (Loki waits out the cancel period), and the
    # audit event is not counted: the six views
    assert "6 entries match" in err
    removed = fake.process_deletes()
    assert removed == 6
    left = {json.loads(s.line)["message"] for s in fake.stored()}
    assert "blog view" in left and not any(m.startswith("view") for m in left)
    assert len(audits(fake)) == 2


def test_nothing_matching_requests_nothing_and_exits_1(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(fake)
    code, _, err = run(capsys, "delete", "--service", "nope", "--since", "1h", "--yes")
    assert code == 1 and "nothing matches" in err and fake.deletes == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--service", "shop"], "a time range is required"),
    (["--service", "shop", "--start", "2h", "--end", "2099-01-01"], "ends in the future"),
])
def test_a_range_is_required_and_cannot_end_in_the_future(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
) -> None:
    code, _, err = run(capsys, "delete", *argv, "--yes")
    assert code == 2 and message in err


def test_status_lists_requests_and_cancel_withdraws_one(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(fake)
    assert run(capsys, "delete", "--service", "blog", "--since", "1h", "--yes")[0] == 0
    code, out, _ = run(capsys, "delete", "--status", "--format", "json")
    (row,) = json.loads(out)
    assert code == 0 and row["status"] == "received"
    assert row["query"] == ('{service_name=~"blog", type!="LOGS_DELETED", '
                            'type!="LOGS_DELETE_CANCELLED"}')
    code, out, _ = run(capsys, "delete", "--cancel", row["request_id"], "--admin-id", "a2")
    assert code == 0 and f"cancelled deletion request {row['request_id']}" in out
    assert fake.deletes == []
    ((labels, line),) = audits(fake, "LOGS_DELETE_CANCELLED")
    assert labels["actor_id"] == "a2" and line["metadata"]["request_id"] == row["request_id"]


def test_cancel_errors_are_loki_s_own_words(fake: FakeLoki,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "delete", "--cancel", "deadbeef")
    assert code == 1 and "no deletion request 'deadbeef'" in err
    seed(fake)
    run(capsys, "delete", "--service", "blog", "--since", "1h", "--yes")
    fake.deletes[0]["created_at"] -= 25 * 3600
    code, _, err = run(capsys, "delete", "--cancel", fake.deletes[0]["request_id"])
    assert code == 1 and "past the deadline of 24h0m0s" in err
    assert err.count("\n") == 1


def test_loki_refusing_the_request_is_one_line(fake: FakeLoki,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    seed(fake)
    fake.routes["POST /loki/api/v1/delete"] = contract.answer("delete_400_bad_selector")
    code, _, err = run(capsys, "delete", "--service", "blog", "--since", "1h", "--yes")
    assert code == 1
    assert err.splitlines()[-1] == ("shipper delete: Loki could not parse the query: invalid "
                                    "query expression")
    assert audits(fake) == []


@pytest.mark.parametrize("flags", [[], ["--service", ""], ["--search", ""]])
def test_a_delete_without_any_filter_needs_all_services(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str], flags: list[str],
) -> None:
    seed(fake)
    code, _, err = run(capsys, "delete", *flags, "--since", "1h", "--yes")
    assert code == 2
    assert "no filter: this would delete every service's events in the range" in err
    assert "--all-services" in err
    assert fake.deletes == [] and audits(fake) == []


def test_all_services_deletes_every_service_and_says_how_many(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(fake)
    code, _, err = run(capsys, "delete", "--all-services", "--since", "1h", "--yes",
                       "--admin-id", "admin_7")
    assert code == 0, err
    assert "7 entries match" in err
    assert 'in 2 services: "shop" (6), "blog" (1)' in err  # printed with --yes too
    (request,) = fake.deletes
    assert request["query"] == ('{service_name=~".+", type!="LOGS_DELETED", '
                                'type!="LOGS_DELETE_CANCELLED"}')
    ((labels, line),) = audits(fake)
    assert labels["service_name"] == "shipper-admin"
    assert line["metadata"]["services"] == {"shop": 6, "blog": 1}
    assert fake.process_deletes() == 7


def test_the_confirmation_says_how_many_services_a_filter_touches(
    fake: FakeLoki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(fake)
    confirm(monkeypatch, "no")
    code, out, err = run(capsys, "delete", "--level", "debug", "--since", "1h")
    assert code == 1 and fake.deletes == []
    assert '4 entries match' in err and 'in 2 services: "shop" (3), "blog" (1)' in err
    assert "Delete these 4 entries of 2 services? Type 'yes' to confirm" in out


def test_all_services_beside_a_service_is_a_contradiction(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    seed(fake)
    code, _, err = run(capsys, "delete", "--all-services", "--service", "shop", "--since", "1h",
                       "--yes")
    assert code == 2 and "--all-services and --service contradict" in err
    assert fake.deletes == []


def test_service_names_in_the_summary_cannot_move_the_terminal(
    fake: FakeLoki, capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time_ns()
    fake.add({"service_name": "evil\x1b[2J\rshop", "level": "INFO", "actor": "USER",
              "type": "VIEW"}, now - 600 * NS, json.dumps({"message": "x"}))
    code, _, err = run(capsys, "delete", "--all-services", "--since", "1h")
    assert code == 2  # no terminal, no --yes: nothing deleted
    assert 'in 1 service: "evil\\u001b[2J\\u000dshop" (1)' in err and "\x1b" not in err

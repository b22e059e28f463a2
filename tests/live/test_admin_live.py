"""The admin commands against a real Loki 3.7 started from loki/config.yaml (LOKI_URL):
query (filters and LogQL), labels, series, export, stats, delete and doctor, run as the
`shipper` command is run; and shipper.LokiReader, the read API they use."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.event import LogEvent
from tests.live.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000


def shipper(loki_url: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOKI_URL": loki_url, "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
           "PYTHONPATH": str(REPO)}
    env.pop("SHIPPER_SERVICE", None)
    return subprocess.run([sys.executable, "-m", "shipper.cli", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def ship(loki_url: str, tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """Events through the one pipeline, as an app's handler sends them."""
    config = ShipperConfig(url=loki_url, spool_dir=str(tmp_path / "ship-spool"))
    pipeline = Pipeline(config)
    for fields in events:
        pipeline.submit(LogEvent.create(**fields))
    assert pipeline.flush(30)
    stats = pipeline.stats()
    pipeline.close(5)
    assert stats["refused_total"] == 0 and stats["dropped_total"] == 0, stats


def _events(service: str, base: int) -> list[dict[str, Any]]:
    rows = [
        ("INFO", "USER", "AUTH_LOGIN", "u1", "shop.auth.login", "user logged in"),
        ("ERROR", "SYSTEM", "PAYMENT_FAILED", "u2", "shop.payments", "Card DECLINED"),
        ("WARNING", "ADMIN", "SETTINGS_CHANGED", "a1", "shop.authz", "settings changed"),
        ("INFO", "USER", "AUTH_LOGOUT", "declined-user", "shop.auth", "user logged out"),
    ]
    return [{"service": service, "level": level, "actor": actor, "type": type_,
             "actor_id": actor_id, "logger": logger, "message": message,
             "metadata": {"i": i}, "timestamp_ns": base + i * NS}
            for i, (level, actor, type_, actor_id, logger, message) in enumerate(rows)]


def _messages(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode in (0, 1), result.stderr
    return [row["message"] for row in json.loads(result.stdout)]


def test_query_filters_on_a_real_loki(loki_url: str, unique_service: str,
                                      tmp_path: Path) -> None:
    ship(loki_url, tmp_path, _events(unique_service, time.time_ns() - 60 * NS))

    def query(*flags: str) -> list[str]:
        return _messages(shipper(loki_url, tmp_path, "query", "--service", unique_service,
                                 "--since", "10m", "--format", "json", *flags))

    assert wait_for(lambda: len(query()) == 4)
    assert query("--order", "asc")[0] == "user logged in"
    assert query("--logger", "shop.auth") == ["user logged out", "user logged in"]
    assert query("--search", "declined") == ["user logged out", "Card DECLINED"]
    assert query("--type", "auth_") == ["user logged out", "user logged in"]
    assert query("--actor-id", "a1", "--level", "warn") == ["settings changed"]
    rows = json.loads(shipper(loki_url, tmp_path, "query", "--service", unique_service,
                              "--since", "10m", "--format", "json", "--limit", "1").stdout)
    assert rows[0]["metadata"] == {"i": 3} and rows[0]["logger"] == "shop.auth"
    nothing = shipper(loki_url, tmp_path, "query", "--service", unique_service, "--since", "10m",
                      "--search", "no such words")
    assert nothing.returncode == 1


def test_export_pages_past_shared_nanoseconds_on_a_real_loki(
    loki_url: str, unique_service: str, tmp_path: Path,
) -> None:
    base = time.time_ns() - 120 * NS
    events = []
    for i in range(23):
        ts = base + (5 * NS if 5 <= i < 14 else i * NS)  # nine entries share one nanosecond
        events.append({"service": unique_service, "level": "INFO", "actor": "USER",
                       "type": "EXPORT", "message": f"e{i}", "timestamp_ns": ts,
                       "actor_id": f"u{i % 2}"})
    ship(loki_url, tmp_path, events)
    out = tmp_path / "export.jsonl"

    def export() -> int:
        result = shipper(loki_url, tmp_path, "export", "--service", unique_service, "--since",
                         "10m", "--page-size", "4", "-o", str(out))
        return len(out.read_text().splitlines()) if result.returncode == 0 else 0

    assert wait_for(lambda: export() == 23, timeout=30)
    messages = [json.loads(line)["message"] for line in out.read_text().splitlines()]
    assert sorted(messages) == sorted(f"e{i}" for i in range(23))


def test_stats_on_a_real_loki(loki_url: str, unique_service: str, tmp_path: Path) -> None:
    ship(loki_url, tmp_path, _events(unique_service, time.time_ns() - 30 * NS))

    def stats() -> dict[str, Any]:
        result = shipper(loki_url, tmp_path, "stats", "--service", unique_service, "--since",
                         "10m", "--format", "json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    assert wait_for(lambda: stats()["total"] == 4)
    data = stats()
    assert data["by_level"] == {"INFO": 2, "WARNING": 1, "ERROR": 1}
    assert data["by_actor"] == {"USER": 2, "ADMIN": 1, "SYSTEM": 1}
    assert data["error_rate"] == pytest.approx(0.25)
    assert data["error_rate_by_service"] == {unique_service: pytest.approx(0.25)}
    assert {(a["actor_id"], a["count"]) for a in data["top_actors"]} == {
        ("u1", 1), ("u2", 1), ("a1", 1), ("declined-user", 1)}


def test_delete_requests_audits_and_cancels_on_a_real_loki(
    loki_url: str, unique_service: str, tmp_path: Path,
) -> None:
    ship(loki_url, tmp_path, _events(unique_service, time.time_ns() - 90 * NS))
    assert wait_for(lambda: len(_messages(shipper(
        loki_url, tmp_path, "query", "--service", unique_service, "--since", "10m",
        "--format", "json"))) == 4)
    result = shipper(loki_url, tmp_path, "delete", "--service", unique_service, "--level", "info",
                     "--since", "10m", "--yes", "--admin-id", "it-admin")
    assert result.returncode == 0, result.stderr
    assert "2 entries match" in result.stderr
    request_id = result.stdout.split("deletion requested: ")[1].split(";")[0]

    listed = json.loads(shipper(loki_url, tmp_path, "delete", "--status", "--format",
                                "json").stdout)
    mine = next(r for r in listed if r["request_id"] == request_id)
    assert mine["status"] == "received"
    assert mine["query"] == (f'{{service_name=~"{unique_service}", level="INFO", '
                             'type!="LOGS_DELETED", type!="LOGS_DELETE_CANCELLED"}')

    def audit() -> list[dict[str, Any]]:
        rows = json.loads(shipper(loki_url, tmp_path, "query", "--service", unique_service,
                                  "--type", "LOGS_DELETED", "--since", "10m", "--format",
                                  "json").stdout or "[]")
        return [r for r in rows if r["type"] == "LOGS_DELETED"]

    rows = wait_for(audit)
    assert rows and rows[0]["actor"] == "ADMIN" and rows[0]["actor_id"] == "it-admin"
    assert rows[0]["metadata"]["count"] == 2 and rows[0]["metadata"]["request_id"] == request_id

    cancelled = shipper(loki_url, tmp_path, "delete", "--cancel", request_id)
    assert cancelled.returncode == 0, cancelled.stderr
    listed = json.loads(shipper(loki_url, tmp_path, "delete", "--status", "--format",
                                "json").stdout)
    assert request_id not in {r["request_id"] for r in listed}


FORMULAS = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-2+3", " =1", "'=1", "plain"]


def test_csv_export_neutralises_formulas_and_import_restores_them_on_a_real_loki(
    loki_url: str, unique_service: str, tmp_path: Path,
) -> None:
    base = time.time_ns() - 60 * NS
    ship(loki_url, tmp_path, [
        {"service": unique_service, "level": "INFO", "actor": "USER", "type": "NOTE",
         "actor_id": text, "message": text, "metadata": {"i": i}, "timestamp_ns": base + i * NS}
        for i, text in enumerate(FORMULAS)])
    out = tmp_path / "notes.csv"

    def export() -> int:
        result = shipper(loki_url, tmp_path, "export", "--service", unique_service, "--since",
                         "10m", "-o", str(out))
        return len(out.read_text(encoding="utf-8").splitlines()) - 1 \
            if result.returncode == 0 else 0

    assert wait_for(lambda: export() == len(FORMULAS), timeout=30)
    with out.open(encoding="utf-8", newline="") as fh:
        cells = [(row["message"], row["actor_id"]) for row in csv.DictReader(fh)]
    assert cells == [("'=cmd|' /C calc'!A0",) * 2, ("'@SUM(1+1)",) * 2, ("'+1+1",) * 2,
                     ("'-2+3",) * 2, ("' =1",) * 2, ("''=1",) * 2, ("plain",) * 2]

    back = f"{unique_service}-back"
    result = shipper(loki_url, tmp_path, "import", str(out), "--service", back, "--format",
                     "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["imported"] == len(FORMULAS)

    def restored() -> list[tuple[str, str]]:
        rows = json.loads(shipper(loki_url, tmp_path, "query", "--service", back, "--since",
                                  "10m", "--order", "asc", "--format", "json").stdout or "[]")
        return [(r["message"], r["actor_id"]) for r in rows]

    assert wait_for(lambda: restored() == [(text, text) for text in FORMULAS])


def test_import_refuses_rows_that_do_not_decode_and_reads_them_with_encoding_on_a_real_loki(
    loki_url: str, unique_service: str, tmp_path: Path,
) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60)).encode()
    path = tmp_path / "legacy.csv"
    rows = [b"createdAt,message", when + b",before", when + b"," + "caf\xe9".encode("latin-1"),
            when + b",after"]
    path.write_bytes(b"\n".join(rows) + b"\n")
    first = shipper(loki_url, tmp_path, "import", str(path), "--service", unique_service,
                    "--format", "json")
    summary = json.loads(first.stdout)
    assert first.returncode == 1 and (summary["imported"], summary["refused"]) == (2, 1)
    assert "line 3, byte offset" in summary["reasons"]["bad_encoding"][1]
    again = shipper(loki_url, tmp_path, "import", str(path), "--service", unique_service,
                    "--encoding", "latin-1", "--restart", "--format", "json")
    assert again.returncode == 0, again.stderr


def test_delete_needs_all_services_without_a_filter_and_names_the_services_on_a_real_loki(
    loki_url: str, unique_service: str, tmp_path: Path,
) -> None:
    kind = f"PURGE_{unique_service[3:].upper()}"  # a type only this test writes
    now = time.time_ns()
    ship(loki_url, tmp_path, [
        {"service": service, "level": "INFO", "actor": "USER", "type": kind, "message": "x",
         "timestamp_ns": now - (30 + i) * NS}
        for i, service in enumerate([unique_service, unique_service, f"{unique_service}-b"])])
    refused = shipper(loki_url, tmp_path, "delete", "--since", "5m", "--yes")
    assert refused.returncode == 2 and "--all-services" in refused.stderr

    def counted() -> str:
        # no terminal and no --yes: counted and shown, then nothing deleted
        result = shipper(loki_url, tmp_path, "delete", "--type", kind, "--since", "5m")
        assert "not deleting without confirmation" in result.stderr or \
            "nothing matches" in result.stderr, result.stderr
        return result.stderr if "3 entries match" in result.stderr else ""

    text = wait_for(counted)
    assert f'in 2 services: "{unique_service}" (2), "{unique_service}-b" (1)' in text
    everything = shipper(loki_url, tmp_path, "delete", "--all-services", "--since", "5m")
    assert everything.returncode == 2 and "not deleting without confirmation" in everything.stderr
    assert re.search(r"^in \d+ services?: ", everything.stderr, re.MULTILINE)


def test_doctor_on_a_real_loki_started_from_our_config(loki_url: str, unique_service: str,
                                                        tmp_path: Path) -> None:
    # the shipping check judged for this test's own service only: a shared Loki holds other
    # tests' heartbeats, some made to look troubled
    env_grafana = {k: os.environ.pop(k) for k in ("SHIPPER_GRAFANA_URL", "SHIPPER_GRAFANA_TOKEN")
                   if k in os.environ}
    try:
        result = shipper(loki_url, tmp_path, "doctor", "--format", "table",
                         "--service", unique_service)
    finally:
        os.environ.update(env_grafana)
    assert result.returncode == 0, result.stdout + result.stderr
    status = {line[6:28].strip(): line.split()[0] for line in result.stdout.splitlines()}
    assert status == {"loki ready": "OK", "push and query": "OK", "retention": "OK",
                      "structured metadata": "OK", "deletion": "OK", "shipping": "SKIP",
                      "spool": "OK", "grafana": "SKIP"}, result.stdout


def test_labels_series_and_own_logql_on_a_real_loki(loki_url: str, unique_service: str,
                                                    tmp_path: Path) -> None:
    ship(loki_url, tmp_path, _events(unique_service, time.time_ns() - 60 * NS))
    svc = ["--service", unique_service, "--since", "10m", "--json"]

    def run(*argv: str) -> Any:
        result = shipper(loki_url, tmp_path, *argv)
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    assert wait_for(lambda: len(run("labels", "type", *svc)) == 4)
    assert run("labels", "level", *svc) == ["ERROR", "INFO", "WARNING"]
    assert {"actor", "level", "service_name", "type"} <= set(run("labels", *svc))
    assert run("labels", "type", "--actor-id", "u2", *svc) == ["PAYMENT_FAILED"]
    series = run("series", "--count", *svc)
    assert sorted((s["labels"]["type"], s["count"]) for s in series) == [
        ("AUTH_LOGIN", 1), ("AUTH_LOGOUT", 1), ("PAYMENT_FAILED", 1), ("SETTINGS_CHANGED", 1)]
    assert sorted(s["labels"]["type"] for s in run("series", "--search", "declined", *svc)) == [
        "AUTH_LOGOUT", "PAYMENT_FAILED"]
    selector = '{service_name="' + unique_service + '"}'
    rows = run("query", "--logql", selector + ' |= "Card"', "--since", "10m", "--json")
    assert [r["message"] for r in rows] == ["Card DECLINED"]
    count = f"sum by (level) (count_over_time({selector} [10m]))"
    samples = run("query", "--logql", count, "--instant", "--json")
    assert {r["metric"]["level"]: r["value"] for r in samples} == {
        "ERROR": 1.0, "INFO": 2.0, "WARNING": 1.0}
    matrix = run("query", "--logql", count, "--since", "10m", "--step", "1m", "--json")
    assert {r["metric"]["level"] for r in matrix} == {"ERROR", "INFO", "WARNING"}
    bad = shipper(loki_url, tmp_path, "query", "--logql", selector + ' |= "x', "--json")
    assert bad.returncode == 2 and "Loki could not parse the query" in bad.stderr


def test_lokireader_on_a_real_loki(loki_url: str, unique_service: str, tmp_path: Path) -> None:
    from shipper import LokiError, LokiReader
    from shipper.loki.read_api import Sample

    ship(loki_url, tmp_path, _events(unique_service, time.time_ns() - 60 * NS))
    with LokiReader(loki_url) as reader:
        assert wait_for(lambda: len(list(reader.events(service=unique_service,
                                                       since="10m"))) == 4)
        errors = list(reader.events(service=unique_service, level="error", since="10m"))
        assert [(e.type, e.actor_id, e.logger, e.message) for e in errors] == [
            ("PAYMENT_FAILED", "u2", "shop.payments", "Card DECLINED")]
        assert reader.labels("actor", service=unique_service, since="10m") == [
            "ADMIN", "SYSTEM", "USER"]
        assert len(reader.series(service=unique_service, since="10m", count=True)) == 4
        samples = reader.instant(f'sum(count_over_time({{service_name="{unique_service}"}}'
                                 ' [10m]))')
        assert [s.value for s in samples if isinstance(s, Sample)] == [4.0]
        with pytest.raises(LokiError, match="parse error"):
            list(reader.query('{service_name="x"', since="1h"))

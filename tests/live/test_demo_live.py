"""`shipper demo` against a real Loki 3.7 (started from loki/config.yaml) at LOKI_URL."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3

from shipper.cli.demo import DemoError, DemoOptions, file_object_to_entry, run_demo
from tests.live.conftest import query_range, wait_for

NS = 1_000_000_000


@pytest.fixture(autouse=True)
def _spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    for var in ("SHIPPER_SERVICE", "SHIPPER_ENV", "SHIPPER_CONFIG"):
        monkeypatch.delenv(var, raising=False)


def _wait_entries(pool: urllib3.PoolManager, url: str, service: str, start_ns: int,
                  at_least: int) -> list[tuple[dict[str, str], int, str]]:
    """The service's entries since ``start_ns`` once there are ``at_least`` (else fail)."""

    def entries() -> list[tuple[dict[str, str], int, str]] | None:
        body = query_range(pool, url, '{service_name="' + service + '"}', start_ns,
                           time.time_ns() + 60 * NS, limit=5000, direction="forward")
        found = [(stream["stream"], int(ts), line)
                 for stream in body["data"]["result"] for ts, line in stream["values"]]
        return found if len(found) >= at_least else None

    got: list[tuple[dict[str, str], int, str]] | None = wait_for(entries)
    assert got, f"fewer than {at_least} entries of {service} became queryable"
    return got


def _run(options: DemoOptions) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_demo(options, stdout=out, stderr=err)
    return code, json.loads(out.getvalue()), err.getvalue()


def test_demo_events_are_stored_as_the_file_says(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
        tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    start = time.time_ns() - 60 * NS
    code, stats, _ = _run(DemoOptions(count=120, rate=500, seed=5, service=unique_service,
                                      env="it", url=loki_url, file=str(path)))
    assert code == 0, stats
    assert stats["sent"] == 120 and stats["refused_total"] == 0
    expected = [file_object_to_entry(json.loads(line))
                for line in path.read_text(encoding="utf-8").splitlines()]
    got = _wait_entries(loki_http, loki_url, unique_service, start, 120)
    stored = {(ts, json.dumps(json.loads(line), sort_keys=True)) for _, ts, line in got}
    wanted = {(e.timestamp_ns, json.dumps(json.loads(e.line), sort_keys=True))
              for e in expected}
    assert stored == wanted
    by_key = {(ts, json.dumps(json.loads(line), sort_keys=True)): stream
              for stream, ts, line in got}
    for e in expected:
        stream = by_key[(e.timestamp_ns, json.dumps(json.loads(e.line), sort_keys=True))]
        # labels and structured metadata both come back in `stream` (plus detected_level)
        assert dict(e.labels).items() <= stream.items()
        assert dict(e.metadata).items() <= stream.items()


def test_backfill_writes_history_then_skips_a_second_time(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str) -> None:
    now = time.time_ns()
    code, stats, err = _run(DemoOptions(backfill=2 * 3600, backfill_rate=120, seed=6,
                                        service=unique_service, url=loki_url))
    assert code == 0, (stats, err)
    # 1h45m at 120 an hour, half of that at night (UTC)
    assert stats["emitted"] > 90 and stats["sent"] == stats["emitted"]
    got = _wait_entries(loki_http, loki_url, unique_service, now - 3 * 3600 * NS,
                        stats["emitted"])
    oldest = min(ts for _, ts, _ in got)
    assert oldest < now - 90 * 60 * NS, "history reaches back about two hours"
    # the streams are now busy: Loki would refuse entries an hour behind them, so no backfill
    code, stats, err = _run(DemoOptions(backfill=2 * 3600, service=unique_service,
                                        url=loki_url))
    assert code == 0
    assert "backfill is skipped" in err
    assert stats["emitted"] == 0


def test_backfill_beyond_lokis_age_limit_names_the_limit(
        loki_url: str, unique_service: str) -> None:
    with pytest.raises(DemoError, match=r"reject_old_samples_max_age is 7d"):
        run_demo(DemoOptions(backfill=8 * 86400, service=unique_service, url=loki_url),
                 stdout=io.StringIO(), stderr=io.StringIO())

"""Retention and deletion on a real Loki 3.7 started from loki/config.yaml (LOKI_URL).

How retention was proven to delete (backdated entries, shortened compactor intervals, restarts)
takes minutes and restarts Loki, so it is a documented procedure (README, "Retention"), not a
test; these tests check what that procedure relies on: the rules Loki really runs with.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
import yaml

from shipper._units import parse_duration
from shipper.cli.main import main
from shipper.cli.retention import RetentionPolicy, check
from shipper.loki.selector import Selector
from tests.live.conftest import wait_for

RETENTION_PATH = Path(__file__).resolve().parents[2] / "loki" / "retention.yaml"


@pytest.fixture(scope="module")
def live_config_text(loki_url: str) -> str:
    pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30))
    resp = pool.request("GET", f"{loki_url}/config")
    assert resp.status == 200, f"GET /config answered {resp.status}: {resp.data[:300]!r}"
    return resp.data.decode()


@pytest.fixture(scope="module")
def live_config(live_config_text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(live_config_text)
    return data


@pytest.fixture(scope="module")
def policy() -> RetentionPolicy:
    return RetentionPolicy.load(RETENTION_PATH)


def test_live_config_runs_the_rendered_retention_rules(
    live_config: dict[str, Any], policy: RetentionPolicy
) -> None:
    limits = live_config["limits_config"]
    live_rules = {
        Selector.parse(rule["selector"]).key: (rule["priority"], parse_duration(rule["period"]))
        for rule in limits["retention_stream"]
    }
    assert live_rules == {
        rule.selector.key: (rule.priority, rule.loki_period) for rule in policy.rules
    }
    assert len(limits["retention_stream"]) == len(policy.rules)
    assert parse_duration(limits["retention_period"]) == policy.default


def test_live_config_has_retention_deletion_and_structured_metadata_on(
    live_config: dict[str, Any], loki_url: str, loki_http: urllib3.PoolManager,
) -> None:
    compactor = live_config["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem"
    limits = live_config["limits_config"]
    assert limits["deletion_mode"] == "filter-and-delete"
    assert limits["allow_structured_metadata"] is True
    period = live_config["schema_config"]["configs"][-1]
    assert (period["store"], period["schema"]) == ("tsdb", "v13")
    # Loki 3.7.6's GET /config does not print auth_enabled at all; that auth is off shows in
    # what Loki does: a tenant-scoped call without X-Scope-OrgID is answered (401 otherwise)
    assert live_config.get("auth_enabled", False) is False
    resp = loki_http.request("GET", f"{loki_url}/loki/api/v1/labels", retries=False)
    assert resp.status == 200, f"labels without a tenant answered {resp.status}: {resp.data!r}"


def test_check_finds_no_drift_against_the_live_config(
    live_config_text: str, policy: RetentionPolicy
) -> None:
    rows = check(policy, live_config_text)
    assert [(r.selector, r.policy, r.live) for r in rows if not r.ok] == []


def test_shipper_retention_check_passes_against_live_loki(
    loki_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOKI_URL", loki_url)  # read as every command reads it: no --url
    code = main(["retention", "check", "--file", str(RETENTION_PATH), "--format", "table"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "DRIFT" not in out
    assert '{level="CRITICAL"}' in out


def test_deletion_api_takes_lists_and_cancels_a_request(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str
) -> None:
    now = int(time.time())
    query = f'{{service_name="{unique_service}", level="DEBUG"}} |= "never stored"'
    params = urlencode({"query": query, "start": now - 3600, "end": now})
    resp = loki_http.request("POST", f"{loki_url}/loki/api/v1/delete?{params}")
    assert resp.status == 204, f"delete answered {resp.status}: {resp.data[:300]!r}"

    def ours() -> list[dict[str, Any]]:
        listed = loki_http.request("GET", f"{loki_url}/loki/api/v1/delete")
        assert listed.status == 200, listed.data[:300]
        return [r for r in json.loads(listed.data) if unique_service in r["query"]]

    requests = wait_for(ours)
    assert len(requests) == 1, requests
    assert requests[0]["status"] == "received"  # processed only after the 24h cancel period
    request_id = resp.headers.get("X-Delete-Request-Id") or requests[0]["request_id"]
    assert requests[0]["request_id"] == request_id

    cancel = loki_http.request(
        "DELETE", f"{loki_url}/loki/api/v1/delete?{urlencode({'request_id': request_id})}"
    )
    assert cancel.status == 204, f"cancel answered {cancel.status}: {cancel.data[:300]!r}"
    assert wait_for(lambda: not ours()), "the cancelled request is still listed"

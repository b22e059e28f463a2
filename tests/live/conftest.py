"""Integration tests talk to a real Loki 3.7 at ``LOKI_URL`` (started from loki/config.yaml).

Without ``LOKI_URL`` every test here is skipped, with that reason.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import urllib3

from tests.support.waiting import wait_until

_LOKI_URL = os.environ.get("LOKI_URL", "").rstrip("/")


_LOKI_BIN = os.environ.get("LOKI_BIN", "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/live/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
            if item.get_closest_marker("loki_bin"):
                # starts its own Loki processes from LOKI_BIN; needs no LOKI_URL
                if not _LOKI_BIN:
                    item.add_marker(pytest.mark.skip(
                        reason="LOKI_BIN is unset: point it to a Loki 3.7 binary, e.g. "
                        "LOKI_BIN=/usr/local/bin/loki, to start the scalable deployment"))
                continue
            if not _LOKI_URL:
                item.add_marker(
                    pytest.mark.skip(
                        reason="LOKI_URL is unset: start Loki (docker compose up -d loki) "
                        "and export LOKI_URL=http://localhost:3100"
                    )
                )


@pytest.fixture(scope="session")
def loki_url() -> str:
    return _LOKI_URL


@pytest.fixture(scope="session")
def loki_http() -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30))
    yield pool
    pool.clear()


@pytest.fixture(scope="session", autouse=True)
def _loki_ready(loki_url: str) -> None:
    """Wait (up to 60 s) for /ready: the ingester joins about 15 s after Loki starts."""
    if not loki_url:
        return
    pool = urllib3.PoolManager()
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = pool.request("GET", f"{loki_url}/ready", timeout=5, retries=False)
            if resp.status == 200:
                return
            last = f"{resp.status} {resp.data[:200]!r}"
        except urllib3.exceptions.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    pytest.fail(f"Loki at {loki_url} is not ready after 60 s: {last}")


@pytest.fixture()
def unique_service() -> str:
    """A service_name no other test run uses, so queries see only this test's events."""
    return f"it-{uuid.uuid4().hex[:12]}"


def push_raw(
    pool: urllib3.PoolManager,
    loki_url: str,
    streams: Sequence[Mapping[str, Any]],
) -> None:
    """Push a JSON PushRequest exactly as given; fail the test on anything but 204."""
    resp = pool.request(
        "POST",
        f"{loki_url}/loki/api/v1/push",
        body=json.dumps({"streams": list(streams)}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 204, f"push answered {resp.status}: {resp.data[:500]!r}"


def query_range(
    pool: urllib3.PoolManager,
    loki_url: str,
    query: str,
    start_ns: int,
    end_ns: int,
    limit: int = 5000,
    direction: str = "forward",
) -> dict[str, Any]:
    resp = pool.request(
        "GET",
        f"{loki_url}/loki/api/v1/query_range",
        fields={
            "query": query,
            "start": str(start_ns),
            "end": str(end_ns),
            "limit": str(limit),
            "direction": direction,
        },
    )
    assert resp.status == 200, f"query answered {resp.status}: {resp.data[:500]!r}"
    body: dict[str, Any] = json.loads(resp.data)
    return body


def query_lines(pool: urllib3.PoolManager, loki_url: str, query: str, start_ns: int,
                expect: int) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(labels with structured metadata, decoded JSON line) of every entry a log query finds
    from ``start_ns`` on, once there are at least ``expect`` of them; fails after 30 s."""

    def fetch() -> list[tuple[dict[str, str], dict[str, Any]]] | None:
        body = query_range(pool, loki_url, query, start_ns, time.time_ns() + 60 * 10**9)
        found = [(stream["stream"], json.loads(line))
                 for stream in body["data"]["result"] for _, line in stream["values"]]
        return found if len(found) >= expect else None

    found = wait_for(fetch, timeout=30)
    assert found, f"Loki did not return {expect} entries for {query}"
    return list(found)


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.5) -> Any:
    """Poll ``predicate()`` until it returns something truthy (Loki makes pushes queryable
    within a second or two); return that value or fail after ``timeout``."""
    return wait_until(predicate, timeout, interval)

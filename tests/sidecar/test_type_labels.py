"""The ``type`` label of what the sidecar receives, through a real HTTP source, the real
pipeline and a fake Loki: one service's made-up types never fold another's, and no client can
write the deletion audit types, whatever format or field carries them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.sidecar.config import HttpSourceConfig
from shipper.sidecar.formats import LineParser
from shipper.sidecar.sources.http import HttpSource
from tests.support.fakeloki import FakeLoki, Stored

NS = 1_000_000_000


class Wired:
    """An HTTP source on 127.0.0.1 feeding a real pipeline that pushes to a fake Loki."""

    def __init__(self, fake: FakeLoki, tmp_path: Path) -> None:
        self.fake = fake
        self.pipeline = Pipeline(ShipperConfig(url=fake.url, service="sidecar", spool=False,
                                               batch_max_wait=0.02))
        self.source = HttpSource(HttpSourceConfig(listen="127.0.0.1:0"),
                                 pipeline=self.pipeline, service="default", env=None)
        self.source.start()
        self.http = urllib3.PoolManager(retries=False)

    def post(self, path: str, body: object) -> urllib3.BaseHTTPResponse:
        return self.http.request("POST", f"{self.source.server.url}{path}",
                                 body=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})

    def delivered(self, count: int) -> list[Stored]:
        assert self.pipeline.flush(10)
        assert self.fake.wait_for_count(count, timeout=10) == count
        return sorted(self.fake.stored(), key=lambda s: s.ts)

    def close(self) -> None:
        self.source.close()
        self.pipeline.close(5)


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[Wired]:
    with FakeLoki(rate_limit=False) as fake:
        running = Wired(fake, tmp_path)
        yield running
        running.close()


def _push(service: str, type_: str, ts: int, line: str = "m") -> dict[str, object]:
    return {"streams": [{"stream": {"service_name": service, "type": type_},
                         "values": [[str(ts), line]]}]}


def _labels(stored: Stored) -> dict[str, str]:
    return dict(stored.labels)


def test_one_services_made_up_types_never_fold_another_services_auth_failed(
        wired: Wired) -> None:
    """The observation: after 150 made-up types from one service on /loki/api/v1/push,
    another service's AUTH_FAILED was stored as OTHER."""
    now = time.time_ns() - 60 * NS
    for i in range(150):
        assert wired.post("/loki/api/v1/push", _push("noisy", f"MADE_UP_{i}", now + i)).status \
            == 204
    assert wired.post("/loki/api/v1/push", _push("shop", "AUTH_FAILED", now + 1000)).status \
        == 204
    assert wired.post("/loki/api/v1/push", _push("shop", "CART_UPDATED", now + 1001)).status \
        == 204
    stored = wired.delivered(152)
    shop = [_labels(s)["type"] for s in stored if _labels(s)["service_name"] == "shop"]
    assert shop == ["AUTH_FAILED", "CART_UPDATED"]
    noisy = [_labels(s)["type"] for s in stored if _labels(s)["service_name"] == "noisy"]
    assert noisy.count("OTHER") == 50  # the noisy service is still capped at type_limit


def test_protected_types_survive_a_services_own_flood(wired: Wired) -> None:
    now = time.time_ns() - 60 * NS
    for i in range(120):
        wired.post("/loki/api/v1/push", _push("shop", f"JUNK_{i}", now + i))
    for i, type_ in enumerate(("AUTH_FAILED", "SECURITY_ALERT", "HTTP_REQUEST",
                               "PAYMENT_FAILED", "WEBHOOK_STRIPE")):
        assert wired.post("/loki/api/v1/push", _push("shop", type_, now + 500 + i)).status \
            == 204
    stored = wired.delivered(125)
    assert [_labels(s)["type"] for s in stored[-5:]] == [
        "AUTH_FAILED", "SECURITY_ALERT", "HTTP_REQUEST", "PAYMENT_FAILED", "WEBHOOK_STRIPE"]


def test_no_sidecar_format_can_write_an_audit_type(wired: Wired) -> None:
    now = time.time_ns() - 60 * NS
    # /v1/events, the seed apps' shape
    assert wired.post("/v1/events", {"message": "a", "type": "LOGS_DELETED",
                                     "createdAt": now}).status == 202
    # Loki push: the stream label, and a field of a JSON line
    assert wired.post("/loki/api/v1/push", _push("shop", "logs_deleted", now + 1)).status == 204
    assert wired.post("/loki/api/v1/push", {"streams": [{
        "stream": {"service_name": "shop"},
        "values": [[str(now + 2), json.dumps({"message": "b", "type": "Logs-Deleted"})]],
    }]}).status == 204
    # OTLP: event.name and a type attribute
    for i, (key, value) in enumerate((("event.name", "logs.deleted"),
                                      ("type", "LOGS_DELETE_CANCELLED"))):
        assert wired.post("/v1/logs", {"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name",
                                         "value": {"stringValue": "shop"}}]},
            "scopeLogs": [{"logRecords": [{
                "timeUnixNano": str(now + 3 + i), "body": {"stringValue": f"otlp {i}"},
                "attributes": [{"key": key, "value": {"stringValue": value}}]}]}],
        }]}).status == 200
    stored = wired.delivered(5)
    assert [_labels(s)["type"] for s in stored] == [
        "APP_LOGS_DELETED", "APP_LOGS_DELETED", "APP_LOGS_DELETED", "APP_LOGS_DELETED",
        "APP_LOGS_DELETE_CANCELLED"]
    assert [json.loads(s.line)["metadata"]["type"] for s in stored] == [
        "LOGS_DELETED"] * 4 + ["LOGS_DELETE_CANCELLED"]
    assert wired.pipeline.stats()["type_audit_renamed"] == 5


@pytest.mark.parametrize("line", [
    '{"message": "x", "type": "LOGS_DELETED"}',
    'level=info type=logs_deleted msg="x"',
    'level=info type="LOGS_DELETED\\u0000" msg="x"',
])
def test_a_file_line_cannot_write_an_audit_type(tmp_path: Path, line: str) -> None:
    parser = LineParser(format="auto", service="shop")
    with FakeLoki(rate_limit=False) as fake:
        pipeline = Pipeline(ShipperConfig(url=fake.url, service="shop", spool=False,
                                          batch_max_wait=0.02))
        try:
            pipeline.submit(parser.parse(line, None, time.time_ns()))
            assert pipeline.flush(10)
        finally:
            pipeline.close(5)
        [stored] = fake.stored()
    assert _labels(stored)["type"] == "APP_LOGS_DELETED"

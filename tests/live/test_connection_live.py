"""Against a real Loki 3.7: the handler's events reach it through a proxy (with extra headers
and a bearer-token file) and over mutual TLS, and a reader with the same connection reads them
back."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shipper import LokiHandler
from shipper.config import ShipperConfig
from shipper.loki.client import LokiClient
from tests.live.conftest import wait_for
from tests.support.httpproxy import HttpProxy
from tests.support.tlsloki import TlsFront, make_certs


def _ship_and_read(url: str, service: str, tmp_path: Path, **connection: Any) -> list[str]:
    start = time.time_ns() - 10**9
    handler = LokiHandler(url, service=service, spool_dir=str(tmp_path / "spool"),
                          batch_max_wait=0.1, **connection)
    log = logging.getLogger(f"it.{service}")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("shipped over the configured connection")
        assert handler.flush(timeout=20)
    finally:
        log.removeHandler(handler)
        handler.close()
    client = LokiClient(ShipperConfig(url=url, spool=False, **connection))

    def read() -> list[str] | None:
        data = client.query_range(f'{{service_name="{service}"}}', start,
                                  time.time_ns() + 60 * 10**9, direction="forward")
        lines = [json.loads(v[1])["message"] for s in data["result"] for v in s["values"]]
        return lines or None

    return list(wait_for(read, timeout=30) or [])


def test_events_reach_loki_through_a_proxy_with_headers_and_a_token_file(
        loki_url: str, unique_service: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-rotating-token\n")
    with HttpProxy() as proxy:
        lines = _ship_and_read(loki_url, unique_service, tmp_path, proxy_url=proxy.url,
                               headers={"X-Team": "payments"}, bearer_token_file=str(token))
        pushes = proxy.carried("/loki/api/v1/push")
        reads = proxy.carried("/loki/api/v1/query_range")
    assert lines == ["shipped over the configured connection"]
    assert pushes and all(p.status == 204 for p in pushes)
    assert reads and reads[-1].status == 200


def test_events_reach_loki_over_mutual_tls(loki_url: str, unique_service: str,
                                          tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    port = urlsplit(loki_url).port or 80
    with TlsFront(certs, port) as front:
        lines = _ship_and_read(front.url, unique_service, tmp_path, ca_bundle=str(certs.ca),
                               client_cert=str(certs.client_cert),
                               client_key=str(certs.client_key))
        assert set(front.peers) == {"shipper-client"}
    assert lines == ["shipped over the configured connection"]

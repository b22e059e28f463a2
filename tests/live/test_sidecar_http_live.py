"""``shipper sidecar``'s HTTP source against hostile clients, into a real Loki 3.7: what the
answers say was accepted is what Loki stores, and the server cannot be held."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import urllib3

from tests.live.conftest import query_range, wait_for
from tests.support.fakeloki import free_port
from tests.support.sidecar_process import SidecarProcess

DEEP = "[" * 5000 + '"bottom"' + "]" * 5000


def _stored(pool: urllib3.PoolManager, loki_url: str, service: str) -> list[dict[str, Any]]:
    """The lines Loki stores for the service, as JSON objects, oldest first."""
    now = time.time_ns()
    body = query_range(pool, loki_url, f'{{service_name="{service}"}}', now - 3600 * 10**9,
                       now + 60 * 10**9)
    values = sorted(v for s in body["data"]["result"] for v in s["values"])
    return [json.loads(v[1]) for v in values]


def _post(port: int, path: str, body: bytes, **headers: str) -> tuple[int, bytes]:
    pool = urllib3.PoolManager(retries=False)
    resp = pool.request("POST", f"http://127.0.0.1:{port}{path}", body=body,
                        headers={"Content-Type": "application/json", **headers})
    return resp.status, resp.data


def test_hostile_bodies_cost_only_themselves_in_a_real_loki(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager,
        unique_service: str) -> None:
    port = free_port()
    sidecar = SidecarProcess(tmp_path, [{"type": "http", "listen": f"127.0.0.1:{port}",
                                         "max_body_bytes": "100KiB"}],
                             loki_url=loki_url, service=unique_service).start()
    try:
        ns = time.time_ns() - 60 * 10**9
        deep_line = '{"message": "deep line", "a": ' + DEEP + "}"
        push = {"streams": [{"stream": {"service_name": unique_service, "job": "live"},
                             "values": [[str(ns), "push ok"], [str(ns + 1), deep_line],
                                        ["soon", "bad time"]]}]}
        status, answer = _post(port, "/loki/api/v1/push", json.dumps(push).encode())
        assert status == 400 and answer.endswith(b"2 entries accepted, 1 refused\n"), answer

        events = ('[{"message": "event ok"}, {"message": "event deep", "metadata": {"d": '
                  + DEEP + '}}, {"message": "bad", "level": "LOUD"}]')
        gzipped = gzip.compress(events[:40].encode()) + gzip.compress(events[40:].encode())
        status, answer = _post(port, "/v1/events", gzipped, **{"Content-Encoding": "gzip"})
        assert status == 400 and json.loads(answer)["accepted"] == 2, answer

        def record(message: str) -> dict[str, Any]:
            return {"timeUnixNano": str(ns + 5), "body": {"stringValue": message}}

        otlp = {"resourceLogs": [
            {"resource": "x", "scopeLogs": [{"logRecords": [record("lost")]}]},
            {"resource": {"attributes": [{"key": "service.name",
                                          "value": {"stringValue": unique_service}}]},
             "scopeLogs": [{"logRecords": [record("otlp ok")]}]}]}
        status, answer = _post(port, "/v1/logs", json.dumps(otlp).encode())
        assert status == 200, answer  # a partial success, as OTLP answers it
        assert json.loads(answer)["partialSuccess"]["errorMessage"].startswith(
            "1 log records accepted, 1 refused: resourceLogs[0].resource: expected an object")

        expected = {"push ok", deep_line, "event ok", "event deep", "otlp ok"}
        assert wait_for(lambda: {line["message"] for line in _stored(
            loki_http, loki_url, unique_service)} == expected, 60), \
            _stored(loki_http, loki_url, unique_service)
        lines = {line["message"]: line for line in _stored(loki_http, loki_url, unique_service)}
        assert "max_json_depth" in lines[deep_line]["metadata"]["parse_error"]
        value = lines["event deep"]["metadata"]["d"]
        while isinstance(value, list):
            value = value[0]
        assert value.endswith('"bottom"' + "]" * (5000 - 97))  # kept as the text sent
    finally:
        assert sidecar.finish(signal.SIGTERM) == 0, sidecar.stderr


def test_the_sidecar_cannot_be_held_by_tricklers_or_broken_lengths(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager,
        unique_service: str) -> None:
    port = free_port()
    sidecar = SidecarProcess(tmp_path, [{"type": "http", "listen": f"127.0.0.1:{port}",
                                         "request_timeout": "2s", "max_connections": 16}],
                             loki_url=loki_url, service=unique_service).start()
    held: list[socket.socket] = []
    try:
        smuggled = json.dumps([{"message": "smuggled"}]).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -2\r\n\r\n"
                         b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(smuggled), smuggled))
            reply = sock.makefile("rb").read()  # to the close
        assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1") == 1

        for _ in range(12):  # trickling bodies and half-sent headers
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n[")
            held.append(sock)
        status, answer = _post(port, "/v1/events", json.dumps({"message": "served"}).encode())
        assert status == 202, answer
        for sock in held:  # each is answered 408 at its deadline, and closed
            assert sock.makefile("rb").read().startswith(b"HTTP/1.1 408 ")

        assert wait_for(lambda: [line["message"] for line in _stored(
            loki_http, loki_url, unique_service)] == ["served"], 60)
    finally:
        for sock in held:
            sock.close()
        assert sidecar.finish(signal.SIGTERM) == 0, sidecar.stderr

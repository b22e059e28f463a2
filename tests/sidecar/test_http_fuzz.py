"""A fuzz test of each HTTP endpoint over a raw socket: bodies mixing valid and broken entries,
JSON nested past the bound, sizes past the limit, gzip in one or several members, chunked or
sized bodies, broken lengths, content types and encodings. Whatever is sent: never a 500, and
what the answer says was accepted is exactly what reached the pipeline, every valid entry of a
readable body included."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sidecar.test_http import Running

LIMIT = 64 * 1024
DEEP = "[" * 3000 + '"deep"' + "]" * 3000
#: an OTLP value nested as deep: arrays of arrays of ... of a string
DEEP_ANY = '{"arrayValue": {"values": [' * 1000 + '{"stringValue": "deep"}' + "]}}" * 1000
_DEEP_MARK = '"__deep__"'
_TS = 1_795_166_102_000_000_000


class Case:
    """A request and what it must do."""

    def __init__(self, path: str, body: bytes, valid: set[str]) -> None:
        self.path = path
        self.body = body
        self.valid = valid  # markers of the entries that must ship
        self.headers: list[str] = []
        self.readable = True  # the body is JSON and the endpoint reads it whole

    def __repr__(self) -> str:
        return (f"Case({self.path!r}, body={self.body[:300]!r}... ({len(self.body)} bytes), "
                f"valid={sorted(self.valid)}, headers={self.headers}, "
                f"readable={self.readable})")


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[Running]:
    running = Running(max_body_bytes=LIMIT, request_timeout=5.0, max_connections=16)
    yield running
    running.source.close()


def _dumps(doc: Any, deep: str = DEEP) -> bytes:
    return json.dumps(doc).replace(_DEEP_MARK, deep).encode()


_metadata = st.dictionaries(st.sampled_from(["a", "b", "user", "n"]),
                            st.one_of(st.integers(), st.text(max_size=8), st.just("__deep__"),
                                      st.lists(st.integers(), max_size=3)), max_size=3)


@st.composite
def _event(draw: st.DrawFn, marker: str) -> tuple[Any, bool]:
    if draw(st.booleans()):
        event: dict[str, Any] = {"message": marker}
        if draw(st.booleans()):
            event["level"] = draw(st.sampled_from(["info", "WARN", "fatal", 50, "ERROR"]))
        if draw(st.booleans()):
            event["metadata"] = draw(_metadata)
        if draw(st.booleans()):
            event["createdAt"] = draw(st.sampled_from(["2026-11-20T09:15:02Z", 1795166102]))
        if draw(st.booleans()):
            event["actor"] = draw(st.sampled_from(["USER", "admin"]))
        return event, True
    broken = draw(st.sampled_from([
        7, "text", [marker], None, {"level": "INFO"}, {"message": 5}, {"message": [marker]},
        {"message": marker, "level": "LOUD"}, {"message": marker, "actor": "ROBOT"},
        {"message": marker, "createdAt": "yesterday"}, {"message": marker, "metadata": [1]},
        {"message": marker, "type": {"a": 1}}, {"message": marker, "level": "__deep__"},
    ]))
    return broken, False


@st.composite
def _push_stream(draw: st.DrawFn, markers: Iterator[str]) -> tuple[Any, set[str]]:
    labels: Any = draw(st.sampled_from([{"app": "web"}, {"service_name": "api", "level": "warn"},
                                        {}, {"app": 1}, {"job": ["x"]}]))
    good_labels = all(isinstance(v, str) for v in labels.values())
    values: list[Any] = []
    valid: set[str] = set()
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        marker = next(markers)
        kind = draw(st.sampled_from(["text", "json", "deep", "meta", "bad_ts", "bad_meta",
                                     "not_list", "big_ts"]))
        line = {"text": f"{marker} plain", "json": json.dumps({"message": marker, "n": 1}),
                "deep": '{"message": "' + marker + '", "x": __DEEP__}',
                "meta": marker}.get(kind, marker)
        value: Any = [str(_TS), line]
        if kind == "meta":
            value.append({"trace_id": "t-1"})
        elif kind == "bad_ts":
            value[0] = "soon"
        elif kind == "big_ts":
            value[0] = "9" * 25
        elif kind == "bad_meta":
            value.append({"trace_id": 5})
        elif kind == "not_list":
            value = {"ts": str(_TS), "line": marker}
        # a time past what Loki stores ships at its receipt time (with original_time)
        if kind in ("text", "json", "deep", "meta", "big_ts") and good_labels:
            valid.add(marker)
        values.append(value)
    return {"stream": labels, "values": values}, valid


def _otlp_record(marker: str, kind: str) -> Any:
    record: dict[str, Any] = {"timeUnixNano": str(_TS), "body": {"stringValue": marker}}
    if kind == "kv":
        record["body"] = {"kvlistValue": {"values": [
            {"key": "message", "value": {"stringValue": marker}},
            {"key": "deep", "value": {"arrayValue": {"values": ["__deep__"]}}}]}}
    elif kind == "attrs":
        record["attributes"] = [{"key": "n", "value": {"intValue": "42"}},
                                {"key": "d", "value": {"doubleValue": "NaN"}}]
    elif kind == "bad_body":
        record["body"] = marker
    elif kind == "bad_ts":
        record["timeUnixNano"] = "later"
    elif kind == "bad_attr":
        record["attributes"] = [{"key": "n", "value": {"intValue": [1]}}]
    elif kind == "not_object":
        return [marker]
    return record


@st.composite
def _otlp_resource(draw: st.DrawFn, markers: Iterator[str]) -> tuple[Any, set[str]]:
    resource: Any = draw(st.sampled_from([
        None, {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "x", {"attributes": {"service.name": "svc"}}]))
    good_resource = resource is None or (isinstance(resource, dict) and isinstance(
        resource.get("attributes"), list))
    valid: set[str] = set()
    scope_logs: list[Any] = []
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        records = []
        shape = draw(st.sampled_from(["list", "list", "object"]))
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            marker = next(markers)
            kind = draw(st.sampled_from(["plain", "kv", "attrs", "bad_body", "bad_ts",
                                         "bad_attr", "not_object"]))
            records.append(_otlp_record(marker, kind))
            if kind in ("plain", "kv", "attrs") and good_resource and shape == "list":
                valid.add(marker)
        scope_logs.append({"scope": {"name": "s"},
                           "logRecords": records if shape == "list" else {"0": records}})
    item: dict[str, Any] = {"scopeLogs": scope_logs}
    if resource is not None:
        item["resource"] = resource
    return item, valid


def _markers() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"ok-{n:05d}"


@st.composite
def _cases(draw: st.DrawFn, path: str) -> Case:
    markers = _markers()
    if path == "/v1/events":
        drawn = [draw(_event(next(markers))) for _ in range(draw(st.integers(0, 6)))]
        doc: Any = [item for item, _ in drawn]
        valid = {item["message"] for item, ok in drawn if ok}
        if len(drawn) == 1 and draw(st.booleans()):
            doc = doc[0]  # one event, not in an array
    elif path == "/loki/api/v1/push":
        streams = [draw(_push_stream(markers)) for _ in range(draw(st.integers(0, 3)))]
        doc = {"streams": [s for s, _ in streams]}
        valid = set().union(*(v for _, v in streams))
    else:
        resources = [draw(_otlp_resource(markers)) for _ in range(draw(st.integers(0, 3)))]
        doc = {"resourceLogs": [r for r, _ in resources]}
        valid = set().union(*(v for _, v in resources))
    deep = DEEP_ANY if path == "/v1/logs" else DEEP
    case = Case(path, _dumps(doc, deep).replace(b"__DEEP__", DEEP.encode()), valid)
    if draw(st.integers(0, 9)) == 0:  # past the limit: 413, nothing shipped
        case.body = case.body + b" " * LIMIT
        case.readable = False
    damage = draw(st.sampled_from(["none"] * 6 + ["cut", "garbage", "not_utf8"]))
    if damage != "none" and case.body:
        case.body = {"cut": case.body[:-1], "garbage": case.body + b"}",
                     "not_utf8": case.body[:1] + b"\xff" + case.body[1:]}[damage]
        case.readable = False
    content_type = draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                                         "text/plain", None, "application/x-protobuf"]))
    if content_type is not None:
        case.headers.append(f"Content-Type: {content_type}")
    if content_type == "application/x-protobuf" and path != "/v1/events":
        case.readable = False  # a JSON body read as protobuf: refused whole
    encoding = draw(st.sampled_from(["none", "none", "gzip", "identity", "br"]))
    if encoding == "gzip":
        cuts = sorted(draw(st.lists(st.integers(0, len(case.body)), max_size=3)))
        pieces = [case.body[a:b] for a, b in zip([0, *cuts], [*cuts, len(case.body)],
                                                   strict=True)]
        case.body = b"".join(gzip.compress(piece, 1) for piece in pieces)
        case.headers.append("Content-Encoding: gzip")
    elif encoding != "none":
        case.headers.append(f"Content-Encoding: {encoding}")
        if encoding == "br":
            case.readable = False
    return case


def _frame(case: Case, framing: str) -> bytes:
    head = [f"POST {case.path} HTTP/1.1", "Host: sidecar", *case.headers]
    if framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(case.body[i:i + 777]), case.body[i:i + 777])
                          for i in range(0, len(case.body), 777))
        return ("\r\n".join(head) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    length = {"sized": str(len(case.body)), "negative": "-1", "garbage": "12abc"}[framing]
    head.append(f"Content-Length: {length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + case.body


def _exchange(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        with contextlib.suppress(OSError):  # a refusal may close before taking it all
            sock.sendall(request)
        reply = sock.makefile("rb")
        try:
            status_line = reply.readline()
            headers = {}
            while (line := reply.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = reply.read(int(headers.get("content-length", "0")))
        except ConnectionResetError:
            return 0, b""  # refused with the body unread: the answer was lost to the reset
    return int(status_line.split()[1]), body


def _accepted(path: str, status: int, body: bytes, sent: int) -> int:
    """How many entries the answer says were accepted."""
    if status in (200, 202, 204):
        if path == "/v1/events":
            return int(json.loads(body)["accepted"])
        return sent
    if status != 400:  # pragma: no cover - only 2xx and 400 carry entries
        return 0
    if path == "/v1/events":
        return int(json.loads(body).get("accepted", 0))
    text = body.decode() if path == "/loki/api/v1/push" else json.loads(body)["message"]
    found = re.search(r"(\d+) (?:entries|log records) accepted", text)
    return int(found.group(1)) if found else 0


def _check(server: Running, case: Case, framing: str) -> None:
    server.pipeline.events.clear()
    status, body = _exchange(server.source.server.port, _frame(case, framing))
    shipped = [e.message for e in server.pipeline.events]
    assert status != 500, body
    if framing in ("negative", "garbage"):  # refused before the body is read
        assert status in (0, 400) and shipped == [], (status, body)
        return
    if not case.readable:  # not JSON, not UTF-8, over the limit, an unknown encoding
        assert status in (0, 400, 413, 415) and shipped == [], (status, body, shipped)
        return
    assert status in (200, 202, 204, 400), (status, body)
    accepted = _accepted(case.path, status, body, len(case.valid))
    assert len(shipped) == accepted, (status, body, shipped)  # the answer tells the truth
    found = {m for m in case.valid if any(m in message for message in shipped)}
    assert found == case.valid, (status, body)  # no valid entry lost
    assert len(shipped) == len(case.valid)  # and nothing else shipped


_FRAMING = st.sampled_from(["sized", "sized", "chunked", "negative", "garbage"])
_SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(case=_cases("/v1/events"), framing=_FRAMING)
def test_fuzz_v1_events(fuzz_server: Running, case: Case, framing: str) -> None:
    _check(fuzz_server, case, framing)


@_SETTINGS
@given(case=_cases("/loki/api/v1/push"), framing=_FRAMING)
def test_fuzz_loki_push(fuzz_server: Running, case: Case, framing: str) -> None:
    _check(fuzz_server, case, framing)


@_SETTINGS
@given(case=_cases("/v1/logs"), framing=_FRAMING)
def test_fuzz_otlp_logs(fuzz_server: Running, case: Case, framing: str) -> None:
    _check(fuzz_server, case, framing)

"""The HTTP source against hostile and careless clients, over raw sockets where a client library
would hide the attack: body framing, deadlines, the connection cap, gzip members, JSON depth,
wrong OTLP types, and answers that stay small. A bad entry costs only itself."""

from __future__ import annotations

import contextlib
import gzip
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sidecar.test_http import TOKEN, Running

EVENT = json.dumps([{"message": "smuggled"}]).encode()
SMUGGLED = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(EVENT)
            + EVENT)


class Raw:
    """One client connection, spoken byte by byte."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next answer (status, headers, body), or None when the server closed."""
        try:
            line = self.file.readline()
        except ConnectionResetError:
            return None
        if not line:
            return None
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (header := self.file.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = header.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", "0")))
        return status, headers, body

    def closed(self) -> bool:
        """Whether the server ended the connection (waits for it, up to the timeout)."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: sidecar", f"Content-Length: {len(body)}",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def small() -> Iterator[Running]:
    running = Running(max_body_bytes=10_000, request_timeout=1.0, max_connections=8)
    yield running
    running.source.close()


def _port(running: Running) -> int:
    return running.source.server.port


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("length", ["-1", "-2", "1_0", "+5", " 5 5", "0x10", "\uff11\uff12"])
def test_a_content_length_that_is_not_a_number_is_400_and_the_body_is_never_a_request(
        small: Running, length: str) -> None:
    client = Raw(_port(small))
    client.send(f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
                .encode() + SMUGGLED)
    answer = client.response()
    assert answer is not None and answer[0] == 400, answer
    assert b"Content-Length" in answer[2] and answer[1]["connection"] == "close"
    assert client.closed()
    assert small.pipeline.events == []


def test_a_negative_content_length_does_not_switch_the_body_limit_off(small: Running) -> None:
    big = json.dumps([{"message": "x" * 100}] * 200).encode()  # 20 KB > 10,000 bytes
    client = Raw(_port(small))
    try:
        client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + big)
        client.sock.shutdown(socket.SHUT_WR)  # the end of the body, for a server that waits
    except OSError:  # the server answered and closed first
        pass
    answer = client.response()
    # a 400, or a reset: the server closed with the unread body still on its socket
    assert answer is None or answer[0] == 400
    assert small.pipeline.events == []


def test_two_content_lengths_that_differ_are_400_and_close(small: Running) -> None:
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Content-Length: 40\r\n\r\n[]" + SMUGGLED)
    answer = client.response()
    assert answer is not None and answer[0] == 400 and b"more than one" in answer[2]
    assert client.closed()
    assert small.pipeline.events == []


@pytest.mark.parametrize("size", [b"-1", b"zz", b"1g", b"", b"0x5", b"1" * 20])
def test_a_chunk_size_that_is_not_hex_is_400_and_the_rest_is_never_a_request(
        small: Running, size: bytes) -> None:
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + size + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n")
    answer = client.response()
    assert answer is not None and answer[0] == 400, answer
    assert b"chunk" in answer[2]
    assert client.closed()
    assert small.pipeline.events == []


def test_a_chunk_not_followed_by_crlf_is_400(small: Running) -> None:
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\n[]XY0\r\n\r\n")
    answer = client.response()
    assert answer is not None and answer[0] == 400 and client.closed()


def test_transfer_encoding_with_content_length_is_refused_and_closed(small: Running) -> None:
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED)
    answer = client.response()
    assert answer is not None and answer[0] == 400 and client.closed()
    assert small.pipeline.events == []


def test_a_body_cut_short_is_400_and_nothing_is_shipped(small: Running) -> None:
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                b'[{"message": "half"}]')
    client.sock.shutdown(socket.SHUT_WR)
    answer = client.response()
    assert answer is not None and answer[0] == 400 and b"ended after 21 of" in answer[2]
    assert small.pipeline.events == []


def test_a_good_request_keeps_its_connection_for_the_next_one(small: Running) -> None:
    client = Raw(_port(small))
    body = json.dumps({"message": "one"}).encode()
    client.send(post("/v1/events", body) + post("/v1/events", b"[{]"))
    first, second = client.response(), client.response()
    assert first is not None and first[0] == 202
    assert second is not None and second[0] == 400  # bad JSON, but the body was read whole
    client.send(post("/v1/events", body))
    third = client.response()
    assert third is not None and third[0] == 202
    assert [e.message for e in small.pipeline.events] == ["one", "one"]


# --------------------------------------------------------------------------- deadlines and the cap


def test_a_body_trickled_a_byte_at_a_time_is_cut_at_the_request_deadline(
        small: Running) -> None:
    """One byte every 0.2 s: each read is short, but the request as a whole is not."""
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
    body = b'[{"message": "' + b"x" * 40 + b'"}]  '
    sent = 0
    for byte in body[:50]:
        answered, _, _ = select.select([client.sock], [], [], 0.2)
        if answered:
            break
        try:
            client.send(bytes([byte]))
        except OSError:  # the server closed while we were still trickling
            break
        sent += 1
    answer = client.response()
    assert sent < 50, "the server waited for every trickled byte"
    assert answer is not None and answer[0] == 408, answer
    assert b"request_timeout" in answer[2]
    assert client.closed()
    assert small.source.server.timed_out == 1
    assert small.pipeline.events == []


def test_half_sent_headers_are_closed_at_the_request_deadline(small: Running) -> None:
    client = Raw(_port(small))
    client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
    assert client.closed()  # within request_timeout (1 s), long before the 10 s wait ends


def test_open_connections_are_capped_and_the_excess_is_refused_at_once(
        small: Running) -> None:
    threads_before = threading.active_count()
    held = [Raw(_port(small)) for _ in range(8)]
    for client in held:
        client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # half-sent headers
    time.sleep(0.2)
    extra = [Raw(_port(small), timeout=0.9) for _ in range(40)]
    answers = [client.response() for client in extra]
    assert all(a is None or a[0] == 503 for a in answers), answers
    assert sum(a is not None for a in answers) >= 1  # the refusal is spoken, not only a close
    assert threading.active_count() <= threads_before + 8
    assert small.source.server.refused == 40
    for client in held + extra:
        client.close()


def test_once_the_deadline_frees_a_held_connection_a_new_client_is_served(
        small: Running) -> None:
    held = [Raw(_port(small)) for _ in range(8)]
    for client in held:
        client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n[")
    time.sleep(0.2)
    body = json.dumps({"message": "patient"}).encode()
    status = None
    for _ in range(40):  # at most 40 tries, 0.1 s apart: bounded
        client = Raw(_port(small))
        client.send(post("/v1/events", body))
        answer = client.response()
        client.close()
        status = answer[0] if answer else None
        if status == 202:
            break
        time.sleep(0.1)
    assert status == 202
    for client in held:  # each was answered 408 at its deadline, and closed
        answer = client.response()
        assert answer is not None and answer[0] == 408 and client.closed()
        client.close()
    assert [e.message for e in small.pipeline.events] == ["patient"]


def test_sixty_four_trickling_clients_do_not_keep_a_normal_one_waiting() -> None:
    running = Running(request_timeout=30.0)
    stop = threading.Event()
    try:
        port = _port(running)
        tricklers = [Raw(port) for _ in range(64)]
        for client in tricklers:
            client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[")

        def trickle() -> None:
            while not stop.wait(0.5):
                for client in tricklers:
                    with contextlib.suppress(OSError):
                        client.send(b" ")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        time.sleep(0.3)
        client = Raw(port)
        client.send(post("/v1/events", json.dumps({"message": "served"}).encode()))
        answer = client.response()
        assert answer is not None and answer[0] == 202, answer
        assert [e.message for e in running.pipeline.events] == ["served"]
    finally:
        stop.set()
        running.source.close()


# --------------------------------------------------------------------------- gzip


def test_every_gzip_member_is_read(small: Running) -> None:
    body = gzip.compress(b'[{"message": "one"},') + gzip.compress(b'{"message": "two"}]')
    resp = small.post("/v1/events", body, {"Content-Encoding": "gzip"})
    assert resp.status == 202 and resp.json() == {"accepted": 2}
    assert [e.message for e in small.pipeline.events] == ["one", "two"]


def test_the_body_limit_applies_to_the_sum_of_the_gzip_members(small: Running) -> None:
    member = gzip.compress(b" " * 6_000)  # each under the 10,000-byte limit, two over it
    resp = small.post("/v1/events", gzip.compress(b"[") + member + member +
                      gzip.compress(b"]"), {"Content-Encoding": "gzip"})
    assert resp.status == 413
    bomb = b"".join(gzip.compress(b" " * 9_000) for _ in range(100))
    assert small.post("/v1/events", bomb, {"Content-Encoding": "gzip"}).status == 413


@pytest.mark.parametrize(("body", "said"), [
    (gzip.compress(b'[{"message": "cut"}]')[:-10], b"cut short"),
    (gzip.compress(b"[]") + b"trailing garbage", b"bad gzip body"),
    (b"not gzip at all", b"bad gzip body"),
])
def test_a_damaged_gzip_body_is_400_saying_so(small: Running, body: bytes, said: bytes) -> None:
    resp = small.post("/v1/events", body, {"Content-Encoding": "gzip"})
    assert resp.status == 400 and said in resp.data
    assert small.pipeline.events == []


def test_zeros_after_the_last_gzip_member_are_padding(small: Running) -> None:
    body = gzip.compress(b'{"message": "padded"}') + b"\0" * 512
    assert small.post("/v1/events", body, {"Content-Encoding": "gzip"}).status == 202


# --------------------------------------------------------------------------- JSON depth

DEEP = "[" * 5000 + "]" * 5000


def test_deep_json_on_v1_events_is_kept_as_text_and_its_neighbours_shipped(
        server: Running) -> None:
    body = ('[{"message": "before"}, {"message": "deep", "metadata": {"a": ' + DEEP +
            '}}, {"message": "after"}]')
    resp = server.post("/v1/events", body)
    assert resp.status == 202 and resp.json() == {"accepted": 3}
    before, deep, after = server.pipeline.events
    assert (before.message, deep.message, after.message) == ("before", "deep", "after")
    value = deep.metadata["a"]
    depth = 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert depth == 100 - 3  # the body, the event and its metadata are levels 1 to 3
    assert value == "[" * (5000 - depth) + "]" * (5000 - depth)


def test_a_deep_line_pushed_to_loki_push_is_shipped_as_the_text_sent(server: Running) -> None:
    line = '{"message": "deep", "a": ' + DEEP + "}"
    body = {"streams": [{"stream": {"app": "web"}, "values": [
        ["1795166102000000000", "ok"], ["1795166102000000001", line],
        ["1795166102000000002", '{"message": "json ok"}']]}]}
    resp = server.post("/loki/api/v1/push", body)
    assert resp.status == 204, resp.data
    ok, deep, fine = server.pipeline.events
    assert (ok.message, deep.message, fine.message) == ("ok", line, "json ok")
    assert "nested deeper than max_json_depth (100)" in deep.metadata["parse_error"]


def test_a_deep_otlp_body_is_kept_as_text_and_the_other_records_shipped(
        server: Running) -> None:
    deep = '{"arrayValue": {"values": [' * 2000 + '{"stringValue": "bottom"}' + "]}}" * 2000
    body = ('{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": '
            '"plain"}}, {"body": ' + deep + ', "attributes": [{"key": "k", "value": '
            '{"stringValue": "v"}}]}]}]}]}')
    resp = server.post("/v1/logs", body)
    assert resp.status == 200, resp.data
    plain, nested = server.pipeline.events
    assert plain.message == "plain" and nested.metadata["k"] == "v"
    inner = json.loads(nested.message)  # the arrays read, down to the bound
    levels = 0
    while isinstance(inner, list):
        inner, levels = inner[0], levels + 1
    assert levels == 31  # the record's body is level 8; each array value takes 3 levels
    assert inner.startswith('{"arrayValue": {"values": [{"arrayValue"')
    assert inner.endswith('{"stringValue": "bottom"}' + "]}}" * (2000 - 31))


# --------------------------------------------------------------------------- OTLP types


def _record(message: str) -> dict[str, Any]:
    return {"timeUnixNano": "1795166102000000000", "body": {"stringValue": message}}


def _good(message: str) -> dict[str, Any]:
    return {"scopeLogs": [{"logRecords": [_record(message)]}]}


@pytest.mark.parametrize(("bad", "named"), [
    ({"resource": "x", "scopeLogs": [{"logRecords": [_record("lost")]}]},
     "resourceLogs[1].resource: expected an object, got a string"),
    ({"scopeLogs": {"logRecords": [_record("lost")]}},
     "resourceLogs[1].scopeLogs: expected an array, got an object"),
    ({"scopeLogs": [{"logRecords": {"0": _record("lost")}}]},
     "resourceLogs[1].scopeLogs[0].logRecords: expected an array, got an object"),
    ({"scopeLogs": [{"scope": [], "logRecords": [_record("lost")]}]},
     "resourceLogs[1].scopeLogs[0].scope: expected an object, got an array"),
    ({"resource": {"attributes": {"service.name": "x"}},
      "scopeLogs": [{"logRecords": [_record("lost")]}]},
     "resourceLogs[1].resource.attributes: expected an array, got an object"),
    ({"scopeLogs": [{"logRecords": [{"body": "text"}]}]},
     "resourceLogs[1].scopeLogs[0].logRecords[0].body: expected an AnyValue object"),
    ({"scopeLogs": [{"logRecords": [{"body": {"intValue": [1]}}]}]},
     "logRecords[0].body.intValue: expected an integer"),
    ({"scopeLogs": [{"logRecords": [{"attributes": [{"key": 1}]}]}]},
     "logRecords[0].attributes[0].key: expected a string, got a number"),
    ({"scopeLogs": [{"logRecords": [{"severityNumber": "high"}]}]},
     "logRecords[0].severityNumber: expected a severity number"),
    ({"scopeLogs": [{"logRecords": [{"timeUnixNano": "-5"}]}]},
     "logRecords[0].timeUnixNano: '-5' is not nanoseconds"),
    ("x", "resourceLogs[1]: expected an object, got a string"),
])
def test_wrong_otlp_types_are_a_partial_success_naming_the_field_and_the_good_records_ship(
        server: Running, bad: Any, named: str) -> None:
    resp = server.post("/v1/logs", {"resourceLogs": [_good("first"), bad, _good("last")]})
    assert resp.status == 200, resp.data
    answer = resp.json()["partialSuccess"]
    # the records refused, as far as the shape of what was refused shows them
    shown = isinstance(bad, dict) and isinstance(bad["scopeLogs"], list) and all(
        isinstance(scope["logRecords"], list) for scope in bad["scopeLogs"])
    assert answer["rejectedLogRecords"] == ("1" if shown else "0")
    assert answer["errorMessage"].startswith(f"2 log records accepted, "
                                             f"{answer['rejectedLogRecords']} refused: ")
    assert named in answer["errorMessage"]
    assert [e.message for e in server.pipeline.events] == ["first", "last"]


def test_otlp_severity_by_enum_name_and_event_name_are_read(server: Running) -> None:
    record = {**_record("named"), "severityNumber": "SEVERITY_NUMBER_ERROR2",
              "eventName": "order.failed"}
    resp = server.post("/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})
    assert resp.status == 200
    (event,) = server.pipeline.events
    assert event.level.name == "ERROR" and event.type == "ORDER_FAILED"


# --------------------------------------------------------------------------- bad entries


def test_answers_name_at_most_twenty_reasons_and_count_the_rest(server: Running) -> None:
    body = [{"message": "good"}] + [{"message": "x", "level": "L" * 2000}] * 1000
    resp = server.post("/v1/events", body)
    assert resp.status == 400
    answer = resp.json()
    assert answer["accepted"] == 1 and answer["rejected_count"] == 1000
    assert len(answer["rejected"]) == 20 and len(resp.data) < 10_000
    streams = {"streams": [{"stream": {"app": "a"}, "values": [["1", "ok"]] +
                            [["soon" * 500, "bad"]] * 500}]}
    resp = server.post("/loki/api/v1/push", streams)
    assert resp.status == 400 and len(resp.data) < 10_000
    assert resp.data.endswith(b"and 480 more\n1 entries accepted, 500 refused\n")


@pytest.mark.parametrize("stream", [{"app": 1}, {"app": ["a"]}, {"app": {"x": "y"}}])
def test_a_loki_stream_with_labels_that_are_not_strings_costs_only_itself(
        server: Running, stream: dict[str, Any]) -> None:
    body = {"streams": [{"stream": stream, "values": [["1795166102000000000", "lost"]]},
                        {"stream": {"app": "ok"}, "values": [["1795166102000000000", "kept"]]}]}
    resp = server.post("/loki/api/v1/push", body)
    assert resp.status == 400 and b"streams[0].stream.app: expected a string" in resp.data
    assert [e.message for e in server.pipeline.events] == ["kept"]


@pytest.mark.parametrize("ts", ["1e18", "-1", "soon", "1" * 31])
def test_a_pushed_time_that_is_not_nanoseconds_costs_only_its_entry(
        server: Running, ts: str) -> None:
    body = {"streams": [{"stream": {"app": "a"}, "values": [
        [ts, "lost"], ["1795166102000000000", "kept"]]}]}
    resp = server.post("/loki/api/v1/push", body)
    assert resp.status == 400 and b"is not nanoseconds since the epoch" in resp.data
    assert [e.message for e in server.pipeline.events] == ["kept"]


@pytest.mark.parametrize("ts", ["9223372036854775808", "99999999999999999999"])
def test_a_pushed_time_past_int64_nanoseconds_is_shipped_with_its_neighbour(
        server: Running, ts: str) -> None:
    """Past what Loki stores, the time is no reason to refuse the entry: the event contract
    ships it at its receipt time with ``original_time`` (tests/test_event_times.py)."""
    body = {"streams": [{"stream": {"app": "a"}, "values": [
        [ts, "late"], ["1795166102000000000", "kept"]]}]}
    assert server.post("/loki/api/v1/push", body).status == 204
    assert sorted(e.message for e in server.pipeline.events) == ["kept", "late"]


def test_a_protobuf_stream_with_bad_labels_costs_only_itself(server: Running) -> None:
    from shipper.delivery.push import encode_protobuf
    from shipper.event import Entry

    body = encode_protobuf([Entry((("app", "ok"),), 1_795_166_102_000_000_000, "kept")])
    # a second stream whose labels are not a label set: '{app=unquoted}'
    import cramjam

    raw = bytes(cramjam.snappy.decompress_raw(body))
    labels = b"{app=unquoted}"
    entry = b"\x12\x04lost"
    stream = b"\x0a" + bytes([len(labels)]) + labels + b"\x12" + bytes([len(entry)]) + entry
    raw += b"\x0a" + bytes([len(stream)]) + stream
    resp = server.post("/loki/api/v1/push", bytes(cramjam.snappy.compress_raw(raw)),
                       {"Content-Type": "application/x-protobuf"})
    assert resp.status == 400 and b"streams[1].labels" in resp.data
    assert [e.message for e in server.pipeline.events] == ["kept"]


# --------------------------------------------------------------------------- what held


def test_what_held_still_holds(server: Running) -> None:
    nul = server.post("/v1/events", {"message": "nul \u0000 byte"})
    assert nul.status == 202
    not_utf8 = server.post("/v1/events", b'[{"message": "\xff\xfe"}]')
    assert not_utf8.status == 400 and b"not JSON" in not_utf8.data
    snappy = server.post("/loki/api/v1/push", b"\xff" * 64,
                         {"Content-Type": "application/x-protobuf"})
    assert snappy.status == 400 and snappy.data.startswith(b"loghttp.PushRequest: ")
    assert [e.message for e in server.pipeline.events] == ["nul \u0000 byte"]


def test_a_wrong_token_is_refused_before_the_body_is_read() -> None:
    running = Running(token=TOKEN, max_body_bytes=1000)
    try:
        client = Raw(_port(running))
        client.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                    b"Content-Length: 5000000\r\n\r\n")
        answer = client.response()
        assert answer is not None and answer[0] == 401 and client.closed()
    finally:
        running.source.close()


@pytest.fixture
def server() -> Iterator[Running]:
    running = Running()
    yield running
    running.source.close()

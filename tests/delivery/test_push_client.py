"""The Loki client: encodings, what each real Loki answer means, splitting, reads and admin."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from shipper.config import ShipperConfig
from shipper.delivery.push import (
    encode_json,
    encode_protobuf,
    group_streams,
    labels_string,
    refusal_reason,
    refused_entries,
    serving_target,
)
from shipper.event import Entry
from shipper.loki.client import LokiClient, LokiError
from tests.support import contract
from tests.support.fakeloki import FakeLoki, decode_protobuf


@pytest.fixture()
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server


def _entry(i: int = 0, *, line: str | None = None, ts: int | None = None,
           level: str = "INFO", md: bool = True) -> Entry:
    import time

    return Entry(
        labels=(("service_name", "contract"), ("level", level), ("actor", "USER"),
                ("type", "LOGIN")),
        timestamp_ns=ts if ts is not None else time.time_ns() - 1000 + i,
        line=line if line is not None else json.dumps({"message": f"user logged in {i}"}),
        metadata=(("actor_id", f"user_{i}"), ("trace_id", "abc")) if md else (),
    )


def _client(url: str, **kw: Any) -> LokiClient:
    return LokiClient(ShipperConfig(url=url, spool=False, **kw))


# ----------------------------------------------------------------------------- encoding


def test_json_body_has_the_contract_shape() -> None:
    e1, e2 = _entry(1), _entry(2, md=False)
    body = json.loads(encode_json([e1, e2]))
    assert body == {"streams": [{
        "stream": {"service_name": "contract", "level": "INFO", "actor": "USER", "type": "LOGIN"},
        "values": [[str(e1.timestamp_ns), e1.line, {"actor_id": "user_1", "trace_id": "abc"}],
                   [str(e2.timestamp_ns), e2.line]],
    }]}


def test_entries_are_grouped_by_stream_in_arrival_order() -> None:
    entries = [_entry(0), _entry(1, level="ERROR"), _entry(2)]
    streams = json.loads(encode_json(entries))["streams"]
    assert [s["stream"]["level"] for s in streams] == ["INFO", "ERROR"]
    assert [v[0] for v in streams[0]["values"]] == [str(entries[0].timestamp_ns),
                                                    str(entries[2].timestamp_ns)]


def test_grouping_is_the_same_whether_label_sets_are_shared_objects_or_equal_copies() -> None:
    # the worker shares one labels tuple per stream; a spool replay decodes a copy per entry;
    # both, interleaved, must give one stream per label set, entries in arrival order
    import random

    rng = random.Random(5)
    kinds = [(("service_name", "s"), ("level", level)) for level in ("INFO", "ERROR", "WARN")]
    entries = []
    for i in range(500):
        labels = rng.choice(kinds)
        if rng.random() < 0.3:
            labels = tuple(tuple(pair) for pair in json.loads(json.dumps(labels)))
        entries.append(Entry(labels, i, f"line {i}"))
    expected: dict[tuple[tuple[str, str], ...], list[Entry]] = {}
    for entry in entries:
        expected.setdefault(entry.labels, []).append(entry)
    assert list(group_streams(entries).items()) == list(expected.items())
    streams = json.loads(encode_json(entries))["streams"]
    assert [s["stream"] for s in streams] == [dict(k) for k in expected]
    assert [[v[1] for v in s["values"]] for s in streams] == [
        [e.line for e in bucket] for bucket in expected.values()]


def test_gzip_json_decompresses_to_the_same_body() -> None:
    entries = [_entry(i) for i in range(10)]
    assert gzip.decompress(encode_json(entries, gzip_level=1)) == encode_json(entries)


def _push_request_class() -> Any:
    """logproto.PushRequest built from a descriptor, decoded by Google's protobuf library."""
    fdp = descriptor_pb2.FileDescriptorProto(name="shipper_test_push.proto",
                                             package="shippertest", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    def msg(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = tname
    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    msg("Timestamp", ("seconds", 1, T.TYPE_INT64, opt, ""), ("nanos", 2, T.TYPE_INT32, opt, ""))
    msg("LabelPair", ("name", 1, T.TYPE_STRING, opt, ""), ("value", 2, T.TYPE_STRING, opt, ""))
    msg("Entry", ("timestamp", 1, T.TYPE_MESSAGE, opt, ".shippertest.Timestamp"),
        ("line", 2, T.TYPE_STRING, opt, ""),
        ("structuredMetadata", 3, T.TYPE_MESSAGE, rep, ".shippertest.LabelPair"))
    msg("Stream", ("labels", 1, T.TYPE_STRING, opt, ""),
        ("entries", 2, T.TYPE_MESSAGE, rep, ".shippertest.Entry"),
        ("hash", 3, T.TYPE_UINT64, opt, ""))
    msg("PushRequest", ("streams", 1, T.TYPE_MESSAGE, rep, ".shippertest.Stream"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shippertest.PushRequest"))


def test_protobuf_body_decodes_with_googles_protobuf_library() -> None:
    entries = [_entry(1, line='{"message":"é \\"quoted\\""}'), _entry(2, level="ERROR")]
    raw = bytes(cramjam.snappy.decompress_raw(encode_protobuf(entries)))
    request = _push_request_class().FromString(raw)
    assert [s.labels for s in request.streams] == [
        '{service_name="contract", level="INFO", actor="USER", type="LOGIN"}',
        '{service_name="contract", level="ERROR", actor="USER", type="LOGIN"}',
    ]
    first = request.streams[0].entries[0]
    assert first.timestamp.seconds * 10**9 + first.timestamp.nanos == entries[0].timestamp_ns
    assert first.line == entries[0].line
    assert {p.name: p.value for p in first.structuredMetadata} == {"actor_id": "user_1",
                                                                  "trace_id": "abc"}


def test_every_protobuf_entry_decodes_to_its_time_line_and_metadata() -> None:
    """Whole seconds, nanoseconds of every size, lines and metadata of one- and many-byte
    lengths, several streams: each entry comes back as it went in."""
    from shipper.event import LogEvent, to_entry

    entries = [to_entry(LogEvent.create(
        service="svc", level=("INFO", "ERROR")[i % 2], message="é" * (i * 37 % 400),
        timestamp_ns=(0, 1, 10**9, 1_795_315_536_000_000_000 + i * 7_919_111)[i % 4] + i,
        actor_id=None if i % 3 else f"user_{i}" * (i % 50), trace_id=f"t-{i}" if i % 5 else None,
        logger="app")) for i in range(200)]
    raw = bytes(cramjam.snappy.decompress_raw(encode_protobuf(entries)))
    request = _push_request_class().FromString(raw)
    decoded = {(s.labels, e.timestamp.seconds * 10**9 + e.timestamp.nanos, e.line,
                tuple((p.name, p.value) for p in e.structuredMetadata))
               for s in request.streams for e in s.entries}
    assert decoded == {(labels_string(e.labels), e.timestamp_ns, e.line, e.metadata)
                       for e in entries}


def test_protobuf_lengths_and_times_past_every_varint_width_decode() -> None:
    """Lines, metadata values and whole entries around 127/128 and 16,383/16,384 bytes (where
    the encoder's table of varints ends) and beyond, and times from 0 to far in the future:
    Google's decoder reads each entry back as it went in."""
    from shipper.event import Entry

    labels = (("service_name", "svc"), ("level", "INFO"))
    sizes = (0, 1, 127, 128, 16_370, 16_383, 16_384, 16_400, 70_000, 2_100_000)
    times = (0, 127, 10**9 + 128, 10**9 + 2**21, 10**9 + 2**28, 2**40, 2**62)
    entries = [Entry(labels, times[i % len(times)], "x" * size,
                     (("actor_id", "a" * sizes[(i + 3) % len(sizes)]), ("trace_id", "t")))
               for i, size in enumerate(sizes)]
    raw = bytes(cramjam.snappy.decompress_raw(encode_protobuf(entries)))
    request = _push_request_class().FromString(raw)
    decoded = [(e.timestamp.seconds * 10**9 + e.timestamp.nanos, e.line,
                tuple((p.name, p.value) for p in e.structuredMetadata))
               for s in request.streams for e in s.entries]
    assert decoded == [(e.timestamp_ns, e.line, e.metadata) for e in entries]


def test_protobuf_label_values_are_escaped() -> None:
    text = labels_string([("service_name", 'a"b\\c\nd')])
    assert text == '{service_name="a\\"b\\\\c\\nd"}'


# ----------------------------------------------------------------------------- answers


def test_fake_loki_answers_like_the_contract() -> None:
    """The fake's messages have exactly the shape of Loki 3.7.6's (numbers aside)."""
    import time

    def shape(text: str) -> str:
        return re.sub(r"\d[\d\-T:Z.]*", "N", text)

    with FakeLoki(rate_bytes=10, burst_bytes=100) as small, FakeLoki() as fake:
        client = _client(small.url)
        big = client.push_once([_entry(0, line="x" * 200)])
        assert shape(big.message + "\n") == shape(contract.load("push_429_rate_limited")["body"])
        client = _client(fake.url)
        old = client.push_once([_entry(0, ts=time.time_ns() - 30 * 86400 * 10**9)])
        assert shape(old.message + "\n") == shape(contract.load("push_400_too_old")["body"])
        long = client.push_once([_entry(0, line="x" * 300_000)])
        assert shape(long.message + "\n") == shape(
            contract.load("push_400_line_too_long")["body"])


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("push_ok", "ok", ""),
        ("push_400_too_old", "refused", "too_old"),
        ("push_400_too_far_in_future", "refused", "too_new"),
        ("push_400_line_too_long", "refused", "line_too_long"),
        ("push_400_too_many_labels", "refused", "too_many_labels"),
        ("push_400_invalid_label_name", "refused", "invalid_labels"),
        ("push_400_long_label_value", "refused", "label_value_too_long"),
        ("push_400_bad_json", "refused", "bad_request"),
        ("push_400_partial_batch", "refused", "too_old"),
        ("push_429_rate_limited", "retry", ""),
        ("push_oversize_request", "too_large", ""),
    ],
)
def test_each_real_loki_answer_is_classified(fake: FakeLoki, name: str, kind: str,
                                             reason: str) -> None:
    fake.script.answers.append(contract.answer(name))
    outcome = _client(fake.url).push_once([_entry(0), _entry(1)])
    assert outcome.kind == kind
    assert outcome.reason == reason
    if kind != "ok":
        assert outcome.message  # Loki's own text is kept for the report


def test_retry_after_seconds_and_http_date_are_honoured(fake: FakeLoki) -> None:
    status, body, _ = contract.answer("push_429_rate_limited")
    fake.script.answers += [(status, body, {"Retry-After": "7"}),
                            (503, "unavailable", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}),
                            (status, body, {})]
    client = _client(fake.url)
    assert client.push_once([_entry()]).retry_after == 7.0
    assert client.push_once([_entry()]).retry_after > 10**8  # far in the future
    assert client.push_once([_entry()]).retry_after is None


def test_connection_refused_is_retryable_not_raised() -> None:
    fake = FakeLoki()
    url = fake.url
    fake.stop()
    outcome = _client(url, timeout=2).push_once([_entry()])
    assert outcome.kind == "retry"
    assert "127.0.0.1" in outcome.message


def test_timeout_is_retryable(fake: FakeLoki) -> None:
    fake.delay = 1.0
    outcome = _client(fake.url, timeout=0.2).push_once([_entry()])
    assert outcome.kind == "retry"
    assert "timed out" in outcome.message


def test_oversize_request_is_split_until_loki_accepts(fake: FakeLoki) -> None:
    fake.rate_limit = False
    # 20 entries of 250 KB: 5 MB in one request, which Loki answers with a 500
    entries = [_entry(i, line="x" * 250_000) for i in range(20)]
    outcomes = _client(fake.url).push(entries)
    assert all(o.kind == "ok" for o in outcomes)
    assert sum(o.entries for o in outcomes) == 20
    assert fake.count() == 20
    assert max(len(r.body) for r in fake.requests) <= 4 * 1024 * 1024


def test_oversize_answer_from_loki_is_split(fake: FakeLoki) -> None:
    fake.script.answers.append(contract.answer("push_oversize_request"))
    outcomes = _client(fake.url).push([_entry(i) for i in range(4)])
    assert [o.kind for o in outcomes] == ["ok", "ok"]
    assert fake.count() == 4


def test_single_entry_too_large_is_refused_not_retried_forever(fake: FakeLoki) -> None:
    fake.script.answers += [contract.answer("push_oversize_request")]
    outcomes = _client(fake.url).push([_entry()])
    assert [(o.kind, o.reason) for o in outcomes] == [("refused", "too_large")]


def test_partial_batch_stores_the_good_entries(fake: FakeLoki) -> None:
    import time

    good = _entry(0)
    old = _entry(1, ts=time.time_ns() - 30 * 86400 * 10**9)
    outcome = _client(fake.url).push_once([good, old])
    assert outcome.kind == "refused" and outcome.reason == "too_old"
    assert [s.line for s in fake.stored()] == [good.line]


@pytest.mark.parametrize("encoding", ["json", "json+gzip", "protobuf"])
def test_every_encoding_is_stored_exactly(fake: FakeLoki, encoding: str) -> None:
    entries = [_entry(i, line=json.dumps({"message": f"é {i}"}, ensure_ascii=False))
               for i in range(50)]
    outcome = _client(fake.url, encoding=encoding).push_once(entries)
    assert outcome.kind == "ok"
    stored = sorted(fake.stored(), key=lambda s: s.ts)
    assert [(s.ts, s.line, dict(s.metadata)) for s in stored] == [
        (e.timestamp_ns, e.line, dict(e.metadata)) for e in entries]


def test_auth_tenant_and_content_headers(fake: FakeLoki) -> None:
    _client(fake.url, tenant="team-a", username="u", password="p").push_once([_entry()])
    _client(fake.url, bearer_token="tok", encoding="json+gzip").push_once([_entry()])
    basic, bearer = fake.requests
    assert basic.headers["x-scope-orgid"] == "team-a"
    assert basic.headers["authorization"] == "Basic dTpw"
    assert basic.headers["content-type"] == "application/json"
    assert bearer.headers["authorization"] == "Bearer tok"
    assert bearer.headers["content-encoding"] == "gzip"


def test_base_url_and_full_push_url_are_both_accepted() -> None:
    for url in ("http://loki:3100", "http://loki:3100/", "http://loki:3100/loki/api/v1/push"):
        client = _client(url)
        assert client.push_url == "http://loki:3100/loki/api/v1/push"
    assert _client("http://gw/loki-a/loki/api/v1/push").base_url == "http://gw/loki-a"


def test_protobuf_push_decodes_in_the_fake() -> None:
    entries = [_entry(i) for i in range(3)]
    streams = decode_protobuf(encode_protobuf(entries))
    assert [v[1] for v in streams[0]["values"]] == [e.line for e in entries]


@pytest.mark.parametrize("ts", [-1, -1_000_000_000, -999_999_999, -(2**63), 2**63 - 1])
def test_protobuf_writes_times_before_1970_as_json_does(ts: int) -> None:
    """The seconds of a protobuf timestamp are an int64: before 1970 they are negative."""
    entries = [Entry((("service_name", "s"),), ts, "line", ()),
               Entry((("service_name", "s"),), 1_795_315_536_000_000_000, "next", ())]
    decoded = decode_protobuf(encode_protobuf(entries))
    assert [int(v[0]) for v in decoded[0]["values"]] == [ts, 1_795_315_536_000_000_000]


def test_refusal_reason_falls_back_to_status() -> None:
    assert refusal_reason(403, "forbidden") == "http_403"


# ----------------------------------------------------------------------------- reads


def _route(fake: FakeLoki, route: str, name: str) -> None:
    status, body, headers = contract.answer(name)
    fake.routes[route] = (status, body, headers)


def test_query_range_returns_streams_with_structured_metadata(fake: FakeLoki) -> None:
    _route(fake, "GET /loki/api/v1/query_range", "query_range_streams")
    data = _client(fake.url).query_range('{service_name="contract"}', 1, 2)
    assert data["resultType"] == "streams"
    assert data["result"][0]["stream"]["actor_id"] == "user_1"


def test_labels_values_and_format_query(fake: FakeLoki) -> None:
    _route(fake, "GET /loki/api/v1/labels", "labels")
    _route(fake, "GET /loki/api/v1/label/type/values", "label_values_type")
    _route(fake, "GET /loki/api/v1/format_query", "format_query_error")
    client = _client(fake.url)
    assert client.labels() == ["actor", "level", "service_name", "type"]
    assert client.label_values("type") == ["BURST", "LOGIN"]
    with pytest.raises(LokiError, match="parse error at line 1, col 25"):
        client.format_query('{service_name="contract"')


def test_query_parse_error_raises_with_lokis_message(fake: FakeLoki) -> None:
    _route(fake, "GET /loki/api/v1/query", "query_400_parse_error")
    with pytest.raises(LokiError) as info:
        _client(fake.url).query("{bad")
    assert info.value.status == 400


def test_delete_create_list_and_bad_selector(fake: FakeLoki) -> None:
    _route(fake, "POST /loki/api/v1/delete?query=%7Bbad", "delete_400_bad_selector")
    _route(fake, "POST /loki/api/v1/delete", "delete_create")
    _route(fake, "GET /loki/api/v1/delete", "delete_list")
    client = _client(fake.url)
    assert client.delete('{service_name="contract", level="INFO"} |= "logged"',
                         1795311936, 1795315536) == "ecba278e"
    assert client.delete_requests()[0]["status"] == "received"
    with pytest.raises(LokiError, match="invalid query expression"):
        client.delete("{bad", 1)


def test_ready_is_false_when_loki_is_down() -> None:
    fake = FakeLoki()
    client = _client(fake.url, timeout=1)
    assert client.ready() is True
    fake.stop()
    assert client.ready() is False


# ------------------------------------------------------------------ which entries a 400 refused

_CONTRACT_STREAM = (("actor", "USER"), ("level", "INFO"), ("service_name", "contract"),
                    ("type", "LOGIN"))


def _contract_entry(ts: int, line: str = "x", labels: tuple[tuple[str, str], ...] =
                    _CONTRACT_STREAM) -> Entry:
    return Entry(labels=labels, timestamp_ns=ts, line=line)


def test_refused_entries_are_named_from_lokis_partial_batch_answer() -> None:
    data = contract.load("push_400_partial_batch")
    entries = [_contract_entry(int(v[0]), v[1]) for s in data["request"]["body"]
               for v in s["values"]]
    (refused,) = refused_entries(entries, data["body"])
    assert entries[refused.index].line == "too old in mixed batch"
    assert refused.certain and "timestamp too old" in refused.reason


def test_grouped_answers_name_every_refused_entry() -> None:
    old = [_contract_entry(1_791_859_536 * 10**9 + i, f"old {i}") for i in range(3)]
    good = [_contract_entry(1_795_315_536 * 10**9, "good")]
    long_line = _contract_entry(1_795_315_537 * 10**9, "y" * 300_000)
    other = (("actor", "USER"), ("level", "INFO"), ("service_name", "other"), ("type", "T"))
    labelled = [_contract_entry(1_795_315_538 * 10**9, "z", other)]
    message = (
        "3 errors like: entry for stream '{actor=\"USER\", level=\"INFO\", service_name="
        "\"contract\", type=\"LOGIN\"}' has timestamp too old: 2026-10-13T02:45:36Z, oldest "
        "acceptable timestamp is: 2026-11-15T02:45:36Z; 1 errors like: max entry size "
        "'262144' bytes exceeded for stream '{actor=\"USER\", level=\"INFO\", service_name="
        "\"contract\", type=\"LOGIN\"}' while adding an entry with length '300000' bytes; "
        "1 errors like: entry for stream '{actor=\"USER\", level=\"INFO\", service_name="
        "\"other\", type=\"T\"}' has 19 label names; limit 15\n")
    entries = old + good + [long_line] + labelled
    refused = {r.index: r for r in refused_entries(entries, message)}
    assert sorted(refused) == [0, 1, 2, 4, 5]
    assert refused[4].certain and "max entry size" in refused[4].reason
    assert not refused[5].certain and "label names" in refused[5].reason


def test_ingester_answers_name_entries_by_their_exact_timestamp() -> None:
    behind = [_contract_entry(1_795_315_000 * 10**9 + i, f"b{i}") for i in range(2)]
    fresh = [_contract_entry(1_795_318_000 * 10**9, "fresh")]
    message = (
        "entry with timestamp 2026-11-22 02:36:40.000000001 +0000 UTC ignored, reason: 'entry "
        "too far behind, entry timestamp is: 2026-11-22T02:36:40Z, oldest acceptable timestamp "
        "is: 2026-11-22T02:50:00Z',\nuser 'fake', total ignored: 1 out of 3 for stream: "
        "{actor=\"USER\", level=\"INFO\", service_name=\"contract\", type=\"LOGIN\"}")
    refused = refused_entries(behind + fresh, message)
    assert [(r.index, r.certain) for r in refused] == [(1, True)]
    assert refusal_reason(400, refused[0].reason) == "too_far_behind"


def test_an_answer_that_names_nothing_marks_every_entry_uncertain() -> None:
    entries = [_contract_entry(i) for i in range(3)]
    refused = refused_entries(entries, "something else went wrong\n")
    assert [r.index for r in refused] == [0, 1, 2] and not any(r.certain for r in refused)
# ----------------------------------------------------------------------------- scalable Loki


@pytest.mark.parametrize(("target", "call", "what", "serving"), [
    ("read", lambda c: c.delete('{service_name="x"}', 1, 2), "deletion", "backend"),
    ("write", lambda c: c.delete_requests(), "deletion", "backend"),
    ("backend", lambda c: c.query_range('{service_name="x"}', 1, 2), "querying", "read"),
    ("write", lambda c: c.labels(), "querying", "read"),
])
def test_a_404_from_the_wrong_target_names_the_target_that_serves_it(
        target: str, call: Any, what: str, serving: str) -> None:
    with FakeLoki(target=target) as fake:
        client = _client(fake.url)
        with pytest.raises(LokiError) as info:
            call(client)
    assert info.value.status == 404
    assert info.value.target == serving
    assert (f"{what} is served by the {serving} target (or the gateway) of a scalable Loki; "
            "point --url or LOKI_URL there") in str(info.value)
    assert "404 page not found" in str(info.value)


def test_a_push_to_a_read_target_is_refused_with_the_write_target_named() -> None:
    with FakeLoki(target="read") as fake:
        (outcome,) = _client(fake.url).push([_entry()])
        assert fake.count() == 0
    assert (outcome.kind, outcome.status) == ("refused", 404)
    assert "pushing is served by the write target" in outcome.message


def test_config_is_served_by_every_target_and_other_404s_get_no_hint(fake: FakeLoki) -> None:
    assert serving_target("/config") is None
    assert serving_target("/ready") is None
    assert serving_target("/loki/api/v1/delete?request_id=1") == ("deletion", "backend")
    with pytest.raises(LokiError) as info:
        _client(fake.url)._get("/no/such/api")  # a path no target serves: a plain 404
    assert info.value.target is None
    assert "served by" not in str(info.value)


def test_each_target_answers_the_api_it_serves() -> None:
    with FakeLoki(target="write") as write, FakeLoki(target="backend") as backend:
        _route(backend, "GET /loki/api/v1/delete", "delete_list")
        assert [o.kind for o in _client(write.url).push([_entry()])] == ["ok"]
        assert isinstance(_client(backend.url).delete_requests(), list)


# ----------------------------------------------------------------------------- timing, probe


def test_each_request_carries_its_duration_body_size_and_status_class(fake: FakeLoki) -> None:
    fake.script.answers += [contract.answer("push_429_rate_limited"), (503, "down\n", {})]
    client = _client(fake.url)
    rate_limited, unavailable, ok = (client.push_once([_entry()]) for _ in range(3))
    assert [o.status_class for o in (rate_limited, unavailable, ok)] == ["4xx", "5xx", "2xx"]
    for outcome in (rate_limited, unavailable, ok):
        assert outcome.seconds is not None and outcome.seconds >= 0
        assert outcome.body_bytes == len(fake.requests[0].body)


def test_no_answer_at_all_is_status_class_error() -> None:
    fake = FakeLoki()
    url = fake.url
    fake.stop()
    outcome = _client(url, timeout=2).push_once([_entry()])
    assert outcome.status_class == "error" and outcome.seconds is not None


def test_the_probe_pushes_one_stream_without_entries_and_loki_stores_nothing(
        fake: FakeLoki) -> None:
    outcome = _client(fake.url, service="probe-me", tenant="team-a").probe()
    assert (outcome.kind, outcome.status) == ("ok", 204)
    request = fake.requests[0]
    assert json.loads(request.body) == {"streams": [{"stream": {"service_name": "probe-me"},
                                                     "values": []}]}
    assert request.headers["x-scope-orgid"] == "team-a"  # where pushes go, as pushes go
    assert fake.count() == 0


def test_the_fake_answers_a_push_of_no_stream_as_loki_does(fake: FakeLoki) -> None:
    """Measured on Loki 3.7.6: ``{"streams": []}`` is a 422, one stream with no values a 204."""
    outcome = _client(fake.url).transport.request(
        "POST", fake.url + "/loki/api/v1/push", headers={"Content-Type": "application/json"},
        body=b'{"streams":[]}', timeout=5)
    assert (outcome.status, outcome.text) == (
        422, "error at least one valid stream is required for ingestion\n")


# ------------------------------------------------------------------ bodies encoded beforehand


@pytest.mark.parametrize("encoding", ["json", "json+gzip", "protobuf"])
def test_a_body_encoded_beforehand_is_sent_as_it_is_with_its_encodings_headers(
        fake: FakeLoki, encoding: str) -> None:
    entries = [_entry(i) for i in range(20)]
    client = _client(fake.url, encoding=encoding)
    body = client.body(entries)
    assert [o.kind for o in client.push(entries, body=body)] == ["ok"]
    (request,) = fake.requests
    assert request.body == body
    assert request.body == client.encode(entries)[0]
    assert request.headers["content-type"] == ("application/x-protobuf"
                                               if encoding == "protobuf"
                                               else "application/json")
    assert request.headers.get("content-encoding") == ("gzip" if encoding == "json+gzip"
                                                       else None)
    stored = sorted(fake.stored(), key=lambda s: s.ts)
    assert [(s.ts, s.line) for s in stored] == [(e.timestamp_ns, e.line) for e in entries]


def test_the_halves_of_a_split_request_are_encoded_anew_not_cut_from_the_body(
        fake: FakeLoki) -> None:
    fake.script.answers.append(contract.answer("push_oversize_request"))
    entries = [_entry(i) for i in range(6)]
    client = _client(fake.url)
    outcomes = client.push(entries, body=client.body(entries))
    assert [(o.kind, o.entries) for o in outcomes] == [("ok", 3), ("ok", 3)]
    first, *halves = fake.requests
    assert [len(json.loads(r.body)["streams"][0]["values"]) for r in halves] == [3, 3]
    assert first.body == client.body(entries)
    assert sorted(s.line for s in fake.stored()) == sorted(e.line for e in entries)

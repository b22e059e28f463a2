"""shipper.LokiReader against the fake Loki (answering as Loki 3.7.6 does): events by the
contract's filters, paged; LogQL of one's own as records or samples; labels, values and series
with counts; ranges as since or start/end; Loki's errors as LokiError with its message."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator

import pytest

import shipper
from shipper._units import NS
from shipper.config import ShipperConfig
from shipper.loki.client import LokiError
from shipper.loki.read_api import MAX_LOGQL_BYTES, LokiReader, Sample, Series
from shipper.loki.reader import Record
from shipper.loki.timerange import TimeError
from tests.support import contract
from tests.support.fakeloki import FakeLoki


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def add(fake: FakeLoki, ago_s: float, message: str, *, service: str = "shop",
        level: str = "INFO", actor: str = "USER", type_: str = "AUTH_LOGIN",
        actor_id: str | None = None, at: int | None = None) -> None:
    md = {"actor_id": actor_id} if actor_id else {}
    fake.add({"service_name": service, "level": level, "actor": actor, "type": type_},
             at if at is not None else time.time_ns() - int(ago_s * NS),
             json.dumps({"message": message, "metadata": {"n": 1}}), md)


def test_lokireader_is_exported_from_shipper_with_lokierror() -> None:
    assert "LokiReader" in shipper.__all__ and "LokiError" in shipper.__all__
    assert shipper.LokiReader is LokiReader and shipper.LokiError is LokiError


def test_a_reader_is_built_from_a_url_the_environment_or_a_config(
    fake: FakeLoki, monkeypatch: pytest.MonkeyPatch,
) -> None:
    add(fake, 10, "hello")
    monkeypatch.setenv("LOKI_URL", fake.url)
    monkeypatch.delenv("SHIPPER_CONFIG", raising=False)
    for reader in (LokiReader(fake.url), LokiReader.from_env(),
                   LokiReader(config=ShipperConfig(url=fake.url))):
        with reader:
            assert [e.message for e in reader.events(since="1h")] == ["hello"]
    monkeypatch.delenv("LOKI_URL")
    with pytest.raises(LokiError, match="no Loki URL"):
        LokiReader()


def test_events_filter_by_the_contract_and_yield_typed_records(fake: FakeLoki) -> None:
    add(fake, 30, "login ok", actor_id="u1")
    add(fake, 20, "card declined", level="ERROR", type_="PAYMENT_FAILED", actor_id="u2")
    add(fake, 10, "other", service="blog")
    with LokiReader(fake.url) as reader:
        errors = list(reader.events(service="shop", level="error"))
        assert len(errors) == 1
        e = errors[0]
        assert isinstance(e, Record)
        assert (e.service, e.level, e.actor, e.type, e.actor_id, e.message, e.metadata) == (
            "shop", "ERROR", "USER", "PAYMENT_FAILED", "u2", "card declined", {"n": 1})
        assert isinstance(e.time, dt.datetime) and e.time.tzinfo is dt.UTC
        assert [r.message for r in reader.events(actor_id="u1")] == ["login ok"]
        assert [r.message for r in reader.events(search="DECLINED")] == ["card declined"]
        assert [r.message for r in reader.events(order="asc")] == ["login ok", "card declined",
                                                                   "other"]
        assert [r.message for r in reader.events(limit=1)] == ["other"]


def test_events_page_transparently_past_the_entry_limit_with_no_duplicates(
    fake: FakeLoki,
) -> None:
    fake.max_entries_limit = 50
    fake.config["limits_config"]["max_entries_limit_per_query"] = 50
    base = time.time_ns() - 600 * NS
    for i in range(130):  # pairs share a nanosecond, also on page edges
        add(fake, 0, f"e{i}", at=base + (i // 2) * 1000)
    with LokiReader(fake.url) as reader:
        got = [r.message for r in reader.events(since="1h", order="asc")]
    assert len(got) == 130 and len(set(got)) == 130


def test_ranges_are_since_or_start_and_end_as_text_ns_or_datetimes(fake: FakeLoki) -> None:
    now = time.time_ns()
    add(fake, 0, "recent", at=now - 30 * NS)
    add(fake, 0, "two hours ago", at=now - 7200 * NS)
    with LokiReader(fake.url) as reader:
        def msgs(**kw: object) -> list[str]:
            return [r.message for r in reader.events(**kw)]  # type: ignore[arg-type]

        assert msgs() == ["recent"]  # the last hour by default
        assert msgs(since="3h") == ["recent", "two hours ago"]
        assert msgs(since=dt.timedelta(hours=3)) == ["recent", "two hours ago"]
        assert msgs(start="3h", end="now-1h") == ["two hours ago"]
        start = dt.datetime.fromtimestamp((now - 3 * 3600 * NS) / NS, dt.UTC)
        assert msgs(start=start, end=now - 3600 * NS) == ["two hours ago"]
        with pytest.raises(TimeError, match="no time zone"):
            msgs(start=dt.datetime(2026, 1, 1))
        with pytest.raises(TimeError, match="since: not a duration"):
            msgs(since="ages")
        with pytest.raises(TimeError, match="not both"):
            msgs(since="1h", start="2h")


def test_query_yields_records_for_log_queries_and_samples_for_metric_queries(
    fake: FakeLoki,
) -> None:
    add(fake, 30, "a")
    add(fake, 20, "b", level="ERROR")
    with LokiReader(fake.url) as reader:
        records = list(reader.query('{service_name="shop"}', since="1h"))
        assert [r.message for r in records if isinstance(r, Record)] == ["b", "a"]
        samples = list(reader.query('sum by (level) (count_over_time({service_name="shop"}'
                                    ' [1h]))', since="10m", step=60))
        assert samples and all(isinstance(s, Sample) for s in samples)
        levels = {s.metric["level"] for s in samples if isinstance(s, Sample)}
        assert levels == {"INFO", "ERROR"}
        now = [s for s in reader.instant('sum by (level) (count_over_time({service_name="shop"}'
                                         ' [1h]))')]
        assert {(s.metric["level"], s.value) for s in now} == {("INFO", 1.0), ("ERROR", 1.0)}


def test_metric_queries_over_long_ranges_are_split_into_windows_without_double_points(
    fake: FakeLoki,
) -> None:
    fake.max_query_length_ns = 3600 * NS
    fake.config["limits_config"]["max_query_length"] = "1h"
    add(fake, 60, "x")
    with LokiReader(fake.url) as reader:
        samples = [s for s in reader.query('sum (count_over_time({service_name="shop"} [1h]))',
                                           since="3h", step=600)
                   if isinstance(s, Sample)]
    stamps = [s.timestamp_ns for s in samples]
    assert stamps == sorted(set(stamps))
    assert len([r for r in fake.requests if "query_range" in r.path]) >= 3


def test_labels_values_and_series_with_counts(fake: FakeLoki) -> None:
    add(fake, 30, "a", type_="LOGIN", actor_id="u1")
    add(fake, 20, "b", type_="LOGIN")
    add(fake, 10, "c", type_="BURST", level="ERROR")
    add(fake, 5, "d", service="blog")
    with LokiReader(fake.url) as reader:
        assert reader.labels() == ["actor", "level", "service_name", "type"]
        assert reader.labels("type", service="shop") == ["BURST", "LOGIN"]
        assert reader.labels("service_name", level="error") == ["shop"]
        assert reader.labels("type", actor_id="u1") == ["LOGIN"]  # counted, not selected
        streams = reader.series(service="shop")
        assert [s.labels["type"] for s in streams] == ["LOGIN", "BURST"] or \
            sorted(s.labels["type"] for s in streams) == ["BURST", "LOGIN"]
        assert all(s.count is None for s in streams)
        counted = {s.labels["type"]: s.count for s in reader.series(service="shop", count=True)}
        assert counted == {"LOGIN": 2, "BURST": 1}
        assert reader.series(actor_id="u1") == [Series(
            {"actor": "USER", "level": "INFO", "service_name": "shop", "type": "LOGIN"}, 1)]


def test_a_label_name_that_is_not_one_is_refused_before_loki_is_asked(fake: FakeLoki) -> None:
    with LokiReader(fake.url) as reader:
        for bad in ('ty"pe', "a}b", "1x", "", "a b", "type/../x"):
            with pytest.raises(ValueError, match="not a label name"):
                reader.labels(bad)
    assert not [r for r in fake.requests if "/label/" in r.path]


def test_lokis_errors_come_out_as_lokierror_with_lokis_message(fake: FakeLoki) -> None:
    with LokiReader(fake.url) as reader:
        with pytest.raises(LokiError, match="syntax error") as exc:
            list(reader.query('{service_name="shop"', since="1h"))
        assert exc.value.kind == "parse_error"
        fake.routes["GET /loki/api/v1/query_range"] = contract.answer("query_400_parse_error")
        with pytest.raises(LokiError, match=re.escape("col 26: syntax error: unexpected |=")):
            list(reader.events())
        with pytest.raises(LokiError, match="log queries are not supported as an instant"):
            reader.instant('{service_name="shop"}')


def test_huge_or_empty_logql_is_refused_without_asking_loki(fake: FakeLoki) -> None:
    with LokiReader(fake.url) as reader:
        with pytest.raises(LokiError, match=f"at most {MAX_LOGQL_BYTES} are sent"):
            list(reader.query('{service_name="' + "x" * 10_000_000 + '"}'))
        with pytest.raises(LokiError, match="empty"):
            reader.instant("  ")
    assert not [r for r in fake.requests if "query" in r.path]


def test_contract_answers_for_labels_values_and_series_are_read(fake: FakeLoki) -> None:
    fake.routes["GET /loki/api/v1/labels"] = contract.answer("labels")
    fake.routes["GET /loki/api/v1/label/type/values"] = contract.answer("label_values_type")
    fake.routes["GET /loki/api/v1/series"] = contract.answer("series")
    with LokiReader(fake.url) as reader:
        assert reader.labels() == ["actor", "level", "service_name", "type"]
        assert reader.labels("type") == ["BURST", "LOGIN"]
        assert sorted(s.labels["type"] for s in reader.series()) == ["BURST", "LOGIN"]

"""shipper demo: the event generator, the emitter, the --file writer and the options."""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper._units import parse_seconds
from shipper.cli.demo import (
    BACKFILL_SAFETY_S,
    DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE,
    INCIDENT_START_S,
    KINDS,
    SLOW_REQUEST_MS,
    DemoEmitter,
    DemoError,
    DemoEvent,
    DemoOptions,
    EventTimeFilter,
    JsonLinesFileHandler,
    backfill_events,
    entry_to_file_object,
    file_object_to_entry,
    live_events,
    run_demo,
    yesterday_events,
)
from shipper.cli.demo.command import _loki_limits, _prepare_backfill
from shipper.cli.main import main
from shipper.config import ShipperConfig
from shipper.context import LogContext, current_context
from shipper.event import Actor, Level, LogEvent, to_entry
from shipper.handler import event_from_record

REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
FILE_KEYS = {"ts", "service", "env", "level", "actor", "type", "actor_id", "trace_id", "logger",
             "message", "metadata", "exception"}
#: the event types the Grafana dashboards and alert rules are built on
VOCABULARY = {
    "AUTH_LOGIN", "AUTH_LOGOUT", "AUTH_SIGNUP", "AUTH_PASSWORD_RESET", "USER_PROFILE_UPDATE",
    "BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_CONFIRMED", "LISTING_UPDATED",
    "PAYMENT_SUCCEEDED", "PAYMENT_FAILED", "PAYOUT_REQUESTED", "PAYOUT_SENT", "PAYOUT_FAILED",
    "WEBHOOK_PAYMENT_INTENT_SUCCEEDED", "WEBHOOK_PAYMENT_INTENT_PAYMENT_FAILED",
    "WEBHOOK_CHARGE_REFUNDED", "WEBHOOK_PAYOUT_PAID", "API_ERROR", "ADMIN_USER_SUSPENDED",
    "ADMIN_REFUND_ISSUED", "ADMIN_CREATOR_VERIFIED", "ADMIN_ROLE_CHANGED", "ADMIN_LOGS_EXPORTED",
    "HTTP_REQUEST", "JOB_COMPLETED", "EMAIL_DELIVERY_FAILED", "CACHE_MISS", "DATA_CORRUPTION",
    "SLOW_REQUEST", "OPERATION", "PERFORMANCE",
}


def _failed_logins(events: list[DemoEvent]) -> list[DemoEvent]:
    return [e for e in events if e.type == "AUTH_LOGIN" and e.params["success"] is False]


def _longest_same_ip_run(events: list[DemoEvent]) -> tuple[int, str | None]:
    """Longest run of consecutive failed logins from one IP."""
    best, best_ip, run, ip = 0, None, 0, None
    for e in events:
        if e.type == "AUTH_LOGIN" and e.params["success"] is False:
            run = run + 1 if e.metadata["ip"] == ip else 1
            ip = e.metadata["ip"]
            if run > best:
                best, best_ip = run, ip
        else:
            run, ip = 0, None
    return best, best_ip


# --------------------------------------------------------------------------- the generator


def test_live_events_cover_the_vocabulary_levels_actors_and_kinds() -> None:
    # API errors are rare in a healthy marketplace (about 1 event in 500): enough events to
    # see every kind of failure
    events = list(live_events(random.Random(1), 15000))
    assert {e.type for e in events} >= VOCABULARY
    assert {e.kind for e in events} == set(KINDS)
    assert {e.level for e in events} == set(Level)
    assert {e.actor for e in events} == set(Actor)
    webhooks = [e for e in events if e.kind == "webhook"]
    assert {e.params["success"] for e in webhooks} == {True, False}
    assert all(e.params["provider"] == "stripe" for e in webhooks)
    assert {e.params["success"] for e in events if e.kind == "auth"} == {True, False}
    assert {e.params["failure"] for e in events if e.kind == "api_error"} >= {
        "gateway_timeout", "missing_listing", "bad_payload", "payout_split", "duplicate_email"}


def test_http_events_carry_method_path_status_and_duration() -> None:
    events = [e for e in live_events(random.Random(2), 500) if e.type == "HTTP_REQUEST"]
    assert events
    for e in events:
        assert {"method", "path", "status", "duration_ms", "ip"} <= set(e.metadata)
        status = e.metadata["status"]
        assert e.level == (Level.ERROR if status >= 500 else
                           Level.WARNING if status >= 400 else Level.INFO)
        assert e.message.startswith(f"{e.metadata['method']} {e.metadata['path']} {status}")


@pytest.mark.parametrize("count", [1, 2, 10, 49, 50, 51, 200, 1001])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_has_exactly_count_events_and_one_critical(count: int, seed: int) -> None:
    events = list(live_events(random.Random(seed), count))
    assert len(events) == count
    critical = [e for e in events if e.level is Level.CRITICAL]
    assert [e.type for e in critical] == ["DATA_CORRUPTION"]
    assert critical[0].actor is Actor.SYSTEM


@pytest.mark.parametrize("criticals", [0, 3])
def test_criticals_sets_how_many_data_corruption_events_a_run_has(criticals: int) -> None:
    events = list(live_events(random.Random(4), 300, criticals=criticals))
    assert len(events) == 300
    assert sum(e.type == "DATA_CORRUPTION" for e in events) == criticals


def test_more_criticals_than_events_is_an_error() -> None:
    with pytest.raises(DemoError, match="--criticals 3 does not fit in --count 2"):
        list(live_events(random.Random(0), 2, criticals=3))


@pytest.mark.parametrize("seed", range(5))
def test_a_run_has_a_burst_of_failed_logins_from_one_ip(seed: int) -> None:
    events = list(live_events(random.Random(seed), 200))
    length, ip = _longest_same_ip_run(events)
    assert length >= 6
    assert ip is not None and ip.startswith("198.51.100.")
    burst = [e for e in _failed_logins(events) if e.metadata["ip"] == ip]
    assert len({e.actor_id for e in burst}) == 1, "one address guessing one account's password"
    # nobody logs in successfully from the attacker's address
    assert not [e for e in events if e.type == "AUTH_LOGIN" and e.params["success"]
                and e.metadata["ip"] == ip]


def test_short_runs_have_no_burst() -> None:
    events = list(live_events(random.Random(3), 40))
    assert _longest_same_ip_run(events)[0] < 6


def test_the_same_seed_gives_the_same_events() -> None:
    first = list(live_events(random.Random(42), 400))
    assert first == list(live_events(random.Random(42), 400))
    assert first != list(live_events(random.Random(43), 400))


def test_events_of_one_request_share_a_trace_id() -> None:
    events = list(live_events(random.Random(5), 600))
    by_trace: dict[str | None, list[DemoEvent]] = {}
    for e in events:
        by_trace.setdefault(e.trace_id, []).append(e)
    assert None not in by_trace
    bookings = [group for group in by_trace.values()
                if "BOOKING_CREATED" in {e.type for e in group}]
    assert bookings
    for group in bookings:
        types = [e.type for e in group]
        assert types[0] == "HTTP_REQUEST"
        assert types[-1] in {"PAYMENT_SUCCEEDED", "PAYMENT_FAILED"}


def test_a_stream_without_end_brings_a_burst_and_the_critical_early() -> None:
    events = list(itertools.islice(live_events(random.Random(6), None, rate=1.0), 120))
    # more than 10 for one account: enough for the "failed logins for one account" alert
    assert _longest_same_ip_run(events)[0] == 12
    assert sum(e.type == "DATA_CORRUPTION" for e in events) == 1
    assert all(e.time_ns is None for e in events)


def test_a_stream_without_end_repeats_the_burst_every_hour_of_events() -> None:
    rate = 0.1  # 360 events an hour (the floor is 200)
    events = list(itertools.islice(live_events(random.Random(7), None, rate=rate), 1200))
    ips = Counter(e.metadata["ip"] for e in _failed_logins(events))
    attacker, failures = ips.most_common(1)[0]
    assert attacker.startswith("198.51.100.")
    assert failures >= 36  # the first burst and at least two hourly ones, 12 each


# --------------------------------------------------------------------------- backfill


@pytest.fixture(scope="module")
def week() -> tuple[int, int, list[DemoEvent]]:
    end = 1_790_000_000 * NS
    start = end - 7 * 86400 * NS
    return start, end, backfill_events(random.Random(11), start_ns=start, end_ns=end,
                                       per_hour=60)


def test_backfill_stays_inside_its_window_oldest_first(
        week: tuple[int, int, list[DemoEvent]]) -> None:
    start, end, events = week
    times = [e.time_ns for e in events]
    assert all(t is not None and start <= t < end for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    assert times[0] - start < 3600 * NS and end - times[-1] < 3600 * NS  # the whole window


def test_backfill_has_about_the_asked_rate_more_by_day_than_by_night(
        week: tuple[int, int, list[DemoEvent]]) -> None:
    _, _, events = week
    assert 0.85 * 60 * 168 < len(events) < 1.15 * 60 * 168
    by_hour = Counter(((e.time_ns or 0) // NS % 86400) // 3600 for e in events)
    assert by_hour[15] > 2 * by_hour[3]


def test_backfill_has_one_failed_login_burst_per_day_and_one_critical(
        week: tuple[int, int, list[DemoEvent]]) -> None:
    _, _, events = week
    assert sum(e.type == "DATA_CORRUPTION" for e in events) == 1
    attempts = [e for e in _failed_logins(events) if e.metadata["ip"].startswith("198.51.100.")]
    bursts: list[list[DemoEvent]] = []
    for e in attempts:
        if bursts and (e.time_ns or 0) - (bursts[-1][-1].time_ns or 0) < 60 * NS:
            bursts[-1].append(e)
        else:
            bursts.append([e])
    big = [b for b in bursts if len(b) >= 8]
    assert len(big) == 7
    for burst in big:
        assert len({e.metadata["ip"] for e in burst}) == 1
        assert (burst[-1].time_ns or 0) - (burst[0].time_ns or 0) < 60 * NS


def test_backfilled_requests_keep_their_events_together(
        week: tuple[int, int, list[DemoEvent]]) -> None:
    _, _, events = week
    by_trace: dict[str | None, list[int]] = {}
    for e in events:
        by_trace.setdefault(e.trace_id, []).append(e.time_ns or 0)
    spans = [max(t) - min(t) for t in by_trace.values() if len(t) > 1]
    assert spans and max(spans) < 2 * NS


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start_ns": 10 * NS, "end_ns": 10 * NS}, "window is empty"),
    ({"start_ns": 0, "end_ns": 10 * NS, "per_hour": 0}, "--backfill-rate must be positive"),
    ({"start_ns": 0, "end_ns": 10 * NS, "criticals": -1}, "--criticals must not be negative"),
])
def test_backfill_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DemoError, match=message):
        backfill_events(random.Random(0), **kwargs)


# --------------------------------------------------------------------------- emitting


class _Capture(logging.Handler):
    """Keeps each record with the request context seen at emit time, as LokiHandler does."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[logging.LogRecord, LogContext | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.items.append((record, current_context()))

    def events(self, service: str = "marketplace", env: str | None = "demo") -> list[LogEvent]:
        return [event_from_record(r, service=service, env=env, context=c) for r, c in self.items]


@pytest.fixture()
def emitter() -> Iterator[tuple[DemoEmitter, _Capture, list[logging.Handler]]]:
    base = f"demo{uuid.uuid4().hex[:8]}"
    capture = _Capture()
    capture.addFilter(EventTimeFilter())
    logger = logging.getLogger(base)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(capture)
    extra: list[logging.Handler] = []
    yield DemoEmitter(base), capture, extra
    for h in [capture, *extra]:
        logger.removeHandler(h)
        h.close()


def test_emitted_events_reach_logging_as_planned(
        emitter: tuple[DemoEmitter, _Capture, list[logging.Handler]]) -> None:
    em, capture, _ = emitter
    planned = list(live_events(random.Random(8), 1500))
    for e in planned:
        em.emit(e)
    events = capture.events()
    assert len(events) == len(planned)
    for plan, got in zip(planned, events, strict=True):
        assert (got.type, got.level, got.actor) == (plan.type, plan.level, plan.actor), plan
        assert got.actor_id == plan.actor_id
        assert got.trace_id == plan.trace_id
        assert got.logger == f"{em.base}.{plan.logger}"
        if plan.kind == "auth":
            assert got.metadata["success"] is plan.params["success"]
            assert got.metadata["ip"] == plan.metadata["ip"]
        if plan.kind == "webhook":
            assert got.metadata["provider"] == "stripe"
            assert got.metadata["event_type"] == plan.params["event_type"]
            assert got.metadata["success"] is plan.params["success"]
        if plan.kind == "http":
            assert {"method", "path", "status", "duration_ms"} <= set(got.metadata)
        if plan.kind == "api_error":
            assert got.exception is not None
            assert got.exception.startswith("Traceback (most recent call last):")
            assert got.metadata["error_type"] in got.exception
            assert got.message.startswith(plan.params["endpoint"] + ": ")
        else:
            assert got.exception is None


def test_api_errors_are_real_exceptions_of_each_failure(
        emitter: tuple[DemoEmitter, _Capture, list[logging.Handler]]) -> None:
    em, capture, _ = emitter
    for e in live_events(random.Random(3), 15000):
        if e.kind == "api_error":
            em.emit(e)
    kinds = {ev.metadata["error_type"] for ev in capture.events()}
    assert kinds == {"TimeoutError", "KeyError", "JSONDecodeError", "ZeroDivisionError",
                     "_IntegrityError"}


def test_backfilled_events_keep_their_own_time_to_the_nanosecond(
        emitter: tuple[DemoEmitter, _Capture, list[logging.Handler]]) -> None:
    em, capture, _ = emitter
    end = time.time_ns()
    planned = backfill_events(random.Random(10), start_ns=end - 6 * 3600 * NS, end_ns=end,
                              per_hour=40)
    for e in planned:
        em.emit(e)
    got = [ev.timestamp_ns for ev in capture.events()]
    assert got == [e.time_ns for e in planned]
    assert current_context() is None  # the emitter leaves no context behind


def test_unknown_kind_is_refused(
        emitter: tuple[DemoEmitter, _Capture, list[logging.Handler]]) -> None:
    em, _, _ = emitter
    bogus = DemoEvent(kind="fax", type="X", level=Level.INFO, actor=Actor.SYSTEM, logger="x")
    with pytest.raises(DemoError, match="unknown demo event kind 'fax'"):
        em.emit(bogus)


# --------------------------------------------------------------------------- --file


def test_file_lines_have_the_documented_shape_and_match_what_the_handler_sends(
        emitter: tuple[DemoEmitter, _Capture, list[logging.Handler]], tmp_path: Path) -> None:
    em, capture, extra = emitter
    path = tmp_path / "events.jsonl"
    writer = JsonLinesFileHandler(path, service="marketplace", env="demo")
    writer.addFilter(EventTimeFilter())
    logging.getLogger(em.base).addHandler(writer)
    extra.append(writer)
    end = time.time_ns()
    planned = backfill_events(random.Random(12), start_ns=end - 2 * 3600 * NS, end_ns=end,
                              per_hour=200)
    planned += list(live_events(random.Random(13), 400))
    for e in planned:
        em.emit(e)
    writer.flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(planned) == writer.written
    sent = [to_entry(ev) for ev in capture.events()]
    for line, entry in zip(lines, sent, strict=True):
        obj = json.loads(line)
        assert set(obj) == FILE_KEYS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", obj["ts"])
        assert isinstance(obj["metadata"], dict)
        back = file_object_to_entry(obj)
        assert dict(back.labels) == dict(entry.labels)
        assert dict(back.metadata) == dict(entry.metadata)
        assert back.timestamp_ns == entry.timestamp_ns
        assert json.loads(back.line) == json.loads(entry.line)
    assert any(json.loads(line)["exception"] for line in lines)


def test_file_object_round_trips_an_entry_with_and_without_optional_fields() -> None:
    full = to_entry(LogEvent.create(
        service="checkout", env="prod", level="ERROR", message="boom", timestamp_ns=5 * NS + 7,
        actor="USER", type="API_ERROR", actor_id="u1", trace_id="t1", logger="app.api",
        metadata={"n": 1, "nested": {"a": [1, 2]}}, exception="Traceback ...\nValueError: x"))
    bare = to_entry(LogEvent.create(service="checkout", level="INFO", message="hi",
                                    timestamp_ns=NS))
    for entry in (full, bare):
        obj = entry_to_file_object(entry)
        assert set(obj) == FILE_KEYS
        assert file_object_to_entry(obj) == entry
    bare_obj = entry_to_file_object(bare)
    assert bare_obj["env"] is None and bare_obj["exception"] is None
    assert bare_obj["actor_id"] is None and bare_obj["trace_id"] is None


def test_file_times_keep_every_nanosecond_in_go_rfc3339nano() -> None:
    """The collectors read ``ts`` with Go's RFC3339Nano layout: nine digits, always."""
    for ns, text in ((1_790_000_000_123_456_789, "2026-09-21T14:13:20.123456789Z"),
                     (1_790_000_000 * NS, "2026-09-21T14:13:20.000000000Z")):
        entry = to_entry(LogEvent.create(service="s", level="INFO", message="m",
                                         timestamp_ns=ns))
        assert entry_to_file_object(entry)["ts"] == text
        assert file_object_to_entry(entry_to_file_object(entry)).timestamp_ns == ns


def test_file_handler_says_which_path_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match=r"--file .*missing.*cannot open it"):
        JsonLinesFileHandler(tmp_path / "missing" / "x.jsonl", service="s")


# --------------------------------------------------------------------------- options, limits


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": 0}, "--rate must be a positive"),
    ({"rate": float("nan")}, "--rate must be a positive"),
    ({"count": 5, "forever": True}, "not --count and --forever"),
    ({"count": -1}, "--count must not be negative"),
    ({"duration": 0}, "--duration must be positive"),
    ({"backfill": -5}, "--backfill must be positive"),
    ({"backfill_rate": 0}, "--backfill-rate must be positive"),
    ({"criticals": -1}, "--criticals must not be negative"),
])
def test_options_refuse_what_cannot_work(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DemoError, match=message):
        DemoOptions(**kwargs)


def test_options_decide_how_many_live_events() -> None:
    assert DemoOptions().live_count() == DemoOptions.DEFAULT_COUNT
    assert DemoOptions(count=7).live_count() == 7
    assert DemoOptions(duration=10, rate=3).live_count() == 30
    assert DemoOptions(forever=True).live_count() is None
    assert DemoOptions(backfill=3600).live_count() == 0


def test_the_fallback_age_limit_is_the_one_in_loki_config() -> None:
    text = (REPO / "loki" / "config.yaml").read_text(encoding="utf-8")
    limits = yaml.safe_load(text)["limits_config"]
    assert limits["reject_old_samples"] is True
    assert parse_seconds(limits["reject_old_samples_max_age"]) == DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE
    assert _loki_limits(text)[0] == DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE


def test_loki_limits_are_read_from_get_config() -> None:
    assert _loki_limits("limits_config:\n  reject_old_samples: false\n")[0] is None
    text = ("limits_config:\n  reject_old_samples: true\n  reject_old_samples_max_age: 2w\n"
            "ingester:\n  max_chunk_age: 2h0m0s\n")
    assert _loki_limits(text) == (14 * 86400, 7200)
    assert _loki_limits("{}") == (DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE, 7200)


def test_backfill_beyond_what_loki_accepts_is_refused_with_the_limit() -> None:
    config = ShipperConfig(service="s")
    err = io.StringIO()
    ok = DemoOptions(backfill=parse_seconds("7d"))
    assert _prepare_backfill(ok, config, err, None) == 7 * 86400
    assert "spool" in err.getvalue()
    with pytest.raises(DemoError, match=r"--backfill 8d .*reject_old_samples_max_age is 7d.*"
                                        r"--backfill 7d or less"):
        _prepare_backfill(DemoOptions(backfill=parse_seconds("8d")), config, err, None)


def test_backfill_starts_inside_the_window_loki_accepts() -> None:
    assert 0 < BACKFILL_SAFETY_S < 3600


def test_cli_reports_bad_options_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--backfill", "a week"])
    assert exc.value.code == 2
    assert "not a duration: 'a week'" in capsys.readouterr().err
    assert main(["demo", "--count", "-3"]) == 2
    assert "shipper demo: error: --count must not be negative" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--count", "3", "--forever"])
    assert "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------- a spool-only run


@pytest.fixture()
def spool_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("LOKI_URL", "SHIPPER_SERVICE", "SHIPPER_ENV", "SHIPPER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path


def test_a_run_without_loki_spools_every_event_and_says_so(spool_env: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = spool_env / "events.jsonl"
    code = run_demo(DemoOptions(count=80, rate=1e6, seed=3, file=str(path), env="demo"),
                    stdout=out, stderr=err)
    assert code == 0
    assert "no LOKI_URL or --url: events go to the spool" in err.getvalue()
    stats = json.loads(out.getvalue())
    assert stats["accepted"] == stats["spooled"] == stats["emitted"] == 80
    assert stats["file"]["written"] == 80
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 80
    assert {r["service"] for r in rows} == {"marketplace"}
    assert {r["env"] for r in rows} == {"demo"}
    assert sum(r["type"] == "DATA_CORRUPTION" for r in rows) == 1


def test_a_run_without_end_stops_cleanly_when_told(spool_env: Path) -> None:
    stop = threading.Event()
    out = io.StringIO()
    # run_demo logs under a logger named after the service: stop it at the 50th record
    counting = _StopAfterHandler(stop, 50)
    logging.getLogger("stopper").addHandler(counting)
    try:
        code = run_demo(DemoOptions(forever=True, rate=1e6, service="stopper"), stdout=out,
                        stderr=io.StringIO(), stop=stop)
    finally:
        logging.getLogger("stopper").removeHandler(counting)
    assert code == 0
    assert counting.count == 50
    assert json.loads(out.getvalue())["emitted"] == 50


class _StopAfterHandler(logging.Handler):
    def __init__(self, stop: threading.Event, n: int) -> None:
        super().__init__()
        self.stop, self.n, self.count = stop, n, 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.count == self.n:
            self.stop.set()


class _InterruptAt(logging.Handler):
    """Ctrl-C arriving while the n-th record is logged."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.count = n, 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.count == self.n:
            raise KeyboardInterrupt


def test_ctrl_c_still_flushes_and_prints_the_stats(spool_env: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    interrupt = _InterruptAt(30)
    logging.getLogger("ctrlc").addHandler(interrupt)  # runs before the demo's own handlers
    try:
        code = run_demo(DemoOptions(forever=True, rate=1e6, service="ctrlc"), stdout=out,
                        stderr=err)
    finally:
        logging.getLogger("ctrlc").removeHandler(interrupt)
    assert code == 130
    stats = json.loads(out.getvalue())
    assert stats["emitted"] == stats["accepted"] == stats["spooled"] == 29


# --------------------------------------------------------------------------- against a Loki


def test_a_run_against_loki_delivers_exactly_what_the_file_shows(
    spool_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shipper.cli.main import main
    from tests.support.fakeloki import FakeLoki

    path = spool_env / "events.jsonl"
    with FakeLoki(rate_limit=False) as fake:
        code = main(["demo", "--count", "300", "--rate", "100000", "--seed", "7", "--url",
                     fake.url, "--env", "demo", "--file", str(path)])
        stored = fake.stored()
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sent"] == 300 and stats["dropped_total"] == 0
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(stored) == len(rows) == 300
    by_line = {s.line: s for s in stored}
    for row in rows:
        line = {"message": row["message"], "metadata": row["metadata"]}
        if row["exception"] is not None:
            line["exception"] = row["exception"]
        entry = by_line[json.dumps(line, ensure_ascii=False, separators=(",", ":"))]
        labels = dict(entry.labels)
        assert (labels["level"], labels["actor"], labels["type"]) == (
            row["level"], row["actor"], row["type"])
    critical = [s for s in stored if dict(s.labels)["level"] == "CRITICAL"]
    assert [dict(s.labels)["type"] for s in critical] == ["DATA_CORRUPTION"]


# --------------------------------------------------------------------------- performance events


def test_access_events_carry_the_route_template_except_unmatched_probes() -> None:
    events = [e for e in live_events(random.Random(11), 3000) if e.type == "HTTP_REQUEST"]
    probes = [e for e in events if e.metadata["status"] == 404]
    assert probes and all("route" not in e.metadata for e in probes)
    routed = [e for e in events if e.metadata["status"] != 404]
    assert all(e.metadata["route"].startswith("/") for e in routed)
    # templates, not paths: ids never reach the route
    routes = {e.metadata["route"] for e in routed}
    assert not any(re.search(r"(bk|lst|usr|cr)_[0-9a-z]{6}", r) for r in routes), routes
    assert "/listings/{listing_id}" in routes and "/api/search" in routes


def test_slow_requests_are_followed_by_the_middlewares_slow_request_warning() -> None:
    events = list(live_events(random.Random(12), 20000))
    for i, e in enumerate(events):
        slow = e.type == "HTTP_REQUEST" and e.metadata["duration_ms"] > SLOW_REQUEST_MS
        if slow:
            warning = events[i + 1]
            assert warning.type == "SLOW_REQUEST" and warning.level is Level.WARNING
            assert warning.trace_id == e.trace_id and warning.actor == e.actor
            assert warning.metadata == {**e.metadata, "threshold_ms": SLOW_REQUEST_MS}
            assert warning.message.startswith(f"Slow request: {e.metadata['method']} ")
        if e.type == "SLOW_REQUEST":
            assert events[i - 1].type == "HTTP_REQUEST"
    assert any(e.type == "SLOW_REQUEST" for e in events)


def test_timings_are_written_by_the_real_performance_helpers(
        emitter: tuple[DemoEmitter, _Capture, list[logging.Handler]]) -> None:
    em, capture, _ = emitter
    planned = [e for e in live_events(random.Random(13), 4000) if e.kind == "perf"]
    assert {e.type for e in planned} == {"OPERATION", "PERFORMANCE"}
    assert {e.level for e in planned} == {Level.INFO, Level.WARNING}  # some are slow
    for e in planned:
        em.emit(e)
    got = capture.events()
    assert len(got) == len(planned)
    for plan, event in zip(planned, got, strict=True):
        assert (event.type, event.level, event.trace_id) == (plan.type, plan.level, plan.trace_id)
        # exactly what shipper.perf writes: its keys, its message
        assert event.metadata == plan.metadata
        assert event.message == plan.message


# --------------------------------------------------------------------------- healthy vs incident


def _rates(events: list[DemoEvent]) -> dict[str, float]:
    http = [e for e in events if e.type == "HTTP_REQUEST"]
    durations = sorted(e.metadata["duration_ms"] for e in http)
    payments = [e for e in events if e.type in ("PAYMENT_SUCCEEDED", "PAYMENT_FAILED")]
    return {
        "errors": sum(e.level in (Level.ERROR, Level.CRITICAL) for e in events) / len(events),
        "5xx": sum(e.metadata["status"] >= 500 for e in http) / len(http),
        "p95": durations[int(0.95 * len(durations))],
        "failed_payments": sum(e.type == "PAYMENT_FAILED" for e in payments) / len(payments),
        "user": sum(e.actor is Actor.USER for e in events) / len(events),
    }


def test_normal_traffic_stays_well_under_every_alert_threshold() -> None:
    # the thresholds of grafana/provisioning/alerting/rules.yaml; Loki's own numbers on this
    # traffic are checked in tests/live/test_alert_rules_on_demo_data.py
    rates = _rates(list(live_events(random.Random(14), 30000)))
    assert rates["errors"] < 0.01 * 0.75
    assert rates["5xx"] < 0.05 / 5
    assert rates["p95"] < 2000 / 4
    assert rates["failed_payments"] < 0.1 / 2
    assert 0.4 < rates["user"] < 0.6


def test_the_incident_trips_every_threshold_after_normal_start() -> None:
    rate = 5.0
    events = list(live_events(random.Random(15), 4000, rate=rate, scenario="incident"))
    start = int(INCIDENT_START_S * rate)
    before, during = events[:start], events[start:]
    assert _rates(before)["p95"] < 2000 and _rates(before)["5xx"] < 0.05
    rates = _rates(during)
    assert rates["p95"] > 2000 * 1.5
    assert rates["5xx"] > 0.05 * 1.5
    assert rates["errors"] > 0.05
    assert rates["failed_payments"] > 0.1 * 2
    assert rates["user"] < _rates(list(live_events(random.Random(15), 4000)))["user"] / 2
    assert any(e.type == "SLOW_REQUEST" for e in during)
    assert sum(e.type == "DATA_CORRUPTION" for e in events) == 1


def test_the_day_before_is_flat_normal_traffic_starting_exactly_a_day_earlier() -> None:
    start = 1_790_000_000 * NS
    events = yesterday_events(random.Random(16), start_ns=start, seconds=600, rate=5.0)
    times = [e.time_ns for e in events]
    assert all(t is not None for t in times)
    assert min(times) >= start - 86400 * NS  # type: ignore[type-var]
    assert max(times) < start - 86400 * NS + 600 * NS  # type: ignore[operator]
    assert 0.85 * 3000 < len(events) < 1.15 * 3000
    assert not [e for e in events if e.type == "AUTH_LOGIN" and e.metadata["ip"].startswith(
        "198.51.100.")]  # no failed-login burst
    assert not [e for e in events if e.level is Level.CRITICAL]


def test_incident_options_default_to_ten_minutes_and_refuse_forever() -> None:
    assert DemoOptions(scenario="incident", rate=2).live_count() == 1200
    assert DemoOptions(scenario="incident", rate=2, duration=60).live_count() == 120
    with pytest.raises(DemoError, match=r"--scenario incident .* not --forever"):
        DemoOptions(scenario="incident", forever=True)
    with pytest.raises(DemoError, match="--scenario must be one of normal, incident"):
        DemoOptions(scenario="outage")


def test_an_incident_run_fills_the_day_before_first_under_its_own_service(
    spool_env: Path,
) -> None:
    from tests.support.fakeloki import FakeLoki

    out, err = io.StringIO(), io.StringIO()
    ticks = itertools.count()
    with FakeLoki(rate_limit=False) as fake:
        code = run_demo(DemoOptions(scenario="incident", count=300, rate=5, seed=17,
                                    url=fake.url),
                        stdout=out, stderr=err, clock=lambda: next(ticks) * 1000.0)
        stored = fake.stored()
    assert code == 0, err.getvalue()
    assert "the day before:" in err.getvalue()
    services = {dict(s.labels)["service_name"] for s in stored}
    assert services == {"marketplace-incident"}
    now = time.time_ns()
    day_before = [s for s in stored if s.ts < now - 23 * 3600 * NS]
    live = [s for s in stored if s.ts > now - 3600 * NS]
    assert len(day_before) + len(live) == len(stored)
    # 300 live events at 5/s and 2 minutes more of the same rate, a day earlier
    assert len(live) == 300
    assert 0.8 * 5 * 180 < len(day_before) < 1.2 * 5 * 180
    stats = json.loads(out.getvalue())
    assert stats["sent"] == len(stored) and stats["dropped_total"] == 0

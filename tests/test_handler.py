"""LokiHandler and the pipeline behind it: off the hot path, bounded, retrying, never raising."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from shipper.delivery.transport import HttpResponse, Transport, Urllib3Transport
from shipper.handler import LokiHandler, event_from_record
from tests.support import contract
from tests.support.fakeloki import FakeLoki

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server


@pytest.fixture()
def make_handler(tmp_path: Path) -> Iterator[Any]:
    handlers: list[LokiHandler] = []
    loggers: list[logging.Logger] = []

    def make(url: str | None, *, name: str = "app", spool: bool = False, **kw: Any) -> tuple[
            LokiHandler, logging.Logger]:
        kw.setdefault("batch_max_wait", 0.05)
        kw.setdefault("backoff_min", 0.01)
        kw.setdefault("backoff_max", 0.05)
        kw.setdefault("shutdown_timeout", 2)
        handler = LokiHandler(url, service="checkout", env="test", spool=spool,
                              spool_dir=str(tmp_path / "spool"), **kw)
        logger = logging.getLogger(f"test.{name}.{uuid.uuid4().hex[:8]}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        handlers.append(handler)
        loggers.append(logger)
        return handler, logger

    yield make
    for handler, logger in zip(handlers, loggers, strict=True):
        logger.removeHandler(handler)
        handler.close()


class GateTransport:
    """Holds every request until ``gate`` is set, then answers 204: a Loki that hangs."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.bodies: list[bytes] = []

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, timeout: float) -> HttpResponse:
        self.gate.wait()
        self.bodies.append(body or b"")
        return HttpResponse(204)

    def close(self) -> None:
        self.gate.set()


def _lines(fake: FakeLoki) -> list[dict[str, Any]]:
    return [json.loads(line) for line in fake.lines()]


# ----------------------------------------------------------------------------- contract


def test_record_reaches_loki_with_contract_labels_metadata_line_and_time(
    fake: FakeLoki, make_handler: Any
) -> None:
    handler, log = make_handler(fake.url)
    log.info("User logged in", extra={"actor": "USER", "type": "LOGIN", "actor_id": "user_42",
                                      "trace_id": "t-1", "metadata": {"ip": "203.0.113.9"}})
    assert handler.flush(timeout=10)
    [stored] = fake.stored()
    assert dict(stored.labels) == {"service_name": "checkout", "env": "test", "level": "INFO",
                                   "actor": "USER", "type": "LOGIN"}
    assert dict(stored.metadata) == {"actor_id": "user_42", "trace_id": "t-1",
                                     "logger": log.name}
    assert json.loads(stored.line) == {"message": "User logged in",
                                       "metadata": {"ip": "203.0.113.9"}}


def test_timestamp_is_the_records_own_time_not_send_time(
    fake: FakeLoki, make_handler: Any
) -> None:
    handler, log = make_handler(fake.url)
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "at a fixed time", (), None)
    record.created = 1_795_315_536.25
    log.handle(record)
    handler.flush(timeout=5)
    assert fake.requests, "nothing was pushed"
    body = json.loads(fake.requests[0].body)
    assert body["streams"][0]["values"][0][0] == str(1_795_315_536_250_000_000)


def test_exception_traceback_goes_into_the_line(fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    try:
        raise ValueError("bad amount")
    except ValueError:
        log.exception("payment failed", extra={"type": "PAYMENT_FAILED"})
    handler.flush(timeout=5)
    [line] = _lines(fake)
    assert "Traceback" in line["exception"] and "ValueError: bad amount" in line["exception"]


def test_bad_format_arguments_keep_the_event(fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.handlers = [handler]  # pytest's own capture handler would fail the test on this record
    log.info("%d items", "not-a-number")
    handler.flush(timeout=5)
    [line] = _lines(fake)
    assert "formatting failed" in line["message"] and "not-a-number" in line["message"]


def test_unknown_actor_and_custom_level_are_mapped_and_kept(
    fake: FakeLoki, make_handler: Any
) -> None:
    handler, log = make_handler(fake.url)
    log.log(35, "between warning and error", extra={"actor": "robot", "type": "odd type"})
    handler.flush(timeout=5)
    [stored] = fake.stored()
    labels = dict(stored.labels)
    assert (labels["level"], labels["actor"], labels["type"]) == ("WARNING", "SYSTEM", "ODD_TYPE")
    assert json.loads(stored.line)["metadata"] == {"original_level": "35",
                                                   "original_actor": "robot"}


def test_type_cardinality_guard_applies_per_handler(fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url, type_limit=2)
    for i in range(4):
        log.info("x", extra={"type": f"KIND_{i}"})
    handler.flush(timeout=5)
    types = sorted(dict(s.labels)["type"] for s in fake.stored())
    assert types == ["KIND_0", "KIND_1", "OTHER", "OTHER"]
    assert handler.stats()["type_overflow"] == 2


# ----------------------------------------------------------------------------- hot path


def test_emit_returns_while_loki_hangs_and_everything_arrives_after(make_handler: Any) -> None:
    transport = GateTransport()
    handler, log = make_handler("http://loki.invalid:3100", transport=transport)
    for i in range(500):
        log.info("event %d", i)  # would hang here if emit touched the network
    assert transport.bodies == []
    transport.gate.set()
    assert handler.flush(timeout=10)
    sent = sum(len(v) for body in transport.bodies
               for s in json.loads(body)["streams"] for v in [s["values"]])
    assert sent == 500


def test_full_queue_drops_and_counts_without_a_spool(make_handler: Any) -> None:
    transport = GateTransport()
    handler, log = make_handler("http://loki.invalid:3100", transport=transport,
                                queue_max_events=10, batch_max_events=5)
    for i in range(100):
        log.info("event %d", i)
    stats = handler.stats()
    assert stats["dropped"]["queue_full"] >= 80
    transport.gate.set()
    handler.flush(timeout=5)
    stats = handler.stats()
    assert stats["sent"] + stats["dropped"]["queue_full"] == 100


def test_emit_never_raises_and_reports_once(make_handler: Any, capsys: Any) -> None:
    handler, log = make_handler(None)

    def broken(item: Any, size: int) -> None:
        raise RuntimeError("pipeline exploded")

    handler._put = broken  # type: ignore[method-assign]
    for _ in range(3):
        log.error("still fine")
    err = capsys.readouterr().err
    assert err.count("pipeline exploded") == 1


def test_records_from_the_http_stack_never_reenter(fake: FakeLoki, make_handler: Any) -> None:
    handler, _ = make_handler(fake.url)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        logging.getLogger("shipper.internal").warning("own diagnostics")
        logging.getLogger("app").info("real event")
        assert handler.flush(timeout=5)
        handler.flush(timeout=5)  # the worker's own urllib3 debug records were emitted by now
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert [line["message"] for line in _lines(fake)] == ["real event"]


# ----------------------------------------------------------------------------- batching


def test_batches_are_bounded_by_bytes(fake: FakeLoki, make_handler: Any) -> None:
    fake.rate_limit = False
    handler, log = make_handler(fake.url, batch_max_bytes="64KiB", batch_max_wait=5)
    for i in range(2000):
        log.info("%05d %s", i, "x" * 1000)
    assert handler.flush(timeout=20)
    assert fake.count() == 2000
    assert len(fake.requests) >= 2000 * 1000 // (64 * 1024)
    assert max(len(r.body) for r in fake.requests) <= 64 * 1024 + 4096


def test_time_flush_delivers_without_an_explicit_flush(fake: FakeLoki, make_handler: Any) -> None:
    _, log = make_handler(fake.url, batch_max_wait=0.05)
    log.info("one lonely event")
    assert fake.wait_for_count(1, timeout=10) == 1


def test_burst_of_20000_records_against_lokis_default_rate_limit_all_arrive(
    fake: FakeLoki, make_handler: Any
) -> None:
    handler, log = make_handler(fake.url, retry_budget=60)
    for i in range(20_000):
        log.info("burst event %05d with some padding to look like a real log line %s", i,
                 "p" * 150, extra={"type": "BURST", "actor_id": f"u{i % 50}"})
    assert handler.flush(timeout=60)
    assert fake.count() == 20_000
    statuses = {r.status for r in fake.requests}
    assert 204 in statuses
    stats = handler.stats()
    assert stats["sent"] == 20_000 and stats["dropped_total"] == 0


def test_oversize_batch_is_split_and_delivered(fake: FakeLoki, make_handler: Any) -> None:
    fake.script.answers.append(contract.answer("push_oversize_request"))
    handler, log = make_handler(fake.url)
    for i in range(10):
        log.info("event %d", i)
    assert handler.flush(timeout=10)
    assert fake.count() == 10


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("name", ["push_429_rate_limited", "retry_after", "server_error"])
def test_retryable_answers_are_retried_until_delivered(
    fake: FakeLoki, make_handler: Any, name: str
) -> None:
    if name == "retry_after":
        status, body, _ = contract.answer("push_429_rate_limited")
        answer = (status, body, {"Retry-After": "0.2"})
    elif name == "server_error":
        answer = (503, "upstream connect error\n", {})
    else:
        answer = contract.answer(name)
    fake.script.answers += [answer, answer]
    handler, log = make_handler(fake.url)
    log.warning("must arrive")
    assert handler.flush(timeout=10)
    assert fake.count() == 1
    assert [r.status for r in fake.requests] == [answer[0], answer[0], 204]
    assert handler.stats()["retried"] == 2


def test_400_is_never_resent_and_is_counted_with_lokis_reason(
    fake: FakeLoki, make_handler: Any, capsys: Any
) -> None:
    import time

    handler, log = make_handler(fake.url)
    log.info("good one")
    log.info("too old", extra={"event_time": time.time() - 30 * 86400})
    assert handler.flush(timeout=5)
    assert len(fake.requests) == 1
    assert [json.loads(line)["message"] for line in fake.lines()] == ["good one"]
    assert handler.stats()["refused"] == {"too_old": 1}  # one refused request
    assert "timestamp too old" in capsys.readouterr().err


def test_without_spool_events_are_dropped_after_the_retry_budget(make_handler: Any) -> None:
    dead = FakeLoki()
    url = dead.url
    dead.stop()
    handler, log = make_handler(url, retry_budget=0.3, timeout=1)
    log.info("nobody listens")
    assert handler.flush(timeout=10) is False
    assert handler.stats()["dropped"] == {"retry_exhausted": 1}


def test_loki_down_then_back_loses_nothing_with_the_spool(make_handler: Any) -> None:
    fake = FakeLoki()
    port = fake.port
    fake.stop()
    handler, log = make_handler(f"http://127.0.0.1:{port}", spool=True, retry_budget=0.2,
                                timeout=1)
    for i in range(300):
        log.info("event %d", i)
    assert handler.flush(timeout=1) is False  # on disk is safe, but not delivered
    assert handler.stats()["spooled"] == 300
    back = FakeLoki(port=port)
    try:
        log.info("live again")
        assert handler.flush(timeout=30)  # delivered means the spool too
        assert back.count() == 301
    finally:
        back.stop()


# ----------------------------------------------------------------------------- lifecycle


def test_flush_and_close_are_bounded_when_loki_hangs(make_handler: Any) -> None:
    transport = GateTransport()
    handler, log = make_handler("http://loki.invalid:3100", transport=transport,
                                shutdown_timeout=0.3)
    log.info("stuck")
    assert handler.flush(timeout=0.2) is False
    handler.close()  # returns: joined with a deadline
    transport.gate.set()


def test_atexit_drains_what_is_queued(fake: FakeLoki, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import logging
        from shipper import LokiHandler
        handler = LokiHandler({fake.url!r}, service="exiting", spool=False, batch_max_wait=60)
        log = logging.getLogger("exiting")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        for i in range(1000):
            log.info("event %d", i)
        # no flush, no close: the exit hook must send them
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=60)
    assert fake.count() == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_worker(fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.info("parent before fork")
    handler.flush(timeout=5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            log.info("from the child")
            code = 0 if handler.flush(timeout=10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.info("parent after fork")
    handler.flush(timeout=5)
    assert sorted(line["message"] for line in _lines(fake)) == [
        "from the child", "parent after fork", "parent before fork"]


def test_stats_and_summary_line_at_close(fake: FakeLoki, make_handler: Any,
                                         caplog: Any) -> None:
    handler, log = make_handler(fake.url)
    for i in range(5):
        log.info("event %d", i)
    handler.flush(timeout=5)
    stats = handler.stats()
    assert {k: stats[k] for k in ("accepted", "sent", "retried", "spooled")} == {
        "accepted": 5, "sent": 5, "retried": 0, "spooled": 0}
    with caplog.at_level(logging.INFO, logger="shipper.internal"):
        handler.close()
    assert any("accepted=5 sent=5" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("encoding", ["json+gzip", "protobuf"])
def test_other_encodings_deliver_the_same_entries(fake: FakeLoki, make_handler: Any,
                                                  encoding: str) -> None:
    handler, log = make_handler(fake.url, encoding=encoding)
    log.info("encoded é", extra={"actor_id": "u1", "metadata": {"k": [1, 2]}})
    handler.flush(timeout=5)
    [stored] = fake.stored()
    assert json.loads(stored.line) == {"message": "encoded é", "metadata": {"k": [1, 2]}}
    assert dict(stored.metadata)["actor_id"] == "u1"


def test_dictconfig_with_plain_strings(fake: FakeLoki, tmp_path: Path) -> None:
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"loki": {
            "class": "shipper.LokiHandler", "url": fake.url, "service": "dict-app",
            "env": "staging", "batch_max_wait": "50ms", "batch_max_bytes": "512KiB",
            "spool_dir": str(tmp_path / "sp"), "level": "INFO",
        }},
        "loggers": {"dictapp": {"handlers": ["loki"], "level": "DEBUG", "propagate": False}},
    })
    log = logging.getLogger("dictapp")
    handler = log.handlers[0]
    assert isinstance(handler, LokiHandler)
    log.debug("filtered by the handler level")
    log.info("configured by dictConfig")
    handler.flush(timeout=5)
    [stored] = fake.stored()
    assert dict(stored.labels)["service_name"] == "dict-app"
    assert handler.config.batch_max_bytes == 512 * 1024
    log.removeHandler(handler)
    handler.close()


def test_environment_variables_configure_the_handler(
    fake: FakeLoki, monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOKI_URL", fake.url)
    monkeypatch.setenv("LOKI_TENANT", "tenant-1")
    monkeypatch.setenv("LOKI_BEARER_TOKEN", "secret-token")
    monkeypatch.setenv("SHIPPER_SERVICE", "from-env")
    monkeypatch.setenv("SHIPPER_ENV", "prod")
    monkeypatch.setenv("SHIPPER_SPOOL_DIR", str(tmp_path / "sp"))
    handler = LokiHandler(batch_max_wait=0.05)
    log = logging.getLogger("envapp")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("configured from env")
        handler.flush(timeout=5)
    finally:
        log.removeHandler(handler)
        handler.close()
    [stored] = fake.stored()
    assert dict(stored.labels)["service_name"] == "from-env"
    assert dict(stored.labels)["env"] == "prod"
    assert fake.requests[0].headers["x-scope-orgid"] == "tenant-1"
    assert fake.requests[0].headers["authorization"] == "Bearer secret-token"


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given() -> None:
    default = Urllib3Transport()
    custom = Urllib3Transport(ca_bundle="/etc/ssl/certs/ca-certificates.crt")
    assert default._pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    assert custom._pool.connection_pool_kw["ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"
    assert isinstance(default, Transport)


def test_event_from_record_reads_aliases_and_event_time() -> None:
    import datetime as dt

    record = logging.LogRecord("a.b", logging.WARNING, __file__, 1, "m", (), None)
    record.actorId = "u9"
    record.request_id = "req-1"
    record.event_time = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    event = event_from_record(record, service="svc")
    assert (event.actor_id, event.trace_id) == ("u9", "req-1")
    assert event.timestamp_ns == int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()) * 10**9


def test_pipeline_takes_log_events_directly(fake: FakeLoki, tmp_path: Path) -> None:
    """The path other sources (the CLI, a sidecar) use: LogEvents into the same pipeline."""
    import time

    from shipper import LogEvent, ShipperConfig
    from shipper.delivery.pipeline import Pipeline

    pipeline = Pipeline(ShipperConfig(url=fake.url, service="sidecar", spool=False,
                                      batch_max_wait=0.05))
    try:
        pipeline.submit(LogEvent.create(service="web", level="ERROR", message="from a file",
                                        timestamp_ns=time.time_ns(), type="tail",
                                        metadata={"password": "hunter2"}))
        assert pipeline.flush(5)
    finally:
        pipeline.close(2)
    [stored] = fake.stored()
    assert dict(stored.labels) == {"service_name": "web", "level": "ERROR", "actor": "SYSTEM",
                                   "type": "TAIL"}
    assert "hunter2" not in stored.line  # redaction applies to every source


def _record(level: int = logging.INFO, msg: str = "user %s paid", args: tuple[Any, ...] = ("u1",),
            exc: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("conv.app").makeRecord("conv.app", level, __file__, 1, msg, args,
                                                      exc, extra=extra)
    return record


def test_the_handler_builds_the_same_entries_as_the_log_event_path() -> None:
    """The worker turns records into wire entries in one step; the result is the entry the
    LogEvent path (event_from_record -> redaction -> to_entry) makes of the same record."""
    from shipper.config import ShipperConfig
    from shipper.context import LogContext
    from shipper.event import TypeGuard, to_entry
    from shipper.handler import _RecordConverter, _snapshot
    from shipper.redact import Redactor

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    warn = _record(logging.WARNING)
    warn.levelname = "WARN"
    cases: list[tuple[logging.LogRecord, LogContext | None, str | None]] = [
        (_record(), None, None),
        (_record(type="userLogin", actor="staff", actor_id=42, trace_id="t-1",
                 metadata={"ip": "203.0.113.9", "password": "hunter2", "n": float("nan")}),
         None, None),
        (_record(25, metadata=[1, 2], event_time=1_700_000_000.5), None, None),
        (_record(metadata="plain", original_level="notice"),
         LogContext(trace_id="req-9", actor="USER", actor_id="u7", metadata={"path": "/x"}),
         None),
        (_record(logging.ERROR, "token=abc123 for %s", ("card 4111 1111 1111 1111",),
                 exc=exc_info), None, None),
        (_record(logging.CRITICAL, actor="robot", type={"odd": "type"}), None, "given text"),
        (warn, None, None),
        (_record(msg="bad %d", args=("x",)), None, None),
    ]
    config = ShipperConfig(service="conv", env="test", redact_emails=True)
    redactor = Redactor.from_config(config)
    convert = _RecordConverter(config, redactor, TypeGuard(config.type_limit))
    for record, context, exception in cases:
        direct = convert(_snapshot(record, context, exception))
        event = event_from_record(record, service="conv", env="test", context=context,
                                  exception=exception)
        via_event = to_entry(redactor.redact_event(event), type_guard=TypeGuard(100),
                             max_line_bytes=config.max_line_bytes)
        assert direct == via_event, record.__dict__


def test_a_full_queue_parks_events_for_the_worker_which_spools_them(
    make_handler: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """emit does no disk I/O: when the queue is full the worker spools the overflow (here
    while it waits out 429s), and everything is delivered in the end."""
    from tests.support.fakeloki import ScriptedTransport

    transport = ScriptedTransport(["429"] * 4)
    handler, log = make_handler("http://loki.test:3100", spool=True, transport=transport,
                                queue_max_events=50, batch_max_events=20)
    spool = handler.pipeline._spool
    assert spool is not None
    writers: set[int] = set()
    append = spool.append

    def recording_append(records: Any) -> int:
        writers.add(threading.get_ident())
        return append(records)

    monkeypatch.setattr(spool, "append", recording_append)
    for i in range(100):  # the queue holds 50, its overflow 50 more
        log.info("parked %d", i)
    assert handler.flush(timeout=30)
    stats = handler.stats()
    assert stats["spooled"] > 0 and stats["dropped_total"] == 0
    assert writers and threading.get_ident() not in writers
    assert sorted(json.loads(line)["message"] for line in transport.lines()) == sorted(
        f"parked {i}" for i in range(100))


# ----------------------------------------------------------------------------- the queue


def test_the_message_is_formatted_when_logged_not_when_shipped(
    fake: FakeLoki, make_handler: Any
) -> None:
    """As logging.handlers.QueueHandler does: arguments changed after the call do not change
    the event the worker ships later."""
    handler, log = make_handler(fake.url)
    cart = ["apple"]
    log.info("cart holds %s", cart)
    cart.append("pear")
    assert handler.flush(timeout=10)
    assert [json.loads(s.line)["message"] for s in fake.stored()] == ["cart holds ['apple']"]


def test_the_queue_keeps_no_log_record_alive(make_handler: Any) -> None:
    """emit queues a snapshot of strings and numbers, not the record: the garbage collector
    does not walk queued records, and their frames and arguments are freed at once."""
    import weakref

    transport = GateTransport()
    handler, log = make_handler("http://loki.test:3100", transport=transport)
    try:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 1, "boom %s", ("x",),
                                None, extra={"actor_id": "u1", "metadata": {"k": 1}})
        ref = weakref.ref(record)
        log.handle(record)
        del record
        assert ref() is None
        assert len(handler.pipeline._batcher) == 1
    finally:
        transport.gate.set()
    assert handler.flush(timeout=10)
    assert handler.stats()["sent"] == 1


def test_queued_events_take_no_more_memory_than_the_queue_accounts_for(
    make_handler: Any,
) -> None:
    """The queue bounds memory by the bytes it accounts per event (SNAPSHOT_OVERHEAD plus the
    message): what 20,000 queued events really take, measured, stays within that."""
    import gc
    import tracemalloc

    transport = GateTransport()
    handler, log = make_handler("http://loki.test:3100", transport=transport,
                                batch_max_events=10_000_000, batch_max_wait=3600,
                                queue_max_events=50_000)
    batcher = handler.pipeline._batcher
    batcher.batch_bytes = 1 << 40  # nothing is due: everything stays queued
    try:
        log.info("warm-up %s", 0, extra={"actor_id": "user_0"})
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        accounted_before = batcher._bytes
        for i in range(20_000):
            log.info("User %s logged in from %s", i, "203.0.113.9",
                     extra={"type": "LOGIN", "actor": "USER", "actor_id": f"user_{i}"})
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert len(batcher) == 20_001
        assert used <= batcher._bytes - accounted_before
    finally:
        transport.gate.set()

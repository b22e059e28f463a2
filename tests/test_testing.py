"""shipper.testing: the capture app developers use in their own tests."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator

import pytest

from shipper import Actor, Level, LokiHandler, ShipperConfig, SystemLog
from shipper.context import log_context
from shipper.testing import capture_logs
from tests.support.fakeloki import FakeLoki


@pytest.fixture()
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server


def test_entries_are_what_the_handler_sends(fake: FakeLoki) -> None:
    name = f"shop.{uuid.uuid4().hex[:8]}"
    log = logging.getLogger(name)
    log.propagate = False
    handler = LokiHandler(fake.url, service="checkout", env="prod", spool=False,
                          batch_max_wait=0.05)
    log.addHandler(handler)
    try:
        with capture_logs(service="checkout", env="prod", logger=name) as logs:
            log.info("User %s logged in", "u1", extra={
                "type": "userLogin", "actor": "user", "actor_id": "u1",
                "metadata": {"ip": "203.0.113.9", "password": "hunter2"}})
            with log_context(trace_id="req-1"):
                SystemLog(log).critical("DATA_CORRUPTION", Actor.SYSTEM, "Bad rows", None,
                                        {"table": "payments"})
            try:
                {}["missing"]
            except KeyError:
                log.exception("lookup failed")
        assert handler.flush(timeout=10)
    finally:
        log.removeHandler(handler)
        handler.close()
    sent = sorted(fake.stored(), key=lambda s: s.ts)
    assert [(dict(s.labels), dict(s.metadata), s.line, s.ts) for s in sent] == [
        (dict(e.labels), dict(e.structured_metadata), e.entry.line, e.timestamp_ns)
        for e in sorted(logs.entries, key=lambda e: e.timestamp_ns)]


def test_events_entries_and_lookups_read_without_lokis_format() -> None:
    with capture_logs(service="checkout") as logs:
        log = logging.getLogger("shop.orders")
        log.info("Order placed", extra={"type": "orderPlaced", "actor": "USER",
                                        "actor_id": "u1",
                                        "metadata": {"card": "4111 1111 1111 1111", "n": 2}})
        log.warning("Stock low", extra={"type": "STOCK_LOW"})
        log.warning("Stock low again", extra={"type": "STOCK_LOW"})
    event = logs.one("ORDER_PLACED")
    assert (event.level, event.actor, event.actor_id) == (Level.INFO, Actor.USER, "u1")
    assert event.metadata["card"] == "4111 1111 1111 1111"  # events are before redaction
    assert [e.message for e in logs.of_type("stockLow")] == ["Stock low", "Stock low again"]
    assert len(logs.from_logger("shop.orders")) == 3
    shipped = logs.entry("orderPlaced")
    assert shipped.labels == {"service_name": "checkout", "level": "INFO", "actor": "USER",
                              "type": "ORDER_PLACED"}
    assert shipped.structured_metadata == {"actor_id": "u1", "logger": "shop.orders"}
    assert (shipped.type, shipped.level, shipped.message) == ("ORDER_PLACED", "INFO",
                                                              "Order placed")
    assert shipped.metadata["n"] == 2
    assert "4111 1111 1111 1111" not in shipped.entry.line
    assert shipped.exception is None
    assert json.loads(shipped.entry.line) == shipped.line


def test_one_says_what_was_captured_when_it_is_not_one() -> None:
    with capture_logs() as logs:
        logging.getLogger("a").info("x", extra={"type": "SEEN"})
        logging.getLogger("a").info("x", extra={"type": "TWICE"})
        logging.getLogger("a").info("x", extra={"type": "TWICE"})
    with pytest.raises(AssertionError, match=r"type MISSING, found 0 \(types captured: "
                                             r"SEEN, TWICE\)"):
        logs.one("missing")
    with pytest.raises(AssertionError, match="found 2"):
        logs.entry("TWICE")
    logs.clear()
    assert logs.events == []


def test_the_request_context_is_the_emitting_threads() -> None:
    def worker() -> None:
        with log_context(trace_id="req-7", actor="ADMIN", actor_id="a1"):
            logging.getLogger("jobs").info("in a request", extra={"type": "INSIDE"})

    with capture_logs() as logs:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        logging.getLogger("jobs").info("outside", extra={"type": "OUTSIDE"})
    inside = logs.one("INSIDE")
    assert (inside.trace_id, inside.actor, inside.actor_id) == ("req-7", Actor.ADMIN, "a1")
    assert logs.one("OUTSIDE").trace_id is None


def test_the_capture_leaves_the_logger_as_it_found_it() -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with capture_logs(level=logging.WARNING) as logs:
        logging.getLogger("app").info("below the level")
        logging.getLogger("app").warning("kept")
        logging.getLogger("urllib3.connectionpool").warning("the handler's own HTTP stack")
    assert [e.message for e in logs.events] == ["kept"]
    assert (root.level, root.handlers) == (level, handlers)
    logging.getLogger("app").warning("after the block")
    assert len(logs.events) == 1


def test_the_apps_config_gives_its_redaction_and_ignored_loggers() -> None:
    config = ShipperConfig(service="shop", env="staging", redact_keys=("coupon",),
                           ignore_loggers=("noisy",))
    with capture_logs(config=config) as logs:
        logging.getLogger("noisy.lib").warning("never shipped")
        logging.getLogger("app").info("Applied", extra={"type": "COUPON",
                                                        "metadata": {"coupon": "SAVE50"}})
    shipped = logs.entry("COUPON")
    assert shipped.labels["service_name"] == "shop" and shipped.labels["env"] == "staging"
    assert shipped.metadata == {"coupon": "[REDACTED]"}
    assert len(logs.events) == 1

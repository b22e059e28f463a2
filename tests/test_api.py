"""SystemLog and the module-level log_* helpers: what each call becomes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import shipper
from shipper import Actor, Level, SystemLog
from shipper.context import log_context
from shipper.event import LogEvent, to_entry
from shipper.testing import LogCapture


@pytest.fixture()
def capture() -> Iterator[LogCapture]:
    handler = LogCapture()
    loggers = [logging.getLogger("seed"), logging.getLogger("systemlog")]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False
    yield handler
    for log in loggers:
        log.removeHandler(handler)


def _line(event: LogEvent) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(to_entry(event).line)
    return body


def test_level_methods_map_type_actor_id_and_metadata(capture: LogCapture) -> None:
    slog = SystemLog("seed")
    slog.info("USER_PROFILE_UPDATE", Actor.USER, "User updated their profile", "user_42",
              {"fields": ["bio"]})
    slog.critical("DATA_CORRUPTION", Actor.SYSTEM, "Integrity check failed", None,
                  {"table": "payments"})
    info, critical = capture.events
    assert (info.level, info.type, info.actor, info.actor_id) == (
        Level.INFO, "USER_PROFILE_UPDATE", Actor.USER, "user_42")
    assert _line(info) == {"message": "User updated their profile",
                           "metadata": {"fields": ["bio"]}}
    assert (critical.level, critical.type, critical.actor, critical.actor_id) == (
        Level.CRITICAL, "DATA_CORRUPTION", Actor.SYSTEM, None)


def test_auth_failure_is_a_warning_and_success_is_info(capture: LogCapture) -> None:
    slog = SystemLog("seed")
    slog.auth("login", "user_1", True, {"ip": "203.0.113.9"})
    slog.auth("login", "user_1", False, {"ip": "203.0.113.9"})
    ok, failed = capture.events
    assert (ok.level, ok.type, ok.actor) == (Level.INFO, "AUTH_LOGIN", Actor.USER)
    assert failed.level is Level.WARNING
    assert _line(failed)["metadata"] == {"ip": "203.0.113.9", "success": False}
    assert "failed" in failed.message


def test_actor_helpers_set_their_actor(capture: LogCapture) -> None:
    slog = SystemLog("seed")
    slog.user_action("BOOKING_CREATED", "u1", "Booked")
    slog.creator_action("LISTING_PUBLISHED", "c1", "Published")
    slog.admin_action("USER_BANNED", "a1", "Banned u9", Level.WARNING, {"target": "u9"})
    slog.system("CRON_CLEANUP", "Cleaned", Level.DEBUG)
    actors = [(e.actor, e.actor_id, e.level) for e in capture.events]
    assert actors == [(Actor.USER, "u1", Level.INFO), (Actor.CREATOR, "c1", Level.INFO),
                      (Actor.ADMIN, "a1", Level.WARNING), (Actor.SYSTEM, None, Level.DEBUG)]


def test_webhook_failure_is_an_error_with_provider(capture: LogCapture) -> None:
    slog = SystemLog("seed")
    slog.webhook("stripe", "payment_intent.succeeded", True)
    slog.webhook("stripe", "payout.failed", False, {"id": "evt_1"})
    ok, failed = capture.events
    assert (ok.type, ok.level) == ("WEBHOOK_PAYMENT_INTENT_SUCCEEDED", Level.INFO)
    assert (failed.type, failed.level) == ("WEBHOOK_PAYOUT_FAILED", Level.ERROR)
    assert _line(failed)["metadata"] == {"id": "evt_1", "provider": "stripe",
                                         "event_type": "payout.failed", "success": False}


def test_api_error_keeps_exception_type_message_and_traceback(capture: LogCapture) -> None:
    slog = SystemLog("seed")
    try:
        {}["missing"]
    except KeyError as exc:
        slog.api_error("/api/bookings", exc, Actor.USER, "u7", {"method": "POST"})
    [event] = capture.events
    assert (event.type, event.level, event.actor_id) == ("API_ERROR", Level.ERROR, "u7")
    line = _line(event)
    assert line["metadata"] == {"method": "POST", "endpoint": "/api/bookings",
                                "error_type": "KeyError"}
    assert "Traceback" in line["exception"] and "KeyError: 'missing'" in line["exception"]


def test_module_level_helpers_use_the_default_logger(capture: LogCapture) -> None:
    shipper.log_info("APP_STARTED", "system", "Started")
    shipper.log_warning("DISK_LOW", Actor.SYSTEM, "Disk at 91%")
    shipper.log_error("JOB_FAILED", Actor.SYSTEM, "Job failed")
    shipper.log_critical("DATA_CORRUPTION", Actor.SYSTEM, "Bad rows")
    shipper.log_auth("logout", "u1", True)
    shipper.log_user_action("PROFILE_UPDATE", "u1", "Updated")
    shipper.log_creator_action("PAYOUT_REQUESTED", "c1", "Payout")
    shipper.log_admin_action("REFUND_ISSUED", "a1", "Refund")
    shipper.log_system("CACHE_WARM", "Warm")
    shipper.log_webhook("stripe", "charge.refunded", True)
    shipper.log_api_error("/x", "timeout talking to bank")
    assert [e.type for e in capture.events] == [
        "APP_STARTED", "DISK_LOW", "JOB_FAILED", "DATA_CORRUPTION", "AUTH_LOGOUT",
        "PROFILE_UPDATE", "PAYOUT_REQUESTED", "REFUND_ISSUED", "CACHE_WARM",
        "WEBHOOK_CHARGE_REFUNDED", "API_ERROR"]
    assert {e.logger for e in capture.events} == {"systemlog"}


def test_unknown_level_name_is_kept_in_metadata(capture: LogCapture) -> None:
    SystemLog("seed").log("shout", "X", Actor.USER, "loud")
    [event] = capture.events
    assert event.level is Level.INFO
    assert _line(event)["metadata"] == {"original_level": "shout"}


def test_domain_helpers_in_a_few_lines(capture: LogCapture) -> None:
    class AppLog(SystemLog):
        def payment(self, payment_id: str, user_id: str, amount: int, ok: bool) -> None:
            self.user_action("PAYMENT_" + ("SUCCEEDED" if ok else "FAILED"), user_id,
                             f"Payment {payment_id}", {"payment_id": payment_id,
                                                       "amount": amount},
                             level=Level.INFO if ok else Level.ERROR)

    AppLog("seed").payment("pay_1", "u1", 4200, ok=False)
    [event] = capture.events
    assert (event.type, event.level, event.actor) == ("PAYMENT_FAILED", Level.ERROR, Actor.USER)


def test_request_context_fills_trace_and_actor_but_explicit_fields_win(
    capture: LogCapture
) -> None:
    slog = SystemLog("seed")
    with log_context(trace_id="req-1", actor="USER", actor_id="u1"):
        slog.system("INSIDE", "from a request")
        slog.admin_action("OVERRIDE", "a9", "explicit actor wins")
    slog.system("OUTSIDE", "no request")
    inside, override, outside = capture.events
    assert (inside.trace_id, inside.actor, inside.actor_id) == ("req-1", Actor.SYSTEM, "u1")
    assert (override.trace_id, override.actor, override.actor_id) == (
        "req-1", Actor.ADMIN, "a9")
    assert outside.trace_id is None


def test_source_location_points_at_the_caller(capture: LogCapture) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("seed").addHandler(keep)
    try:
        SystemLog("seed").info("X", Actor.USER, "where")
    finally:
        logging.getLogger("seed").removeHandler(keep)
    assert records[0].funcName == "test_source_location_points_at_the_caller"


def test_helpers_never_raise_for_metadata_or_errors_they_cannot_read(
        capture: LogCapture) -> None:
    from tests.support.hostile import BadBoth, StrRaisesError

    slog = SystemLog("seed")
    slog.webhook("stripe", "charge", False, metadata=["not", "a", "mapping"])  # type: ignore[arg-type]
    slog.auth("login", "u1", True, metadata=BadBoth())  # type: ignore[arg-type]
    slog.api_error("/pay", StrRaisesError())
    slog.info(BadBoth(), BadBoth(), "odd type and actor")  # type: ignore[arg-type]
    webhook, auth, api_error, info = (_line(e) for e in capture.events)
    assert webhook["metadata"] == {"value": ["not", "a", "mapping"], "provider": "stripe",
                                   "event_type": "charge", "success": False}
    assert auth["metadata"]["success"] is True and "value" in auth["metadata"]
    assert api_error["message"] == "/pay: StrRaisesError()"
    assert api_error["metadata"]["error_type"] == "StrRaisesError"
    unprintable = "<unprintable BadBoth: str() and repr() raised RuntimeError>"
    assert info["metadata"] == {"original_actor": unprintable}
    assert capture.events[3].type == "UNPRINTABLE_BAD_BOTH_STR_AND_REPR_RAISED_RUNTIME_ERROR"

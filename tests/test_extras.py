"""Every extra field of a record arrives: in the line's metadata under its own name, after the
record's own metadata keys, redacted and bounded like metadata, whatever it holds."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from shipper import log_context
from shipper.config import ShipperConfig
from shipper.handler import LokiHandler, event_from_record
from tests.support import hostile
from tests.support.fakeloki import FakeLoki
from tests.test_handler import fake, make_handler

__all__ = ["fake", "make_handler"]  # the fixtures of tests/test_handler.py, used here too


def _events(fake: FakeLoki) -> list[tuple[dict[str, str], dict[str, Any], dict[str, str]]]:
    """(labels, line, structured metadata) of every stored entry, in time order."""
    return [(dict(s.labels), json.loads(s.line), dict(s.metadata)) for s in fake.stored()]


def test_extra_fields_arrive_in_the_lines_metadata_under_their_own_names(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.info("order placed", extra={"order_id": 42, "cart_size": 3, "paid": True,
                                    "items": ["a", "b"], "type": "ORDER_PLACED"})
    assert handler.flush(timeout=10)
    [(labels, line, _)] = _events(fake)
    assert labels["type"] == "ORDER_PLACED"
    assert line == {"message": "order placed",
                    "metadata": {"order_id": 42, "cart_size": 3, "paid": True,
                                 "items": ["a", "b"]}}


def test_metadata_keys_win_over_extras_which_win_over_tags_and_the_request_context(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    with log_context(metadata={"a": "context", "b": "context", "c": "context",
                               "d": "context"}):
        log.info("precedence", extra={"metadata": {"a": "metadata"}, "a": "extra",
                                      "b": "extra", "tags": {"a": "tag", "b": "tag",
                                                             "c": "tag"}})
    assert handler.flush(timeout=10)
    [(_, line, _)] = _events(fake)
    assert line["metadata"] == {"a": "metadata", "b": "extra", "c": "tag", "d": "context"}


def test_logging_attributes_and_what_formatters_add_are_not_extras(
        fake: FakeLoki, make_handler: Any) -> None:
    """Another handler's formatter sets ``message`` and ``asctime`` on the record first; a
    structlog-style private attribute (``_name``) is not shipped either."""
    handler, log = make_handler(fake.url)
    stream = logging.StreamHandler(io.StringIO())
    stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.handlers.insert(0, stream)
    log.warning("plain %s", "args", extra={"_private": 1}, stack_info=True)
    assert handler.flush(timeout=10)
    [(_, line, _)] = _events(fake)
    assert line["metadata"] == {}
    assert line["message"] == "plain args"


def test_the_setting_turns_extra_fields_off(fake: FakeLoki, make_handler: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    handler, log = make_handler(fake.url, extra_fields=False)
    log.info("without", extra={"order_id": 42, "tags": {"type": "LOGIN"},
                               "metadata": {"kept": 1}})
    assert handler.flush(timeout=10)
    [(labels, line, _)] = _events(fake)
    assert line["metadata"] == {"kept": 1} and labels["type"] == "LOG"
    monkeypatch.setenv("SHIPPER_EXTRA_FIELDS", "false")
    assert ShipperConfig.load(environ={"SHIPPER_EXTRA_FIELDS": "false"}).extra_fields is False
    assert ShipperConfig.load(environ={}).extra_fields is True


def test_extra_fields_are_redacted_like_metadata(fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.info("login", extra={"password": "hunter2", "note": "token=abc123def456",
                             "tags": {"api_key": "k-123456789"}})
    assert handler.flush(timeout=10)
    [(_, line, _)] = _events(fake)
    assert "hunter2" not in json.dumps(line) and "abc123def456" not in json.dumps(line)
    assert "k-123456789" not in json.dumps(line)
    assert set(line["metadata"]) == {"password", "note", "api_key"}


def test_python_logging_loki_tags_become_metadata_and_the_contract_labels(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    log.error("Something happened", extra={"tags": {"service": "my-service"}})
    log.info("tagged", extra={"tags": {"type": "LOGIN", "actor": "USER", "actor_id": "u1",
                                       "region": "eu"}})
    log.info("own fields win", extra={"type": "SIGNUP", "tags": {"type": "LOGIN"}})
    log.info("not a mapping", extra={"tags": ["a", "b"], "loki_metadata": {"op": "update"}})
    assert handler.flush(timeout=10)
    by_message = {line["message"]: (labels, line, meta) for labels, line, meta in _events(fake)}
    labels, line, _ = by_message["Something happened"]
    assert line["metadata"] == {"service": "my-service"}
    assert labels["service_name"] == "checkout"  # the handler's: one service per handler
    labels, line, meta = by_message["tagged"]
    assert (labels["type"], labels["actor"], meta["actor_id"]) == ("LOGIN", "USER", "u1")
    assert line["metadata"] == {"region": "eu"}
    assert by_message["own fields win"][0]["type"] == "SIGNUP"
    assert by_message["not a mapping"][1]["metadata"] == {"tags": ["a", "b"], "op": "update"}


@pytest.mark.parametrize(("name", "value", "seen"), [
    ("deep", hostile.nested(2_000), "<nested too deep>"),
    ("cycle", hostile.cycle(), "<cycle>"),
    ("unprintable", hostile.BadBoth(), "<unrepresentable BadBoth"),
    ("huge", "x" * 100_000, "[truncated by shipper"),
    ("huge_int", hostile.HUGE_INT, "too long to write"),
], ids=["deep", "cycle", "unprintable", "huge", "huge_int"])
def test_hostile_extras_never_cost_the_event_or_its_neighbours(
        fake: FakeLoki, make_handler: Any, name: str, value: Any, seen: str) -> None:
    handler, log = make_handler(fake.url, max_line_bytes=8_192)
    log.info("before", extra={"order_id": 1})
    log.info("hostile", extra={name: value, "order_id": 2})
    log.info("after", extra={"order_id": 3})
    assert handler.flush(timeout=10)
    stats = handler.stats()
    assert stats["dropped"] == {} and stats["refused"] == {}, stats
    events = {line["message"].split("...")[0] if "message" in line else "": (line, raw)
              for (_, line, _), raw in zip(_events(fake), fake.lines(), strict=True)}
    assert events["before"][0]["metadata"] == {"order_id": 1}
    assert events["after"][0]["metadata"] == {"order_id": 3}
    line, raw = next(v for k, v in events.items() if k.startswith("hostile"))
    assert seen in raw and len(raw.encode()) <= 8_192
    if name != "huge":  # the cut line holds the metadata as text, marked
        assert line["metadata"]["order_id"] == 2


class _HashOnce(hostile.BadBoth):
    """A key that could be put in a dict once: its hash and == raise from then on."""

    hashed = False

    def __hash__(self) -> int:
        if self.hashed:
            raise RuntimeError("hash refused")
        self.hashed = True
        return 7

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq refused")


def test_extras_whose_keys_are_not_text_or_cannot_be_hashed_again_arrive(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "odd keys", (), None,
                            extra={7: "seven", ("k", 1): "tuple", "ok": 1})
    handler.handle(record)
    odd = log.makeRecord(log.name, logging.INFO, __file__, 1, "bad key", (), None)
    odd.__dict__[_HashOnce()] = "x"
    handler.handle(odd)
    assert handler.flush(timeout=10)
    events = {line["message"]: line for _, line, _ in _events(fake)}
    assert events["odd keys"]["metadata"] == {"7": "seven", "('k', 1)": "tuple", "ok": 1}
    assert len(events["bad key"]["metadata"]) == 1
    assert handler.stats()["dropped"] == {}


def test_the_usual_record_without_extras_keeps_the_fast_path() -> None:
    """A record with no extra attribute but the event fields is queued without any lookup of
    extras (the worker's fast path)."""
    from shipper.handler import _NO_RARE, _snapshot

    log = logging.getLogger("fast")
    plain = log.makeRecord("fast", logging.INFO, __file__, 1, "m %s", (1,), None,
                           extra={"type": "LOGIN", "actor": "USER", "actor_id": "u"})
    assert _snapshot(plain, None, None)[13] is _NO_RARE
    extra = log.makeRecord("fast", logging.INFO, __file__, 1, "m", (), None,
                           extra={"type": "LOGIN", "order_id": 1})
    assert _snapshot(extra, None, None)[13][-1] == {"order_id": 1}


def test_event_from_record_carries_the_extras_as_the_handler_does() -> None:
    record = logging.getLogger("conv").makeRecord(
        "conv", logging.INFO, __file__, 1, "m", (), None,
        extra={"order_id": 42, "metadata": {"order_id": 1}, "tags": {"type": "LOGIN"}})
    event = event_from_record(record, service="s")
    assert (dict(event.metadata), event.type) == ({"order_id": 1}, "LOGIN")
    assert dict(event_from_record(record, service="s", extras=False).metadata) == {
        "order_id": 1}


def test_a_handler_made_from_the_environment_reads_the_setting(
        fake: FakeLoki, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("SHIPPER_EXTRA_FIELDS", "off")
    handler = LokiHandler(fake.url, service="env", spool=False)
    try:
        assert handler.config.extra_fields is False
    finally:
        handler.close()


def test_extras_named_like_labels_or_structured_metadata_forge_neither(
        fake: FakeLoki, make_handler: Any) -> None:
    handler, log = make_handler(fake.url)
    forged = {"service_name": "billing", "env": "prod", "level": "CRITICAL",
              "logger": "audit", "original_time": "2000-01-01T00:00:00Z"}
    log.info("forged", extra={**forged, "tags": {"service_name": "billing", "level": "CRITICAL"}})
    assert handler.flush(timeout=10)
    [(labels, line, meta)] = _events(fake)
    assert labels == {"service_name": "checkout", "env": "test", "level": "INFO",
                      "actor": "SYSTEM", "type": "LOG"}
    assert meta == {"logger": log.name}
    assert line["metadata"] == forged


def test_capture_logs_shows_the_extra_fields_that_would_be_shipped() -> None:
    from shipper.testing import capture_logs

    with capture_logs() as captured:
        logging.getLogger("app.capture").warning("order placed", extra={"order_id": 42})
    [event] = captured.events
    assert dict(event.metadata) == {"order_id": 42}

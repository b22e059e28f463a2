"""structlog, configured both ways its docs show, into the handler: ``render_to_log_kwargs``
(the fields arrive as extras) and ``ProcessorFormatter`` on the handler (the event dict is
read: its fields become metadata and event fields, its ``event`` the message)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper import LokiHandler
from tests.support.fakeloki import FakeLoki
from tests.test_handler import fake

__all__ = ["fake"]  # the fixture of tests/test_handler.py, used here too

structlog = pytest.importorskip("structlog")


@pytest.fixture()
def shipped(fake: FakeLoki, tmp_path: Path) -> Iterator[tuple[LokiHandler, str]]:
    """A handler on a fresh stdlib logger (its name returned); structlog's configuration is
    put back as it was after the test."""
    handler = LokiHandler(fake.url, service="orders", spool=False, batch_max_wait=0.05,
                          spool_dir=str(tmp_path))
    name = f"test.structlog.{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler, name
    finally:
        logger.removeHandler(handler)
        handler.close()
        structlog.reset_defaults()


def _stored(fake: FakeLoki) -> dict[str, tuple[dict[str, str], dict[str, Any], dict[str, str]]]:
    """Each stored entry by its message: (labels, line, structured metadata)."""
    out = {}
    for stored in fake.stored():
        line = json.loads(stored.line)
        out[line["message"]] = (dict(stored.labels), line, dict(stored.metadata))
    return out


def _shared_processors() -> list[Any]:
    return [
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def test_render_to_log_kwargs_fields_arrive_as_metadata_and_event_fields(
        fake: FakeLoki, shipped: tuple[LokiHandler, str]) -> None:
    handler, name = shipped
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_shared_processors(),
                    structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    log = structlog.get_logger(name).bind(order_id=42)
    log.info("order placed", cart_size=3, type="ORDER_PLACED", actor="user",
             actor_id="user_42", trace_id="t-1")
    try:
        raise ValueError("card declined")
    except ValueError:
        log.exception("payment failed", amount=9.5)
    assert handler.flush(timeout=10)
    events = _stored(fake)
    labels, line, meta = events["order placed"]
    assert (labels["type"], labels["actor"], labels["level"]) == ("ORDER_PLACED", "USER", "INFO")
    assert meta == {"actor_id": "user_42", "trace_id": "t-1", "logger": name}
    assert line["metadata"] == {"order_id": 42, "cart_size": 3}
    labels, line, _ = events["payment failed"]
    assert labels["level"] == "ERROR"
    assert line["metadata"] == {"amount": 9.5, "order_id": 42}
    assert "ValueError: card declined" in line["exception"]  # format_exc_info's text


def test_processor_formatter_event_dict_becomes_the_message_metadata_and_fields(
        fake: FakeLoki, shipped: tuple[LokiHandler, str]) -> None:
    handler, name = shipped
    structlog.configure(
        processors=[*_shared_processors(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
    ))
    log = structlog.get_logger(name).bind(order_id=42)
    log.warning("order placed", cart_size=3, type="order_placed", actor="USER",
                actor_id="user_42", metadata={"coupon": "SPRING"})
    log.info("user %s paid", "u1", password="hunter2")
    try:
        raise KeyError("sku-9")
    except KeyError:
        log.exception("stock lookup failed")
    logging.getLogger(name).info("foreign %s", "record", extra={"shard": 2})
    assert handler.flush(timeout=10)
    events = _stored(fake)
    labels, line, meta = events["order placed"]
    assert (labels["type"], labels["actor"], labels["level"]) == ("ORDER_PLACED", "USER",
                                                                  "WARNING")
    assert meta == {"actor_id": "user_42", "logger": name}
    assert line["metadata"] == {"coupon": "SPRING", "order_id": 42, "cart_size": 3}
    _, line, _ = events["user u1 paid"]  # positional arguments formatted, secrets masked
    assert line["metadata"] == {"order_id": 42, "password": "[REDACTED]"}
    labels, line, _ = events["stock lookup failed"]
    assert labels["level"] == "ERROR" and "KeyError: 'sku-9'" in line["exception"]
    assert "exception" not in line["metadata"]
    _, line, _ = events["foreign record"]  # a plain logging record: as always
    assert line["metadata"] == {"shard": 2}
    assert len(events) == 4


def test_processor_formatter_runs_the_formatters_own_processors_but_the_renderer(
        fake: FakeLoki, shipped: tuple[LokiHandler, str]) -> None:
    handler, name = shipped

    def add_region(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["region"] = "eu"
        return event_dict

    def broken(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("processor failed")

    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[add_region, structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=False)])
    handler.setFormatter(formatter)
    structlog.get_logger(name).info("with region", n=1)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[broken, structlog.processors.JSONRenderer()]))
    structlog.get_logger(name).info("processor broke", n=2)
    handler.setFormatter(None)  # no formatter: the event dict as structlog made it
    structlog.get_logger(name).info("no formatter", n=3)
    assert handler.flush(timeout=10)
    events = _stored(fake)
    assert events["with region"][1]["metadata"] == {"region": "eu", "n": 1}
    assert events["processor broke"][1]["metadata"] == {"n": 2}
    assert events["no formatter"][1]["metadata"] == {"n": 3}


def test_hostile_event_dicts_never_cost_the_event(
        fake: FakeLoki, shipped: tuple[LokiHandler, str]) -> None:
    from tests.support import hostile

    handler, name = shipped
    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    log = structlog.get_logger(name)
    # (values whose repr works: pytest's own handler writes the event dict too)
    log.info(hostile.BadStr(), cycle=hostile.cycle(), deep=hostile.nested(500))
    log.info("odd exc_info", exc_info=("not", "an", "exception"), stack=7)
    log.info("after")
    assert handler.flush(timeout=10)
    assert handler.stats()["dropped"] == {}
    lines = [json.loads(line) for line in fake.lines()]
    assert [line["message"] for line in lines][1:] == ["odd exc_info", "after"]
    assert lines[0]["message"] == "<BadStr>"
    assert lines[0]["metadata"]["cycle"]["self"] == "<cycle>"
    assert lines[1]["metadata"]["stack"] == 7


@pytest.mark.parametrize("way", ["render_to_log_kwargs", "ProcessorFormatter"])
def test_a_structlog_event_in_an_opentelemetry_span_carries_its_ids(
        fake: FakeLoki, shipped: tuple[LokiHandler, str], way: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    handler, name = shipped
    last = (structlog.stdlib.render_to_log_kwargs if way == "render_to_log_kwargs"
            else structlog.stdlib.ProcessorFormatter.wrap_for_formatter)
    structlog.configure(processors=[*_shared_processors(), last],
                        logger_factory=structlog.stdlib.LoggerFactory(),
                        wrapper_class=structlog.stdlib.BoundLogger)
    if way == "ProcessorFormatter":
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.JSONRenderer()]))
    tracer = TracerProvider().get_tracer("tests.structlog")
    with tracer.start_as_current_span("checkout") as span:
        structlog.get_logger(name).info("in a span", order_id=7)
        structlog.get_logger(name).info("own trace id", trace_id="t-9")
    assert handler.flush(timeout=10)
    events = _stored(fake)
    context = span.get_span_context()
    _, line, meta = events["in a span"]
    assert meta["trace_id"] == format(context.trace_id, "032x")
    assert meta["span_id"] == format(context.span_id, "016x")
    assert line["metadata"]["order_id"] == 7
    assert events["own trace id"][2]["trace_id"] == "t-9"
    assert "span_id" not in events["own trace id"][2]

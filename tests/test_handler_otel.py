"""OpenTelemetry context on the entries: the active span of the real SDK (a real
``TracerProvider``), the ``otelTraceID``/``otelSpanID`` attributes of the real
opentelemetry-instrumentation-logging, and what a record or the request context gives itself."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from shipper.context import log_context
from shipper.handler import LokiHandler
from shipper.testing import LogCapture
from tests.support.fakeloki import FakeLoki

PROVIDER = TracerProvider()
TRACER = PROVIDER.get_tracer("tests.otel")


def _hex(span: trace.Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@pytest.fixture()
def shipped(tmp_path: Path) -> Iterator[tuple[logging.Logger, Any]]:
    """A logger into a LokiHandler on a fake Loki, and a function that flushes and returns
    what Loki stored: (structured metadata, message) per entry."""
    with FakeLoki() as fake:
        handler = LokiHandler(fake.url, service="otel-test", spool=False, batch_max_wait=0.05,
                              spool_dir=str(tmp_path / "spool"))
        logger = logging.getLogger(f"test.otel.{uuid.uuid4().hex[:8]}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)

        def stored() -> list[tuple[dict[str, str], str]]:
            assert handler.flush(timeout=10)
            return [(dict(s.metadata), json.loads(s.line)["message"]) for s in fake.stored()]

        try:
            yield logger, stored
        finally:
            logger.removeHandler(handler)
            handler.close()


def test_span_trace_and_span_ids_reach_the_entry_as_structured_metadata(
    shipped: tuple[logging.Logger, Any],
) -> None:
    log, stored = shipped
    log.info("outside any span")
    with TRACER.start_as_current_span("checkout") as span:
        log.info("inside the span")
        with TRACER.start_as_current_span("charge") as child:
            log.warning("inside the child span")
    trace_id, span_id = _hex(span)
    child_trace, child_span = _hex(child)
    by_message = {message: meta for meta, message in stored()}
    assert "trace_id" not in by_message["outside any span"]
    assert "span_id" not in by_message["outside any span"]
    assert by_message["inside the span"]["trace_id"] == trace_id
    assert by_message["inside the span"]["span_id"] == span_id
    assert by_message["inside the child span"]["trace_id"] == child_trace == trace_id
    assert by_message["inside the child span"]["span_id"] == child_span != span_id


def test_the_span_is_the_emitting_threads_not_the_workers(
    shipped: tuple[logging.Logger, Any],
) -> None:
    log, stored = shipped
    seen: dict[str, tuple[str, str]] = {}

    def work(name: str) -> None:
        with TRACER.start_as_current_span(name) as span:
            seen[name] = _hex(span)
            log.info(name)

    threads = [threading.Thread(target=work, args=(f"job-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.info("after")  # no span on this thread
    for meta, message in stored():
        if message == "after":
            assert "trace_id" not in meta
        else:
            assert (meta["trace_id"], meta["span_id"]) == seen[message]


def test_each_asyncio_task_carries_its_own_span(shipped: tuple[logging.Logger, Any]) -> None:
    log, stored = shipped
    seen: dict[str, tuple[str, str]] = {}

    async def handle(name: str) -> None:
        with TRACER.start_as_current_span(name) as span:
            seen[name] = _hex(span)
            for step in range(3):
                log.info(name, extra={"metadata": {"step": step}})
                await asyncio.sleep(0)  # the other tasks log in between

    async def main() -> None:
        await asyncio.gather(*(handle(f"task-{i}") for i in range(3)))

    asyncio.run(main())
    entries = stored()
    assert len(entries) == 9
    for meta, message in entries:
        assert (meta["trace_id"], meta["span_id"]) == seen[message]


def test_a_records_own_span_id_is_bounded_and_flat_like_any_metadata(
    shipped: tuple[logging.Logger, Any],
) -> None:
    log, stored = shipped
    log.info("huge", extra={"trace_id": "t-1", "span_id": "line\nbreak " * 50_000})
    ((meta, message),) = stored()
    assert message == "huge" and meta["trace_id"] == "t-1"
    assert "\n" not in meta["span_id"] and 0 < len(meta["span_id"]) <= 1024


def test_a_records_own_trace_id_wins_over_the_span(shipped: tuple[logging.Logger, Any]) -> None:
    log, stored = shipped
    with TRACER.start_as_current_span("s"):
        log.info("own", extra={"trace_id": "order-77"})
        log.info("own alias", extra={"request_id": "req-9"})
        log.info("own span", extra={"trace_id": "t-1", "span_id": "s-1"})
    by_message = {message: meta for meta, message in stored()}
    assert by_message["own"]["trace_id"] == "order-77" and "span_id" not in by_message["own"]
    assert by_message["own alias"]["trace_id"] == "req-9"
    assert "span_id" not in by_message["own alias"]
    assert (by_message["own span"]["trace_id"], by_message["own span"]["span_id"]) == (
        "t-1", "s-1")


def test_the_span_wins_over_the_request_context_and_the_context_fills_in_without_one(
    shipped: tuple[logging.Logger, Any],
) -> None:
    log, stored = shipped
    with log_context(trace_id="request-1"):
        log.info("request, no span")
        with TRACER.start_as_current_span("db") as span:
            log.info("request, in a span")
    by_message = {message: meta for meta, message in stored()}
    assert by_message["request, no span"]["trace_id"] == "request-1"
    assert "span_id" not in by_message["request, no span"]
    assert by_message["request, in a span"]["trace_id"] == _hex(span)[0]


@pytest.fixture()
def instrumented() -> Iterator[None]:
    """opentelemetry-instrumentation-logging as its docs set it up: every record gets
    ``otelTraceID``, ``otelSpanID``, ``otelTraceSampled`` and ``otelServiceName``."""
    LoggingInstrumentor().instrument(set_logging_format=False, inject_trace_context=True,
                                     tracer_provider=PROVIDER)
    try:
        yield
    finally:
        LoggingInstrumentor().uninstrument()


def test_instrumentation_logging_attributes_are_honoured_and_its_zero_ids_ignored(
    shipped: tuple[logging.Logger, Any], instrumented: None,
) -> None:
    log, stored = shipped
    log.info("no span: otelTraceID is '0'")
    with TRACER.start_as_current_span("s") as span:
        log.info("in a span")
    by_message = {message: meta for meta, message in stored()}
    assert "trace_id" not in by_message["no span: otelTraceID is '0'"]
    assert "span_id" not in by_message["no span: otelTraceID is '0'"]
    trace_id, span_id = _hex(span)
    assert by_message["in a span"]["trace_id"] == trace_id
    assert by_message["in a span"]["span_id"] == span_id


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"otelTraceID": "a" * 32, "otelSpanID": "b" * 16}, ("a" * 32, "b" * 16)),
    ({"otelTraceID": "A" * 32, "otelSpanID": "B" * 16}, ("a" * 32, "b" * 16)),
    ({"otelTraceID": "a" * 32, "otelSpanID": "0"}, ("a" * 32, None)),
    ({"otelTraceID": "0" * 32, "otelSpanID": "b" * 16}, (None, None)),
    ({"otelTraceID": "0", "otelSpanID": "0"}, (None, None)),
    ({"otelTraceID": "not-hex" * 5, "otelSpanID": "b" * 16}, (None, None)),
    ({"otelTraceID": 12345, "otelSpanID": 678}, (None, None)),
    ({"otelTraceID": "a" * 32 + '"} | drop', "otelSpanID": "b" * 16}, (None, None)),
])
def test_otel_attributes_given_by_hand_are_checked(
    shipped: tuple[logging.Logger, Any], attrs: dict[str, Any],
    expected: tuple[str | None, str | None],
) -> None:
    log, stored = shipped
    log.info("attributes", extra=attrs)
    ((meta, _),) = stored()
    assert (meta.get("trace_id"), meta.get("span_id")) == expected


class _BrokenSpan(trace.NonRecordingSpan):
    """A span of another make whose context cannot be read."""

    def get_span_context(self) -> trace.SpanContext:
        raise RuntimeError("no context here")


class _ForgedSpan(trace.NonRecordingSpan):
    """A span whose context claims to be valid with ids no tracer makes."""

    def get_span_context(self) -> Any:
        class Forged:
            is_valid = True
            trace_id = 1 << 200
            span_id = -5

        return Forged()


@pytest.mark.parametrize("span", [_BrokenSpan(trace.INVALID_SPAN_CONTEXT),
                                  _ForgedSpan(trace.INVALID_SPAN_CONTEXT)])
def test_a_span_that_breaks_or_lies_costs_no_record(
    shipped: tuple[logging.Logger, Any], span: trace.Span,
) -> None:
    log, stored = shipped
    with trace.use_span(span):
        log.info("before")
        log.error("after")
    entries = stored()
    assert sorted(message for _, message in entries) == ["after", "before"]
    assert all("trace_id" not in meta and "span_id" not in meta for meta, _ in entries)


def test_capture_logs_sees_the_span_as_the_handler_does(logs: LogCapture) -> None:
    with TRACER.start_as_current_span("s") as span:
        logging.getLogger("app.otel").warning("traced")
    (event,) = logs.from_logger("app.otel")
    assert (event.trace_id, event.span_id) == _hex(span)
    (entry,) = [e for e in logs.entries if e.message == "traced"]
    assert entry.structured_metadata["span_id"] == _hex(span)[1]


def test_instrumentation_attributes_are_trace_context_not_extra_fields(
    logs: LogCapture, instrumented: None,
) -> None:
    with TRACER.start_as_current_span("s") as span:
        logging.getLogger("app.otel").info("order placed", extra={"order_id": 42})
    (entry,) = [e for e in logs.entries if e.message == "order placed"]
    assert entry.metadata == {"order_id": 42}
    assert entry.structured_metadata["trace_id"] == _hex(span)[0]

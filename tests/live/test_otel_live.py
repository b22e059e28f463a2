"""Against a real Loki 3.7: an entry logged inside an OpenTelemetry span (the real SDK) is found
by its trace id, ``| trace_id="<hex>"``, with its span id beside it; and a request carrying a
``traceparent`` through the ASGI middleware is found by the header's trace id."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from shipper import LokiHandler
from shipper.integrations.asgi import ShipperASGIMiddleware
from shipper.loki.logql import quote
from tests.live.conftest import query_lines

TRACER = TracerProvider().get_tracer("tests.live.otel")


@pytest.fixture()
def shipped(loki_url: str, unique_service: str, tmp_path: Path) -> Iterator[logging.Logger]:
    handler = LokiHandler(loki_url, service=unique_service, env="it",
                          spool_dir=str(tmp_path / "spool"), batch_max_wait=0.1)
    log = logging.getLogger(f"it.otel.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        yield log
    finally:
        assert handler.flush(timeout=20)
        log.removeHandler(handler)
        handler.close()


def test_entry_logged_in_a_span_is_found_by_its_trace_id(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
    shipped: logging.Logger,
) -> None:
    start = time.time_ns() - 10**9
    with TRACER.start_as_current_span("place order") as span:
        shipped.info("Order placed", extra={"type": "ORDER_PLACED"})
    with TRACER.start_as_current_span("another trace"):
        shipped.info("Someone else's order")
    shipped.info("No span")
    for handler in shipped.handlers:
        handler.flush()
    context = span.get_span_context()
    trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    query = f'{{service_name={quote(unique_service)}}} | trace_id={quote(trace_id)}'
    [(labels, line)] = query_lines(loki_http, loki_url, query, start, 1)
    assert line["message"] == "Order placed"
    assert labels["trace_id"] == trace_id and labels["span_id"] == span_id
    assert labels["type"] == "ORDER_PLACED"
    # every entry arrived; only the one of that trace matched
    everything = query_lines(loki_http, loki_url, f"{{service_name={quote(unique_service)}}}",
                        start, 3)
    assert len(everything) == 3
    no_span = [labels for labels, line in everything if line["message"] == "No span"]
    assert no_span and "trace_id" not in no_span[0] and "span_id" not in no_span[0]


def test_request_with_traceparent_is_found_by_the_headers_trace_id(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
    shipped: logging.Logger,
) -> None:
    start = time.time_ns() - 10**9
    trace_id = uuid.uuid4().hex  # 32 lower-case hex digits, not all zeros

    async def item(request: Request) -> Response:
        shipped.info("Item shown")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/items/1", item)],
                    middleware=[Middleware(ShipperASGIMiddleware, logger=shipped)])
    with TestClient(app) as client:
        response = client.get("/items/1",
                              headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert response.headers["x-request-id"] == trace_id
    for handler in shipped.handlers:
        handler.flush()
    query = f'{{service_name={quote(unique_service)}}} | trace_id={quote(trace_id)}'
    found = query_lines(loki_http, loki_url, query, start, 2)
    assert sorted(line["message"].split(" ")[0] for _, line in found) == ["GET", "Item"]

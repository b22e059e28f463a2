"""Against a real Loki 3.7: a record's extra fields, python-logging-loki's tags and structlog's
fields (both ways) come back in the line's metadata, and `| json` reaches them."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from shipper import LokiHandler
from tests.live.conftest import query_lines


def _handler(loki_url: str, service: str, tmp_path: Path) -> tuple[LokiHandler, logging.Logger]:
    handler = LokiHandler(loki_url, service=service, env="it", spool_dir=str(tmp_path / "spool"),
                          batch_max_wait=0.1)
    log = logging.getLogger(f"it.extras.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    return handler, log


def test_extra_fields_and_tags_arrive_in_the_metadata(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str,
        tmp_path: Path) -> None:
    start = time.time_ns() - 10**9
    handler, log = _handler(loki_url, unique_service, tmp_path)
    log.info("order placed", extra={"order_id": 42, "cart_size": 3, "type": "ORDER_PLACED",
                                    "password": "hunter2"})
    log.error("Something happened", extra={"tags": {"service": "my-service", "actor": "USER"}})
    assert handler.flush(timeout=20)
    handler.close()
    query = f'{{service_name="{unique_service}"}} | json | metadata_order_id = 42'
    [(labels, line)] = query_lines(loki_http, loki_url, query, start, 1)
    assert labels["type"] == "ORDER_PLACED"
    assert line["metadata"] == {"order_id": 42, "cart_size": 3, "password": "[REDACTED]"}
    query = f'{{service_name="{unique_service}", actor="USER"}}'
    [(labels, line)] = query_lines(loki_http, loki_url, query, start, 1)
    assert labels["level"] == "ERROR" and line["metadata"] == {"service": "my-service"}


@pytest.mark.parametrize("way", ["render_to_log_kwargs", "ProcessorFormatter"])
def test_structlog_fields_arrive_in_the_metadata(
        loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
        way: str) -> None:
    structlog = pytest.importorskip("structlog")
    start = time.time_ns() - 10**9
    handler, log = _handler(loki_url, unique_service, tmp_path)
    shared = [structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level,
              structlog.processors.format_exc_info]
    if way == "ProcessorFormatter":
        last = structlog.stdlib.ProcessorFormatter.wrap_for_formatter
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.JSONRenderer()]))
    else:
        last = structlog.stdlib.render_to_log_kwargs
    structlog.configure(processors=[*shared, last],
                        logger_factory=structlog.stdlib.LoggerFactory(),
                        wrapper_class=structlog.stdlib.BoundLogger)
    try:
        slog = structlog.get_logger(log.name).bind(order_id=42)
        slog.info("order placed", type="ORDER_PLACED", actor="USER", actor_id="user_42",
                  cart_size=3)
        assert handler.flush(timeout=20)
    finally:
        structlog.reset_defaults()
        handler.close()
    query = f'{{service_name="{unique_service}", type="ORDER_PLACED", actor="USER"}}'
    [(_, line)] = query_lines(loki_http, loki_url, query, start, 1)
    assert line == {"message": "order placed", "metadata": {"order_id": 42, "cart_size": 3}}

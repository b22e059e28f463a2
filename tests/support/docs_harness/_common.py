"""Pieces the harnesses share."""

from __future__ import annotations

import logging
import sys

from shipper import LokiHandler


def log_to_loki(service: str) -> None:
    """What an app module that is shown without its logging setup has elsewhere: the root logger
    at INFO, into a LokiHandler that reads LOKI_URL."""
    logging.basicConfig(level=logging.INFO, handlers=[LokiHandler(service=service)])


def quiet_test_client() -> None:
    """The framework's test client logs each request through httpx2 (httpx before Starlette
    1.10) at INFO: a served app has no such records, so they are kept out of what the docs'
    blocks are checked against."""
    for name in ("httpx2", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def expect_status(what: str, status: int, wanted: int = 200) -> None:
    if status != wanted:
        sys.exit(f"{what}: answered {status}, expected {wanted}")

"""The logging every server app here sets up at import: one LokiHandler configured from the
environment (LOKI_URL, SHIPPER_SERVICE, SHIPPER_SPOOL_DIR, SHIPPER_BATCH_MAX_WAIT, ...), on the
app's loggers only, so the tests can count exactly."""

from __future__ import annotations

import logging

from shipper import LokiHandler

APP_LOGGERS = ("app", "shipper.access", "shipper.tasks")


def setup() -> LokiHandler:
    handler = LokiHandler()
    for name in APP_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
    return handler

"""A pipeline with fast timings for the engine's tests, and events to submit to it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.event import LogEvent


def fast_pipeline(tmp_path: Path, transport: Any, *, service: str = "bp",
                  **kw: Any) -> Pipeline:
    """A pipeline on ``transport`` (None: a real one, to ``url``) with its spool in
    ``tmp_path``, batches every 10 ms and backoff of 10 to 50 ms; ``kw`` overrides."""
    settings: dict[str, Any] = {
        "url": "http://loki.test:3100", "service": service,
        "spool_dir": str(tmp_path / "spool"), "batch_max_wait": 0.01, "backoff_min": 0.01,
        "backoff_max": 0.05, "shutdown_timeout": 1, **kw,
    }
    return Pipeline(ShipperConfig(**settings), transport=transport)


def submit_events(pipeline: Pipeline, n: int, *, service: str = "bp", age_ns: int = 0) -> None:
    """``n`` INFO events ``m0`` ... of ``service``, each a nanosecond apart, ``age_ns`` old."""
    now = time.time_ns() - age_ns
    for i in range(n):
        pipeline.submit(LogEvent.create(service=service, level="INFO", message=f"m{i}",
                                        timestamp_ns=now + i))

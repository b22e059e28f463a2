"""A Celery app on kombu's filesystem transport (a real broker that needs no server), set up
as docs/frameworks.md shows: shipper's logging in ``setup_logging``, ``init_celery(app)``.

``work`` logs one WORK event; ``flaky`` always fails and retries twice, then fails for good.
Both drop a marker file when they are done, so the test knows when the burst is over without
asking Loki.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery, signals

from shipper.integrations.celery import init_celery
from tests.support.servers import _logging

log = logging.getLogger("app")


def make_app(broker_dir: str) -> Celery:
    folder = Path(broker_dir)
    app = Celery("deploy")
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        },
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
    )
    for sub in ("queue", "processed", "control", "done"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    init_celery(app)
    return app


app = make_app(os.environ.get("DEPLOY_BROKER_DIR", "/nonexistent"))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:  # Celery leaves the logging setup to us
    _logging.setup()


def _done(name: str) -> None:
    (Path(os.environ["DEPLOY_BROKER_DIR"]) / "done" / name).touch()


@app.task(name="deploy.work")
def work(n: int) -> int:
    log.info("work %d", n, extra={"type": "WORK"})
    _done(f"work-{n}")
    return n


@app.task(name="deploy.flaky", bind=True, max_retries=2)
def flaky(self: Any) -> None:
    if self.request.retries >= self.max_retries:
        _done("flaky")
    try:
        raise ValueError(f"upstream said no (attempt {self.request.retries + 1})")
    except ValueError as exc:
        raise self.retry(exc=exc, countdown=0) from exc

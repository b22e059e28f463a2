"""Flask under gunicorn's sync workers: one WORK event and one access event per request.
With ``--preload`` the handler is built in the master, before the fork."""

from __future__ import annotations

import logging
import os

from flask import Flask

from shipper.integrations.flask import init_app
from tests.support.servers import _logging

_logging.setup()
log = logging.getLogger("app")

app = Flask(__name__)
init_app(app)


@app.get("/work/<n>")
def work(n: str) -> dict[str, object]:
    log.info("work %s", n, extra={"type": "WORK"})
    return {"pid": os.getpid()}


@app.get("/health")
def health() -> str:
    return "ok"

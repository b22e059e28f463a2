"""A documented Celery tasks.py: a real prefork worker (kombu's filesystem transport as the
broker, a file result backend) runs ``send_receipt(42)``, sent while a request of user_42 with
the id ``req-7f3a`` is handled; then SIGTERM (warm shutdown), which must end the worker with 0."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HARNESS = '''
import os

from tasks import app

_here = os.path.abspath(".")
app.conf.update(
    broker_url="filesystem://localhost/",  # a host, so kombu does not warn that it has none
    broker_transport_options={
        "data_folder_in": os.path.join(_here, "broker"),
        "data_folder_out": os.path.join(_here, "broker"),
        "store_processed": False,
        "polling_interval": 0.05,
    },
    result_backend="file://" + os.path.join(_here, "results"),
)
'''

for folder in ("broker", "results"):
    Path(folder).mkdir(exist_ok=True)
Path("harness_celery.py").write_text(HARNESS)
sys.path.insert(0, os.getcwd())

import harness_celery  # noqa: E402
import tasks  # noqa: E402

from shipper import log_context  # noqa: E402
from tests.support.docs_harness._servers import started, stop_with_sigterm  # noqa: E402

env = dict(os.environ, SHIPPER_BATCH_MAX_WAIT="30")
argv = [sys.executable, "-m", "celery", "-A", "harness_celery", "worker", "-P", "prefork",
        "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
try:
    with started(argv, env) as worker:
        with log_context(trace_id="req-7f3a", actor="USER", actor_id="user_42"):
            result = tasks.send_receipt.delay(42)
        result.get(timeout=60)
        stop_with_sigterm(worker, "the worker")
finally:
    harness_celery.app.close()

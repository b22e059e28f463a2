"""A documented gunicorn.conf.py: real gunicorn (two sync workers) serves a WSGI app that logs to
Loki through ShipperWSGIMiddleware, with that config; GET /hello, then SIGTERM to the master.
Batches wait 30 s, so the events reach Loki only through the hooks (or the exit hook)."""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
from pathlib import Path

from tests.support.docs_harness._servers import started, stop_with_sigterm

APP = '''
from shipper.integrations.wsgi import ShipperWSGIMiddleware
from tests.support.docs_harness._common import log_to_loki

log_to_loki("shop")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\\n"]


application = ShipperWSGIMiddleware(application)
'''

Path("harness_app.py").write_text(APP)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
env = dict(os.environ, SHIPPER_BATCH_MAX_WAIT="30")
argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "2",
        "--bind", f"127.0.0.1:{port}", "harness_app:application"]
with started(argv, env) as server:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit("gunicorn did not start")
            time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/hello")
    status = conn.getresponse().status
    conn.close()
    if status != 200:
        sys.exit(f"GET /hello: answered {status}, expected 200")
    stop_with_sigterm(server, "gunicorn")

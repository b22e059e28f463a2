"""A documented plain WSGI module app.py (``application``), shown without its logging setup (the
root logger at INFO into a LokiHandler for service "shop" is added here), served by a real HTTP
server (wsgiref) on a free port; GET /hello over HTTP, then the server stops."""

import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

from tests.support.docs_harness._common import expect_status, log_to_loki

log_to_loki("shop")

from app import application  # noqa: E402


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


server = make_server("127.0.0.1", 0, application, handler_class=_Quiet)
thread = threading.Thread(target=server.serve_forever, daemon=True)
thread.start()
with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/hello", timeout=10) as reply:
    expect_status("GET /hello", reply.status)
server.shutdown()
server.server_close()

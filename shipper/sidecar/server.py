"""The small HTTP servers of the sidecar (the http source, /healthz and /metrics).

They are the standard library's ThreadingHTTPServer: one thread per connection, HTTP/1.1
keep-alive, nothing to install. That is enough here: the sidecar listens on loopback or inside
a pod, request bodies are capped, each connection has a read timeout (a client that stops
sending cannot hold a thread for long), and the number of requests in progress is capped (the
next ones are answered 503 at once).
"""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any

from shipper.sidecar.config import parse_listen

__all__ = ["Server", "StartupError"]


class StartupError(Exception):
    """Something the sidecar needs at start-up is not there (a port, a directory)."""


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[Any]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class Server:
    """A ThreadingHTTPServer on ``listen`` (host:port), served from a daemon thread."""

    def __init__(self, listen: str, handler: type[http.server.BaseHTTPRequestHandler],
                 what: str) -> None:
        host, port = parse_listen(listen)
        try:
            self._server = _ThreadingServer((host, port), handler)
        except OSError as exc:
            raise StartupError(f"{what}: cannot listen on {listen} ({exc.strerror or exc})") \
                from None
        self._server.owner = self  # type: ignore[attr-defined]
        self.host, self.port = str(self._server.server_address[0]), \
            int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name=f"shipper-{what}", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting connections; requests in progress finish on their threads."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

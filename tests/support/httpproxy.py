"""A real forward HTTP proxy on 127.0.0.1 for tests: it takes absolute-URI requests
(``POST http://127.0.0.1:3100/loki/api/v1/push HTTP/1.1``), forwards each to its target and
sends the answer back, recording what it carried (method, URL, the ``Proxy-Authorization``
header). ``require_auth`` makes it answer 407 to a request without those credentials, as an
authenticating proxy does. CONNECT (HTTPS through the proxy) is not served.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HttpProxy", "Proxied"]

#: headers that belong to one hop and are not forwarded
_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade"}


@dataclass(frozen=True)
class Proxied:
    """One request the proxy carried."""

    method: str
    url: str
    proxy_authorization: str | None
    status: int


class HttpProxy:
    def __init__(self, require_auth: tuple[str, str] | None = None) -> None:
        self.require_auth = require_auth
        self.requests: list[Proxied] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                auth = self.headers.get("Proxy-Authorization")
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    self._reply(400, b"absolute http:// URI expected", auth)
                    return
                if proxy.require_auth is not None:
                    user, password = proxy.require_auth
                    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                    if auth != expected:
                        self._reply(407, b"proxy authentication required", auth,
                                    {"Proxy-Authenticate": 'Basic realm="test"'})
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request(self.command, path or "/", body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    extra = {k: v for k, v in resp.getheaders()
                             if k.lower() not in _HOP and k.lower() != "content-length"}
                    self._reply(resp.status, data, auth, extra)
                except OSError as exc:
                    self._reply(502, f"bad gateway: {exc}".encode(), auth)
                finally:
                    conn.close()

            def _reply(self, status: int, body: bytes, auth: str | None,
                       headers: dict[str, str] | None = None) -> None:
                with proxy._lock:
                    proxy.requests.append(Proxied(self.command, self.path, auth, status))
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def carried(self, path: str) -> list[Proxied]:
        """The requests carried to a URL whose path starts with ``path``."""
        with self._lock:
            return [r for r in self.requests if urlsplit(r.url).path.startswith(path)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

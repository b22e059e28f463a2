"""The small HTTP servers of the sidecar (the http source, /ready, /healthz and /metrics):
connections, deadlines and request bodies read with their limits.

They are the standard library's ThreadingHTTPServer (one thread per connection, HTTP/1.1
keep-alive, nothing to install), held so that no client can hold them:

* at most ``max_connections`` connections are open at once; the next one is answered 503 and
  closed at once, without a thread;
* each request has one deadline, ``request_timeout``, for its headers and body together (the
  time a kept-alive connection sits idle before it counts too): a client that trickles bytes
  is answered 408 and closed when it passes, whatever the pace of its bytes;
* a body is read only when its framing is sound: a ``Content-Length`` that is not a plain
  number, more than one, a chunk size that is not hex, a body cut short are a 400 and the
  connection is closed (what follows could not be told from a next request); a body over its
  limit is a 413 without being read whole, and so is one that grows past it while it is
  un-gzipped, every gzip member counted.
"""

from __future__ import annotations

import email.utils
import http.server
import io
import re
import socket
import sys
import threading
import time
import zlib
from typing import Any, cast

from shipper.sidecar.config import parse_listen

__all__ = ["HttpError", "RequestHandler", "Server", "StartupError", "decode_content"]


class StartupError(Exception):
    """Something the sidecar needs at start-up is not there (a port, a directory)."""


class HttpError(Exception):
    """A request answered with ``status`` and ``message``; ``close``: the connection cannot
    carry another request (the body was not read, or not read whole)."""

    def __init__(self, status: int, message: str, *, close: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers or {}


_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 35\r\n\r\n"
            b"too many connections: retry later\r\n")


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[Any], *,
                 max_connections: int, request_timeout: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.open_connections = 0
        self.refused = 0  # connections answered 503 at once: max_connections were open
        self.timed_out = 0  # requests that had begun and were not whole by their deadline
        self.counts = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.counts:
            full = self.open_connections >= self.max_connections
            if full:
                self.refused += 1
            else:
                self.open_connections += 1
        if full:
            try:
                request.setblocking(False)
                request.send(_REFUSED)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed()

    def _closed(self) -> None:
        with self.counts:
            self.open_connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away is not news
            super().handle_error(request, client_address)


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, each read waiting only for what is left of the request's deadline
    (a per-read timeout alone lets a client send one byte just before each one ends)."""

    def __init__(self, sock: socket.socket, server: _ThreadingServer) -> None:
        super().__init__()
        self._sock = sock
        self._server = server
        self.deadline = float("inf")
        self.begun = False  # a byte of the current request has come

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("the request's deadline has passed")
            self._sock.settimeout(left)
            n = self._sock.recv_into(buffer)
        except TimeoutError:
            if self.begun:
                with self._server.counts:
                    self._server.timed_out += 1
            raise
        self.begun = True
        return n


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """The sidecar's request handler: the deadline on every read, quiet logs, answers written
    in one piece, and :meth:`read_body`."""

    protocol_version = "HTTP/1.1"
    server_version = "shipper-sidecar"
    _reader: _DeadlineReader

    @property
    def settings(self) -> _ThreadingServer:
        return cast(_ThreadingServer, self.server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader: replaced by one that keeps the deadline
        self._reader = _DeadlineReader(self.connection, self.settings)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.settings.request_timeout
        self._reader.begun = False
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def respond(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                headers: dict[str, str] | None = None, *, close: bool = False) -> None:
        """Write the whole answer with one send (headers and body apart would wait for the
        client's delayed acknowledgement); ``close``: end the connection after it."""
        self.connection.settimeout(self.settings.request_timeout)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:  # pragma: no cover - every status used here has a phrase
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}",
                 f"Server: {self.server_version}",
                 f"Date: {email.utils.formatdate(usegmt=True)}"]
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        lines.extend(f"{key}: {value}" for key, value in (headers or {}).items())
        if status == 204:
            body = b""
        else:
            lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(body)}")
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            self.close_connection = True  # the client went away

    def read_body(self, limit: int) -> bytes:
        """The request's body, its content coding undone; raises :class:`HttpError`."""
        headers = self.headers
        codings = [c.strip().lower() for c in headers.get_all("Transfer-Encoding") or []]
        lengths = [v.strip() for v in headers.get_all("Content-Length") or []]
        try:
            if codings:
                if lengths:
                    raise HttpError(400, "both Content-Length and Transfer-Encoding", close=True)
                if codings != ["chunked"]:
                    raise HttpError(501, f"Transfer-Encoding {', '.join(codings)[:100]!r} is "
                                         "not supported (chunked only)", close=True)
                data = _read_chunked(self.rfile, limit)
            else:
                data = _read_length(self.rfile, lengths, limit)
        except TimeoutError:
            raise HttpError(408, "the request was not whole within request_timeout "
                                 f"({self.settings.request_timeout:g}s)", close=True) from None
        return decode_content(data, headers.get("Content-Encoding") or "", limit)


_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_CHUNK_LINE = 4096
_MAX_TRAILERS = 64


def _too_big(limit: int) -> HttpError:
    return HttpError(413, f"body over max_body_bytes ({limit} bytes)", close=True)


def _read_length(rfile: Any, lengths: list[str], limit: int) -> bytes:
    if not lengths:
        raise HttpError(411, "Content-Length (or chunked encoding) required", close=True)
    if len(set(lengths)) > 1:
        raise HttpError(400, "more than one Content-Length", close=True)
    if not _LENGTH.fullmatch(lengths[0]):
        raise HttpError(400, f"Content-Length {lengths[0][:40]!r} is not a number of bytes",
                        close=True)
    length = int(lengths[0])
    if length > limit:
        raise _too_big(limit)
    data: bytes = rfile.read(length)
    if len(data) < length:
        raise HttpError(400, f"the body ended after {len(data)} of its {length} bytes",
                        close=True)
    return data


def _read_chunked(rfile: Any, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            raise HttpError(400, "a chunk size line is cut short or too long", close=True)
        size_text = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise HttpError(400, f"chunk size {size_text[:40].decode('latin-1')!r} is not "
                                 "a hexadecimal number", close=True)
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise _too_big(limit)
        chunk = rfile.read(size)
        if len(chunk) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise HttpError(400, "a chunk is cut short or not followed by CRLF", close=True)
        body += chunk
    for _ in range(_MAX_TRAILERS):
        line = rfile.readline(_MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            raise HttpError(400, "a trailer line is cut short or too long", close=True)
        if not line.strip():
            return bytes(body)
    raise HttpError(400, f"more than {_MAX_TRAILERS} trailer lines", close=True)


_PIECE = 64 * 1024


def decode_content(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` with its ``Content-Encoding`` undone: gzip (every member, trailing zeros
    allowed), deflate, or none; 413 past ``limit`` bytes in all, 400 when it is damaged."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "snappy"):  # snappy: the protobuf push's own framing
        return data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise HttpError(415, f"Content-Encoding {encoding[:40]!r} is not supported "
                             "(gzip or none)")
    gzip = encoding != "deflate"
    out = bytearray()
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        if gzip and data[pos] == 0 and not data[pos:].strip(b"\x00"):
            break  # zeros after the last member: padding, as gzip allows
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32 if gzip else zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                if pos >= end:
                    raise HttpError(400, f"the {encoding} body is cut short")
                piece = view[pos:pos + _PIECE]
                pos += len(piece)
                out += inflater.decompress(piece, limit + 1 - len(out))
                if len(out) > limit:
                    raise _too_big(limit)
        except zlib.error as exc:
            raise HttpError(400, f"bad {encoding} body: {exc}") from None
        pos -= len(inflater.unused_data)
        if not gzip and pos < end:
            raise HttpError(400, "data after the end of the deflate stream")
    return bytes(out)


class Server:
    """A ThreadingHTTPServer on ``listen`` (host:port), served from a daemon thread."""

    def __init__(self, listen: str, handler: type[RequestHandler], what: str, *,
                 max_connections: int = 64, request_timeout: float = 10.0) -> None:
        host, port = parse_listen(listen)
        try:
            self._server = _ThreadingServer((host, port), handler,
                                            max_connections=max_connections,
                                            request_timeout=request_timeout)
        except OSError as exc:
            raise StartupError(f"{what}: cannot listen on {listen} ({exc.strerror or exc})") \
                from None
        self.host, self.port = str(self._server.server_address[0]), \
            int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name=f"shipper-{what}", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    @property
    def refused(self) -> int:
        """Connections answered 503 at once because ``max_connections`` were open."""
        return self._server.refused

    @property
    def timed_out(self) -> int:
        """Requests begun and not whole by their deadline (idle keep-alives not counted)."""
        return self._server.timed_out

    @property
    def alive(self) -> bool:
        """Serving: started and not stopped."""
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting connections; requests in progress finish on their threads."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

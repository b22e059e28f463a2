"""A fake Loki on 127.0.0.1 that answers pushes the way Loki 3.7.6 does.

Answers and messages are copied from ../shared/loki-contract/: 204 on success; 400 with Loki's
own text for label/line/timestamp problems while the valid entries of the same request ARE
stored; 429 from a token bucket at Loki's default 4 MB/s (burst 6 MB); 500 ResourceExhausted for
a request over 4 MiB. Identical (stream, timestamp, line) entries are stored once, like Loki.
It decodes JSON, gzip JSON and snappy protobuf. Tests can also script answers, take it down
(connections refused) and bring it back on the same port.
"""

from __future__ import annotations

import datetime as dt
import gzip
import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cramjam

from shipper.transport import HttpResponse, TransportError
from tests import contract

MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_LINE_BYTES = 256 * 1024
MAX_LABEL_NAMES = 15
MAX_LABEL_VALUE = 2048
REJECT_OLD_NS = 7 * 24 * 3600 * 10**9
CREATION_GRACE_NS = 10 * 60 * 10**9
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Stored:
    labels: tuple[tuple[str, str], ...]
    ts: int
    line: str
    metadata: tuple[tuple[str, str], ...]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class Script:
    """Answers to give before real processing: (status, body, headers) per request."""

    answers: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _rfc3339(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- protobuf


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value = buf[pos:pos + length]
            pos += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        out.append((number, value))
    return out


def _parse_label_string(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for m in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', text):
        labels[m.group(1)] = (
            m.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        )
    return labels


def decode_protobuf(body: bytes) -> list[dict[str, Any]]:
    raw = bytes(cramjam.snappy.decompress_raw(body))
    streams = []
    for number, stream in _fields(raw):
        assert number == 1
        labels: dict[str, str] = {}
        values: list[list[Any]] = []
        for snum, sval in _fields(stream):
            if snum == 1:
                labels = _parse_label_string(sval.decode())
            elif snum == 2:
                ts = 0
                line = ""
                md: dict[str, str] = {}
                for enum_, evalue in _fields(sval):
                    if enum_ == 1:
                        parts = dict(_fields(evalue))
                        ts = parts.get(1, 0) * 10**9 + parts.get(2, 0)
                    elif enum_ == 2:
                        line = evalue.decode()
                    elif enum_ == 3:
                        pair = dict(_fields(evalue))
                        md[pair[1].decode()] = pair.get(2, b"").decode()
                values.append([str(ts), line, md])
        streams.append({"stream": labels, "values": values})
    return streams


# ----------------------------------------------------------------------------- server


class FakeLoki:
    def __init__(self, *, rate_bytes: float = 4 * 1024 * 1024, burst_bytes: float = 6e6,
                 rate_limit: bool = True, port: int = 0, store: bool = True) -> None:
        self.rate_bytes = rate_bytes
        self.burst_bytes = burst_bytes
        self.rate_limit = rate_limit
        #: False: only count entries (benchmarks: the fake must not grow with the load)
        self.store = store
        self.received = 0
        self._tokens = burst_bytes
        self._tokens_at = time.monotonic()
        self.lock = threading.Lock()
        self.entries: dict[tuple[Any, ...], Stored] = {}
        self.requests: list[Request] = []
        self.script = Script()
        self.hook: Callable[[Request], tuple[int, str, dict[str, str]] | None] | None = None
        self.delay = 0.0
        #: "METHOD /path-prefix" -> (status, body, headers) for reads and admin calls
        self.routes: dict[str, tuple[int, str, dict[str, str]]] = {}
        self._conns: set[socket.socket] = set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with fake.lock:
                    fake._conns.add(self.connection)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self._routed("POST"):
                    return
                status, text, headers = fake._handle_push(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self._answer(status, text, headers)

            def _routed(self, method: str) -> bool:
                for prefix, answer in fake.routes.items():
                    if f"{method} {self.path}".startswith(prefix):
                        with fake.lock:
                            fake.requests.append(Request(f"{method} {self.path}",
                                                         dict(self.headers.items()), b""))
                        self._answer(*answer)
                        return True
                return False

            def do_DELETE(self) -> None:
                if not self._routed("DELETE"):
                    self._answer(404, "404 page not found\n", {})

            def do_GET(self) -> None:
                if self._routed("GET"):
                    return
                if self.path == "/fake/count":
                    self._answer(200, f"{fake.received if not fake.store else fake.count()}\n",
                                 {})
                elif self.path == "/ready":
                    self._answer(200, "ready\n", {})
                else:
                    self._answer(404, "404 page not found\n", {})

            def _answer(self, status: int, text: str, headers: dict[str, str]) -> None:
                data = text.encode()
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if status != 204:
                    self.wfile.write(data)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take Loki down: the port refuses connections until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            conns, self._conns = self._conns, set()
        for conn in conns:  # keep-alive connections must break too
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    def __enter__(self) -> FakeLoki:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection -------------------------------------------------------------------------

    def lines(self) -> list[str]:
        with self.lock:
            return [s.line for s in sorted(self.entries.values(), key=lambda s: s.ts)]

    def stored(self) -> list[Stored]:
        with self.lock:
            return list(self.entries.values())

    def count(self) -> int:
        with self.lock:
            return len(self.entries)

    def wait_for_count(self, n: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return self.count()
            time.sleep(0.02)
        return self.count()

    # -- the push endpoint ------------------------------------------------------------------

    def _take_tokens(self, n: int) -> bool:
        now = time.monotonic()
        refill = (now - self._tokens_at) * self.rate_bytes
        self._tokens = min(self.burst_bytes, self._tokens + refill)
        self._tokens_at = now
        if n > self._tokens:
            return False
        self._tokens -= n
        return True

    def _handle_push(self, path: str, headers: dict[str, str],
                     body: bytes) -> tuple[int, str, dict[str, str]]:
        request = Request(path, headers, body)
        with self.lock:
            self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        answer = self.hook(request) if self.hook else None
        if answer is None and self.script.answers:
            with self.lock:
                answer = self.script.answers.pop(0) if self.script.answers else None
        if answer is None:
            answer = self._process(path, headers, body)
        request.status = answer[0]
        return answer

    def _process(self, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, str, dict[str, str]]:
        if not path.startswith("/loki/api/v1/push"):
            return 404, "404 page not found\n", {}
        if len(body) > MAX_REQUEST_BYTES:
            return (500, "rpc error: code = ResourceExhausted desc = grpc: received message "
                    f"larger than max ({len(body)} vs. {MAX_REQUEST_BYTES})\n", {})
        try:
            if headers.get("content-type", "").startswith("application/x-protobuf"):
                streams = decode_protobuf(body)
            else:
                raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                streams = json.loads(raw)["streams"]
        except Exception as exc:
            return 400, f"loghttp.PushRequest.Streams: {exc}\n", {}
        total = sum(len(v[1]) for s in streams for v in s["values"])
        if not self.store:
            with self.lock:
                self.received += sum(len(s["values"]) for s in streams)
            return 204, "", {}
        with self.lock:
            if self.rate_limit and not self._take_tokens(total):
                lines = sum(len(s["values"]) for s in streams)
                return (429, f"ingestion rate limit exceeded for user fake (limit: "
                        f"{int(self.rate_bytes)} bytes/sec) while attempting to ingest '{lines}' "
                        f"lines totaling '{total}' bytes, reduce log volume or contact your Loki "
                        "administrator to see if the limit can be increased\n", {})
        now = time.time_ns()
        first_error = ""
        for stream in streams:
            labels: dict[str, str] = stream["stream"] or {"service_name": "unknown_service"}
            bad = [k for k in labels if not _LABEL_NAME.match(k)]
            if bad:
                first_error = first_error or (
                    "couldn't parse labels: 1:5: parse error: unexpected character inside "
                    f"braces: '{re.sub(r'[A-Za-z0-9_]', '', bad[0])[:1]}'\n")
                continue
            if len(labels) > MAX_LABEL_NAMES:
                first_error = first_error or (
                    f"entry for stream '{_fmt_labels(labels)}' has {len(labels)} label names; "
                    f"limit {MAX_LABEL_NAMES}\n")
                continue
            long = [k for k, v in labels.items() if len(v) > MAX_LABEL_VALUE]
            if long:
                first_error = first_error or (
                    f"stream '{_fmt_labels(labels)}' has label value too long\n")
                continue
            for value in stream["values"]:
                ts = int(value[0])
                line = value[1]
                md = value[2] if len(value) > 2 else {}
                if len(line.encode()) > MAX_LINE_BYTES:
                    first_error = first_error or (
                        f"max entry size '{MAX_LINE_BYTES}' bytes exceeded for stream "
                        f"'{_fmt_labels(labels)}' while adding an entry with length "
                        f"'{len(line.encode())}' bytes\n")
                    continue
                if ts < now - REJECT_OLD_NS:
                    first_error = first_error or (
                        f"entry for stream '{_fmt_labels(labels)}' has timestamp too old: "
                        f"{_rfc3339(ts)}, oldest acceptable timestamp is: "
                        f"{_rfc3339(now - REJECT_OLD_NS)}\n")
                    continue
                if ts > now + CREATION_GRACE_NS:
                    first_error = first_error or (
                        f"entry for stream '{_fmt_labels(labels)}' has timestamp too new: "
                        f"{_rfc3339(ts)}\n")
                    continue
                key = (tuple(sorted(labels.items())), ts, line)
                with self.lock:
                    self.entries.setdefault(key, Stored(key[0], ts, line,
                                                        tuple(sorted(md.items()))))
        if first_error:
            return 400, first_error, {}
        return 204, "", {}


class ScriptedTransport:
    """An in-memory Loki behind the pipeline's transport seam, for fast tests of delivery
    logic: each push gets the next answer of ``script``, then ``then`` for every later one.

    Answers: ``"204"`` stores the request's entries; ``"400"`` stores the first half of them
    and refuses the rest (Loki stores the valid entries of a partly refused request), with
    Loki's own message; ``"429"`` is Loki's rate-limit answer; ``"500"`` an internal error;
    ``"refused"`` and ``"timeout"`` raise :class:`TransportError` as a refused connection and
    a timeout do (nothing stored). Entries are deduplicated like Loki (stream, ts, line).
    """

    ANSWERS = ("204", "400", "429", "500", "refused", "timeout")

    def __init__(self, script: list[str] | tuple[str, ...] = (), then: str = "204") -> None:
        for answer in (*script, then):
            if answer not in self.ANSWERS:
                raise ValueError(f"unknown answer {answer!r}: expected one of {self.ANSWERS}")
        self.script = list(script)
        self.then = then
        self.lock = threading.Lock()
        self.stored: dict[tuple[Any, ...], str] = {}
        #: lines of entries a 400 refused
        self.refused: list[str] = []
        #: the answer given to each push, in order
        self.answers: list[str] = []

    def request(self, method: str, url: str, *, headers: Any = None, body: bytes | None = None,
                timeout: float) -> HttpResponse:
        if not url.endswith("/loki/api/v1/push"):
            return HttpResponse(404, b"404 page not found\n")
        with self.lock:
            answer = self.script.pop(0) if self.script else self.then
            self.answers.append(answer)
        if answer == "refused":
            raise TransportError(f"POST {url}: cannot connect: [Errno 111] Connection refused")
        if answer == "timeout":
            raise TransportError(f"POST {url}: timed out after {timeout:g}s", timeout=True)
        if answer == "429":
            status, text, extra = contract.answer("push_429_rate_limited")
            return HttpResponse(status, text.encode(), extra)
        if answer == "500":
            return HttpResponse(500, b"empty ring\n")
        entries = [
            (tuple(sorted(stream["stream"].items())), int(value[0]), value[1])
            for stream in json.loads(body or b"{}")["streams"] for value in stream["values"]
        ]
        keep = entries if answer == "204" else entries[: len(entries) // 2]
        with self.lock:
            for key in keep:
                self.stored.setdefault(key, key[2])
            if answer == "400":
                self.refused += [key[2] for key in entries[len(keep):]]
        if answer == "204":
            return HttpResponse(204)
        status, text, extra = contract.answer("push_400_partial_batch")
        return HttpResponse(status, text.encode(), extra)

    def lines(self) -> list[str]:
        with self.lock:
            return list(self.stored.values())

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _main() -> None:
    """``python -m tests.fakeloki --port N [--no-rate-limit] [--count-only]``: serve until
    killed (benchmarks run it in its own process so it does not share the GIL)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=3100)
    parser.add_argument("--no-rate-limit", action="store_true")
    parser.add_argument("--count-only", action="store_true")
    args = parser.parse_args()
    fake = FakeLoki(port=args.port, rate_limit=not args.no_rate_limit,
                    store=not args.count_only)
    print(f"fake loki on {fake.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    _main()

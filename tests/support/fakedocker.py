"""A fake Docker Engine API on a unix socket, enough for the sidecar's docker source.

It answers as the Engine (API 1.43) does for what the ``docker`` package asks:
``GET /_ping``, ``/version``, ``/containers/json`` (``all``, label ``filters``),
``/containers/{id}/json``, ``/containers/{id}/logs`` (the multiplexed stream: an 8-byte header
``[stream, 0, 0, 0, size (big-endian u32)]`` before each frame, ``timestamps`` as
RFC 3339 with nanoseconds and trailing zeros trimmed, ``since`` as unix seconds with a
fraction, ``follow`` until the container stops) and ``/events`` (a JSON stream, filtered by
type, event and label). Streams use chunked transfer encoding, as the Engine's do.

Tests drive containers: :meth:`FakeDocker.create`, ``start``, ``log``, ``stop``, ``restart``.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socketserver
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "1.43"


def rfc3339_nano(ns: int) -> str:
    """Docker's time format: RFC 3339 in UTC with up to 9 fraction digits, zeros trimmed."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{text}.{frac}Z" if frac else f"{text}Z"


@dataclass
class Container:
    id: str
    name: str
    labels: dict[str, str]
    created: int
    running: bool = False
    #: (timestamp ns, stream 1=stdout 2=stderr, bytes of one line with its newline)
    logs: list[tuple[int, int, bytes]] = field(default_factory=list)
    generation: int = 0  # bumped on each stop: open log streams end


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeDocker:
    def __init__(self, socket_path: Path) -> None:
        self.path = socket_path
        self.containers: dict[str, Container] = {}
        self.cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.log_requests: list[dict[str, list[str]]] = []
        self._last_ns = 0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def address_string(self) -> str:  # a unix socket has no client address
                return "unix"

            def do_GET(self) -> None:
                fake._get(self)

            def do_HEAD(self) -> None:
                fake._get(self)

        self._server = _Server(str(socket_path), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        with self.cond:
            for c in self.containers.values():
                c.running = False
                c.generation += 1
            self.events.append({"closing": True})
            self.cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ containers

    def _now_ns(self) -> int:
        ns = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = ns
        return ns

    def create(self, name: str, labels: dict[str, str] | None = None) -> str:
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        with self.cond:
            self.containers[cid] = Container(cid, name, dict(labels or {}), int(time.time()))
        return cid

    def _event(self, c: Container, action: str) -> None:
        now = self._now_ns()
        self.events.append({
            "status": action, "id": c.id, "from": "app:latest", "Type": "container",
            "Action": action, "Actor": {"ID": c.id, "Attributes": {**c.labels,
                                                                   "name": c.name}},
            "scope": "local", "time": now // 1_000_000_000, "timeNano": now})
        self.cond.notify_all()

    def start(self, cid: str) -> None:
        with self.cond:
            c = self.containers[cid]
            c.running = True
            self._event(c, "start")

    def stop(self, cid: str) -> None:
        with self.cond:
            c = self.containers[cid]
            c.running = False
            c.generation += 1
            self._event(c, "die")
            self._event(c, "stop")

    def restart(self, cid: str) -> None:
        self.stop(cid)
        self.start(cid)

    def log(self, cid: str, *lines: str, stream: int = 1) -> None:
        with self.cond:
            c = self.containers[cid]
            for line in lines:
                c.logs.append((self._now_ns(), stream, line.encode() + b"\n"))
            self.cond.notify_all()

    # ------------------------------------------------------------------ the API

    def _json(self, req: http.server.BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Api-Version", API_VERSION)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _get(self, req: http.server.BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        path = url.path
        if path.startswith("/v1."):
            path = "/" + path.split("/", 2)[2]
        query = parse_qs(url.query)
        if path == "/_ping":
            data = b"OK"
            req.send_response(200)
            req.send_header("Api-Version", API_VERSION)
            req.send_header("Content-Length", "2")
            req.end_headers()
            req.wfile.write(data)
        elif path == "/version":
            self._json(req, 200, {"Version": "24.0.7", "ApiVersion": API_VERSION,
                                  "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64"})
        elif path == "/containers/json":
            self._json(req, 200, self._list(query))
        elif path.startswith("/containers/") and path.endswith("/json"):
            c = self.containers.get(path.split("/")[2])
            if c is None:
                self._json(req, 404, {"message": f"No such container: {path.split('/')[2]}"})
                return
            self._json(req, 200, {
                "Id": c.id, "Name": f"/{c.name}", "Created": rfc3339_nano(c.created * 10**9),
                "State": {"Running": c.running, "Status": "running" if c.running else "exited"},
                "Config": {"Labels": c.labels, "Tty": False, "Image": "app:latest"}})
        elif path.startswith("/containers/") and path.endswith("/logs"):
            self._logs(req, path.split("/")[2], query)
        elif path == "/events":
            self._events(req, query)
        else:
            self._json(req, 404, {"message": "page not found"})

    @staticmethod
    def _label_filter(query: dict[str, list[str]]) -> list[tuple[str, str]]:
        filters = json.loads(query.get("filters", ["{}"])[0])
        wanted = filters.get("label", [])
        if isinstance(wanted, dict):
            wanted = [k for k, v in wanted.items() if v]
        return [tuple(w.split("=", 1)) if "=" in w else (w, "") for w in wanted]  # type: ignore[misc]

    def _matches(self, c: Container, labels: list[tuple[str, str]]) -> bool:
        return all(c.labels.get(k) == v if v else k in c.labels for k, v in labels)

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        everything = query.get("all", ["0"])[0] in ("1", "true", "True")
        labels = self._label_filter(query)
        with self.cond:
            return [{"Id": c.id, "Names": [f"/{c.name}"], "Labels": c.labels,
                     "State": "running" if c.running else "exited", "Created": c.created}
                    for c in self.containers.values()
                    if (everything or c.running) and self._matches(c, labels)]

    def _start_stream(self, req: http.server.BaseHTTPRequestHandler, content_type: str) -> None:
        req.send_response(200)
        req.send_header("Content-Type", content_type)
        req.send_header("Api-Version", API_VERSION)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()

    @staticmethod
    def _chunk(req: http.server.BaseHTTPRequestHandler, data: bytes) -> None:
        req.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        req.wfile.flush()

    def _logs(self, req: http.server.BaseHTTPRequestHandler, cid: str,
              query: dict[str, list[str]]) -> None:
        c = self.containers.get(cid)
        if c is None:
            self._json(req, 404, {"message": f"No such container: {cid}"})
            return
        self.log_requests.append(query)
        follow = query.get("follow", ["0"])[0] == "1"
        stamps = query.get("timestamps", ["0"])[0] == "1"
        since_text = query.get("since", ["0"])[0]
        seconds, _, frac = since_text.partition(".")
        since = int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
        self._start_stream(req, "application/vnd.docker.multiplexed-stream")
        sent = 0
        with self.cond:
            generation = c.generation
        try:
            while True:
                with self.cond:
                    todo = c.logs[sent:]
                    sent = len(c.logs)
                    ended = not follow or not c.running or c.generation != generation
                for ts, stream, line in todo:
                    if since and ts < since:
                        continue
                    payload = (rfc3339_nano(ts).encode() + b" " if stamps else b"") + line
                    self._chunk(req, struct.pack(">BxxxL", stream, len(payload)) + payload)
                if ended:
                    with self.cond:
                        if len(c.logs) == sent:
                            break
                    continue
                with self.cond:
                    if len(c.logs) == sent and c.running and c.generation == generation:
                        self.cond.wait(0.2)
            req.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        req.close_connection = True

    def _events(self, req: http.server.BaseHTTPRequestHandler,
                query: dict[str, list[str]]) -> None:
        filters = json.loads(query.get("filters", ["{}"])[0])
        wanted_events = filters.get("event")
        labels = self._label_filter(query)
        since = int(query.get("since", ["0"])[0] or 0)
        self._start_stream(req, "application/json")
        with self.cond:  # with since: the events from that second on, then the live ones
            seen = len(self.events) if not since else next(
                (i for i, e in enumerate(self.events) if e.get("time", 0) >= since),
                len(self.events))
        try:
            while True:
                with self.cond:
                    while len(self.events) == seen:
                        self.cond.wait(0.5)
                    todo = self.events[seen:]
                    seen = len(self.events)
                for event in todo:
                    if event.get("closing"):
                        raise OSError("closing")
                    c = self.containers.get(event["id"])
                    if wanted_events and event["Action"] not in wanted_events:
                        continue
                    if c is None or not self._matches(c, labels):
                        continue
                    self._chunk(req, json.dumps(event).encode() + b"\n")
        except OSError:
            pass
        req.close_connection = True

"""A fake Loki on 127.0.0.1 that answers pushes the way Loki 3.7.6 does.

Answers and messages are copied from ../shared/loki-contract/: 204 on success; 400 with Loki's
own text for label/line/timestamp problems while the valid entries of the same request ARE
stored; 429 from a token bucket at Loki's default 4 MB/s (burst 6 MB); 500 ResourceExhausted for
a request over 4 MiB. Identical (stream, timestamp, line) entries are stored once, like Loki.
It decodes JSON, gzip JSON and snappy protobuf. Tests can also script answers, take it down
(connections refused) and bring it back on the same port.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import functools
import gzip
import http.server
import json
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import yaml

from shipper._units import parse_duration_ns
from shipper.delivery.transport import HttpResponse, TransportError
from tests.support import contract

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
    try:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # past year 9999 (only protobuf carries it)
        return str(ns)


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
                        seconds = parts.get(1, 0)  # int64: two's complement before 1970
                        seconds -= 2**64 if seconds >= 2**63 else 0
                        ts = seconds * 10**9 + parts.get(2, 0)
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
                 rate_limit: bool = True, port: int = 0, store: bool = True,
                 target: str = "all") -> None:
        #: a simple scalable Loki's target (write, read, backend) answers 404 for the APIs
        #: another target serves, as Loki 3.7.6 does; "all" is the single binary
        self.target = target
        self.rate_bytes = rate_bytes
        self.burst_bytes = burst_bytes
        self.rate_limit = rate_limit
        #: False: only count entries (benchmarks: the fake must not grow with the load)
        self.store = store
        self.received = 0
        #: entries of accepted pushes, duplicates included (stored ones are deduplicated)
        self.pushed_values = 0
        self._tokens = burst_bytes
        self._tokens_at = time.monotonic()
        self.lock = threading.Lock()
        self.entries: dict[tuple[Any, ...], Stored] = {}
        #: how often each (stream, timestamp, line) was stored, duplicates included
        self.stores: Counter[tuple[Any, ...]] = Counter()
        self.requests: list[Request] = []
        self.script = Script()
        self.hook: Callable[[Request], tuple[int, str, dict[str, str]] | None] | None = None
        self.delay = 0.0
        #: "METHOD /path-prefix" -> (status, body, headers) for reads and admin calls
        self.routes: dict[str, tuple[int, str, dict[str, str]]] = {}
        #: Loki's read limits (limits_config defaults): enforced like Loki
        self.max_query_length_ns = (30 * 24 + 1) * 3600 * 10**9
        self.max_entries_limit = 5000
        self.delete_cancel_period_s = 24 * 3600
        #: deletion requests, as GET /loki/api/v1/delete lists them
        self.deletes: list[dict[str, Any]] = []
        #: the effective configuration GET /config prints (tests may change it)
        self.config: dict[str, Any] = default_config()
        self._sorted: list[Stored] | None = None
        #: LogQL -> (status, body, headers) for GET /loki/api/v1/query and /query_range: answers
        #: recorded from a real Loki (see :meth:`answer_queries`); other queries are evaluated
        self.query_answers: dict[str, tuple[int, str, dict[str, str]]] = {}
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
                if self._other_target() or self._routed("POST"):
                    return
                if self.path.startswith("/loki/api/v1/delete"):
                    self._record("POST")
                    self._answer(*fake.handle_read("POST", self.path))
                    return
                status, text, headers = fake._handle_push(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self._answer(status, text, headers)

            def _other_target(self) -> bool:
                path = self.path.split("?", 1)[0]
                owner = next((t for prefix, t in _TARGET_OF if path.startswith(prefix)), None)
                if fake.target == "all" or owner is None or owner == fake.target:
                    return False
                self._answer(404, "404 page not found\n", {})
                return True

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
                if not self._other_target() and not self._routed("DELETE"):
                    self._record("DELETE")
                    self._answer(*fake.handle_read("DELETE", self.path))

            def _record(self, method: str) -> None:
                with fake.lock:
                    fake.requests.append(Request(f"{method} {self.path}",
                                                 dict(self.headers.items()), b""))

            def do_GET(self) -> None:
                if self._other_target() or self._routed("GET"):
                    return
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query)).get("query", "")
                if url.path in ("/loki/api/v1/query", "/loki/api/v1/query_range") \
                        and query in fake.query_answers:
                    # an answer recorded from a real Loki (see answer_queries)
                    self._record("GET")
                    self._answer(*fake.query_answers[query])
                elif self.path.startswith(("/loki/api/v1/", "/config")):
                    self._record("GET")
                    self._answer(*fake.handle_read("GET", self.path))
                elif self.path == "/fake/count":
                    self._answer(200, f"{fake.received if not fake.store else fake.count()}\n",
                                 {})
                elif self.path == "/ready":
                    self._answer(200, "ready\n", {})
                else:
                    self._answer(404, "404 page not found\n", {})

            def _answer(self, status: int, text: str, headers: dict[str, str]) -> None:
                data = text.encode()
                self.send_response(status)
                typed = any(k.lower() == "content-type" for k in headers)
                if status != 204:
                    if not typed:
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

    def answer_queries(self, recorded: Mapping[str, Mapping[str, Any]]) -> None:
        """Answer queries as recorded: each value is ``{"request": {"path": ...}, "status",
        "headers", "body"}`` (the loki-contract shape), keyed by anything."""
        for answer in recorded.values():
            path = answer["request"]["path"]
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))["query"]
            body = answer["body"]
            text = body if isinstance(body, str) else json.dumps(body)
            self.query_answers[query] = (answer["status"], text, dict(answer.get("headers", {})))

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

    def add(self, labels: dict[str, str], ts: int, line: str,
            metadata: dict[str, str] | None = None) -> None:
        """Store one entry as a push would (tests seed history with it, old timestamps
        included); identical (stream, timestamp, line) entries are stored once."""
        key = (tuple(sorted(labels.items())), ts, line)
        with self.lock:
            self.stores[key] += 1
            if key not in self.entries:
                self.entries[key] = Stored(key[0], ts, line, tuple(sorted((metadata or {})
                                                                          .items())))
                self._sorted = None

    def wait_for_count(self, n: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return self.count()
            time.sleep(0.02)
        return self.count()

    # -- reads, deletion, config --------------------------------------------------------------

    def handle_read(self, method: str, path: str) -> tuple[int, str, dict[str, str]]:
        parts = urllib.parse.urlsplit(path)
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query,
                                                             keep_blank_values=True).items()}
        route = parts.path
        try:
            if route == "/config":
                return 200, self._config_text(), {"Content-Type": "text/plain; charset=utf-8"}
            if route == "/loki/api/v1/query_range":
                return self._json(self._query_range(params))
            if route == "/loki/api/v1/query":
                return self._json(self._query_instant(params))
            if route == "/loki/api/v1/labels":
                self._check_length(params)
                names = {k for s in self._selected(params, "query") for k, _ in s.labels}
                return self._json({"status": "success", "data": sorted(names)})
            m = re.fullmatch(r"/loki/api/v1/label/([^/]+)/values", route)
            if m:
                self._check_length(params)
                name = urllib.parse.unquote(m.group(1))
                values = {v for s in self._selected(params, "query") for k, v in s.labels
                          if k == name}
                return self._json({"status": "success", "data": sorted(values)})
            if route == "/loki/api/v1/series":
                self._check_length(params)
                seen = {s.labels for s in self._selected(params, "match[]")}
                return self._json({"status": "success", "data": [dict(x) for x in sorted(seen)]})
            if route == "/loki/api/v1/delete":
                return self._delete(method, params)
        except LogQLError as exc:
            return 400, f"parse error at line 0, col {exc.pos + 1}: {exc}", {}
        except _Refused as exc:
            return exc.status, exc.text, {}
        return 404, "404 page not found\n", {}

    def _config_text(self) -> str:
        key = json.dumps(self.config, sort_keys=True, default=str)
        if getattr(self, "_config_key", None) != key:
            self._config_key = key
            dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
            self._config_yaml = yaml.dump(self.config, Dumper=dumper, sort_keys=False)
        return self._config_yaml

    @staticmethod
    def _json(body: Any) -> tuple[int, str, dict[str, str]]:
        return 200, json.dumps(body), {"Content-Type": "application/json; charset=UTF-8"}

    def _index(self) -> list[Stored]:
        with self.lock:
            if self._sorted is None:
                self._sorted = sorted(self.entries.values(), key=lambda s: (s.ts, s.labels,
                                                                             s.line))
            return self._sorted

    def _between(self, lo: int, hi: int) -> list[Stored]:
        """Entries with lo <= ts < hi, oldest first."""
        index = self._index()
        a = bisect.bisect_left(index, lo, key=lambda s: s.ts)
        b = bisect.bisect_left(index, hi, key=lambda s: s.ts)
        return index[a:b]

    def _in_range(self, params: dict[str, str]) -> list[Stored]:
        end = int(params.get("end") or time.time_ns())
        start = int(params.get("start") or end - 3600 * 10**9)
        return self._between(start, end)

    def _check_length(self, params: dict[str, str]) -> None:
        end = int(params.get("end") or time.time_ns())
        start = int(params.get("start") or end - 3600 * 10**9)
        length = (end // 10**6 - start // 10**6) * 10**6
        if length > self.max_query_length_ns:
            raise _Refused(400, "the query time range exceeds the limit (query length: "
                           f"{_go_duration(length)}, limit: 30d1h)")

    def _selected(self, params: dict[str, str], key: str) -> list[Stored]:
        """The entries in range whose stream labels the selector ``params[key]`` matches
        (label matchers only, as Loki's label and series APIs take)."""
        entries = self._in_range(params)
        text = params.get(key)
        if not text:
            return entries
        kind, query = parse_logql(text)
        if kind != "log" or query.stages:
            raise _Refused(400, "only label matchers are supported")
        return [s for s in entries if query.process(dict(s.labels), s.line) is not None]

    def _query_range(self, params: dict[str, str]) -> dict[str, Any]:
        end = int(params.get("end") or time.time_ns())
        start = int(params.get("start") or end - 3600 * 10**9)
        limit = int(params.get("limit") or 100)
        direction = params.get("direction") or "backward"
        self._check_length(params)
        if limit > self.max_entries_limit:
            raise _Refused(400, "max entries limit per query exceeded, limit > "
                           f"max_entries_limit_per_query ({limit} > {self.max_entries_limit})")
        kind, query = parse_logql(params["query"])
        if kind != "log":
            return self._matrix(query, start, end, params.get("step"))
        entries = self._between(start, end)
        ordered = entries if direction == "forward" else reversed(entries)
        picked: list[tuple[dict[str, str], Stored]] = []
        for stored in ordered:
            labels = query.process({**dict(stored.labels), **dict(stored.metadata)}, stored.line)
            if labels is not None:
                picked.append((labels, stored))
                if len(picked) >= limit:
                    break
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for labels, stored in picked:
            streams.setdefault(tuple(sorted(labels.items())), []).append(
                [str(stored.ts), stored.line])
        result = [{"stream": dict(k), "values": v} for k, v in streams.items()]
        return {"status": "success", "data": {"resultType": "streams", "result": result,
                                              "stats": {}}}

    def _matrix(self, tree: Any, start: int, end: int, step: str | None) -> dict[str, Any]:
        """A metric range query: the tree evaluated at every step from ``start`` (Loki's
        default step: the range over 250 points, at least 1s)."""
        if step and re.fullmatch(r"[0-9.]+", step):
            step_ns = int(float(step) * 10**9)
        elif step:
            step_ns = parse_duration_ns(step)
        else:
            step_ns = max(1, (end - start) // 10**9 // 250) * 10**9
        if step_ns <= 0 or (end - start) // step_ns > 11000:
            raise _Refused(400, "exceeded maximum resolution of 11,000 points per timeseries. "
                           "Try decreasing the query resolution (?step=XX)")
        series: dict[frozenset[tuple[str, str]], list[list[Any]]] = {}
        at = start
        while at <= end:
            for key, value in self._eval(tree, at).items():
                series.setdefault(key, []).append([at / 1e9, _number(value)])
            at += step_ns
        result = [{"metric": dict(k), "values": v} for k, v in series.items()]
        return {"status": "success", "data": {"resultType": "matrix", "result": result,
                                              "stats": {}}}

    def _query_instant(self, params: dict[str, str]) -> dict[str, Any]:
        at = int(params.get("time") or time.time_ns())
        kind, tree = parse_logql(params["query"])
        if kind != "metric":
            raise _Refused(400, "log queries are not supported as an instant query type, "
                           "please change your query to a range query type")
        vector = self._eval(tree, at)
        result = [{"metric": dict(k), "value": [at / 1e9, _number(v)]}
                  for k, v in vector.items()]
        return {"status": "success", "data": {"resultType": "vector", "result": result,
                                              "stats": {}}}

    def _eval(self, node: Any, at: int) -> dict[frozenset[tuple[str, str]], float]:
        op = node[0]
        if op == "count":
            _, query, rng = node
            out: dict[frozenset[tuple[str, str]], float] = {}
            for stored in self._between(at - rng + 1, at + 1):
                labels = query.process({**dict(stored.labels), **dict(stored.metadata)},
                                       stored.line)
                if labels is not None:
                    key = frozenset(labels.items())
                    out[key] = out.get(key, 0) + 1
            return out
        if op == "sum":
            _, by, _, inner = node
            out = {}
            for key, value in self._eval(inner, at).items():
                labels = dict(key)
                group = frozenset((k, labels[k]) for k in (by or []) if labels.get(k))
                out[group] = out.get(group, 0) + value
            return out
        if op == "topk":
            _, _, k, inner = node
            return dict(sorted(self._eval(inner, at).items(), key=lambda kv: -kv[1])[:k])
        _, left, right = node  # div
        a, b = self._eval(left, at), self._eval(right, at)
        return {k: v / b[k] for k, v in a.items() if b.get(k)}

    def _delete(self, method: str, params: dict[str, str]) -> tuple[int, str, dict[str, str]]:
        if method == "GET":
            return 200, json.dumps(sorted(self.deletes, key=lambda d: d["created_at"])), {
                "Content-Type": "application/json"}
        if method == "DELETE":
            found = [d for d in self.deletes if d["request_id"] == params.get("request_id")]
            if not found:
                return 404, "could not find delete request with given id\n", {}
            request = found[0]
            if request["status"] == "processed":
                return 400, ("deletion of request which is in process or already processed is "
                             "not allowed\n"), {}
            if request["created_at"] + self.delete_cancel_period_s < time.time() \
                    and params.get("force") != "true":
                return 400, ("Cancellation of partially completed delete request or delete "
                             "request past the deadline of 24h0m0s since its creation is not "
                             "allowed. To force, use the ?force query parameter\n"), {}
            self.deletes.remove(request)
            return 204, "", {}
        query = params.get("query", "")
        if not query:
            return 400, "query not set\n", {}
        try:
            kind, _ = parse_logql(query)
        except LogQLError:
            kind = ""
        if kind != "log":
            return 400, "invalid query expression\n", {}
        if not params.get("start"):
            return 400, "start time not set\n", {}
        start, end = _delete_time(params["start"]), _delete_time(params.get("end", ""))
        if start is None:
            return 400, "invalid start time: require unix seconds or RFC3339 format\n", {}
        if end is None:
            return 400, "invalid end time: require unix seconds or RFC3339 format\n", {}
        if end > time.time():
            return 400, "deletes in the future are not allowed\n", {}
        if start >= end:
            return 400, "start time can't be greater than or equal to end time\n", {}
        request_id = f"{random.getrandbits(32):08x}"
        self.deletes.append({"request_id": request_id, "start_time": start, "end_time": end,
                             "query": query, "status": "received",
                             "created_at": round(time.time(), 3), "user_id": ""})
        return 204, "", {"X-Delete-Request-Id": request_id}

    def process_deletes(self) -> int:
        """Carry out every received deletion request as the compactor would (after the cancel
        period); returns how many entries went."""
        removed = 0
        for request in self.deletes:
            if request["status"] != "received":
                continue
            _, query = parse_logql(request["query"])
            lo, hi = int(request["start_time"] * 10**9), int(request["end_time"] * 10**9)
            for stored in self._between(lo, hi + 1):
                labels = {**dict(stored.labels), **dict(stored.metadata)}
                if query.process(labels, stored.line) is not None:
                    with self.lock:
                        self.entries.pop((stored.labels, stored.ts, stored.line), None)
                        self._sorted = None
                    removed += 1
            request["status"] = "processed"
        return removed

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
        if not streams:  # measured on Loki 3.7.6: a push of no stream at all
            return 422, "error at least one valid stream is required for ingestion\n", {}
        unreadable = _unreadable_timestamp(streams) or _unparsable_labels(streams)
        if unreadable:  # Loki reads the whole request before it stores any of it
            return 400, unreadable, {}
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
        with self.lock:
            self.pushed_values += sum(len(s["values"]) for s in streams)
        now = time.time_ns()
        errors: list[str] = []
        for stream in streams:
            labels: dict[str, str] = stream["stream"] or {"service_name": "unknown_service"}
            if len(labels) > MAX_LABEL_NAMES:
                errors.append(
                    f"entry for stream '{_fmt_labels(labels)}' has {len(labels)} label names; "
                    f"limit {MAX_LABEL_NAMES}\n")
                continue
            long = [k for k, v in labels.items() if len(v) > MAX_LABEL_VALUE]
            if long:
                errors.append(
                    f"stream '{_fmt_labels(labels)}' has label value too long\n")
                continue
            for value in stream["values"]:
                ts = int(value[0])
                line = value[1]
                md = value[2] if len(value) > 2 else {}
                # Loki checks the time first (measured: an entry too old and too long is
                # refused as too old); a protobuf time past 2262 overflows Loki's int64 and is
                # refused as too old
                if ts < now - REJECT_OLD_NS or ts >= 2**63:
                    errors.append(
                        f"entry for stream '{_fmt_labels(labels)}' has timestamp too old: "
                        f"{_rfc3339(ts)}, oldest acceptable timestamp is: "
                        f"{_rfc3339(now - REJECT_OLD_NS)}\n")
                    continue
                if ts > now + CREATION_GRACE_NS:
                    errors.append(
                        f"entry for stream '{_fmt_labels(labels)}' has timestamp too new: "
                        f"{_rfc3339(ts)}\n")
                    continue
                if len(line.encode()) > MAX_LINE_BYTES:
                    errors.append(
                        f"max entry size '{MAX_LINE_BYTES}' bytes exceeded for stream "
                        f"'{_fmt_labels(labels)}' while adding an entry with length "
                        f"'{len(line.encode())}' bytes\n")
                    continue
                self.add(labels, ts, line, md)
        if errors:
            return 400, _grouped(errors), {}
        return 204, "", {}


#: what Loki 3.7.6 answers for a JSON push holding a timestamp that is not a signed 64-bit
#: number of nanoseconds ("not-a-number", "10413792000000000000", "-9223372036854775809"): the
#: whole request is refused, nothing of it stored (push_400_bad_timestamp.json)
_BAD_TIMESTAMP = ("loghttp.PushRequest.Streams: []loghttp.LogProtoStream: unmarshalerDecoder: "
                  "Value looks like Number/Boolean/None, but can't find its end: ',' or '}}' "
                  "symbol, error found in #10 byte of ...|{near}|..., bigger context "
                  "...|{context}|...\n")


def _unreadable_timestamp(streams: list[dict[str, Any]]) -> str | None:
    """Loki's answer when one entry's timestamp cannot be read as int64 ns; None when all can
    (protobuf carries seconds and nanos: those are read as numbers before this)."""
    for stream in streams:
        for value in stream["values"]:
            ts = value[0]
            try:
                ok = -(2**63) <= int(ts) < 2**63
            except (TypeError, ValueError):
                ok = False
            if not ok:
                text = json.dumps(value)
                return _BAD_TIMESTAMP.format(near=text[-12:], context=text[-60:])
    return None


def _unparsable_labels(streams: list[dict[str, Any]]) -> str | None:
    """Loki's answer when a label name cannot be parsed (measured on Loki 3.7.6: its labels
    parser reads every stream before anything is stored, so the whole request is refused);
    None when every name can."""
    for stream in streams:
        bad = [k for k in stream["stream"] if not _LABEL_NAME.match(k)]
        if bad:
            return ("couldn't parse labels: 1:5: parse error: unexpected character inside "
                    f"braces: '{re.sub(r'[A-Za-z0-9_]', '', bad[0])[:1]}'\n")
    return None


def _grouped(errors: list[str]) -> str:
    """Loki's GroupedErrors: each distinct message once, "N errors like: " before it when it
    happened more than once or when there are several; "; " between them."""
    counts: dict[str, int] = {}
    for e in errors:
        counts[e.rstrip("\n")] = counts.get(e.rstrip("\n"), 0) + 1
    parts = [(f"{n} errors like: " if len(counts) > 1 or n > 1 else "") + msg
             for msg, n in counts.items()]
    return "; ".join(parts) + "\n"


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _delete_time(text: str) -> float | None:
    if text == "":
        return time.time()
    if re.fullmatch(r"\d{10}", text):
        return float(text)
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def default_config() -> dict[str, Any]:
    """What GET /config prints for a Loki started from loki/config.yaml: the contract's
    defaults with the repository's config on top (a fresh copy each time)."""
    return copy.deepcopy(_default_config())


@functools.cache
def _default_config() -> dict[str, Any]:
    from tests.support.contract import CONTRACT_DIR

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    base = yaml.load((CONTRACT_DIR / "loki-3.7.6-config-defaults.yaml").read_text(), loader)
    ours = yaml.load((Path(__file__).resolve().parents[2] / "loki" / "config.yaml")
                     .read_text(), loader)

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k),
                                                                              dict) else v
        return out

    return merge(base, ours)

# Which target of a simple scalable Loki 3.7.6 serves which API (measured: REFERENCE.md); the
# others answer 404. /config and /ready are served by all three.
_TARGET_OF = (
    ("/loki/api/v1/push", "write"),
    ("/flush", "write"),
    ("/loki/api/v1/delete", "backend"),
    ("/loki/api/v1/", "read"),
)
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
    """``python -m tests.support.fakeloki --port N [--no-rate-limit] [--count-only]``: serve until
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


# ----------------------------------------------------------------------------- LogQL subset
#
# Enough LogQL to answer the queries shipper builds (shipper/loki/logql.py, the dashboards'
# count expressions) the way Loki does: stream selectors, label filters on labels, structured
# metadata and `| json` fields (joined with `or`/`and`), line filters, `count_over_time`,
# `sum [by (...)]`, `topk` and `/` between two vectors. Anything else is a parse error.


class LogQLError(ValueError):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\\n]|\\.)*"|`[^`]*`)
  | (?P<dur>\d+(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<op>\|=|\|~|!=|!~|=~|[{}(),\[\]|=/])
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
)""", re.X)
_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               "\\": "\\", '"': '"'}


def _unquote(raw: str, pos: int) -> str:
    if raw.startswith("`"):
        return raw[1:-1]
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in _GO_ESCAPES:
            out.append(_GO_ESCAPES[e])
            i += 2
        elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2:i + 4]):
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        else:
            raise LogQLError(f"invalid escape \\{e}", pos)
    return "".join(out)


def _go_duration(ns: int) -> str:
    """Go's time.Duration.String() for whole milliseconds and up (Loki's 'query length')."""
    ms = ns // 10**6
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    sec = f"{s}.{ms:03d}".rstrip("0").rstrip(".") if ms else f"{s}"
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


@dataclass(frozen=True)
class _Matcher:
    name: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit


@dataclass
class _LogQuery:
    matchers: list[_Matcher]
    stages: list[tuple[str, Any]]

    def process(self, labels: dict[str, str], line: str) -> dict[str, str] | None:
        """The entry's labels after the pipeline, or None when it is filtered out."""
        if not all(m.matches(labels) for m in self.matchers):
            return None
        out = dict(labels)
        for kind, arg in self.stages:
            if kind == "json":
                try:
                    body = json.loads(line)
                    if not isinstance(body, dict):
                        raise ValueError
                except ValueError:
                    out["__error__"] = "JSONParserErr"
                    continue
                if arg:
                    for name, path in arg:
                        value = body.get(path)
                        if value is not None:
                            out[name] = value if isinstance(value, str) else json.dumps(value)
                else:
                    for key, value in _flatten(body):
                        out[key if key not in labels else key + "_extracted"] = value
            elif kind == "filter":
                if not _eval_filter(arg, out):
                    return None
            elif kind == "line":
                op, text = arg
                hit = (text in line) if op in ("|=", "!=") else re.search(text, line) is not None
                if hit != (op in ("|=", "|~")):
                    return None
        return out


def _flatten(body: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in body.items():
        name = re.sub(r"[^A-Za-z0-9_]", "_", prefix + key)
        if isinstance(value, dict):
            out += _flatten(value, name + "_")
        elif value is not None and not isinstance(value, list):
            out.append((name, value if isinstance(value, str) else json.dumps(value)))
    return out


def _eval_filter(node: Any, labels: dict[str, str]) -> bool:
    if isinstance(node, _Matcher):
        return node.matches(labels)
    op, left, right = node
    if op == "or":
        return _eval_filter(left, labels) or _eval_filter(right, labels)
    return _eval_filter(left, labels) and _eval_filter(right, labels)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise LogQLError(f"syntax error: unexpected {text[pos:pos + 10]!r}", pos)
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        k, v, _ = self.tokens[self.i]
        return (value is None or v == value) and (kind is None or k == kind)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        if not self.peek(value, kind):
            pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
            got = self.tokens[self.i][1] if self.i < len(self.tokens) else "$end"
            raise LogQLError(f"syntax error: unexpected {got}, expecting {value or kind}", pos)
        self.i += 1
        return self.tokens[self.i - 1][1]

    def string(self) -> str:
        pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        return _unquote(self.take(kind="str"), pos)

    def done(self) -> None:
        if self.i != len(self.tokens):
            self.take("$end")

    # -- log queries
    def log_query(self) -> _LogQuery:
        self.take("{")
        matchers = [self.matcher()]
        while self.peek(","):
            self.take(",")
            matchers.append(self.matcher())
        self.take("}")
        stages: list[tuple[str, Any]] = []
        while self.peek("|") or self.peek("|=") or self.peek("|~") or self.peek("!=") \
                or self.peek("!~"):
            op = self.take()
            if op != "|":
                stages.append(("line", (op, self.string())))
            elif self.peek("json"):
                self.take("json")
                params: list[tuple[str, str]] = []
                while self.peek(kind="id") and self.tokens[self.i + 1][1] == "=":
                    name = self.take(kind="id")
                    self.take("=")
                    params.append((name, self.string()))
                    if self.peek(","):
                        self.take(",")
                stages.append(("json", params))
            else:
                stages.append(("filter", self.filter_expr()))
        return _LogQuery(matchers, stages)

    def matcher(self) -> _Matcher:
        name = self.take(kind="id")
        op = self.take()
        if op not in ("=", "!=", "=~", "!~"):
            raise LogQLError(f"syntax error: unexpected {op}", self.tokens[self.i - 1][2])
        value = self.string()
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise LogQLError(f"error parsing regexp: {exc}", self.tokens[self.i - 1][2]) \
                    from None
        return _Matcher(name, op, value)

    def filter_expr(self) -> Any:
        node: Any = self.matcher()
        while self.peek("or") or self.peek("and"):
            op = self.take()
            node = (op, node, self.matcher())
        return node

    # -- metric queries
    def metric(self) -> Any:
        left = self.metric_term()
        while self.peek("/"):
            self.take("/")
            left = ("div", left, self.metric_term())
        return left

    def metric_term(self) -> Any:
        if self.peek("("):
            self.take("(")
            inner = self.metric()
            self.take(")")
            return inner
        fn = self.take(kind="id")
        if fn == "count_over_time":
            self.take("(")
            query = self.log_query()
            self.take("[")
            rng = parse_duration_ns(self.take(kind="dur"))
            self.take("]")
            self.take(")")
            return ("count", query, rng)
        if fn in ("sum", "topk"):
            by = self.grouping()
            self.take("(")
            k = None
            if fn == "topk":
                k = int(self.take(kind="num"))
                self.take(",")
            inner = self.metric()
            self.take(")")
            by = by if by is not None else self.grouping()
            return (fn, by, k, inner)
        raise LogQLError(f"syntax error: unexpected {fn}", self.tokens[self.i - 1][2])

    def grouping(self) -> list[str] | None:
        if not self.peek("by"):
            return None
        self.take("by")
        self.take("(")
        names = [self.take(kind="id")]
        while self.peek(","):
            self.take(",")
            names.append(self.take(kind="id"))
        self.take(")")
        return names


def parse_logql(text: str) -> tuple[str, Any]:
    """("log", _LogQuery) or ("metric", tree); raises LogQLError like Loki's parser."""
    parser = _Parser(text)
    if parser.peek("{"):
        query = parser.log_query()
        parser.done()
        return "log", query
    tree = parser.metric()
    parser.done()
    return "metric", tree

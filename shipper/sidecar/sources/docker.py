"""The docker source: follow the logs of containers selected by label (the ``docker`` package).

* Containers are found by label (``labels``): those running at start-up, those started later
  (the Engine's event stream, with ``refresh_interval`` as a safety net), and, once at start-up,
  stopped ones that logged while the sidecar was away.
* Each container's ``service_name`` is its ``service_label`` label, else its compose service
  (``com.docker.compose.service``), else its name. Lines are parsed with the configured format;
  a line without its own time gets Docker's timestamp.
* The position of a container is the Docker timestamp (ns) of the last line handed to the
  pipeline; it is saved like file offsets (only once the pipeline has taken those events). A
  restart of the sidecar, a ``docker restart`` or a stop/start resumes after that timestamp,
  without reading a line twice. A container that exits a moment after it starts is still read:
  the Engine keeps its logs until it is removed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shipper.event import LogEvent
from shipper.sidecar.config import DockerSourceConfig
from shipper.sidecar.drop import DropFilter
from shipper.sidecar.formats import LineParser, cut_line, parse_timestamp
from shipper.sidecar.multiline import Joiner
from shipper.sidecar.positions import Positions
from shipper.sidecar.sources.base import Sample, Source, Wiring

__all__ = ["DockerSource"]

_COMPOSE_SERVICE = "com.docker.compose.service"


class _Follow:
    """One container's log stream, on its own thread."""

    def __init__(self, source: DockerSource, cid: str, name: str, service: str) -> None:
        self.source = source
        self.cid = cid
        self.name = name
        self.parser = source.make_parser(service)
        self.stream: Any = None
        self.thread = threading.Thread(target=self.run, name=f"shipper-docker-{cid[:12]}",
                                       daemon=True)
        self.stopping = False

    def run(self) -> None:
        source = self.source
        since = source.committed.get(self.cid)
        kwargs: dict[str, Any] = {"stream": True, "follow": True, "timestamps": True,
                                  "stdout": True, "stderr": True}
        if since:
            kwargs["since"] = max(since // 1000 / 1e6 - 0.000001, 0.000001)  # µs, a bit early
        joiner: Joiner[int] | None = None
        ml = source.config.multiline
        parse, submit, drop = self.parser.parse, source.submit, source.drop

        def emit(first: str, rest: str | None, ts: int) -> None:
            event = parse(first, rest, ts)
            if drop is None or not drop.drops(event, first, rest, time.time_ns()):
                submit(event)
            source.committed[self.cid] = ts

        if ml is not None:
            joiner = Joiner(ml.start, timeout=ml.timeout, max_lines=ml.max_lines,
                            max_bytes=source.config.max_line_bytes, emit=emit)
        try:
            self.stream = source.client.api.logs(self.cid, **kwargs)
            buf = b""
            for chunk in self.stream:
                if self.stopping:
                    break
                buf += chunk
                if b"\n" not in buf:
                    if len(buf) > source.config.max_line_bytes * 2:
                        buf = self._lines([buf], since, joiner, emit)
                    continue
                *lines, buf = buf.split(b"\n")
                self._lines(lines, since, joiner, emit)
                if joiner is not None:
                    joiner.expire(time.monotonic())
            if buf and not self.stopping:
                self._lines([buf], since, joiner, emit)
        except Exception as exc:
            if not self.stopping:
                source.report(f"docker source {source.name}: logs of {self.name} ({self.cid[:12]}) "
                              f"stopped: {type(exc).__name__}: {exc}")
        finally:
            if joiner is not None:
                joiner.flush()
            with contextlib.suppress(Exception):
                if self.stream is not None:
                    self.stream.close()
            source.ended(self)

    def _lines(self, lines: list[bytes], since: int | None, joiner: Joiner[int] | None,
               emit: Callable[[str, str | None, int], None]) -> bytes:
        source = self.source
        limit = source.config.max_line_bytes
        now = time.monotonic()
        for raw in lines:
            stamp, _, body = raw.partition(b" ")
            ts = parse_timestamp(stamp.decode("ascii", "replace"))
            if ts is None:  # not a Docker timestamp: keep the whole line
                ts, body = time.time_ns(), raw
            elif since is not None and ts <= since:
                continue  # shipped before this stream started
            source.lines_read += 1
            if len(body) > limit:
                text = cut_line(body[:limit], len(body))
            else:
                text = body.decode("utf-8", "replace").removesuffix("\r")
            if joiner is not None:
                if joiner.pending or text.strip():
                    joiner.push(text, ts, now)
                continue
            if text.strip():
                emit(text, None, ts)
            else:
                source.committed[self.cid] = ts
        return b""


class DockerSource(Source[DockerSourceConfig]):
    kind = "docker"
    keeps_positions = True
    needs = ("docker", "docker")

    def __init__(
        self,
        config: DockerSourceConfig,
        *,
        parser: LineParser,
        submit: Callable[[LogEvent], None],
        saved: Mapping[str, int] | None = None,
        pressure: Callable[[], bool] = lambda: False,
        report: Callable[[str], None] = lambda message: None,
        name: str = "docker",
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._template = parser
        self._submit = submit
        self._pressure = pressure
        self.report = report
        #: the drop rules (None: none)
        self.drop = DropFilter.of(config.drop, name, report)
        self.committed: dict[str, int] = dict(saved or {})
        self._client_factory = client_factory or self._new_client
        self.client: Any = None
        self._follows: dict[str, _Follow] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # read the container list now
        self._events_stream: Any = None
        self._thread: threading.Thread | None = None
        #: why the container list cannot be read (None once it is: /ready)
        self._trouble: str | None = "not read yet"
        self._events_thread: threading.Thread | None = None
        self.lines_read = 0
        self.failed: BaseException | None = None
        self._invalid_done = 0

    @classmethod
    def build(cls, config: DockerSourceConfig, wiring: Wiring) -> DockerSource:
        return cls(config, parser=wiring.parser(config), submit=wiring.pipeline.submit,
                   saved=wiring.saved.containers or {}, pressure=wiring.pressure,
                   report=wiring.report, name=wiring.name)

    # ------------------------------------------------------------------ parts

    def _new_client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.config.host, version="auto", timeout=30)

    def make_parser(self, service: str) -> LineParser:
        t = self._template
        return LineParser(format=self.config.format, level_pattern=self.config.level_pattern,
                          timezone=self.config.timezone, service=service, env=t.env)

    def submit(self, event: LogEvent) -> None:
        while self._pressure() and not self._stop.is_set():
            time.sleep(0.005)
        self._submit(event)

    def describe(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in self.config.labels.items()) or "(all)"
        return f"following containers labelled {labels} at {self.config.host}"

    def invalid_lines(self) -> int:
        with self._lock:
            return self._invalid_done + sum(f.parser.invalid for f in self._follows.values())

    @property
    def followed(self) -> int:
        with self._lock:
            return len(self._follows)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def not_ready(self) -> str | None:
        """Not running, or the container list has not been read yet (or not since the
        Docker API last failed)."""
        if not self.alive:
            return super().not_ready()
        trouble = self._trouble
        if trouble is not None:
            return f"{self.name} cannot list the containers at {self.config.host}: {trouble}"
        return None

    def snapshot(self) -> dict[str, int]:
        """Each container's position: the Docker timestamp of its last line shipped."""
        with self._lock:
            return {cid: ts for cid, ts in self.committed.items() if ts}

    def positions(self) -> Positions:
        return Positions(containers=self.snapshot())

    def samples(self) -> Iterator[Sample]:
        yield "containers_followed", (self.name,), self.followed
        if self.drop is not None:
            yield from self.drop.samples()

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"shipper-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, deadline: float) -> None:
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(Exception):
            if self._events_stream is not None:
                self._events_stream.close()
        with self._lock:
            follows = list(self._follows.values())
        for follow in follows:
            follow.stopping = True
            with contextlib.suppress(Exception):
                if follow.stream is not None:
                    follow.stream.close()
        for follow in follows:
            follow.thread.join(max(deadline - time.monotonic(), 0.05))
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0.05))

    def ended(self, follow: _Follow) -> None:
        with self._lock:
            if self._follows.get(follow.cid) is follow:
                del self._follows[follow.cid]
                self._invalid_done += follow.parser.invalid
        # A `docker restart` may have sent its start event while this stream was still
        # ending: look at the container list now rather than at the next refresh.
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    def _filters(self) -> dict[str, Any]:
        return {"label": [f"{k}={v}" for k, v in self.config.labels.items()]}

    def _run(self) -> None:
        backoff = 1.0
        first = True
        while not self._stop.is_set():
            try:
                if self.client is None:
                    self.client = self._client_factory()
                listed_at = int(time.time()) - 1
                self._refresh(include_stopped=first)
                first = False
                self._trouble = None
                if self._events_thread is None or not self._events_thread.is_alive():
                    # events since the list was read: a container that starts (and maybe
                    # exits) before the stream is open is not missed
                    self._events_thread = threading.Thread(
                        target=self._events, args=(listed_at,),
                        name=f"shipper-{self.name}-events", daemon=True)
                    self._events_thread.start()
                backoff = 1.0
                if self._wake.wait(self.config.refresh_interval):
                    self._stop.wait(0.2)  # woken by an ended stream: let a burst settle
                self._wake.clear()
            except Exception as exc:
                self._trouble = f"{type(exc).__name__}: {exc}"
                self.report(f"docker source {self.name}: {self.config.host}: {self._trouble}; "
                            f"trying again in {backoff:.0f}s")
                self.client = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _refresh(self, include_stopped: bool) -> None:
        containers = self.client.api.containers(all=True, filters=self._filters())
        existing = set()
        for info in containers:
            cid = info["Id"]
            existing.add(cid)
            if info.get("State") == "running" or include_stopped:
                # a stopped one, once at start-up: it may have logged while the sidecar was
                # away (the stream of a stopped container ends after its last line)
                self._follow(cid, info)
        with self._lock:
            for cid in [c for c in self.committed if c not in existing]:
                del self.committed[cid]  # the container was removed: forget its position

    def _events(self, since: int) -> None:
        try:
            filters = {"type": ["container"], "event": ["start"], **self._filters()}
            self._events_stream = self.client.api.events(since=since, decode=True,
                                                         filters=filters)
            for event in self._events_stream:
                if self._stop.is_set():
                    break
                cid = event.get("id") or (event.get("Actor") or {}).get("ID")
                if cid:
                    self._follow(cid, None)
        except Exception as exc:
            if not self._stop.is_set():
                self.report(f"docker source {self.name}: event stream ended ({type(exc).__name__}: "
                            f"{exc}); the container list is read every "
                            f"{self.config.refresh_interval:g}s")

    def _follow(self, cid: str, info: Mapping[str, Any] | None) -> None:
        if self._stop.is_set():
            return
        with self._lock:
            if cid in self._follows:
                return
        try:
            details = self.client.api.inspect_container(cid)
        except Exception as exc:
            self.report(f"docker source {self.name}: cannot inspect {cid[:12]} ({exc})")
            return
        labels = (details.get("Config") or {}).get("Labels") or {}
        name = str(details.get("Name") or cid[:12]).lstrip("/")
        service = labels.get(self.config.service_label) or labels.get(_COMPOSE_SERVICE) or \
            self.config.service or name
        follow = _Follow(self, cid, name, service)
        with self._lock:
            if cid in self._follows or self._stop.is_set():
                return
            self._follows[cid] = follow
            # the key exists before the thread starts: the follow threads only update values,
            # so snapshot() can copy the dict while they run
            self.committed.setdefault(cid, 0)
        follow.thread.start()

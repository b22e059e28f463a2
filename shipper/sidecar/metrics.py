"""The sidecar's operations endpoint on ``metrics_listen``: ``/ready``, ``/healthz`` (and their
``/-/ready``, ``/-/healthy`` aliases) and ``/metrics`` (Prometheus text format, via
prometheus-client, with the client's process, platform and garbage collector collectors).

Every figure is read at scrape time from where it is kept (the pipeline's counters and push
durations, each source's counters, the files' offsets), so nothing on the reading path pays
for metrics.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shipper._version import __version__
from shipper.delivery.tally import PUSH_SECONDS_BUCKETS
from shipper.sidecar.server import RequestHandler, Server

__all__ = ["OpsServer", "SidecarCollector"]


class SidecarCollector(Collector):
    """Turns the sidecar's state into metric families on each scrape."""

    def __init__(self, sidecar: Any) -> None:
        self._sidecar = sidecar

    def collect(self) -> Iterator[Metric]:
        sidecar = self._sidecar
        stats = sidecar.stats()
        yield InfoMetricFamily("shipper_sidecar_build", "the sidecar's version and Python",
                               value={"version": __version__,
                                      "python": platform.python_version()})
        yield GaugeMetricFamily("shipper_sidecar_ready", "1 while /ready answers 200",
                                value=0 if sidecar.readiness.not_ready(stats) else 1)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"shipper_sidecar_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"shipper_sidecar_{name}", doc, value=value)

        yield counter("events_accepted", "events the pipeline took from the sources",
                      stats["accepted"])
        yield counter("events_sent", "events Loki stored (replayed ones included)",
                      stats["sent"])
        yield counter("events_spooled", "events written to the on-disk spool",
                      stats["spooled"])
        yield counter("events_replayed", "spooled events sent to Loki later",
                      stats["replayed"])
        yield counter("events_retried", "events sent again after a 429, a 5xx or no answer",
                      stats["retried"])
        yield counter("sent_bytes", "bytes of the push requests Loki took, as sent (compressed "
                      "when they were; a 400 counts: Loki stored the valid entries)",
                      stats["sent_bytes"])
        pushes = HistogramMetricFamily(
            "shipper_sidecar_push_duration_seconds",
            "push requests to Loki (probes included) by how long they took, by status class "
            "(2xx, 4xx, 5xx, error: no answer)", labels=["status_class"])
        for status_class, (counts, total) in sorted(stats["push_seconds"].items()):
            buckets, running = [], 0
            for bound, n in zip((*PUSH_SECONDS_BUCKETS, float("inf")), counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            pushes.add_metric([status_class], buckets, total)
        yield pushes
        refused_events = CounterMetricFamily(
            "shipper_sidecar_events_refused", "events Loki refused (in answers with a 400), "
            "by reason", labels=["reason"])
        for reason, n in sorted(stats["refused_entries"].items()):
            refused_events.add_metric([reason], n)
        yield refused_events
        refused = CounterMetricFamily("shipper_sidecar_requests_refused",
                                      "push requests Loki answered with a 400, by reason",
                                      labels=["reason"])
        for reason, n in sorted(stats["refused"].items()):
            refused.add_metric([reason], n)
        yield refused
        dropped = CounterMetricFamily("shipper_sidecar_events_dropped",
                                      "events lost, by reason (spool off or full)",
                                      labels=["reason"])
        for reason, n in sorted(stats["dropped"].items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield gauge("queued_events", "events waiting in memory for the next batch",
                    stats["queued"])
        yield gauge("offline", "1 while Loki is unreachable and batches go to the spool",
                    1 if stats["offline"] else 0)
        spool = stats.get("spool")
        yield gauge("spool_bytes", "bytes waiting in the spool",
                    getattr(spool, "bytes", 0) or 0)
        yield gauge("spool_oldest_age_seconds", "age of the oldest segment waiting in the "
                    "spool (0 when it is empty)",
                    getattr(spool, "oldest_segment_age_s", None) or 0)
        yield gauge("positions_saved_timestamp_seconds",
                    "when the positions file was last saved (unix time)",
                    sidecar.positions.saved_at)

        lines = CounterMetricFamily("shipper_sidecar_lines_read", "lines read, per source",
                                    labels=["source"])
        invalid = CounterMetricFamily("shipper_sidecar_lines_invalid",
                                      "lines not valid in their format, shipped as text",
                                      labels=["source"])
        own = {name: kind(f"shipper_sidecar_{name}", doc, labels=labels)
               for name, (kind, doc, labels) in _SOURCE_FAMILIES.items()}
        for source in sidecar.sources:
            lines.add_metric([source.name], source.lines_read)
            invalid.add_metric([source.name], source.invalid_lines())
            for family, values, value in source.samples():
                own[family].add_metric([_label_text(v) for v in values], value)
        yield lines
        yield invalid
        yield from own.values()


def _label_text(value: str) -> str:
    """A label value the text format can carry: a file name that is not UTF-8 (read with
    surrogate escapes) shows its bytes as ``\\xNN`` instead of failing the whole scrape."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


#: the families a source fills with its own samples (see Source.samples), in their order
_SOURCE_FAMILIES: dict[str, tuple[type[CounterMetricFamily | GaugeMetricFamily], str,
                                  list[str]]] = {
    "lines_truncated": (CounterMetricFamily, "lines cut to max_line_bytes", ["source"]),
    "lines_dropped": (CounterMetricFamily, "lines a drop rule kept out", ["source", "reason"]),
    "file_lag_bytes": (GaugeMetricFamily, "bytes of the file not read yet", ["path"]),
    "file_lag_seconds": (GaugeMetricFamily, "seconds since the file was last read to its end "
                         "(0 when caught up)", ["path"]),
    "file_rotations": (CounterMetricFamily, "files that left the globs or were deleted",
                       ["source"]),
    "file_truncations": (CounterMetricFamily, "files truncated or rewritten in place",
                         ["source"]),
    "file_scans_cut": (CounterMetricFamily, "expansions of the globs stopped by "
                       "max_scan_entries or scan_timeout", ["source"]),
    "files_followed": (GaugeMetricFamily, "files open and followed now", ["source"]),
    "file_read_bytes": (GaugeMetricFamily, "where the file is read up to, in bytes from its "
                        "start (Promtail's read_bytes)", ["source", "path"]),
    "file_size_bytes": (GaugeMetricFamily, "the file's size when last looked at (Promtail's "
                        "file_bytes)", ["source", "path"]),
    "http_requests": (CounterMetricFamily, "HTTP requests, by path and status code",
                      ["source", "path", "code"]),
    "http_connections_refused": (CounterMetricFamily, "connections answered 503 at once: "
                                 "max_connections were open", ["source"]),
    "http_requests_timed_out": (CounterMetricFamily, "requests not whole within "
                                "request_timeout (closed)", ["source"]),
    "containers_followed": (GaugeMetricFamily, "containers whose logs are followed now",
                            ["source"]),
}


#: /ready, /healthz and /metrics: probes and scrapers use a connection or two, and a client
#: that holds one gives it up at the deadline (seconds)
_OPS_CONNECTIONS = 32
_OPS_TIMEOUT = 10.0
#: the paths of each answer: Kubernetes' habit, and Prometheus' and Alloy's (/-/...)
_READY = ("/ready", "/-/ready")
_HEALTHY = ("/healthz", "/-/healthy")


class OpsServer:
    """``GET /ready`` (200 once every source has started and the pipeline can deliver; 503
    with the reasons otherwise: see shipper/sidecar/readiness.py), ``GET /healthz`` (200 while
    every source runs, 503 with the reasons otherwise: a source stopped or stalled, a worker
    process gone, the drain under way) and ``GET /metrics``."""

    def __init__(self, listen: str, sidecar: Any) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SidecarCollector(sidecar))
        # the client's default collectors, as its default registry holds them
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        readiness = sidecar.readiness
        started = time.time()

        def answer(path: str) -> tuple[int, str]:
            if path in _HEALTHY:
                trouble = sidecar.problems()
                if trouble:
                    return 503, "\n".join(trouble)
                return 200, f"ok: up {time.time() - started:.0f}s"
            stats = sidecar.stats()
            trouble = readiness.not_ready(stats)
            if trouble:
                return 503, "not ready: " + "\n".join(trouble)
            return 200, readiness.summary(stats)

        class Handler(RequestHandler):
            def do_GET(self) -> None:
                # a GET's body is never read: a request that announces one ends the connection
                close = bool(self.headers.get("Content-Length", "0").strip("0 ")
                             or self.headers.get("Transfer-Encoding"))
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self.respond(200, generate_latest(registry), CONTENT_TYPE_LATEST,
                                 close=close)
                elif path in _READY or path in _HEALTHY:
                    status, body = answer(path)
                    self.respond(status, (body + "\n").encode(), close=close)
                else:
                    self.respond(404, b"not found: try /ready, /healthz or /metrics\n",
                                 close=close)

        self.server = Server(listen, Handler, "metrics_listen",
                             max_connections=_OPS_CONNECTIONS, request_timeout=_OPS_TIMEOUT)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

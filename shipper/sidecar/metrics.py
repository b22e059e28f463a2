"""``/healthz`` and ``/metrics`` (Prometheus text format, via prometheus-client).

Every figure is read at scrape time from where it is kept (the pipeline's counters, each
source's counters, the files' offsets), so nothing on the reading path pays for metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shipper.sidecar.server import RequestHandler, Server

__all__ = ["OpsServer", "SidecarCollector"]


class SidecarCollector(Collector):
    """Turns the sidecar's state into metric families on each scrape."""

    def __init__(self, sidecar: Any) -> None:
        self._sidecar = sidecar

    def collect(self) -> Iterator[Metric]:
        sidecar = self._sidecar
        stats = sidecar.stats()

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
                own[family].add_metric(list(values), value)
        yield lines
        yield invalid
        yield from own.values()


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
    "http_requests": (CounterMetricFamily, "HTTP requests, by path and status code",
                      ["source", "path", "code"]),
    "http_connections_refused": (CounterMetricFamily, "connections answered 503 at once: "
                                 "max_connections were open", ["source"]),
    "http_requests_timed_out": (CounterMetricFamily, "requests not whole within "
                                "request_timeout (closed)", ["source"]),
    "containers_followed": (GaugeMetricFamily, "containers whose logs are followed now",
                            ["source"]),
}


#: /healthz and /metrics: probes and scrapers use a connection or two, and a client that holds
#: one gives it up at the deadline (seconds)
_OPS_CONNECTIONS = 32
_OPS_TIMEOUT = 10.0


class OpsServer:
    """``GET /healthz`` (200 while every source runs, 503 with the reasons otherwise: a source
    stopped or stalled, a worker process gone, the drain under way) and ``GET /metrics``."""

    def __init__(self, listen: str, sidecar: Any) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SidecarCollector(sidecar))
        problems: Callable[[], list[str]] = sidecar.problems
        started = time.time()

        class Handler(RequestHandler):
            def do_GET(self) -> None:
                # a GET's body is never read: a request that announces one ends the connection
                close = bool(self.headers.get("Content-Length", "0").strip("0 ")
                             or self.headers.get("Transfer-Encoding"))
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self.respond(200, generate_latest(registry), CONTENT_TYPE_LATEST,
                                 close=close)
                elif path == "/healthz":
                    trouble = problems()
                    body = ("\n".join(trouble) if trouble else
                            f"ok: up {time.time() - started:.0f}s") + "\n"
                    self.respond(503 if trouble else 200, body.encode(), close=close)
                else:
                    self.respond(404, b"not found: try /healthz or /metrics\n", close=close)

        self.server = Server(listen, Handler, "metrics_listen",
                             max_connections=_OPS_CONNECTIONS, request_timeout=_OPS_TIMEOUT)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

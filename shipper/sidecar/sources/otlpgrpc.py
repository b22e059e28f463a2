"""The HTTP source's OTLP/gRPC logs receiver (``otlp_grpc_listen``): the method
``opentelemetry.proto.collector.logs.v1.LogsService/Export`` on a grpcio server of its own,
answering as the OTLP specification says. The request's bytes go to the same decoder and
mapping as ``/v1/logs`` in protobuf (:meth:`HttpSource.export_otlp
<shipper.sidecar.sources.http.HttpSource.export_otlp>`), with the same token and limits:

* the token: ``authorization: Bearer <token>`` metadata, else ``UNAUTHENTICATED``;
* a message over ``max_body_bytes``, compressed or once gzip is undone, is refused by grpcio
  before the method runs (``RESOURCE_EXHAUSTED``);
* at most ``max_connections`` calls at once; the next is ``RESOURCE_EXHAUSTED``; a connection
  idle for ``request_timeout`` is closed;
* the pipeline's queue over its high-water mark, or the drain under way: ``UNAVAILABLE``, which
  the exporters retry;
* a request that cannot be read, or whose every record was refused: ``INVALID_ARGUMENT`` naming
  what was wrong; some records refused: ``OK`` with ``partial_success`` (how many, and why);
* a request over ``max_entries_per_request`` (log records, resources or scopes):
  ``RESOURCE_EXHAUSTED`` naming the count and the limit, nothing of it taken. The status
  carries no ``RetryInfo``, so the OTLP specification makes it not retryable (the same request
  would be refused again); it is the code grpcio gives a message over ``max_body_bytes``.

grpcio is optional (``pip install 'shipper[otlp-grpc]'``): it is imported only when a server is
made, that is when ``otlp_grpc_listen`` is set (shipper/sidecar/config.py says what to install
when it is missing).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shipper.sidecar.config import parse_listen
from shipper.sidecar.server import StartupError
from shipper.sidecar.sources.otlp import OtlpOutcome, export_response
from shipper.sidecar.sources.wire import TooManyEntries

__all__ = ["SERVICE", "OtlpGrpcServer"]

SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
#: a status message past this is cut (it travels in an HTTP/2 trailer)
_MAX_MESSAGE = 4000
#: threads that run calls; more calls wait for one, up to max_connections in all
_MAX_THREADS = 8


class OtlpGrpcServer:
    """A grpcio server on ``listen`` with the one method ``LogsService/Export``."""

    def __init__(self, listen: str, what: str, *,
                 export: Callable[..., OtlpOutcome], token: bytes | None,
                 refusal: Callable[[], str | None], max_message_bytes: int,
                 max_connections: int, idle_timeout: float,
                 count: Callable[[str], None],
                 too_many: Callable[[str, str, str], None] = lambda *said: None) -> None:
        import grpc

        self._grpc = grpc
        self._export = export
        self._token = token
        self._refusal = refusal
        self._count = count
        self._too_many = too_many
        host, port = parse_listen(listen)
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(self._call)})  # bytes in and out
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=_MAX_THREADS, thread_name_prefix="shipper-otlp-grpc"),
            handlers=[handler], maximum_concurrent_rpcs=max_connections,
            options=[("grpc.max_receive_message_length", max_message_bytes),
                     ("grpc.max_connection_idle_ms", max(1, int(idle_timeout * 1000))),
                     ("grpc.so_reuseport", 0)])  # a port in use is an error, as for HTTP
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(target)
        except RuntimeError as exc:
            raise StartupError(f"{what}: cannot listen on {listen} ({exc})") from None
        if not bound:
            raise StartupError(f"{what}: cannot listen on {listen}")
        self.address = f"{target.rsplit(':', 1)[0]}:{bound}"

    def start(self) -> None:
        self._server.start()

    def stop(self, deadline: float) -> None:
        """No new calls; those in progress may finish until ``deadline`` (a monotonic
        time)."""
        grace = max(0.0, deadline - time.monotonic())
        self._server.stop(grace).wait(grace + 0.5)

    def _call(self, request: bytes, context: Any) -> bytes:
        codes = self._grpc.StatusCode
        if self._token is not None:
            given = next((str(value) for key, value in context.invocation_metadata()
                          if key == "authorization"), "")
            if not hmac.compare_digest(given.strip().encode("latin-1", "replace"),
                                       self._token):
                self._abort(context, codes.UNAUTHENTICATED, "wrong bearer token" if given
                            else "missing authorization: Bearer metadata")
        why = self._refusal()
        if why is not None:
            self._abort(context, codes.UNAVAILABLE, why)
        try:
            outcome = self._export(bytes(request), protobuf=True)
        except TooManyEntries as exc:
            self._too_many(_peer_host(context.peer()), "LogsService/Export", str(exc))
            self._abort(context, codes.RESOURCE_EXHAUSTED, str(exc))
        except Exception as exc:  # a bug must not pass for the client's fault
            self._abort(context, codes.INTERNAL, f"{type(exc).__name__}: {exc}")
        if outcome.message is not None and not outcome.accepted:
            self._abort(context, codes.INVALID_ARGUMENT, outcome.message)
        self._count("OK")
        return export_response(outcome.refused, outcome.message)

    def _abort(self, context: Any, code: Any, message: str) -> None:
        self._count(code.name)
        context.abort(code, message[:_MAX_MESSAGE])


def _peer_host(peer: str) -> str:
    """The client's address without its port, from grpcio's ``ipv4:1.2.3.4:5678`` or
    ``ipv6:[::1]:5678``."""
    _, _, address = peer.partition(":")
    host = address.rsplit(":", 1)[0] if address else peer
    return host.strip("[]") or peer

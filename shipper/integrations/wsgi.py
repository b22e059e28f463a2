"""``ShipperWSGIMiddleware``: request id, user context and access events for any WSGI app
(Flask, Bottle, Falcon, Pyramid, plain WSGI)::

    from shipper.integrations.wsgi import ShipperWSGIMiddleware

    app.wsgi_app = ShipperWSGIMiddleware(app.wsgi_app)      # Flask
    application = ShipperWSGIMiddleware(application)        # any WSGI callable

For Flask, :func:`shipper.integrations.flask.init_app` does this and also records the user
(from your ``get_user()``) and the matched route. For each request the middleware

* takes the request id from the trace: the active OpenTelemetry span's trace id when
  OpenTelemetry's instrumentation runs outside this middleware, else a valid W3C
  ``traceparent`` header's trace id; else from ``X-Request-ID`` (or makes one). It puts the id
  in ``environ["shipper.request_id"]`` and in the response's ``X-Request-ID`` header, and binds
  it as ``trace_id`` in :mod:`shipper.context` while the app runs and while the response body
  is produced;
* binds the user as ``actor``/``actor_id``: what ``get_user(environ)`` returns, or by default
  ``REMOTE_USER`` (set by the server's authentication) as a USER;
* writes one ``HTTP_REQUEST`` event when the server closes the response (so streamed bodies
  are included in ``duration_ms``), at ERROR for 5xx, WARNING for 4xx and INFO otherwise, and a
  ``SLOW_REQUEST`` WARNING past ``slow_request_ms``. An exception from the app, or from the
  body while it is produced, is logged as a 500 with its traceback and re-raised unchanged.

``environ["shipper.route"]``, when an inner layer sets it, is logged as ``metadata.route``.
A ``wsgi.file_wrapper`` response is sent by plain iteration (the server's sendfile shortcut
cannot see through the wrapper).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from shipper.context import LogContext, bind_context, current_context, reset_context
from shipper.event import Actor
from shipper.integrations._common import (
    DEFAULT_SLOW_REQUEST_MS,
    REQUEST_ID_HEADER,
    AccessLog,
    Clock,
    User,
    bind_request,
    check_app,
    client_ip,
    context_user,
    final_status,
    report,
    request_trace_id,
    user_result,
)

__all__ = ["ENVIRON_REQUEST_ID", "ENVIRON_ROUTE", "ShipperWSGIMiddleware"]

#: where the request id is put in the WSGI environ
ENVIRON_REQUEST_ID = "shipper.request_id"
#: where an inner layer may put the matched route template (logged as ``metadata.route``)
ENVIRON_ROUTE = "shipper.route"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
GetUser = Callable[[Environ], Any]
T = TypeVar("T")


class ShipperWSGIMiddleware:
    """Wraps a WSGI app; see the module documentation.

    :param get_user: ``get_user(environ)`` returning None, ``(actor, actor_id)``, an actor name
        or a user object with ``is_authenticated``; called when the request starts and, if it
        found nobody then, once more when the response is closed. Default: ``REMOTE_USER``.
    :param logger: logger (or its name) for the access events; ``shipper.access`` by default.
    :param slow_request_ms: requests slower than this also log ``SLOW_REQUEST``; None: never.
    :param access_log: False keeps only the context (and the slow-request warnings).
    :param include_query: also log the query string's parameters as ``metadata.query`` (values
        of secret-named parameters are masked by redaction); off by default: only the path.
    :param trust_forwarded: take the client IP from ``X-Forwarded-For`` (behind a proxy you trust).
    :param request_id_header: the header carrying the request id, both ways.
    :param clock: seconds as a float (``time.perf_counter`` by default); for tests.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        get_user: GetUser | None = None,
        logger: Any = None,
        slow_request_ms: float | None = DEFAULT_SLOW_REQUEST_MS,
        access_log: bool = True,
        include_query: bool = False,
        trust_forwarded: bool = False,
        request_id_header: str = REQUEST_ID_HEADER,
        clock: Clock | None = None,
    ) -> None:
        check_app(app, "a WSGI application", get_user, "the environ")
        self.app = app
        self.get_user = get_user
        self._log = AccessLog.build(
            logger=logger,
            slow_request_ms=slow_request_ms,
            access_log=access_log,
            include_query=include_query,
            trust_forwarded=trust_forwarded,
            request_id_header=request_id_header,
            clock=clock,
        )
        self._header = request_id_header
        self._header_lower = request_id_header.lower()
        self._environ_key = "HTTP_" + request_id_header.upper().replace("-", "_")

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = _Request(self, environ)
        token = bind_request(request.request_id, request.user)
        header, header_lower, request_id = self._header, self._header_lower, request.request_id

        def start_response_with_id(status: str, headers: list[tuple[str, str]],
                                   exc_info: Any = None) -> Any:
            request.status = _status_code(status)
            if not any(name.lower() == header_lower for name, _ in headers):
                headers = [*headers, (header, request_id)]
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, start_response_with_id)
        except BaseException as exc:
            request.context = current_context()
            reset_context(token)
            request.finish(exc)
            raise
        request.context = current_context()
        reset_context(token)
        return _Response(result, request)

    def user_for(self, environ: Environ) -> User | None:
        """The user for a request: ``get_user(environ)``, else ``REMOTE_USER`` as a USER."""
        if self.get_user is None:
            remote = environ.get("REMOTE_USER")
            return (Actor.USER.value, str(remote)) if remote else None
        try:
            return user_result(self.get_user(environ), "get_user")
        except Exception as exc:
            report("get_user", f"{type(exc).__name__}: {exc} (requests go on without a user)")
            return None


def _status_code(status: str) -> int:
    try:
        return int(str(status).split(" ", 1)[0])
    except ValueError:
        return 500


class _Request:
    """One request's state, from the call until the server closes the response."""

    __slots__ = ("context", "environ", "finished", "lock", "middleware", "request_id", "start",
                 "status", "user")

    def __init__(self, middleware: ShipperWSGIMiddleware, environ: Environ) -> None:
        self.middleware = middleware
        self.start = middleware._log.clock()
        self.environ = environ
        self.request_id = request_trace_id(environ.get("HTTP_TRACEPARENT"),
                                           environ.get(middleware._environ_key))
        environ[ENVIRON_REQUEST_ID] = self.request_id
        self.user = middleware.user_for(environ)
        self.status: int | None = None
        self.context: LogContext | None = None
        self.finished = False
        self.lock = threading.Lock()

    def bind(self) -> Any:
        """Bind the request's context again (while the body is produced); a token or None."""
        ctx = self.context
        if ctx is None:
            return None
        return bind_context(trace_id=ctx.trace_id, actor=ctx.actor, actor_id=ctx.actor_id,
                            metadata=ctx.metadata)

    def run(self, step: Callable[[], T], passing: tuple[type[BaseException], ...] = ()) -> T:
        """``step()`` with the request's context bound again (while the body is produced or
        closed); an exception from it finishes the request, but those in ``passing`` (the
        iterator's StopIteration) just go on."""
        token = self.bind()
        try:
            return step()
        except passing:
            raise
        except BaseException as exc:
            self.finish(exc)
            raise
        finally:
            if token is not None:
                reset_context(token)

    def finish(self, exc: BaseException | None) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
        log = self.middleware._log
        duration_ms = (log.clock() - self.start) * 1000.0
        user = context_user(self.context) or self.user or self.middleware.user_for(self.environ)
        error = exc if isinstance(exc, Exception) else None
        environ = self.environ
        route = environ.get(ENVIRON_ROUTE)
        log.emit(
            method=str(environ.get("REQUEST_METHOD", "")),
            path=_path(environ),
            query=str(environ.get("QUERY_STRING", "")),
            status=final_status(self.status, exc is not None),
            duration_ms=duration_ms,
            trace_id=self.request_id,
            user=user,
            client_ip=client_ip(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"),
                                log.trust_forwarded),
            user_agent=environ.get("HTTP_USER_AGENT"),
            route=route if isinstance(route, str) else None,
            exc=error,
        )


def _path(environ: Environ) -> str:
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    try:  # PEP 3333: the path is bytes carried in latin-1; show it as the client sent it
        return path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return path


class _Response:
    """The app's response iterable, with the request context bound while each chunk is made
    and the access event written when the server closes it."""

    __slots__ = ("_iterator", "_request", "_result")

    def __init__(self, result: Iterable[bytes], request: _Request) -> None:
        self._result = result
        self._request = request
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return self._request.run(self._next_chunk, (StopIteration,))

    def close(self) -> None:
        try:
            self._request.run(self._close_result)
        finally:
            self._request.finish(None)

    def _next_chunk(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._result)
        return next(self._iterator)

    def _close_result(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()

"""``ShipperASGIMiddleware``: request id, user context and access events for any ASGI app
(Starlette, FastAPI, Quart, Django's ASGI handler).

A pure ASGI middleware: no thread, no task and no framework import of its own. It handles
``http`` requests and the ``lifespan`` protocol; ``websocket`` passes through untouched::

    from shipper.integrations.asgi import ShipperASGIMiddleware

    app = FastAPI()
    app.add_middleware(ShipperASGIMiddleware, slow_request_ms=500)

For each request it

* takes the request id from the trace: the active OpenTelemetry span's trace id when
  OpenTelemetry's instrumentation runs outside this middleware, else a valid W3C
  ``traceparent`` header's trace id; else from ``X-Request-ID`` (or makes one). It puts the id
  in ``scope["state"]["request_id"]`` (``request.state.request_id`` in Starlette) and in the
  response's ``X-Request-ID`` header, and binds it as ``trace_id`` in :mod:`shipper.context`,
  so every record logged while the request is handled carries it;
* binds the user as ``actor``/``actor_id`` when it is known at the start: ``scope["user"]``
  (set by Starlette's ``AuthenticationMiddleware`` when that runs *outside* this middleware;
  an ``admin`` auth scope makes the user an ADMIN) or what ``get_user(scope)`` returns;
* writes one ``HTTP_REQUEST`` event when the response is done, at ERROR for 5xx, WARNING for
  4xx and INFO otherwise, and a ``SLOW_REQUEST`` WARNING when it took longer than
  ``slow_request_ms``. An exception from the app is logged as a 500 with its traceback and
  re-raised unchanged.

The access event names the user known at the end of the request: the one bound in the
context (also by the app, from an ``async`` dependency or endpoint), else ``scope["user"]``,
else ``get_user(scope)``; nobody known means GUEST.

Lifespan: the server's ``lifespan.shutdown`` goes to the app first, so what the app logs while
it shuts down is shipped too; when the app answers, :func:`shipper.shutdown` flushes and
closes every pipeline of the process (within each one's ``shutdown_timeout``), and only then is
the answer passed on to the server, which ends the process right after it. An app without
lifespan support (Django's ASGI handler raises for it; some apps just return) gets the
lifespan messages answered by the middleware itself, so the server's shutdown still reaches
shipper. ``close_on_shutdown=False`` leaves shutdown to you.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from shipper.context import current_context, reset_context
from shipper.event import Actor
from shipper.integrations._common import (
    DEFAULT_SLOW_REQUEST_MS,
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    AccessLog,
    Clock,
    User,
    actor_from_user,
    bind_request,
    check_app,
    client_ip,
    context_user,
    final_status,
    report,
    request_trace_id,
    user_result,
)

__all__ = ["ShipperASGIMiddleware"]

_TRACEPARENT = TRACEPARENT_HEADER.encode("latin-1")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
GetUser = Callable[[Scope], Any]

#: status reported for a request whose client went away before a response was started
_CLIENT_CLOSED = 499


class ShipperASGIMiddleware:
    """Wraps an ASGI app; see the module documentation.

    :param get_user: ``get_user(scope)`` (sync or async) returning None, ``(actor, actor_id)``,
        an actor name or a user object with ``is_authenticated``; called when the request
        starts and, if it found nobody then, once more when it ends.
    :param logger: logger (or its name) for the access events; ``shipper.access`` by default.
    :param slow_request_ms: requests slower than this also log ``SLOW_REQUEST``; None: never.
    :param access_log: False keeps only the context (and the slow-request warnings).
    :param include_query: also log the query string's parameters as ``metadata.query`` (values
        of secret-named parameters are masked by redaction); off by default: only the path.
    :param trust_forwarded: take the client IP from ``X-Forwarded-For`` (behind a proxy you trust).
    :param request_id_header: the header carrying the request id, both ways.
    :param clock: seconds as a float (``time.perf_counter`` by default); for tests.
    :param close_on_shutdown: on ``lifespan.shutdown``, flush and close every pipeline
        (:func:`shipper.shutdown`) before the server is told the app has shut down.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        get_user: GetUser | None = None,
        logger: Any = None,
        slow_request_ms: float | None = DEFAULT_SLOW_REQUEST_MS,
        access_log: bool = True,
        include_query: bool = False,
        trust_forwarded: bool = False,
        request_id_header: str = REQUEST_ID_HEADER,
        clock: Clock | None = None,
        close_on_shutdown: bool = True,
    ) -> None:
        check_app(app, "an ASGI application", get_user, "the scope")
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
        self._header = request_id_header.lower().encode("latin-1")
        self.close_on_shutdown = bool(close_on_shutdown)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan" and self.close_on_shutdown:
            await _Lifespan(self.app, scope, receive, send).run()
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        log = self._log
        start = log.clock()
        incoming: bytes | None = None
        traceparent: bytes | None = None
        user_agent: bytes | None = None
        forwarded: bytes | None = None
        for name, value in scope.get("headers") or ():
            if name == self._header:
                incoming = value
            elif name == _TRACEPARENT:
                # two traceparent headers are no trace context (W3C Trace Context, 3.2)
                traceparent = value if traceparent is None else b"-"
            elif name == b"user-agent":
                user_agent = value
            elif name == b"x-forwarded-for":
                forwarded = value
        request_id = request_trace_id(traceparent, incoming)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if isinstance(state, dict):
            state["request_id"] = request_id

        user = _scope_user(scope)
        if user is None and self.get_user is not None:
            user = await self._call_get_user(scope)
        token = bind_request(request_id, user)

        status: int | None = None
        header = self._header
        rid = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 200))
                headers = list(message.get("headers") or ())
                if not any(bytes(k).lower() == header for k, _ in headers):
                    headers.append((header, rid))
                message = {**message, "headers": headers}
            await send(message)

        error: Exception | None = None
        cancelled = False
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error = exc
            raise
        except BaseException:  # cancelled: the client went away, or the server is stopping
            cancelled = True
            raise
        finally:
            duration_ms = (log.clock() - start) * 1000.0
            ctx = current_context()
            reset_context(token)
            # the user bound by now (here at the start, or by the app), else the scope's
            user = context_user(ctx) or _scope_user(scope)
            code = final_status(status, error is not None, _CLIENT_CLOSED if cancelled else 500)
            if user is None and self.get_user is not None and not cancelled:
                user = await self._call_get_user(scope)
            route = getattr(scope.get("route"), "path", None)
            peer = scope.get("client")
            log.emit(
                method=str(scope.get("method", "")),
                path=str(scope.get("path", "")),
                query=bytes(scope.get("query_string") or b"").decode("latin-1"),
                status=code,
                duration_ms=duration_ms,
                trace_id=request_id,
                user=user,
                client_ip=client_ip(
                    str(peer[0]) if peer else None,
                    forwarded.decode("latin-1") if forwarded else None,
                    log.trust_forwarded,
                ),
                user_agent=user_agent.decode("latin-1") if user_agent else None,
                route=route if isinstance(route, str) else None,
                exc=error,
            )

    async def _call_get_user(self, scope: Scope) -> User | None:
        assert self.get_user is not None
        try:
            result = self.get_user(scope)
            if inspect.isawaitable(result):
                result = await result
            return user_result(result, "get_user")
        except Exception as exc:
            report("get_user", f"{type(exc).__name__}: {exc} (requests go on without a user)")
            return None


class _Lifespan:
    """One lifespan session: the app's own, with shipper's shutdown before the server hears
    that the app is done; or answered here when the app does not speak lifespan."""

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app, self.scope, self.receive, self.send = app, scope, receive, send
        self.pending: Message | None = None  # a message the app received and did not answer
        self.answered = False  # the app sent a lifespan message of its own
        self.shutdown_done = False

    async def run(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        except Exception as exc:
            if self.answered:  # the app speaks lifespan and failed: its error stands
                if self._shutdown_unanswered():
                    await _close_pipelines()
                raise
            report("lifespan", f"the app does not handle lifespan ({type(exc).__name__}: "
                               f"{exc}); shipper answers the lifespan messages itself")
        if not self.answered:
            await self._answer_alone()
        elif self._shutdown_unanswered():  # the app returned without answering the shutdown
            await _close_pipelines()

    def _shutdown_unanswered(self) -> bool:
        pending = self.pending
        return not self.shutdown_done and pending is not None \
            and pending.get("type") == "lifespan.shutdown"

    async def _receive(self) -> Message:
        message = await self.receive()
        self.pending = message
        return message

    async def _send(self, message: Message) -> None:
        self.answered = True
        self.pending = None
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.shutdown_done = True
            await _close_pipelines()
        await self.send(message)

    async def _answer_alone(self) -> None:
        message = self.pending
        while True:
            if message is None:
                message = await self.receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                await self.send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await _close_pipelines()
                await self.send({"type": "lifespan.shutdown.complete"})
                return
            message = None


async def _close_pipelines() -> None:
    """:func:`shipper.shutdown` off the event loop when there is one (asyncio), else here."""
    from shipper.lifecycle import shutdown

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another event loop library (trio): block it briefly instead
        shutdown()
        return
    await loop.run_in_executor(None, shutdown)


def _scope_user(scope: Scope) -> User | None:
    """The user Starlette's ``AuthenticationMiddleware`` put in the scope; an ``admin`` scope
    in ``scope["auth"]`` (its ``AuthCredentials``) makes an authenticated user an ADMIN."""
    try:
        user = actor_from_user(scope.get("user"))
        if user is not None and user[0] == Actor.USER.value:
            scopes = getattr(scope.get("auth"), "scopes", None) or ()
            if "admin" in scopes:
                user = (Actor.ADMIN.value, user[1])
        return user
    except Exception as exc:
        report("scope_user", f"{type(exc).__name__}: {exc} (requests go on without a user)")
        return None

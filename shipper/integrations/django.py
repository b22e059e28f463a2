"""Django: ``ShipperMiddleware`` and a ready ``LOGGING`` dict.

settings.py::

    from shipper.integrations.django import logging_config

    MIDDLEWARE = [
        "shipper.integrations.django.ShipperMiddleware",   # first, so it sees everything
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        ...
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        ...
    ]
    LOGGING = logging_config(service="shop")   # or: from shipper.integrations.django import LOGGING

The middleware works under WSGI and ASGI (sync and async). For each request it

* takes the request id from the trace: the active OpenTelemetry span's trace id when
  OpenTelemetry's instrumentation runs outside this middleware, else a valid W3C
  ``traceparent`` header's trace id; else from ``X-Request-ID`` (or makes one). It sets
  ``request.request_id`` and the response's ``X-Request-ID`` header, and binds the id as
  ``trace_id`` in :mod:`shipper.context`, so every record of the request carries it, also those
  of Django itself and other libraries;
* binds the user once authentication has run (just before the view): ``request.user`` with
  ``is_staff``/``is_superuser`` → ADMIN, another authenticated user → USER (``actor_id`` =
  ``user.pk``), anonymous → GUEST. This evaluates ``request.user`` (a session lookup) on every
  request that reaches a view;
* writes one ``HTTP_REQUEST`` event (``shipper.access`` logger: ERROR for 5xx, WARNING for 4xx,
  INFO otherwise, with the view's exception and traceback on a 500) and a ``SLOW_REQUEST``
  WARNING past the threshold.

Settings (all optional): ``SHIPPER_SLOW_REQUEST_MS`` (1000; None turns the warning off),
``SHIPPER_ACCESS_LOG`` (True), ``SHIPPER_ACCESS_LOGGER`` ("shipper.access"),
``SHIPPER_LOG_QUERY`` (False: only the path is logged; True adds the query parameters, whose
secret-named values redaction masks), ``SHIPPER_TRUST_X_FORWARDED_FOR`` (False),
``SHIPPER_REQUEST_ID_HEADER`` ("X-Request-ID"). Subclass and override :meth:`get_actor` to
map users your own way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.utils.functional import LazyObject, empty

from shipper.context import bind_context, current_context, reset_context
from shipper.integrations._common import (
    DEFAULT_SLOW_REQUEST_MS,
    REQUEST_ID_HEADER,
    AccessLog,
    User,
    actor_from_user,
    client_ip,
    context_user,
    report,
    request_trace_id,
)

__all__ = ["LOGGING", "ShipperMiddleware", "logging_config"]

_EXCEPTION_ATTR = "_shipper_exception"


class ShipperMiddleware:
    """Request id, user context and access events; see the module documentation."""

    sync_capable = True
    async_capable = True
    #: seconds as a float; a subclass may replace it (tests do)
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings

        self.get_response = get_response
        header = getattr(settings, "SHIPPER_REQUEST_ID_HEADER", REQUEST_ID_HEADER)
        self._log = AccessLog.build(
            logger=getattr(settings, "SHIPPER_ACCESS_LOGGER", None),
            slow_request_ms=getattr(settings, "SHIPPER_SLOW_REQUEST_MS", DEFAULT_SLOW_REQUEST_MS),
            access_log=getattr(settings, "SHIPPER_ACCESS_LOG", True),
            include_query=getattr(settings, "SHIPPER_LOG_QUERY", False),
            trust_forwarded=getattr(settings, "SHIPPER_TRUST_X_FORWARDED_FOR", False),
            request_id_header=header,
            clock=type(self).clock,
        )
        self._header = header
        self._meta_key = "HTTP_" + header.upper().replace("-", "_")
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            # Django calls these hooks as coroutines in async mode: no thread hop per request
            self.process_view = self._aprocess_view  # type: ignore[method-assign,assignment]
            self.process_exception = self._aprocess_exception  # type: ignore[method-assign,assignment]

    # ------------------------------------------------------------------ the request

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        start = self._log.clock()
        request_id, token = self._begin(request)
        try:
            response = self.get_response(request)
        except Exception as exc:
            ctx = current_context()
            reset_context(token)
            self._finish(request, None, request_id, start, self._final_actor(request, ctx), exc)
            raise
        ctx = current_context()
        reset_context(token)
        self._finish(request, response, request_id, start, self._final_actor(request, ctx))
        return response

    async def __acall__(self, request: Any) -> Any:
        start = self._log.clock()
        request_id, token = self._begin(request)
        try:
            response = await self.get_response(request)
        except Exception as exc:
            ctx = current_context()
            reset_context(token)
            user = await self._afinal_actor(request, ctx)
            self._finish(request, None, request_id, start, user, exc)
            raise
        ctx = current_context()
        reset_context(token)
        self._finish(request, response, request_id, start, await self._afinal_actor(request, ctx))
        return response

    # ------------------------------------------------------------------ Django's hooks

    def process_view(self, request: Any, view_func: Any, view_args: Any,
                     view_kwargs: Any) -> None:
        """Authentication has run by now: bind the user for the rest of the request."""
        self._bind_actor(self._safe_get_actor(request))

    async def _aprocess_view(self, request: Any, view_func: Any, view_args: Any,
                             view_kwargs: Any) -> None:
        self._bind_actor(await self._aget_actor(request))

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Keep the view's exception for the access event; Django goes on handling it."""
        setattr(request, _EXCEPTION_ATTR, exception)

    async def _aprocess_exception(self, request: Any, exception: Exception) -> None:
        setattr(request, _EXCEPTION_ATTR, exception)

    # ------------------------------------------------------------------ users

    def get_actor(self, request: Any) -> User | None:
        """``(actor, actor_id)`` for the request's user, or None when there is no user.

        Override to map users your own way (e.g. a CREATOR group). Called in a thread where
        database access is allowed, also under ASGI."""
        return actor_from_user(getattr(request, "user", None))

    def _safe_get_actor(self, request: Any) -> User | None:
        try:
            return self.get_actor(request)
        except Exception as exc:
            report("get_actor", f"{type(exc).__name__}: {exc} (requests go on without a user)")
            return None

    async def _aget_actor(self, request: Any) -> User | None:
        try:
            if type(self).get_actor is not ShipperMiddleware.get_actor:
                return await sync_to_async(self.get_actor)(request)
            user = request.__dict__.get("user")
            if isinstance(user, LazyObject) and vars(user).get("_wrapped") is empty:
                auser: Callable[[], Awaitable[Any]] | None = getattr(request, "auser", None)
                if auser is None:  # Django < 5.0
                    return await sync_to_async(self.get_actor)(request)
                user = await auser()
            return actor_from_user(user)
        except Exception as exc:
            report("get_actor", f"{type(exc).__name__}: {exc} (requests go on without a user)")
            return None

    @staticmethod
    def _bind_actor(user: User | None) -> None:
        if user is not None:
            # reset with the request's own token when the response is done
            bind_context(actor=user[0], actor_id=user[1])

    def _final_actor(self, request: Any, ctx: Any) -> User | None:
        """The user when the response is done (a login or logout in the view shows here)."""
        if not hasattr(request, "user"):
            return context_user(ctx)
        return self._safe_get_actor(request)

    async def _afinal_actor(self, request: Any, ctx: Any) -> User | None:
        if "user" not in request.__dict__:
            return context_user(ctx)
        return await self._aget_actor(request)

    # ------------------------------------------------------------------ internals

    def _begin(self, request: Any) -> tuple[str, Any]:
        meta = request.META
        request_id = request_trace_id(meta.get("HTTP_TRACEPARENT"), meta.get(self._meta_key))
        request.request_id = request_id
        return request_id, bind_context(trace_id=request_id)

    def _finish(self, request: Any, response: Any, request_id: str, start: float,
                user: User | None, exc: BaseException | None = None) -> None:
        log = self._log
        duration_ms = (log.clock() - start) * 1000.0
        if response is not None:
            try:
                if not response.has_header(self._header):
                    response[self._header] = request_id
            except Exception as problem:
                report("response_header", f"{type(problem).__name__}: {problem}")
            status = int(getattr(response, "status_code", 500))
            if exc is None and status >= 500:
                exc = getattr(request, _EXCEPTION_ATTR, None)
        else:
            status = 500
        meta = request.META
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        log.emit(
            method=str(request.method or ""),
            path=str(request.path),
            query=str(meta.get("QUERY_STRING", "")),
            status=status,
            duration_ms=duration_ms,
            trace_id=request_id,
            user=user,
            client_ip=client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"),
                                log.trust_forwarded),
            user_agent=meta.get("HTTP_USER_AGENT"),
            route=route if isinstance(route, str) and route else None,
            exc=exc if isinstance(exc, Exception) else None,
        )


def logging_config(
    *,
    service: str | None = None,
    env: str | None = None,
    url: str | None = None,
    level: str = "INFO",
    console: bool = True,
    **handler_settings: str,
) -> dict[str, Any]:
    """A ``LOGGING`` dict for settings.py: the root logger (and so Django's own loggers and
    ``shipper.access``) goes to a :class:`~shipper.handler.LokiHandler` and, with ``console``,
    to stderr. Unset ``service``/``env``/``url`` come from ``SHIPPER_SERVICE``/``SHIPPER_ENV``/
    ``LOKI_URL`` (the handler reads the other ``LOKI_*``/``SHIPPER_*`` variables itself);
    ``handler_settings`` are passed to the handler as they are (e.g. ``tenant="team-a"``)."""
    values = {
        "url": url if url is not None else os.environ.get("LOKI_URL"),
        "service": service if service is not None else os.environ.get("SHIPPER_SERVICE"),
        "env": env if env is not None else os.environ.get("SHIPPER_ENV"),
        **handler_settings,
    }
    loki: dict[str, Any] = {"class": "shipper.handler.LokiHandler", "level": level}
    loki.update({k: v for k, v in values.items() if v not in (None, "")})
    handlers: dict[str, Any] = {"loki": loki}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": handlers,
        "root": {"handlers": ["loki"], "level": level},
    }
    if console:
        config["formatters"] = {
            "shipper_console": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
        }
        handlers["console"] = {"class": "logging.StreamHandler", "formatter": "shipper_console"}
        config["root"]["handlers"].append("console")
    return config


#: ``LOGGING = logging_config()``, for ``from shipper.integrations.django import LOGGING``
LOGGING: dict[str, Any] = logging_config()

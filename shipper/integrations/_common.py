"""What the HTTP integrations share: request ids, users as actors, the request's context, and
the access events."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from shipper.context import LogContext, bind_context
from shipper.event import Actor, normalize_actor
from shipper.tracecontext import active_span, span_ids, traceparent_ids

ACCESS_LOGGER = "shipper.access"
REQUEST_ID_HEADER = "X-Request-ID"
#: the W3C Trace Context header a traced client sends: its trace id becomes the request's id
TRACEPARENT_HEADER = "traceparent"
DEFAULT_SLOW_REQUEST_MS = 1000.0
HTTP_REQUEST = "HTTP_REQUEST"
SLOW_REQUEST = "SLOW_REQUEST"

#: an incoming request id is kept when it is 1-128 of these characters (uuids, hex ids,
#: Heroku/Cloudflare/AWS-style ids); anything else is replaced by a fresh uuid4 hex
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=\-]{1,128}")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token (RFC 9110)
_MAX_USER_AGENT = 512
_MAX_QUERY_PARAMS = 64
_MAX_QUERY_VALUE = 512

Clock = Callable[[], float]
#: a request's user as an actor: ``(actor, actor_id)``
User = tuple[str, str | None]
#: what a ``get_user`` callable may return: None (nobody known), ``(actor, actor_id)``, an
#: actor name, or a user object with ``is_authenticated`` (Django, Starlette, Flask-Login)
UserResult = Any

_reported: set[str] = set()
_report_lock = threading.Lock()


def report(kind: str, message: str) -> None:
    """Tell stderr about a problem in the integration, once per kind (never through logging,
    whose handlers may be the very thing that is misconfigured)."""
    with _report_lock:
        if kind in _reported:
            return
        _reported.add(kind)
    with contextlib.suppress(Exception):
        sys.stderr.write(f"shipper integration {kind}: {message}\n")


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(value: str | bytes | None) -> str:
    """The incoming request id when it is usable (1-128 characters of letters, digits and
    ``._:@/+=-``), else a fresh uuid4 hex: an id that could smuggle quotes, spaces or control
    characters into logs is never taken."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value:
        value = value.strip()
        if _REQUEST_ID.fullmatch(value):
            return value
    return new_request_id()


def request_trace_id(traceparent: str | bytes | None, request_id: str | bytes | None) -> str:
    """The id a request is known by (bound as ``trace_id``, answered in the request id
    header): the trace id of the OpenTelemetry span active around the middleware (when
    OpenTelemetry's own instrumentation runs outside it, so every record of the request
    carries the id its trace has), else of a valid W3C ``traceparent`` header, else the
    request id header's (:func:`request_id_from`: the incoming one when usable, else a new
    one). A malformed, forged or huge ``traceparent`` is ignored."""
    span = active_span()
    ids = span_ids(span) if span is not None else None
    if ids is None:
        ids = traceparent_ids(traceparent)
    return ids[0] if ids is not None else request_id_from(request_id)


def level_for_status(status: int) -> int:
    """5xx → ERROR, 4xx → WARNING, anything else → INFO."""
    if status >= 500:
        return logging.ERROR
    if status >= 400:
        return logging.WARNING
    return logging.INFO


def actor_from_user(user: Any) -> tuple[str, str | None] | None:
    """``(actor, actor_id)`` for a framework user object: anonymous → GUEST, staff or
    superuser → ADMIN, other authenticated users → USER. The id is ``pk``, ``identity``,
    ``get_id()`` or ``id``, whichever the object has. None for None."""
    if user is None:
        return None
    authenticated = getattr(user, "is_authenticated", False)
    if callable(authenticated):
        authenticated = authenticated()
    if not authenticated:
        return Actor.GUEST.value, None
    admin = getattr(user, "is_superuser", False) or getattr(user, "is_staff", False)
    actor = Actor.ADMIN.value if admin is True else Actor.USER.value
    return actor, _user_id(user)


def _user_id(user: Any) -> str | None:
    for attr in ("pk", "identity", "get_id", "id", "display_name"):
        try:
            value = getattr(user, attr, None)
            if callable(value):
                value = value()
        except Exception:  # Starlette's BaseUser.identity raises NotImplementedError
            continue
        if value is not None and value != "":
            return str(value)
    return None


def user_result(value: UserResult, source: str) -> tuple[str, str | None] | None:
    """Normalise what a ``get_user`` callable returned; a wrong shape raises TypeError naming
    ``source`` and the value."""
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        actor, actor_id = value
        return (
            normalize_actor(actor)[0].value,
            None if actor_id is None or actor_id == "" else str(actor_id),
        )
    if isinstance(value, (Actor, str)):
        return normalize_actor(value)[0].value, None
    if hasattr(value, "is_authenticated"):
        return actor_from_user(value)
    raise TypeError(
        f"{source} returned {value!r}: expected None, (actor, actor_id), an actor name or a "
        "user object with is_authenticated"
    )


def check_app(app: object, app_kind: str, get_user: object, user_source: str) -> None:
    """What a middleware checks of the app it wraps and of its ``get_user``: both callable (a
    TypeError names the argument, ``app_kind`` and what ``get_user`` is called with)."""
    if not callable(app):
        raise TypeError(f"app: expected {app_kind}, got {app!r}")
    if get_user is not None and not callable(get_user):
        raise TypeError(f"get_user: expected a callable taking {user_source}, got {get_user!r}")


def bind_request(request_id: str, user: User | None) -> Token[LogContext | None]:
    """Bind a request's id as ``trace_id`` and its user (when known) as ``actor``/``actor_id``;
    the token resets the context when the request is done."""
    return bind_context(
        trace_id=request_id,
        actor=user[0] if user else None,
        actor_id=user[1] if user else None,
    )


def context_user(ctx: LogContext | None) -> User | None:
    """The user bound in a request's context (by the middleware or by the app), or None."""
    return (ctx.actor, ctx.actor_id) if ctx is not None and ctx.actor else None


def final_status(status: int | None, failed: bool, unanswered: int = 500) -> int:
    """The status an access event reports: the response's, at least 500 when the request
    failed, and ``unanswered`` when no response was started (500 when it failed)."""
    if status is None:
        return 500 if failed else unanswered
    if failed and status < 500:
        return 500
    return status


def check_threshold(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name}: expected a number of milliseconds >= 0 or None, got {value!r}")
    return float(value)


def check_header_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ValueError(
            f"{name}: expected an HTTP header name such as 'X-Request-ID', got {value!r}"
        )
    return value


def query_metadata(query: str) -> dict[str, Any]:
    """A query string as a mapping (repeated names as lists), so that redaction masks the values
    of secret-named parameters like any other metadata key."""
    out: dict[str, Any] = {}
    for i, (name, raw) in enumerate(parse_qsl(query, keep_blank_values=True)):
        if i >= _MAX_QUERY_PARAMS:
            out["..."] = "more parameters left out"
            break
        value = raw[:_MAX_QUERY_VALUE]
        if name in out:
            prior = out[name]
            out[name] = [*prior, value] if isinstance(prior, list) else [prior, value]
        else:
            out[name] = value
    return out


def client_ip(peer: str | None, forwarded_for: str | None, trust_forwarded: bool) -> str | None:
    if trust_forwarded and forwarded_for:
        first = forwarded_for.split(",", 1)[0].strip()
        if first:
            return first
    return peer


@dataclass(frozen=True, slots=True)
class AccessLog:
    """The settings every HTTP middleware shares, and the access events it writes."""

    logger: logging.Logger
    slow_request_ms: float | None
    access_log: bool
    include_query: bool
    trust_forwarded: bool
    request_id_header: str
    clock: Clock

    @classmethod
    def build(
        cls,
        *,
        logger: logging.Logger | str | None,
        slow_request_ms: float | None,
        access_log: bool,
        include_query: bool,
        trust_forwarded: bool,
        request_id_header: str,
        clock: Clock | None,
    ) -> AccessLog:
        """Check every setting; a bad one raises ValueError/TypeError naming it."""
        if logger is None or isinstance(logger, str):
            name = logger or ACCESS_LOGGER
            if name == "shipper.internal" or name.startswith("shipper.internal."):
                raise ValueError(f"logger: {name!r} never reaches the Loki handler; pick another")
            logger = logging.getLogger(name)
        elif not isinstance(logger, logging.Logger):
            raise TypeError(f"logger: expected a logger or a logger name, got {logger!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock: expected a callable returning seconds, got {clock!r}")
        return cls(
            logger=logger,
            slow_request_ms=check_threshold("slow_request_ms", slow_request_ms),
            access_log=bool(access_log),
            include_query=bool(include_query),
            trust_forwarded=bool(trust_forwarded),
            request_id_header=check_header_name("request_id_header", request_id_header),
            clock=clock or time.perf_counter,
        )

    def emit(
        self,
        *,
        method: str,
        path: str,
        query: str,
        status: int,
        duration_ms: float,
        trace_id: str,
        user: tuple[str, str | None] | None,
        client_ip: str | None,
        user_agent: str | None,
        route: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        """The access event (``HTTP_REQUEST``, level from the status) and, past the threshold,
        a ``SLOW_REQUEST`` warning. Never raises."""
        try:
            slow = self.slow_request_ms is not None and duration_ms > self.slow_request_ms
            level = level_for_status(status)
            wanted = [level] if self.access_log else []
            if slow:
                wanted.append(logging.WARNING)
            if not wanted or not self.logger.isEnabledFor(max(wanted)):
                return
            actor, actor_id = user if user is not None else (Actor.GUEST.value, None)
            metadata: dict[str, Any] = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "client_ip": client_ip,
                "user_agent": user_agent[:_MAX_USER_AGENT] if user_agent else user_agent,
            }
            if route:
                metadata["route"] = route
            if self.include_query and query:
                metadata["query"] = query_metadata(query)
            exc_info: Any = None
            if exc is not None:
                exc_info = (type(exc), exc, exc.__traceback__)
                metadata["error_type"] = type(exc).__name__
            extra: dict[str, Any] = {
                "type": HTTP_REQUEST,
                "actor": actor,
                "actor_id": actor_id,
                "trace_id": trace_id,
                "metadata": metadata,
            }
            if self.access_log:
                suffix = f": {type(exc).__name__}: {_exc_text(exc)}" if exc is not None else ""
                self.logger.log(
                    level,
                    f"{method} {path} {status} {duration_ms:.1f} ms{suffix}",
                    extra=extra,
                    exc_info=exc_info,
                )
            if slow:
                assert self.slow_request_ms is not None
                slow_metadata = {**metadata, "threshold_ms": self.slow_request_ms}
                self.logger.warning(
                    f"Slow request: {method} {path} took {duration_ms:.0f} ms "
                    f"(threshold {self.slow_request_ms:.0f} ms)",
                    extra={**extra, "type": SLOW_REQUEST, "metadata": slow_metadata},
                )
        except Exception as problem:
            report("access_log", f"{type(problem).__name__}: {problem}")


def _exc_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<unprintable>"

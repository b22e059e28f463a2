"""Request context: a trace id and the acting user, carried by a ``contextvars.ContextVar``.

Framework integrations bind it at the start of a request; the handler reads it when a record is
emitted (on the app's thread or task, where the context is visible) and puts ``trace_id``,
``actor`` and ``actor_id`` on the event, so every record of a request carries them, also records
from other libraries. Fields given explicitly on a record (``extra=``) win over the context, and
so does the trace id of an active OpenTelemetry span (see :mod:`shipper.handler`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["LogContext", "bind_context", "current_context", "log_context", "reset_context"]


@dataclass(frozen=True, slots=True)
class LogContext:
    trace_id: str | None = None
    actor: str | None = None
    actor_id: str | None = None
    #: merged under each record's own metadata (the record's keys win)
    metadata: Mapping[str, Any] = field(default_factory=dict)


_CURRENT: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar(
    "shipper_log_context", default=None
)


#: ``current_context()``: the context bound in this thread or task, or None. The context
#: variable's own ``get``, not a function around it: the handler calls it on every record.
current_context: Callable[[], LogContext | None] = _CURRENT.get


def bind_context(
    *,
    trace_id: str | None = None,
    actor: str | None = None,
    actor_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> contextvars.Token[LogContext | None]:
    """Bind (or update) the context; fields left as None keep their current value.

    Returns a token for :func:`reset_context`.
    """
    base = _CURRENT.get() or LogContext()
    changes: dict[str, Any] = {
        k: v
        for k, v in (("trace_id", trace_id), ("actor", actor), ("actor_id", actor_id))
        if v is not None
    }
    if metadata:
        changes["metadata"] = {**base.metadata, **metadata}
    return _CURRENT.set(replace(base, **changes))


def reset_context(token: contextvars.Token[LogContext | None]) -> None:
    _CURRENT.reset(token)


@contextlib.contextmanager
def log_context(
    *,
    trace_id: str | None = None,
    actor: str | None = None,
    actor_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[LogContext]:
    """``with log_context(trace_id="abc", actor="USER", actor_id="u1"): ...``"""
    token = bind_context(trace_id=trace_id, actor=actor, actor_id=actor_id, metadata=metadata)
    try:
        ctx = _CURRENT.get()
        assert ctx is not None
        yield ctx
    finally:
        _CURRENT.reset(token)

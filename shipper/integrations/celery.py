"""Celery: task context, task events, request-to-task traces and delivery before a worker
process ends::

    from celery import Celery
    from shipper.integrations.celery import init_celery

    app = Celery("shop", broker="redis://localhost:6379/0")
    init_celery(app)

For each task run by a worker,

* every record logged while it runs carries a ``trace_id``: the request id of the web request
  (or the trace of the task) that sent it, passed in the task's message headers, so one trace
  spans the request and its tasks; a task sent from nowhere traced has its own task id;
  the sender's ``actor``/``actor_id`` come along the same way;
* ``metadata`` carries ``task`` (the name), ``task_id`` and ``retries``;
* one event says how it ended, on the ``shipper.tasks`` logger: ``TASK_SUCCEEDED`` (INFO),
  ``TASK_RETRY`` (WARNING, with the reason) or ``TASK_FAILED`` (ERROR, with the exception and
  its traceback), each with ``duration_ms`` like the access events of HTTP requests.

A prefork pool's child processes leave with ``os._exit``: no ``atexit``, so their queued events
would be lost. ``init_celery`` connects :func:`shipper.shutdown` to ``worker_process_shutdown``
(each child) and ``worker_shutdown`` (the main process).

The signal receivers are module-level functions connected once (``dispatch_uid``), so calling
``init_celery`` again changes nothing. Celery's signals are global: they see the tasks of
every Celery app in the process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from contextvars import Token
from typing import Any

from celery import signals

from shipper.context import LogContext, bind_context, current_context, reset_context
from shipper.integrations._common import report

__all__ = [
    "HEADER_ACTOR",
    "HEADER_ACTOR_ID",
    "HEADER_TRACE_ID",
    "TASKS_LOGGER",
    "TASK_FAILED",
    "TASK_RETRY",
    "TASK_SUCCEEDED",
    "init_celery",
]

TASKS_LOGGER = "shipper.tasks"
TASK_SUCCEEDED = "TASK_SUCCEEDED"
TASK_FAILED = "TASK_FAILED"
TASK_RETRY = "TASK_RETRY"
#: message headers that carry the sender's context to the task
HEADER_TRACE_ID = "shipper_trace_id"
HEADER_ACTOR = "shipper_actor"
HEADER_ACTOR_ID = "shipper_actor_id"

_log = logging.getLogger(TASKS_LOGGER)
#: task id -> (context token, start time); prerun and postrun run on the same thread
_running: dict[str, tuple[Token[LogContext | None], float]] = {}
_running_lock = threading.Lock()
_UID = "shipper.integrations.celery"


def init_celery(app: Any = None, *, flush_on_shutdown: bool = True) -> None:
    """Connect shipper to Celery's signals (see the module documentation).

    ``app`` is accepted for symmetry with other integrations and checked to be a Celery app;
    the signals are process-wide. ``flush_on_shutdown=False`` leaves calling
    :func:`shipper.shutdown` at the end of each worker process to you.
    """
    if app is not None and not hasattr(app, "tasks"):
        raise TypeError(f"app: expected a Celery application, got {app!r}")
    signals.before_task_publish.connect(_before_publish, weak=False, dispatch_uid=_UID)
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid=_UID)
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid=_UID)
    signals.task_success.connect(_success, weak=False, dispatch_uid=_UID)
    signals.task_failure.connect(_failure, weak=False, dispatch_uid=_UID)
    signals.task_retry.connect(_retry, weak=False, dispatch_uid=_UID)
    if flush_on_shutdown:
        signals.worker_process_shutdown.connect(_shutdown, weak=False, dispatch_uid=_UID)
        signals.worker_shutdown.connect(_shutdown, weak=False, dispatch_uid=_UID)


# ------------------------------------------------------------------------- sender side


def _before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Put the sender's trace and user in the message headers."""
    try:
        ctx = current_context()
        if ctx is None or headers is None:
            return
        for key, value in ((HEADER_TRACE_ID, ctx.trace_id), (HEADER_ACTOR, ctx.actor),
                           (HEADER_ACTOR_ID, ctx.actor_id)):
            if value is not None:
                headers[key] = value
    except Exception as exc:
        report("celery_publish", f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------- worker side


def _header(request: Any, key: str) -> str | None:
    value = getattr(request, key, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            value = headers.get(key)
    return str(value) if value is not None and value != "" else None


def _task_metadata(task: Any) -> dict[str, Any]:
    request = task.request
    return {"task": task.name, "task_id": request.id, "retries": int(request.retries or 0)}


def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    try:
        if task_id is None or task is None:
            return
        request = task.request
        token = bind_context(
            trace_id=_header(request, HEADER_TRACE_ID) or task_id,
            actor=_header(request, HEADER_ACTOR),
            actor_id=_header(request, HEADER_ACTOR_ID),
            metadata=_task_metadata(task),
        )
        with _running_lock:
            _running[task_id] = (token, time.perf_counter())
    except Exception as exc:
        report("celery_prerun", f"{type(exc).__name__}: {exc}")


def _postrun(task_id: str | None = None, **_: Any) -> None:
    with _running_lock:
        running = _running.pop(task_id, None) if task_id is not None else None
    if running is None:
        return
    # ValueError: another context (a pool that moved the task): nothing to undo here
    with contextlib.suppress(ValueError):
        reset_context(running[0])


def _duration_ms(task_id: str | None) -> float | None:
    with _running_lock:
        running = _running.get(task_id) if task_id is not None else None
    return round((time.perf_counter() - running[1]) * 1000.0, 3) if running else None


def _emit(task: Any, level: int, kind: str, message: str, *, exc: BaseException | None = None,
          extra_metadata: dict[str, Any] | None = None) -> None:
    """The task's end event; never raises into the worker."""
    try:
        if not _log.isEnabledFor(level):
            return
        request = task.request
        duration_ms = _duration_ms(request.id)
        metadata = {**_task_metadata(task), "duration_ms": duration_ms, **(extra_metadata or {})}
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        timing = f" in {duration_ms:.1f} ms" if duration_ms is not None else ""
        _log.log(level, f"{task.name} {message}{timing}",
                 extra={"type": kind, "metadata": metadata}, exc_info=exc_info)
    except Exception as problem:
        report("celery_event", f"{type(problem).__name__}: {problem}")


def _success(sender: Any = None, **_: Any) -> None:
    if sender is not None:
        _emit(sender, logging.INFO, TASK_SUCCEEDED, "succeeded")


def _failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if sender is None:
        return
    name = type(exception).__name__ if exception is not None else "error"
    _emit(sender, logging.ERROR, TASK_FAILED, f"failed: {name}: {_text(exception)}",
          exc=exception, extra_metadata={"error_type": name})


def _retry(sender: Any = None, reason: Any = None, **_: Any) -> None:
    if sender is None:
        return
    reason_text = _text(reason)
    metadata: dict[str, Any] = {"reason": reason_text}
    if isinstance(reason, BaseException):
        metadata["error_type"] = type(reason).__name__
    _emit(sender, logging.WARNING, TASK_RETRY, f"retry: {reason_text}",
          extra_metadata=metadata)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return "<unprintable>"


def _shutdown(**_: Any) -> None:
    from shipper.lifecycle import shutdown

    shutdown()

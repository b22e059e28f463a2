"""Timing helpers: ``@log_performance`` for functions, ``log_operation`` for blocks.

Both write one event per call, through standard ``logging`` (logger ``shipper.perf`` unless
told otherwise), so it carries the request context like any other record::

    @log_performance("checkout.total", threshold_ms=500)
    def total(cart): ...

    @log_performance(threshold_ms=200)          # the name defaults to the function's
    async def fetch_rates(): ...

    with log_operation("import_products", metadata={"file": path}) as op:
        rows = load(path)
        op.metadata["rows"] = len(rows)

============================  ==========  =================================================
outcome                       level       event
============================  ==========  =================================================
done within the threshold     INFO        ``PERFORMANCE`` (decorator) / ``OPERATION`` (block)
slower than ``threshold_ms``  WARNING     the same, ``metadata.slow`` true
raised an exception           ERROR       the same, ``success`` false, traceback in ``exception``
cancelled / interrupted       WARNING     the same, ``success`` false, ``cancelled`` true
============================  ==========  =================================================

Metadata: ``name``, ``duration_ms``, ``success``, ``threshold_ms``, ``slow`` (and
``error_type``), on top of the ``metadata`` given. The wrapped code behaves exactly as before:
same return value, same exception (re-raised as it was), and logging trouble never reaches it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from shipper.event import Actor, normalize_type

__all__ = ["DEFAULT_PERF_LOGGER", "Operation", "log_operation", "log_performance"]

#: the logger both helpers write to unless given another
DEFAULT_PERF_LOGGER = "shipper.perf"

P = ParamSpec("P")
R = TypeVar("R")
Clock = Callable[[], float]


def _logger(logger: logging.Logger | str | None) -> logging.Logger:
    if logger is None or isinstance(logger, str):
        name = logger or DEFAULT_PERF_LOGGER
        if name == "shipper.internal" or name.startswith("shipper.internal."):
            raise ValueError(f"logger: {name!r} never reaches the Loki handler; pick another")
        return logging.getLogger(name)
    if isinstance(logger, logging.Logger):
        return logger
    raise TypeError(f"logger: expected a logger or a logger name, got {logger!r}")


def _threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(
            f"threshold_ms: expected a number of milliseconds >= 0 or None, got {value!r}"
        )
    return float(value)


class Operation:
    """One timed block: ``with log_operation("import") as op: ...`` (``async with`` works too).
    Add to ``op.metadata`` inside the block; one event is written when the block ends (see the
    module documentation for levels and metadata), and an exception is logged with its
    traceback and propagates unchanged. :func:`log_operation` is this class."""

    __slots__ = ("_clock", "_start", "actor", "actor_id", "event_type", "level", "logger",
                 "metadata", "name", "threshold_ms")

    def __init__(
        self,
        name: str,
        *,
        threshold_ms: float | None = None,
        logger: logging.Logger | str | None = None,
        type: str = "OPERATION",
        level: int = logging.INFO,
        actor: Actor | str | None = None,
        actor_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name: expected a non-empty operation name, got {name!r}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata: expected a mapping, got {metadata!r}")
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(
                f"level: expected a logging level number such as logging.INFO, got {level!r}"
            )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock: expected a callable returning seconds, got {clock!r}")
        self.name = name
        self.threshold_ms = _threshold(threshold_ms)
        self.logger = _logger(logger)
        self.event_type = normalize_type(type)
        self.level = level
        self.actor = actor.value if isinstance(actor, Actor) else actor
        self.actor_id = actor_id
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._clock: Clock = clock or time.perf_counter
        self._start: float | None = None

    # ------------------------------------------------------------------ sync and async

    def __enter__(self) -> Operation:
        self._start = self._clock()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done(exc)

    async def __aenter__(self) -> Operation:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._done(exc)

    # ------------------------------------------------------------------ the event

    def _done(self, exc: BaseException | None) -> None:
        try:
            start = self._start if self._start is not None else self._clock()
            self._emit((self._clock() - start) * 1000.0, exc)
        except Exception:  # never let logging change what the block does
            pass

    def _emit(self, duration_ms: float, exc: BaseException | None) -> None:
        slow = self.threshold_ms is not None and duration_ms > self.threshold_ms
        metadata: dict[str, Any] = {
            **self.metadata,
            "name": self.name,
            "duration_ms": round(duration_ms, 3),
            "success": exc is None,
            "threshold_ms": self.threshold_ms,
            "slow": slow,
        }
        exc_info: Any = None
        if exc is None:
            level = max(self.level, logging.WARNING) if slow else self.level
            message = f"{self.name} took {duration_ms:.1f} ms"
            if slow:
                message += f" (slow: threshold {self.threshold_ms:.0f} ms)"
        elif isinstance(exc, Exception):
            level = logging.ERROR
            metadata["error_type"] = type(exc).__name__
            exc_info = (type(exc), exc, exc.__traceback__)
            message = f"{self.name} failed after {duration_ms:.1f} ms: {type(exc).__name__}: {exc}"
        else:  # cancelled, KeyboardInterrupt, SystemExit, GeneratorExit
            level = logging.WARNING
            metadata["error_type"] = type(exc).__name__
            metadata["cancelled"] = True
            message = (
                f"{self.name} was interrupted after {duration_ms:.1f} ms ({type(exc).__name__})"
            )
        if not self.logger.isEnabledFor(level):
            return
        extra: dict[str, Any] = {"type": self.event_type, "metadata": metadata}
        if self.actor is not None:
            extra["actor"] = self.actor
        if self.actor_id is not None:
            extra["actor_id"] = self.actor_id
        self.logger.log(level, message, extra=extra, exc_info=exc_info, stacklevel=4)


#: ``with log_operation("import") as op: ...``: the :class:`Operation` class under the name
#: that reads as what the block does (like :class:`contextlib.suppress`)
log_operation = Operation


@overload
def log_performance(name: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def log_performance(
    name: str | None = None,
    threshold_ms: float | None = None,
    *,
    logger: logging.Logger | str | None = None,
    type: str = "PERFORMANCE",
    level: int = logging.INFO,
    metadata: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def log_performance(
    name: str | Callable[..., Any] | None = None,
    threshold_ms: float | None = None,
    *,
    logger: logging.Logger | str | None = None,
    type: str = "PERFORMANCE",
    level: int = logging.INFO,
    metadata: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
) -> Any:
    """Decorate a function (sync or ``async``) to log its duration and outcome on every call.

    ``@log_performance``, ``@log_performance("name")`` and
    ``@log_performance("name", threshold_ms=250)`` all work; the name defaults to the
    function's qualified name. Generator functions are refused (their body runs after the
    call returns): time them with :func:`log_operation` inside instead."""
    if callable(name):
        return log_performance()(name)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty name or None, got {name!r}")
    threshold = _threshold(threshold_ms)
    log = _logger(logger)
    # check the rest now, at decoration time, rather than on the first call
    Operation("check", logger=log, type=type, level=level, metadata=metadata, clock=clock)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if not callable(func):
            raise TypeError(f"log_performance: expected a function to decorate, got {func!r}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"log_performance cannot time the generator function {func.__qualname__}: its "
                "body runs after the call returns; use log_operation inside it instead"
            )
        op_name = name or getattr(func, "__qualname__", None) or repr(func)

        def operation() -> Operation:
            return Operation(op_name, threshold_ms=threshold, logger=log, type=type, level=level,
                             metadata=metadata, clock=clock)

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with operation():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with operation():
                return func(*args, **kwargs)

        return wrapper

    return decorate

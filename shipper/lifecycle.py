"""Process shutdown: deliver what is queued before the process goes away.

:func:`shutdown` flushes and closes every pipeline of the process (each ``LokiHandler`` owns
one, the sidecar its own) within a deadline, and says what is left on disk. Call it from the
place your server gives you just before a process ends: FastAPI's lifespan, gunicorn's
``worker_exit``/``on_exit``, Celery's ``worker_process_shutdown``, the end of a script.
``ShipperASGIMiddleware`` and ``shipper.integrations.celery`` call it themselves.

It is safe from any thread, from ``atexit`` and from a signal handler: the draining runs on
helper threads that the caller waits for with a deadline, so a lock held by the interrupted
code can delay it by at most the deadline, never hang the process.

SIGTERM: when the first pipeline is made on the main thread and SIGTERM still has its default
action (nothing in the process handles it), a handler is installed that runs :func:`shutdown`
and then gives SIGTERM its default action back and raises it again, so the process still dies
by the signal, as it would have without shipper. A handler the app or its server installs, now
or later, is never replaced; servers that restore the previous handler and re-raise the signal
when they are done (uvicorn) run it last. ``handle_sigterm=False`` (``SHIPPER_HANDLE_SIGTERM=0``)
turns this off. (The delivery registry tells this module of every pipeline made, so the engine
never imports it.)
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from shipper.delivery.registry import LivePipeline, live_pipelines, on_add
from shipper.delivery.spool import spool_status

__all__ = ["ShutdownReport", "shutdown"]

#: how long past the deadline a caller waits for a pipeline stuck on a lock before giving up
_GRACE = 0.5


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What :func:`shutdown` left behind, counted over every pipeline closed so far.

    ``left_on_disk`` events are safe in the spool directories ``paths`` and are sent by the
    next process that uses the directory (or by ``shipper spool push``); ``dropped`` events are
    lost (no spool, spool full, invalid); ``unfinished`` pipelines were still draining at the
    deadline (their queue is lost if the process ends now).
    """

    pipelines: int = 0
    left_on_disk: int = 0
    paths: tuple[Path, ...] = ()
    dropped: int = 0
    unfinished: int = 0

    @property
    def complete(self) -> bool:
        """Everything handed to shipper reached Loki."""
        return not (self.left_on_disk or self.dropped or self.unfinished)


_lock = threading.Lock()
_owner: int | None = None
_closed: list[LivePipeline] = []
_last = ShutdownReport()


def shutdown(timeout: float | None = None) -> ShutdownReport:
    """Flush and close every pipeline (and so every ``LokiHandler``) of this process.

    Each pipeline drains for up to ``timeout`` seconds (default: its own ``shutdown_timeout``),
    all of them at once; what is not delivered by then goes to the spool. Handlers stay
    attached to their loggers: what is logged afterwards goes to the spool (or is dropped and
    counted without one). Idempotent: a second call closes only pipelines made since and
    returns the report for all of them. Never raises.
    """
    global _owner, _last
    if _owner == threading.get_ident():  # a signal handler interrupted a shutdown here
        return _last
    wait = (timeout if timeout is not None else _longest_timeout()) + 2 * _GRACE
    if not _lock.acquire(timeout=wait):
        return _last
    try:
        _owner = threading.get_ident()
        pipelines = live_pipelines()
        unfinished = _close(pipelines, timeout)
        _closed.extend(pipelines)
        _last = _report(unfinished)
        return _last
    except Exception as exc:  # never into the app, least of all while it exits
        with contextlib.suppress(Exception):
            sys.stderr.write(f"shipper: shutdown failed: {type(exc).__name__}: {exc}\n")
        return _last
    finally:
        _owner = None
        _lock.release()


def _longest_timeout() -> float:
    return max((p.config.shutdown_timeout for p in live_pipelines()), default=0.0)


def _close(pipelines: list[LivePipeline], timeout: float | None) -> int:
    """Close them in parallel on helper threads; how many were still busy at the deadline."""
    start = time.monotonic()
    threads: list[tuple[threading.Thread, float]] = []
    for pipeline in pipelines:
        budget = pipeline.config.shutdown_timeout if timeout is None else timeout
        thread = threading.Thread(target=_close_one, args=(pipeline, budget),
                                  name="shipper-shutdown", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads at interpreter exit: drain here instead
            _close_one(pipeline, budget)
            continue
        threads.append((thread, start + budget + _GRACE))
    for thread, deadline in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    return sum(thread.is_alive() for thread, _ in threads)


def _close_one(pipeline: LivePipeline, timeout: float) -> None:
    try:
        pipeline.close(timeout)
    except Exception as exc:
        pipeline.report("close", exc)


def _report(unfinished: int) -> ShutdownReport:
    dirs: dict[Path, None] = {}
    dropped = 0
    for pipeline in _closed:
        stats = pipeline.stats()
        dropped += int(stats["dropped_total"])
        directory = pipeline.config.resolved_spool_dir()
        if directory is not None:
            dirs[directory] = None
    left = 0
    paths: list[Path] = []
    for directory in dirs:
        try:
            records = spool_status(directory).records or 0
        except Exception:
            continue
        if records:
            left += records
            paths.append(directory)
    return ShutdownReport(pipelines=len(_closed), left_on_disk=left, paths=tuple(paths),
                          dropped=dropped, unfinished=unfinished)


# ---------------------------------------------------------------------------------- SIGTERM


def _on_new_pipeline(pipeline: LivePipeline) -> None:
    """The registry's news of a pipeline made: the SIGTERM hook, unless it said no."""
    if pipeline.config.handle_sigterm:
        _install_sigterm_hook()


def _install_sigterm_hook() -> None:
    """Install :func:`_on_sigterm` when SIGTERM has its default action; never replace a
    handler someone else installed. Only the main thread may install signal handlers."""
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(sigterm) is signal.SIG_DFL:
            signal.signal(sigterm, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        return


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    try:
        shutdown()
    finally:
        # the signal's own action, as if shipper had never been here: the process dies by it
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) is _on_sigterm:
                signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


on_add(_on_new_pipeline)

"""The pipelines of this process that are not closed yet, and the process hooks that act on all
of them.

A pipeline joins when it is made and leaves when it closes. At interpreter exit each one still
open is closed (its queue delivered, or spooled, as ``close()`` does); in a forked child each
drops what belongs to the parent (threads, locks, the claimed segment). As in the OpenTelemetry
SDK, where the ``LoggerProvider`` that owns the processors registers these hooks, the registry
registers them, once, when this module is loaded.

What else must happen when a pipeline is made subscribes with :func:`on_add`:
:mod:`shipper.lifecycle` installs its SIGTERM hook that way, so the engine never imports the
module that shuts it down. :func:`live_pipelines` is what ``shipper.shutdown()`` closes.
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from shipper.config import ShipperConfig

__all__ = ["LivePipeline", "add", "discard", "live_pipelines", "on_add"]


class LivePipeline(Protocol):
    """What the registry and process shutdown use of a pipeline."""

    config: ShipperConfig

    @property
    def closed(self) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...

    def after_fork_in_child(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def report(self, kind: str, problem: BaseException | str) -> None: ...

    def say(self, kind: str, message: str) -> None: ...


_PIPELINES: weakref.WeakSet[LivePipeline] = weakref.WeakSet()
_LISTENERS: list[Callable[[LivePipeline], None]] = []


def add(pipeline: LivePipeline) -> None:
    """A new pipeline: registered, then every :func:`on_add` listener is told, in order."""
    _PIPELINES.add(pipeline)
    for listener in list(_LISTENERS):
        listener(pipeline)


def discard(pipeline: LivePipeline) -> None:
    """A closed pipeline leaves the registry."""
    _PIPELINES.discard(pipeline)


def on_add(listener: Callable[[LivePipeline], None]) -> None:
    """Call ``listener(pipeline)`` for every pipeline made from now on (on the thread that
    makes it)."""
    _LISTENERS.append(listener)


def live_pipelines() -> list[LivePipeline]:
    """Every pipeline of this process that is not closed yet (handlers' and sidecar's)."""
    return [p for p in list(_PIPELINES) if not p.closed]


def _close_all() -> None:
    for pipeline in list(_PIPELINES):
        try:
            pipeline.close()
        except Exception as exc:  # exiting: say it and go on
            pipeline.say("close", repr(exc))


def _after_fork_in_child() -> None:
    for pipeline in list(_PIPELINES):
        pipeline.after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

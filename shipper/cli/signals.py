"""SIGTERM as a clean stop for the commands that run until stopped (``shipper demo``,
``shipper report --daily-at``): ``docker stop`` ends them between two steps, not in the middle
of one."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["stop_on_sigterm"]


def stop_on_sigterm(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM (``docker stop``) instead of ending the process; returns the
    undo, which gives SIGTERM its previous handler back. Off the main thread, where Python
    cannot install signal handlers, nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)

    def undo() -> None:
        signal.signal(signal.SIGTERM, previous)

    return undo

"""Polling for a condition in tests: the one helper every test module uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0,
               interval: float = 0.02) -> Any:
    """Call ``predicate()`` until it returns something truthy or ``timeout`` seconds pass;
    return its last value (falsy on timeout, so ``assert wait_until(...)`` reads well)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value

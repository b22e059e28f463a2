"""Fixtures shared by the unit tests."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from shipper.config import ShipperConfig
from shipper.testing import LogCapture, capture_logs
from tests.support.sidecar_process import SidecarProcess

# Property tests draw the same examples on every run (CI must be deterministic); no per-example
# deadline, since the machine is shared and timings vary.
settings.register_profile("shipper", derandomize=True, deadline=None)
settings.load_profile("shipper")


def _heartbeats_off_unless_asked() -> None:
    """Heartbeats (``health_interval``, 60s in use) are off in the tests unless a test sets
    ``health_interval`` itself: a pipeline ships a last ``SHIPPER_HEALTH`` event when it
    closes, which would be one more event in every test that counts what reached the fake
    Loki. Off through the environment (``ShipperConfig.load``, and the child processes the
    tests start) and as the default of a ``ShipperConfig(...)`` built in a test.
    tests/delivery/test_health.py and the live tests of the heartbeats turn them on."""
    os.environ.setdefault("SHIPPER_HEALTH_INTERVAL", "0")
    init = ShipperConfig.__init__
    names = list(inspect.signature(init).parameters)[1:]
    defaults = list(init.__defaults__ or ())
    defaults[names.index("health_interval") - (len(names) - len(defaults))] = 0.0
    init.__defaults__ = tuple(defaults)


_heartbeats_off_unless_asked()


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Every record logged during the test, with the request context seen at emit time."""
    with capture_logs() as handler:
        yield handler


@pytest.fixture
def processes() -> Iterator[list[SidecarProcess]]:
    """``shipper sidecar`` processes a test starts; any still running at the end is killed,
    with its worker processes."""
    started: list[SidecarProcess] = []
    yield started
    for proc in started:
        proc.kill()

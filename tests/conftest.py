"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from shipper.testing import LogCapture, capture_logs
from tests.support.sidecar_process import SidecarProcess

# Property tests draw the same examples on every run (CI must be deterministic); no per-example
# deadline, since the machine is shared and timings vary.
settings.register_profile("shipper", derandomize=True, deadline=None)
settings.load_profile("shipper")


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

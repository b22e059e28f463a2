"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.log_capture import CaptureHandler, capture_logs


@pytest.fixture
def logs() -> Iterator[CaptureHandler]:
    """Every record logged during the test, with the request context seen at emit time."""
    with capture_logs() as handler:
        yield handler

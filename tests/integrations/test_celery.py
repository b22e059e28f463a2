"""init_celery's own contract; the integration at work is tested under a real prefork worker in
test_celery_worker.py."""

from __future__ import annotations

import pytest
from celery import Celery, signals

from shipper.integrations.celery import _prerun, init_celery


def _receivers_of(signal: object, function: object) -> int:
    return sum(1 for _, receiver in signal.receivers  # type: ignore[attr-defined]
               if receiver is function or getattr(receiver, "__wrapped__", None) is function)


def test_init_celery_refuses_what_is_not_a_celery_app() -> None:
    with pytest.raises(TypeError, match="app: expected a Celery application"):
        init_celery("tasks")


def test_init_celery_twice_connects_each_receiver_once() -> None:
    app = Celery("twice")
    init_celery(app)
    init_celery(app)
    assert _receivers_of(signals.task_prerun, _prerun) == 1

"""The sender thread: one batch in flight, one waiting, nothing lost when it stops."""

from __future__ import annotations

import threading
import time

from shipper.delivery.sender import Sender


def test_one_batch_is_sent_while_one_waits_and_a_third_is_refused() -> None:
    gate = threading.Event()
    sent: list[int] = []

    def deliver(work: int) -> None:
        gate.wait(5)
        sent.append(work)

    sender: Sender[int] = Sender(deliver)
    assert sender.offer(1)
    deadline = time.monotonic() + 5
    while not sender.offer(2):  # the sender takes 1, then 2 may wait
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert sender.offer(3) is False
    assert sender.wait_idle(time.monotonic() + 0.05) is False
    gate.set()
    assert sender.wait_idle(time.monotonic() + 5)
    assert sent == [1, 2]


def test_stopping_hands_back_the_work_that_was_not_started() -> None:
    gate = threading.Event()
    sender: Sender[str] = Sender(lambda work: gate.wait(5))
    assert sender.offer("in flight")
    deadline = time.monotonic() + 5
    while not sender.offer("waiting"):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    gate.set()
    left = sender.stop(timeout=5)
    assert left in ([], ["waiting"])  # "waiting" may have started before stop()
    assert sender.wait_idle(time.monotonic() + 5)


def test_a_failing_delivery_is_reported_and_the_sender_goes_on() -> None:
    reports: list[str] = []
    done = threading.Event()

    def deliver(work: int) -> None:
        if work == 1:
            raise RuntimeError("boom")
        done.set()

    sender: Sender[int] = Sender(deliver, report=lambda kind, exc: reports.append(str(exc)))
    assert sender.offer(1)
    assert sender.wait_idle(time.monotonic() + 5)
    assert sender.offer(2)
    assert done.wait(5)
    assert reports == ["boom"]

"""The sender thread: one batch in flight, one waiting, nothing lost when it stops."""

from __future__ import annotations

import threading
import time

from shipper.delivery.sender import Sender


def _gated() -> tuple[Sender[int], threading.Event, list[int]]:
    """A sender whose deliveries wait for the gate, and the work it delivered, in order."""
    gate = threading.Event()
    sent: list[int] = []

    def deliver(work: int) -> None:
        gate.wait(5)
        sent.append(work)

    return Sender(deliver), gate, sent


def test_one_batch_is_sent_while_one_waits_and_a_third_is_refused() -> None:
    sender, gate, sent = _gated()
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


def test_work_handed_over_waits_in_line_and_is_sent_in_order() -> None:
    sender, gate, sent = _gated()
    assert sender.wait_room(0.0)  # nothing waits
    assert sender.hand(1) and sender.hand(2) and sender.hand(3)  # never refused, never waits
    assert sender.offer(4) is False  # the place is taken: the worker's offer waits its turn
    assert sender.wait_room(0.05) is False
    gate.set()
    assert sender.wait_room(5)  # 1, 2 and 3 left the line
    assert sender.wait_idle(time.monotonic() + 5)
    assert sent == [1, 2, 3]


def test_wait_room_returns_when_the_line_empties_not_at_its_timeout() -> None:
    gate = threading.Event()
    sender: Sender[int] = Sender(lambda work: gate.wait(5))
    assert sender.hand(1)
    deadline = time.monotonic() + 5
    while not sender.wait_room(0.0):  # the sender takes 1: nothing waits behind it
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert sender.hand(2)
    threading.Timer(0.1, gate.set).start()
    started = time.monotonic()
    assert sender.wait_room(30)
    assert time.monotonic() - started < 20  # woken by the sender, not by the 30 s timeout
    assert sender.wait_idle(time.monotonic() + 5)


def test_work_handed_over_after_stop_is_given_back() -> None:
    sender: Sender[int] = Sender(lambda work: None)
    assert sender.stop(timeout=1) == []
    assert sender.hand(1) is False  # the caller keeps it (the pipeline spools it)
    assert sender.wait_room(0.0) is False
    assert sender.wait_idle(time.monotonic() + 1)

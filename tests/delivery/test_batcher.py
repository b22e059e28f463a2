"""The batcher's queue: many items put at once take the places, in order, that putting them one
by one would give them: queued while there is room (in items and in bytes), else refused. A
producer with ``work_here`` processes due batches on its own thread, one step at a time with
the worker's, in queue order."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.delivery.batcher import Batcher


def _batcher() -> Batcher[int]:
    # the worker waits a minute for a batch that never fills: the queue keeps what it holds;
    # no spill (items parked for it leave on the worker's thread, at its own pace)
    return Batcher(process=lambda items: None, max_items=8, max_bytes=1_000,
                   batch_items=1_000, batch_bytes=1 << 20, max_wait=60.0)


def _state(batcher: Batcher[int]) -> tuple[list[int], tuple[int, int]]:
    with batcher._lock:
        return batcher._queued_items(), batcher.queued()


@given(st.lists(st.lists(st.integers(min_value=0, max_value=300), max_size=10), max_size=4))
def test_put_many_places_items_as_put_does_one_by_one(reads: list[list[int]]) -> None:
    many, single = _batcher(), _batcher()
    try:
        for read in reads:
            items = [(1000 * len(read) + i, size) for i, size in enumerate(read)]
            sizes = dict(items)
            refused = many.put_many([item for item, _ in items], sum(read), sizes.__getitem__)
            assert refused == [item for item, size in items if not single.put(item, size)]
            assert _state(many) == _state(single)
    finally:
        many.close(0.1)
        single.close(0.1)


@given(st.lists(st.lists(st.integers(min_value=0, max_value=300), max_size=12), max_size=5),
       st.integers(min_value=1, max_value=5))
def test_lists_put_whole_are_processed_in_order_in_batches_of_at_most_batch_items(
        reads: list[list[int]], batch_items: int) -> None:
    batches: list[list[int]] = []
    batcher: Batcher[int] = Batcher(process=batches.append, max_items=100, max_bytes=100_000,
                                    batch_items=batch_items, batch_bytes=1 << 20,
                                    max_wait=60.0)
    try:
        put: list[int] = []
        for read in reads:
            items = list(range(len(put), len(put) + len(read)))
            sizes = dict(zip(items, read, strict=True))
            assert batcher.put_many(items, sum(read), sizes.__getitem__) == []
            put += items
        assert batcher.flush(10.0)
        assert [item for batch in batches for item in batch] == put
        assert all(0 < len(batch) <= batch_items for batch in batches)
        assert batcher.queued() == (0, 0) and len(batcher) == 0
    finally:
        batcher.close(0.1)


class _Record:
    """A ``process`` callback that notes each batch with the thread that ran it, and fails the
    test if two batches are ever processed at once."""

    def __init__(self, hold: Callable[[list[int]], None] | None = None,
                 pause: float = 0.002) -> None:
        self.pause = pause
        self.batches: list[tuple[int, list[int]]] = []
        self.overlaps = 0
        self._running = 0
        self._lock = threading.Lock()
        self._hold = hold

    def __call__(self, items: list[int]) -> None:
        with self._lock:
            self._running += 1
            if self._running > 1:
                self.overlaps += 1
        try:
            if self._hold is not None:
                self._hold(items)
            time.sleep(random.random() * self.pause)  # widen the window for an overlap
            self.batches.append((threading.get_ident(), list(items)))
        finally:
            with self._lock:
                self._running -= 1

    def items(self) -> list[int]:
        return [item for _, batch in self.batches for item in batch]

    def threads(self) -> set[int]:
        return {ident for ident, _ in self.batches}


def _worker_batcher(process: Callable[[list[int]], None], **kw: object) -> Batcher[int]:
    settings: dict[str, object] = dict(max_items=10_000, max_bytes=1 << 30, batch_items=10,
                                       batch_bytes=1 << 30, max_wait=60.0)
    settings.update(kw)
    return Batcher(process=process, **settings)  # type: ignore[arg-type]


def test_a_producer_with_work_here_processes_the_due_batch_on_its_own_thread() -> None:
    record = _Record()
    batcher = _worker_batcher(record)
    try:
        assert batcher.put_many(list(range(25)), 25, lambda item: 1, work_here=True) == []
        # two batches of ten were due and processed before put_many returned; five wait
        assert record.batches == [(threading.get_ident(), list(range(10))),
                                  (threading.get_ident(), list(range(10, 20)))]
        assert batcher.queued() == (5, 5)
        assert batcher.flush(10)  # the worker takes the rest when asked
        assert record.items() == list(range(25))
    finally:
        batcher.close(1)


def test_work_here_leaves_a_batch_that_is_not_due_to_the_worker() -> None:
    record = _Record()
    batcher = _worker_batcher(record, max_wait=0.05)
    try:
        assert batcher.put_many([1, 2, 3], 3, lambda item: 1, work_here=True) == []
        assert record.batches == []  # not due: put_many returned without processing
        deadline = time.monotonic() + 10
        while not record.batches:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert record.items() == [1, 2, 3]
        assert threading.get_ident() not in record.threads()  # the worker's, at max_wait
    finally:
        batcher.close(1)


def test_a_producer_leaves_due_batches_to_the_worker_while_the_worker_is_in_a_step() -> None:
    worker_may_finish = threading.Event()
    worker_started = threading.Event()

    def hold(items: list[int]) -> None:
        if items[0] == 0:  # the worker's batch: a request Loki does not answer yet
            worker_started.set()
            assert worker_may_finish.wait(10)

    record = _Record(hold)
    batcher = _worker_batcher(record)
    try:
        batcher.put_many(list(range(10)), 10, lambda item: 1)  # due: the worker takes it
        assert worker_started.wait(10)
        producer = threading.Thread(target=batcher.put_many,
                                    args=(list(range(10, 20)), 10, lambda item: 1),
                                    kwargs={"work_here": True})
        producer.start()
        producer.join(10)
        assert not producer.is_alive()  # it did not wait for the worker's step
        assert record.items() == []
        worker_may_finish.set()
        assert batcher.flush(10)
        assert record.items() == list(range(20)) and record.overlaps == 0
        assert record.threads() == {batcher._thread.ident}  # type: ignore[union-attr]
    finally:
        batcher.close(1)


def test_a_producer_leaves_the_due_batch_to_the_worker_when_ready_says_no() -> None:
    asked: list[float] = []

    def ready(timeout: float) -> bool:
        asked.append(timeout)
        return False

    record = _Record()
    batcher = _worker_batcher(record, ready=ready)
    try:
        assert batcher.put_many(list(range(10)), 10, lambda item: 1, work_here=True) == []
        assert asked and asked[0] > 0  # it waited a while for the room
        assert batcher.flush(10)
        assert record.items() == list(range(10))
        assert threading.get_ident() not in record.threads()
    finally:
        batcher.close(1)


def test_a_failing_batch_in_a_producers_step_is_reported_and_frees_the_step() -> None:
    reports: list[str] = []

    def process(items: list[int]) -> None:
        if items[0] == 0:
            raise RuntimeError("boom")
        done.extend(items)

    done: list[int] = []
    batcher = Batcher(process=process, report=lambda kind, exc: reports.append(str(exc)),
                      max_items=1000, max_bytes=1 << 30, batch_items=10, batch_bytes=1 << 30,
                      max_wait=60.0)
    try:
        batcher.put_many(list(range(10)), 10, lambda item: 1, work_here=True)
        assert reports == ["boom"]
        batcher.put_many(list(range(10, 20)), 10, lambda item: 1)  # the worker's now
        assert batcher.flush(10)
        assert done == list(range(10, 20))
    finally:
        batcher.close(1)


def test_close_waits_for_a_producers_step_and_returns_what_it_did_not_take() -> None:
    """close() joins the worker, which waits for a producer's step to end; the producer takes
    no batch once closing."""
    in_step = threading.Event()
    may_go_on = threading.Event()

    def hold(items: list[int]) -> None:
        if items[0] == 0:
            in_step.set()
            assert may_go_on.wait(10)

    record = _Record(hold)
    batcher = _worker_batcher(record)
    producer = threading.Thread(target=batcher.put_many, args=(list(range(30)), 30,
                                                               lambda item: 1),
                                kwargs={"work_here": True})
    producer.start()
    assert in_step.wait(10)
    closed: list[list[int]] = []
    closer = threading.Thread(target=lambda: closed.append(batcher.close(10)))
    closer.start()
    time.sleep(0.1)
    assert closer.is_alive()  # the producer's step is still running
    may_go_on.set()
    closer.join(20)
    producer.join(20)
    # the first batch was the producer's; once closing, the worker drained the queue within
    # close's time, or close handed what was left back: nothing is lost, nothing doubled
    assert sorted(record.items() + closed[0]) == list(range(30))
    assert record.items()[:10] == list(range(10)) and record.overlaps == 0


def test_work_here_does_not_step_in_while_the_overflow_waits_for_the_worker() -> None:
    spilled: list[int] = []
    record = _Record()
    batcher: Batcher[int] = Batcher(process=record, spill=spilled.extend, max_items=10,
                                    max_bytes=1 << 30, batch_items=10, batch_bytes=1 << 30,
                                    max_wait=60.0)
    try:
        with batcher._lock:  # the worker is held off while the queue overflows
            batcher._stepping = True
        refused: list[list[int]] = []
        producer = threading.Thread(target=lambda: refused.append(batcher.put_many(
            list(range(15)), 15, lambda item: 1, work_here=True)))
        producer.start()
        producer.join(5)
        assert not producer.is_alive()  # it did not wait to step in
        assert refused == [[]]  # ten queued, five parked on the overflow
        assert record.batches == []  # the overflow is the worker's to spill first
        batcher._end_step()
        assert batcher.flush(10)
        assert sorted(record.items() + spilled) == list(range(15))
        assert threading.get_ident() not in record.threads()
    finally:
        batcher.close(1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=2), st.integers(1, 25),
                          st.booleans()), min_size=1, max_size=30),
       st.integers(min_value=1, max_value=12))
def test_items_of_every_producer_are_processed_once_in_order_whoever_processes_them(
        puts: list[tuple[int, int, bool]], batch_items: int) -> None:
    record = _Record(pause=0.0)
    batcher = _worker_batcher(record, batch_items=batch_items, max_wait=0.01)
    plans: dict[int, list[tuple[int, bool]]] = {0: [], 1: [], 2: []}
    for producer, count, here in puts:
        plans[producer].append((count, here))
    expected: dict[int, list[int]] = {}

    def produce(producer: int) -> None:
        next_item = producer * 10_000
        for count, here in plans[producer]:
            items = list(range(next_item, next_item + count))
            next_item += count
            expected.setdefault(producer, []).extend(items)
            assert batcher.put_many(items, count, lambda item: 1, work_here=here) == []

    threads = [threading.Thread(target=produce, args=(p,)) for p in plans]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert batcher.flush(30)
        done = record.items()
        assert sorted(done) == sorted(item for items in expected.values() for item in items)
        for producer, items in expected.items():
            assert [item for item in done if item // 10_000 == producer] == items
        assert record.overlaps == 0
    finally:
        batcher.close(1)

"""The batcher's queue: many items put at once take the places, in order, that putting them one
by one would give them: queued while there is room (in items and in bytes), else refused."""

from __future__ import annotations

from hypothesis import given
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

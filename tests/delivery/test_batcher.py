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
    return list(batcher._queue), batcher.queued()


@given(st.lists(st.lists(st.integers(min_value=0, max_value=300), max_size=10), max_size=4))
def test_put_many_places_items_as_put_does_one_by_one(reads: list[list[int]]) -> None:
    many, single = _batcher(), _batcher()
    try:
        for read in reads:
            items = [(1000 * len(read) + i, size) for i, size in enumerate(read)]
            refused = many.put_many(items)
            assert refused == [item for item, size in items if not single.put(item, size)]
            assert _state(many) == _state(single)
    finally:
        many.close(0.1)
        single.close(0.1)

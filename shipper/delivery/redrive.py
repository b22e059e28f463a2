"""Dead letters pushed again (``Pipeline.push_dead_letters``, behind ``shipper spool
dead-letters push``), once Loki's limits have changed.

The dead letters go to Loki oldest segment first, through the pipeline's
:class:`~shipper.delivery.link.LokiLink`, so they are paced, split and refused exactly as live
batches are:

* what Loki stores now is removed;
* what it refuses again is kept again, with the new reason and message (the link hands every
  refusal to the pipeline, which writes it as a dead letter);
* 429 and 5xx are waited out with backoff, within the retry budget and the timeout; when Loki
  is unreachable, or the time runs out, the rest stays as it was. A segment Loki answered part
  of is replaced by one holding the rest, so no entry is both stored and still a dead letter.

Only the segments there when the push starts are read, so what Loki refuses again during the
run is not pushed a second time. A record that cannot be read is kept as it is and counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from shipper.config import ShipperConfig
from shipper.delivery.link import LokiLink, backoff
from shipper.delivery.spool import ClaimedSegment
from shipper.delivery.spool.deadletters import DeadLetter, DeadLetters
from shipper.delivery.spool.segments import scan_file
from shipper.delivery.tally import Reporter, Tally

__all__ = ["Redrive", "RedriveResult"]


@dataclass
class RedriveResult:
    """What one push of the dead letters did."""

    #: dead letters read
    letters: int = 0
    #: stored by Loki now (removed from the dead letters)
    stored: int = 0
    #: refused again, by the new reason (kept as dead letters again)
    refused: dict[str, int] = field(default_factory=dict)
    #: not answered (Loki unreachable or busy, or the time ran out; or held by another
    #: process): kept as they were
    left: int = 0
    #: records that cannot be read (kept as they are)
    damaged: int = 0
    #: dead letters lost meanwhile: refused again but not written, or dropped at the cap
    lost: int = 0
    #: every dead letter there was at the start was answered
    complete: bool = False


class Redrive:
    """Pushes one dead-letter store to Loki again (from the calling thread)."""

    def __init__(self, dead: DeadLetters, link: LokiLink, config: ShipperConfig,
                 tally: Tally, reporter: Reporter) -> None:
        self._dead = dead
        self._link = link
        self._config = config
        self._tally = tally
        self._reporter = reporter

    def run(self, timeout: float) -> RedriveResult:
        """Push every dead letter there is now, until done or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        result = RedriveResult()
        sent_before = self._sent()
        dead_before = self._tally.dead_letters()
        lost_before = self._lost()
        todo = self._dead.segments()
        stopped = False
        while todo and not stopped and time.monotonic() < deadline:
            segment = self._dead.claim(todo)
            if segment is None:  # the rest are held by another process (or gone)
                break
            todo.discard(segment.path.name)
            stopped = not self._segment(segment, deadline, result)
        for name in todo:
            frames = scan_file(self._dead.directory / name)
            result.left += frames.records if frames is not None else 0
        result.stored = self._sent() - sent_before
        dead_after = self._tally.dead_letters()
        result.refused = {reason: n - dead_before.get(reason, 0)
                          for reason, n in sorted(dead_after.items())
                          if n > dead_before.get(reason, 0)}
        result.lost += self._lost() - lost_before
        result.complete = result.left == 0
        return result

    def _sent(self) -> int:
        return self._tally.snapshot()[0].get("sent", 0)

    def _lost(self) -> int:
        return self._tally.snapshot()[0].get("dead_letters_dropped", 0)

    def _segment(self, segment: ClaimedSegment, deadline: float,
                 result: RedriveResult) -> bool:
        """Push one segment's letters; False when Loki stopped answering (the rest kept)."""
        letters: list[DeadLetter] = []
        unreadable: list[bytes] = []
        for payload in segment.records():
            try:
                letters.append(DeadLetter.from_record(payload))
            except ValueError:
                unreadable.append(payload)
        result.letters += len(letters)
        result.damaged += len(unreadable)
        if unreadable:
            self._reporter.report("dead_letters_damaged",
                                  f"{len(unreadable)} dead letters in {segment.path} cannot be "
                                  "read; they are kept as they are")
        done = 0
        for batch in self._batches(letters):
            failed = self._push(batch, deadline)
            done += len(batch) - failed
            if failed:
                break
        rest = letters[done:]
        result.left += len(rest)
        if not rest and not unreadable:
            segment.ack()
        elif not done:
            segment.release()  # nothing answered: the segment stays as it is
        else:
            kept, evicted = self._dead.put_back([letter.to_record() for letter in rest]
                                                + unreadable)
            result.lost += evicted
            if kept:
                segment.ack()  # the rest is in a new segment
            else:
                segment.release()  # it could not be written: keep the whole segment
        return not rest

    def _batches(self, letters: Sequence[DeadLetter]) -> Iterator[list[DeadLetter]]:
        limit_bytes, limit_events = self._config.batch_max_bytes, self._config.batch_max_events
        batch: list[DeadLetter] = []
        size = 0
        for letter in letters:
            esize = letter.entry.size
            if batch and (size + esize > limit_bytes or len(batch) >= limit_events):
                yield batch
                batch, size = [], 0
            batch.append(letter)
            size += esize
        if batch:
            yield batch

    def _push(self, batch: Sequence[DeadLetter], deadline: float) -> int:
        """Push one batch through 429 and 5xx; how many of it (at its end) Loki did not
        answer."""
        link = self._link
        pending = [letter.entry for letter in batch]
        size = sum(entry.size for entry in pending)
        attempt = 0
        while True:
            pace = link.pace()
            if pace > 0:
                time.sleep(min(pace, max(deadline - time.monotonic(), 0.0)))
            pending, failure = link.push(pending, size)
            if not pending:
                return 0
            assert failure is not None
            attempt += 1
            if failure.unreachable and attempt == 1:
                continue  # at once, on a fresh connection
            delay = backoff(self._config, attempt, failure.retry_after)
            if (failure.unreachable or link.budget_spent()
                    or time.monotonic() + delay >= deadline):
                self._reporter.report("dead_letters_push",
                                      f"Loki did not take the dead letters "
                                      f"({failure.message[:300]}); the rest are kept")
                return len(pending)
            time.sleep(delay)

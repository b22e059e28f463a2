"""Live sending: one batch of fresh events to Loki, on the sender thread, until Loki takes it.

* **429 and 5xx are backpressure, not an outage.** The same batch is sent again with
  exponential backoff and jitter, honouring ``Retry-After``, and every request is paced by the
  AIMD send rate (both kept by :class:`~shipper.delivery.link.LokiLink`). Only after
  ``retry_budget`` seconds of *continuous* failure (no request accepted meanwhile) does the
  sender give up on Loki for now. A pending flush never cuts this short.
* **Connection errors and timeouts** mean Loki is not there: after one immediate retry on a
  fresh connection the batch goes to the spool and the pipeline is *offline*
  (:class:`~shipper.delivery.offline.OfflineProbe`); offline, batches go to the spool unsent.
* Past ``close()``'s deadline what is left goes to the spool too.
* Without a spool, a batch still failing after the retry budget (or past the deadline) is
  dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from shipper.config import ShipperConfig
from shipper.delivery.batcher import Batcher
from shipper.delivery.link import LokiLink, backoff
from shipper.delivery.offline import OfflineProbe
from shipper.delivery.tally import Reporter, Tally
from shipper.event import Entry

__all__ = ["LiveSender", "SendWork"]

#: a batch handed to the sender: its entries, their size in bytes (as :attr:`Entry.size`
#: counts them) and their push body when the worker encoded it beforehand (else None)
SendWork = tuple[list[Entry], int, bytes | None]


class LiveSender:
    """Delivers live batches: paced, retried, given up to the spool."""

    def __init__(
        self,
        link: LokiLink,
        probe: OfflineProbe,
        batcher: Batcher[Any],
        config: ShipperConfig,
        tally: Tally,
        reporter: Reporter,
        *,
        keep: Callable[[Sequence[Entry], str], None] | None,
    ) -> None:
        """``keep(entries, reason)`` writes what is given up on to the spool (None: there is
        no spool); the batcher's clock (its ``sleep`` and close deadline) times the retries."""
        self._link = link
        self._probe = probe
        self._batcher = batcher
        self._config = config
        self._tally = tally
        self._reporter = reporter
        self._keep = keep

    def send(self, work: SendWork) -> None:
        """One batch, its size in bytes and its body when encoded beforehand, with its
        retries (on the sender thread)."""
        chunk, size, body = work
        if self._probe.offline and self._keep is not None:
            self._keep(chunk, "offline")
        else:
            self._deliver(chunk, size, body)

    def _deliver(self, entries: list[Entry], size: int, body: bytes | None = None) -> None:
        """Send one batch: paced, and re-sent through 429/5xx until Loki takes it, the retry
        budget of continuous failure is spent, Loki turns out unreachable, or close()'s
        deadline passes (then: the spool, or dropped and counted without one). ``body``, the
        batch encoded beforehand, is sent while the whole batch is."""
        batcher, link = self._batcher, self._link
        attempt = 0
        pending = entries
        while True:
            pace = link.pace()
            if pace > 0:
                batcher.sleep(pace)
            pending, failure = link.push(pending, size, body)
            if len(pending) != len(entries):  # a part was taken: the rest is encoded anew
                body = None
            if not pending:
                self._probe.came_back()
                return
            assert failure is not None
            attempt += 1
            message = failure.message[:300]
            unreachable = failure.unreachable
            spent = link.budget_spent()
            if batcher.deadline_passed():
                self._give_up(pending, "shutdown", message)
                return
            if self._keep is not None and (spent or (unreachable and attempt > 1)):
                self._give_up(pending, "retry", message)
                return
            if self._keep is None and spent:
                self._give_up(pending, "retry_exhausted", message)
                return
            if unreachable and attempt == 1:
                continue  # at once, on a fresh connection: a stale keep-alive one breaks too
            delay = backoff(self._config, attempt, failure.retry_after)
            if self._keep is None:
                # nowhere to put the batch: wait no longer than the budget
                delay = min(delay, max(self._config.retry_budget - link.failing_for(), 0.0)
                            + 0.001)
            batcher.sleep(delay)

    def _give_up(self, pending: list[Entry], reason: str, message: str) -> None:
        if self._keep is None:
            self._tally.drop(reason, len(pending))
            self._reporter.report(reason, f"Loki unavailable ({message}) and no spool: "
                                          f"{len(pending)} events dropped")
            return
        if reason == "retry":
            self._probe.announce(message)
        self._keep(pending, reason)
        if reason == "retry":
            self._probe.went_away()

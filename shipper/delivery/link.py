"""One push request to Loki and what its answer means for the pipeline.

Live sending and spool replay push through the same :class:`LokiLink`, so they share what
Loki's answers teach:

* what was stored and what was refused (400: Loki stored the request's valid entries; the
  refusal is counted by reason and its message reported) is counted;
* **429 and 5xx are backpressure**: they slow the AIMD send rate
  (:class:`~shipper.delivery.pacing.SendRate`), which paces every request, and an accepted
  request raises it again;
* **continuous failure** is measured from the first failed request with nothing accepted since:
  once it reaches ``retry_budget`` the caller gives up on Loki for now;
* :func:`backoff` times the next attempt: exponential with jitter, or Loki's ``Retry-After``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from shipper.config import ShipperConfig
from shipper.delivery.pacing import SendRate
from shipper.delivery.push import PushClient, PushOutcome
from shipper.delivery.tally import Reporter, Tally
from shipper.event import Entry

__all__ = ["LokiLink", "backoff"]

#: the longest ``Retry-After`` honoured
_MAX_RETRY_AFTER = 300.0


def backoff(config: ShipperConfig, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: Loki's ``Retry-After`` when it gave one, else
    ``backoff_min`` doubled per attempt up to ``backoff_max``, with jitter."""
    if retry_after is not None:
        return min(retry_after, _MAX_RETRY_AFTER)
    base: float = min(config.backoff_max,
                      config.backoff_min * float(2 ** min(attempt - 1, 32)))
    return base * random.uniform(0.5, 1.0)


class LokiLink:
    """Pushes to Loki and keeps the send rate and the continuous failure they share."""

    def __init__(
        self,
        client: PushClient,
        config: ShipperConfig,
        tally: Tally,
        reporter: Reporter,
        *,
        request_timeout: Callable[[], float | None],
        on_push: Callable[[Sequence[Entry], PushOutcome], None] | None = None,
    ) -> None:
        """``request_timeout()`` is the timeout of the next request (None: the client's own);
        ``on_push`` is told the entries of each request and Loki's answer to it."""
        self._client = client
        self._config = config
        self._tally = tally
        self._reporter = reporter
        self._request_timeout = request_timeout
        self._on_push = on_push
        self._rate = SendRate()
        #: when Loki started failing (429/5xx/no answer) without accepting anything since
        self._failing_since: float | None = None

    @property
    def send_rate_limit(self) -> float | None:
        """The send rate's limit in bytes/s (None while Loki has not pushed back)."""
        return self._rate.limit

    def pace(self) -> float:
        """Seconds to wait before the next request."""
        return self._rate.delay()

    def push(self, entries: Sequence[Entry], size: int) -> tuple[list[Entry],
                                                                 PushOutcome | None]:
        """One push (split if too large); account ok/refused, the send rate and continuous
        failure; return the entries that must be retried and the answer that failed them."""
        failed = 0
        failure: PushOutcome | None = None
        answered = 0
        offset = 0
        tally = self._tally
        for outcome in self._client.push(entries, timeout=self._request_timeout()):
            if self._on_push is not None:  # split parts answer in order: slice them back
                try:
                    self._on_push(entries[offset:offset + outcome.entries], outcome)
                except Exception as exc:
                    self._reporter.report("on_push", exc)
            offset += outcome.entries
            if outcome.kind == "ok":
                answered += outcome.entries
                tally.add("sent", outcome.entries)
            elif outcome.kind == "refused":
                # Loki stored the valid entries of the request and names only the first
                # refused one: count refused requests by reason, and their events
                answered += outcome.entries
                tally.refuse(outcome.reason, outcome.entries)
                self._reporter.report(
                    f"refused:{outcome.reason}",
                    f"Loki refused a push ({outcome.status}): {outcome.message[:500]}")
            else:
                failed += outcome.entries
                failure = outcome
        if answered:
            self._failing_since = None
            self._rate.sent(size * answered // max(len(entries), 1))
        if failed:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            if not failure or not failure.unreachable:
                self._rate.throttled()
            tally.add("retried", failed)
        # split parts go out in order and stop at the first retryable one: the failed
        # entries are the tail of the request
        return (list(entries[len(entries) - failed:]) if failed else []), failure

    def failing_for(self) -> float:
        """Seconds of continuous failure so far (0 while Loki accepts)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def budget_spent(self) -> bool:
        """Loki has been failing for ``retry_budget`` seconds without accepting anything."""
        return self.failing_for() >= self._config.retry_budget

    def after_fork_in_child(self) -> None:
        """A forked child starts with a fresh send rate and no failure."""
        self._rate = SendRate()
        self._failing_since = None

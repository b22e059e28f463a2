"""One push request to Loki and what its answer means for the pipeline.

Live sending and spool replay push through the same :class:`LokiLink`, so they share what
Loki's answers teach:

* what was stored and what was refused (400: Loki stored the request's valid entries; the
  refusal is counted by reason and its message reported) is counted, and the entries Loki
  refused are handed on as :class:`~shipper.delivery.spool.deadletters.DeadLetter` objects
  (the pipeline keeps them as dead letters);
* **429 and 5xx are backpressure**: they slow the AIMD send rate
  (:class:`~shipper.delivery.pacing.SendRate`), which paces every request, and an accepted
  request raises it again;
* **continuous failure** is measured from the first failed request with nothing accepted since:
  once it reaches ``retry_budget`` the caller gives up on Loki for now;
* :func:`backoff` times the next attempt: exponential with jitter, or Loki's ``Retry-After``;
* every request's duration is counted by status class, the bytes of those Loki took, and
  what the last answer says of Loki (:class:`LokiAnswer`: what readiness reads).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

from shipper.config import ShipperConfig
from shipper.delivery.pacing import SendRate
from shipper.delivery.push import PushClient, PushOutcome, refusal_reason
from shipper.delivery.spool.deadletters import DeadLetter
from shipper.delivery.tally import Reporter, Tally
from shipper.event import Entry

__all__ = ["LokiAnswer", "LokiLink", "backoff"]

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


class LokiAnswer(NamedTuple):
    """What the last push (or probe) said of Loki."""

    #: when (Unix time, seconds)
    at: float
    #: Loki takes pushes: it stored or refused the entries (a 400 is about the data), or it
    #: pushes back (429, 5xx) within ``retry_budget``; False: no answer at all, the
    #: credentials refused, pushing back past ``retry_budget``, or another refusal (a 404:
    #: no push API at that URL)
    ok: bool
    #: what it answered, for /ready (``Loki answered 204``, ``connection refused ...``)
    detail: str


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
        on_refused: Callable[[list[DeadLetter]], None] | None = None,
    ) -> None:
        """``request_timeout()`` is the timeout of the next request (None: the client's own);
        ``on_refused`` is given the entries Loki refused in each answer, with its reasons."""
        self._client = client
        self._config = config
        self._tally = tally
        self._reporter = reporter
        self._request_timeout = request_timeout
        self._on_refused = on_refused
        self._rate = SendRate()
        #: when Loki started failing (429/5xx/no answer) without accepting anything since
        self._failing_since: float | None = None
        #: what the last push or probe said of Loki (None: none was made yet)
        self.answer: LokiAnswer | None = None

    @property
    def send_rate_limit(self) -> float | None:
        """The send rate's limit in bytes/s (None while Loki has not pushed back)."""
        return self._rate.limit

    def pace(self) -> float:
        """Seconds to wait before the next request."""
        return self._rate.delay()

    def push(self, entries: Sequence[Entry], size: int, body: bytes | None = None,
             ) -> tuple[list[Entry], PushOutcome | None]:
        """One push (split if too large); account ok/refused, the send rate and continuous
        failure; return the entries that must be retried and the answer that failed them.
        ``body``: the entries encoded beforehand (see :meth:`PushClient.push`)."""
        failed = 0
        failure: PushOutcome | None = None
        answered = 0
        offset = 0
        tally = self._tally
        last: PushOutcome | None = None
        for outcome in self._client.push(entries, timeout=self._request_timeout(),
                                              body=body):
            # split parts answer in order: each covers the next outcome.entries entries
            start, offset = offset, offset + outcome.entries
            last = self._timed(outcome)
            if outcome.kind == "ok":
                answered += outcome.entries
                tally.add("sent", outcome.entries)
                tally.add("sent_bytes", outcome.body_bytes)
            elif outcome.kind == "refused":
                # Loki stored the valid entries of the request: count refused requests by
                # reason, and their events; the entries it refused go on as dead letters
                answered += outcome.entries
                tally.refuse(outcome.reason, outcome.entries)
                tally.add("sent_bytes", outcome.body_bytes)
                tally.entries_refused(Counter(self._reason(outcome, item.reason)
                                              for item in outcome.refused))
                if len(outcome.refused) < outcome.entries:  # the rest of it was stored
                    tally.add("sent", outcome.entries - len(outcome.refused))
                self._reporter.report(
                    f"refused:{outcome.reason}",
                    f"Loki refused a push ({outcome.status}): {outcome.message[:500]}")
                if self._on_refused is not None and outcome.refused:
                    self._refused(entries[start:offset], outcome)
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
        if last is not None:
            self._answered(last)
        # split parts go out in order and stop at the first retryable one: the failed
        # entries are the tail of the request
        return (list(entries[len(entries) - failed:]) if failed else []), failure

    def probe(self) -> LokiAnswer:
        """Push nothing (see :meth:`PushClient.probe`): what Loki answers becomes
        :attr:`answer`; an accepted probe ends a continuous failure as a push does."""
        outcome = self._timed(self._client.probe(timeout=self._request_timeout()))
        if outcome.kind in ("ok", "refused"):
            self._failing_since = None
        return self._answered(outcome)

    def _timed(self, outcome: PushOutcome) -> PushOutcome:
        if outcome.seconds is not None:
            self._tally.timed(outcome.status_class, outcome.seconds)
        return outcome

    def _answered(self, outcome: PushOutcome) -> LokiAnswer:
        """Keep what ``outcome`` (the last of a push) says of Loki in :attr:`answer`."""
        if outcome.kind == "retry" and (outcome.unreachable or self.budget_spent()):
            ok = False
            detail = (f"no answer from Loki ({outcome.message[:200]})" if outcome.status is None
                      else f"Loki answered {outcome.status}: {outcome.message[:200]}")
            if not outcome.unreachable:
                detail += f" for {self.failing_for():.0f}s (retry_budget spent)"
        elif outcome.kind == "refused" and outcome.status != 400 \
                and outcome.reason != "too_large":
            # not Loki judging entries: no push API there (404, 405), or a proxy's refusal
            ok = False
            detail = f"pushes are refused: {outcome.status}: {outcome.message[:300]}"
        else:
            ok = True
            detail = f"Loki answered {outcome.status}" + (
                " (pushing back)" if outcome.kind == "retry" else "")
        self.answer = LokiAnswer(time.time(), ok, " ".join(detail.split()))
        return self.answer

    def _refused(self, part: Sequence[Entry], outcome: PushOutcome) -> None:
        """The entries of ``part`` Loki refused, as dead letters, to ``on_refused``."""
        now = time.time_ns()
        letters: list[DeadLetter] = []
        for item in outcome.refused:
            letters.append(DeadLetter(part[item.index], self._reason(outcome, item.reason),
                                      item.reason, now, item.certain))
        assert self._on_refused is not None
        try:
            self._on_refused(letters)
        except Exception as exc:
            self._reporter.report("dead_letters", exc)

    @staticmethod
    def _reason(outcome: PushOutcome, words: str) -> str:
        """The reason of one entry Loki refused, from its words about it."""
        reason = refusal_reason(outcome.status or 400, words)
        # Loki's words about it are not a known reason: the request's
        return outcome.reason if reason.startswith("http_") else reason

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
        self.answer = None

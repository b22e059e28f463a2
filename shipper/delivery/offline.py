"""Whether Loki is there, and when to look again while it is not.

**Connection errors and timeouts** mean Loki is not there, and so does a retry budget spent on
429s and 5xx: the pipeline goes *offline*. Offline, live batches go straight to the spool while
the worker probes Loki by replaying the oldest spooled segment, with backoff (each failed probe
doubles the wait, up to ``backoff_max``). The first request Loki answers brings the pipeline
back online. :class:`OfflineProbe` is that state; live sending and spool replay move it, the
worker and ``flush`` read it.
"""

from __future__ import annotations

import time
from pathlib import Path

from shipper.config import ShipperConfig
from shipper.delivery.link import backoff
from shipper.delivery.tally import Reporter

__all__ = ["OfflineProbe"]


class OfflineProbe:
    """Online or offline, and when the next probe is due while offline."""

    def __init__(self, config: ShipperConfig, reporter: Reporter,
                 spool_dir: Path | None) -> None:
        self._config = config
        self._reporter = reporter
        self._spool_dir = spool_dir
        #: Loki is unreachable: live batches go to the spool
        self.offline = False
        #: probes failed in a row (0 while online)
        self.failures = 0
        self._probe_at = 0.0

    def announce(self, message: str) -> None:
        """Say (once until Loki is back) that Loki is unavailable and where events go."""
        self._reporter.report("offline", f"Loki unavailable ({message}); spooling to "
                                         f"{self._spool_dir} until it answers again")

    def went_away(self) -> None:
        """Loki did not answer (or a probe failed): offline, next probe after a backoff."""
        self.offline = True
        self.failures += 1
        self._probe_at = time.monotonic() + backoff(self._config, self.failures)

    def came_back(self) -> None:
        """Loki answered: online again."""
        if self.offline:
            self.offline = False
            self.failures = 0
            self._reporter.rearm("offline")

    def until_probe(self) -> float:
        """Seconds until the next probe is due (0 when online or due now)."""
        if not self.offline:
            return 0.0
        return max(self._probe_at - time.monotonic(), 0.0)

    def probe_after(self, deadline: float) -> bool:
        """Offline, and the next probe falls at or after ``deadline`` (monotonic)."""
        return self.offline and self._probe_at >= deadline

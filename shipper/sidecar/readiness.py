"""What ``/ready`` answers: whether the sidecar takes logs and can deliver them, and the probe of
Loki that tells before the first push (``/healthz``, whether it makes progress, is
:meth:`~shipper.sidecar.runner.Sidecar.problems`).

Ready means all of:

* every source has started: a file source has finished its first expansion of the globs, the
  docker source has read the container list, an HTTP source is listening;
* no worker process is gone, no source is stopped or stalled, the sidecar is not draining;
* the pipeline can deliver: the spool takes events (its directory is writable: at its cap it
  evicts older events to take new ones), or Loki answered the last push or probe
  (:class:`~shipper.delivery.link.LokiAnswer`: a 2xx, a 400 that refuses entries, or a
  429/5xx within ``retry_budget``; with ``workers: N``, the latest answer of any pipeline).

**Before the first push** Loki has said nothing, so the sidecar asks it at start-up with a
*push of nothing* (:meth:`~shipper.delivery.pipeline.Pipeline.probe_loki`: one stream, no entry;
Loki 3.7.6 answers 204 and stores nothing). It goes where pushes go, with the same tenant and
credentials, so a wrong token or a push API behind a gateway shows, which ``GET /ready`` on
Loki would not. While the last answer is bad (or missing) it asks again every
:attr:`Readiness.probe_every` seconds, and once the last answer is older than
:attr:`Readiness.stale_after` seconds (no push meanwhile: nothing to ship), so that an idle
sidecar is not ready on an answer Loki gave long ago, nor unready for ever without traffic.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Readiness"]


class Readiness:
    """The reasons ``/ready`` answers 503, and the thread that probes Loki when no push has
    answered lately."""

    #: seconds between probes while Loki's last answer is bad or missing
    probe_every = 5.0
    #: an answer older than this (no push since) is asked again
    stale_after = 15.0

    def __init__(self, sidecar: Any) -> None:
        self._sidecar = sidecar
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Probe Loki now (on the thread) and whenever its last answer is bad or stale."""
        if self._sidecar.config.loki.url and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shipper-ready-probe",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        pipeline = self._sidecar.pipeline
        while not self._stop.is_set():
            answer = self._sidecar.stats()["loki_answer"]
            age = time.time() - answer.at if answer is not None else float("inf")
            if answer is None or (not answer.ok and age >= self.probe_every) \
                    or age >= self.stale_after:
                try:
                    pipeline.probe_loki()
                except Exception as exc:  # never let the prober end; /ready says it
                    pipeline.report("ready_probe", exc)
            self._stop.wait(min(self.probe_every, 1.0))

    def not_ready(self, stats: dict[str, Any] | None = None) -> list[str]:
        """Why ``/ready`` answers 503 (empty: ready); ``stats``: the sidecar's, when the
        caller has them already."""
        sidecar = self._sidecar
        reasons: list[str] = list(sidecar.problems())
        for source in sidecar.sources:
            why = source.not_ready()
            if why is not None and why not in reasons:
                reasons.append(why)
        why = self.cannot_deliver(stats if stats is not None else sidecar.stats())
        if why is not None:
            reasons.append(why)
        return reasons

    def cannot_deliver(self, stats: dict[str, Any]) -> str | None:
        """Why the pipeline cannot deliver (None: it can), from its ``stats()``."""
        if stats["spool_writable"]:
            return None
        loki = self._sidecar.config.loki
        spool = ("no spool" if stats["spool_writable"] is None else
                 f"the spool at {loki.resolved_spool_dir()} cannot be written")
        if not loki.url:
            return f"no Loki URL and {spool}: events have nowhere to go"
        answer = stats["loki_answer"]
        if answer is None:
            return f"Loki has not answered yet (probing), and {spool} to keep events meanwhile"
        if not answer.ok:
            return f"{answer.detail}; {spool} to keep events meanwhile"
        return None

    def summary(self, stats: dict[str, Any]) -> str:
        """What a 200 from ``/ready`` says: where events go now."""
        answer = stats["loki_answer"]
        said = (f"{answer.detail} {time.time() - answer.at:.0f}s ago" if answer is not None
                else "Loki not asked yet")
        if answer is not None and answer.ok:
            return f"ready: {said}"
        return f"ready: {said}; events wait in the spool"

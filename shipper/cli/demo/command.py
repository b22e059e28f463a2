"""``shipper demo``: the options and the run.

:func:`run_demo` wires the scenarios (:mod:`shipper.cli.demo.scenarios`) to a
:class:`~shipper.handler.LokiHandler` through the emitter (:mod:`shipper.cli.demo.emit`):
it first checks how far back history may go against the Loki it sends to (Loki's
``reject_old_samples_max_age`` and ``max_chunk_age``, from ``GET /config``), backfills, then
paces the live events, flushes and prints the handler's stats.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from shipper._units import NS, format_seconds, parse_seconds
from shipper.cli.demo.emit import DemoEmitter, EventTimeFilter, JsonLinesFileHandler
from shipper.cli.demo.marketplace import DemoError, DemoEvent
from shipper.cli.demo.scenarios import (
    INCIDENT_DURATION_S,
    INCIDENT_START_S,
    SCENARIOS,
    backfill_events,
    live_events,
    yesterday_events,
)
from shipper.cli.signals import stop_on_sigterm
from shipper.config import ConfigError, ShipperConfig
from shipper.event import LogEvent
from shipper.handler import LokiHandler
from shipper.loki.client import LokiClient, LokiError, parse_config
from shipper.loki.logql import quote
from shipper.redact import Redactor, hide_url_credentials

__all__ = [
    "BACKFILL_SAFETY_S",
    "DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE",
    "DemoOptions",
    "run_demo",
]

#: Loki's default ``limits_config.reject_old_samples_max_age`` (1w), in seconds: the oldest entry
#: Loki accepts, used when the running Loki's own value cannot be read (spool-only runs).
DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE = 7 * 86400.0
#: Loki's default ``ingester.max_chunk_age`` (2h): a stream accepts entries down to half of it
#: behind its newest entry, so history can only be added to streams that are quiet that long.
_DEFAULT_MAX_CHUNK_AGE = 2 * 3600.0
#: the oldest backfilled event sits this far inside the acceptance window, so that it is still
#: accepted when it arrives (batching, retries and clock skew take time)
BACKFILL_SAFETY_S = 15 * 60.0


@dataclass(frozen=True)
class DemoOptions:
    """What ``shipper demo`` was asked to do (see ``shipper demo --help``)."""

    rate: float = 5.0
    count: int | None = None
    duration: float | None = None
    forever: bool = False
    backfill: float | None = None
    backfill_rate: float = 60.0
    seed: int | None = None
    service: str | None = None
    env: str | None = None
    url: str | None = None
    file: str | None = None
    criticals: int = 1
    flush_timeout: float = 60.0
    scenario: str = "normal"

    #: live events when neither --count, --duration, --forever nor --backfill is given
    DEFAULT_COUNT = 200

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise DemoError(f"--rate must be a positive number of events per second, "
                            f"got {self.rate}")
        chosen = [name for name, value in (("--count", self.count),
                                           ("--duration", self.duration),
                                           ("--forever", self.forever or None))
                  if value is not None]
        if len(chosen) > 1:
            raise DemoError(
                f"use one of --count, --duration and --forever, not {' and '.join(chosen)}"
            )
        if self.count is not None and self.count < 0:
            raise DemoError(f"--count must not be negative, got {self.count}")
        if self.duration is not None and not self.duration > 0:
            raise DemoError(f"--duration must be positive, got {self.duration}")
        if self.backfill is not None and not self.backfill > 0:
            raise DemoError(f"--backfill must be positive, got {self.backfill:g}")
        if not self.backfill_rate > 0:
            raise DemoError(f"--backfill-rate must be positive, got {self.backfill_rate}")
        if self.criticals < 0:
            raise DemoError(f"--criticals must not be negative, got {self.criticals}")
        if self.flush_timeout < 0:
            raise DemoError(f"--flush-timeout must not be negative, got {self.flush_timeout}")
        if self.scenario not in SCENARIOS:
            raise DemoError(f"--scenario must be one of {', '.join(SCENARIOS)}, "
                            f"got {self.scenario!r}")
        if self.scenario == "incident" and self.forever:
            raise DemoError("--scenario incident tells a story of a set length: use --duration "
                            "or --count, not --forever")

    def live_count(self) -> int | None:
        """Live events to send (None: until stopped)."""
        if self.forever:
            return None
        if self.count is not None:
            return self.count
        if self.duration is not None:
            return max(1, round(self.duration * self.rate))
        if self.scenario == "incident":
            return max(1, round(INCIDENT_DURATION_S * self.rate))
        return 0 if self.backfill else self.DEFAULT_COUNT


def _loki_limits(config: Mapping[str, Any] | str) -> tuple[float | None, float]:
    """(``reject_old_samples_max_age`` in seconds or None when old samples are accepted,
    ``ingester.max_chunk_age`` in seconds) from Loki's configuration (``GET /config``: the
    parsed document, or its YAML text)."""
    data = parse_config(config) if isinstance(config, str) else config
    limits = data.get("limits_config") or {}
    ingester = data.get("ingester") or {}
    max_age: float | None = DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE
    if limits.get("reject_old_samples") is False:
        max_age = None
    elif limits.get("reject_old_samples_max_age") is not None:
        max_age = parse_seconds(str(limits["reject_old_samples_max_age"]))
    chunk_age = ingester.get("max_chunk_age")
    return max_age, parse_seconds(str(chunk_age)) if chunk_age is not None else \
        _DEFAULT_MAX_CHUNK_AGE


def _prepare_backfill(opts: DemoOptions, config: ShipperConfig, err: TextIO,
                      transport: Any, reach: float | None = None) -> float | None:
    """Check how far back the history goes (``reach`` seconds: --backfill, or the day before
    for --scenario incident) against the Loki it goes to; the reach, or None to skip."""
    reach = opts.backfill if reach is None else reach
    assert reach is not None
    max_age: float | None = DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE
    source = "Loki's default"
    if config.url is not None:
        client = LokiClient(config, transport)
        try:
            max_age, chunk_age = _loki_limits(client.loki_config())
            source = f"the Loki at {hide_url_credentials(config.url)}"
            # A stream accepts entries down to max_chunk_age/2 behind its newest one: history
            # can only go into streams that have been quiet that long.
            quiet = chunk_age / 2 + BACKFILL_SAFETY_S
            now = time.time_ns()
            selector = "{service_name=" + quote(config.service)
            if config.env:
                selector += ", env=" + quote(config.env)
            selector += "}"
            found = client.query_range(selector, now - int(quiet * NS), now, limit=1)
            if any(s.get("values") for s in found.get("result", [])):
                err.write(
                    f"shipper demo: {selector} already has events from the last "
                    f"{format_seconds(quiet)}; Loki refuses entries more than "
                    f"{format_seconds(chunk_age / 2)} older than a stream's newest one, so the "
                    f"backfill is skipped (it only fills streams that are new or quiet)\n"
                )
                if opts.scenario == "incident":
                    err.write("shipper demo: without the day before, the user-activity rule "
                              "compares with whatever that service logged yesterday; give the "
                              "incident a --service of its own\n")
                return None
        except (LokiError, ValueError) as exc:
            err.write("shipper demo: could not read the limits of the Loki at "
                      f"{hide_url_credentials(config.url)} "
                      f"({exc}); assuming Loki's defaults\n")
        finally:
            client.close()
    if max_age is not None and reach > max_age:
        raise DemoError(
            f"--backfill {format_seconds(reach)} reaches further back than {source} "
            f"accepts: limits_config.reject_old_samples_max_age is {format_seconds(max_age)}, so "
            f"use --backfill {format_seconds(max_age)} or less"
        )
    if config.url is None:
        err.write(f"shipper demo: the backfill goes to the spool; push it with `shipper spool "
                  f"push` before it is older than Loki accepts "
                  f"({format_seconds(DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE)} by default)\n")
    return reach


def _make_redactor(config: ShipperConfig) -> Callable[[LogEvent], LogEvent]:
    """The pipeline's redaction, so that ``--file`` holds exactly what is sent."""
    return Redactor(keys=config.redact_keys, emails=config.redact_emails).redact_event


def run_demo(
    opts: DemoOptions,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    transport: Any = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``shipper demo``: backfill (if asked), then live events at ``opts.rate``; flush the
    handler and print its stats (JSON) on ``stdout``. 0 when every event was delivered (or
    spooled), 1 when some were refused, dropped or still queued at the end, 130 after Ctrl-C
    (the stats are printed all the same)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    stop = stop or threading.Event()
    rng = random.Random(opts.seed)
    try:
        config = ShipperConfig.load(url=opts.url, service=opts.service or None, env=opts.env)
    except ConfigError as exc:
        raise DemoError(str(exc)) from exc
    if config.service == "unknown_service" and not opts.service:
        # an incident gets a service of its own, so that it does not mix with normal traffic
        config = config.replace(service="marketplace-incident" if opts.scenario == "incident"
                                else "marketplace")
    if config.url is None:
        where = config.resolved_spool_dir()
        err.write(f"shipper demo: no LOKI_URL or --url: events go to the spool "
                  f"({where or 'disabled: SHIPPER_SPOOL is off, so they are dropped'}); "
                  f"send them later with `shipper spool push`\n")
    live_count = opts.live_count()
    # the critical events go where they can fire an alert: into the live part when there is one
    live_criticals = opts.criticals if live_count != 0 else 0
    if live_count is not None and live_criticals > live_count:
        raise DemoError(f"--criticals {opts.criticals} does not fit in {live_count} live events")
    incident = opts.scenario == "incident"
    reach = max(opts.backfill or 0.0, 86400.0 + BACKFILL_SAFETY_S if incident else 0.0)
    backfill_span = _prepare_backfill(opts, config, err, transport, reach) if reach else None

    handler = LokiHandler(config=config, transport=transport)
    handlers: list[logging.Handler] = [handler]
    writer: JsonLinesFileHandler | None = None
    if opts.file:
        writer = JsonLinesFileHandler(
            opts.file, service=config.service, env=config.env, type_limit=config.type_limit,
            max_line_bytes=config.max_line_bytes, redact=_make_redactor(config))
        handlers.append(writer)
    base_name = re.sub(r"[^A-Za-z0-9_-]+", "_", config.service)
    base = logging.getLogger(base_name)
    saved = (base.level, base.propagate)
    base.setLevel(logging.DEBUG)
    base.propagate = False
    time_filter = EventTimeFilter()
    for h in handlers:
        h.addFilter(time_filter)
        base.addHandler(h)
    emitter = DemoEmitter(base_name)
    emitted = [0]
    interrupted = False
    restore = stop_on_sigterm(stop)
    try:
        if backfill_span:
            now = time.time_ns()
            history: list[DemoEvent] = []
            if opts.backfill:
                start = now - int(opts.backfill * NS) + int(BACKFILL_SAFETY_S * NS)
                history = backfill_events(rng, start_ns=min(start, now - NS), end_ns=now,
                                          per_hour=opts.backfill_rate,
                                          criticals=opts.criticals - live_criticals)
                err.write(f"shipper demo: backfilling {len(history)} events over the last "
                          f"{format_seconds(opts.backfill)}\n")
            if incident:
                seconds = (live_count or 0) / opts.rate + 120
                day_before = yesterday_events(rng, start_ns=now, seconds=seconds,
                                              rate=opts.rate)
                err.write(f"shipper demo: the day before: {len(day_before)} events of normal "
                          f"traffic over {format_seconds(round(seconds))}, one day back\n")
                history = sorted(history + day_before, key=lambda e: e.time_ns or 0)
            _emit_all(emitter, history, stop, emitted)
            # history first: a stream takes no entries far behind its newest one
            handler.flush(opts.flush_timeout)
        if live_count != 0 and not stop.is_set():
            target = hide_url_credentials(config.url or "the spool")
            err.write(f"shipper demo: sending {live_count if live_count is not None else 'live'}"
                      f" events at {opts.rate:g}/s to {target}"
                      f" as service {config.service}\n")
            if incident:
                err.write(f"shipper demo: the incident starts {INCIDENT_START_S:.0f} s in: slow "
                          f"and failing requests, failed payments, users staying away\n")
            events = live_events(rng, live_count, criticals=live_criticals, rate=opts.rate,
                                 scenario=opts.scenario)
            _emit_all(emitter, events, stop, emitted, rate=opts.rate, clock=clock)
    except KeyboardInterrupt:  # Ctrl-C: stop sending, but still flush and report
        interrupted = True
    finally:
        restore()
        delivered = handler.flush(opts.flush_timeout)
        for h in handlers:
            base.removeHandler(h)
            h.close()
        base.setLevel(saved[0])
        base.propagate = saved[1]
    stats = handler.stats()
    stats["emitted"] = emitted[0]
    if writer is not None:
        stats["file"] = {"path": str(writer.path), "written": writer.written}
    out.write(json.dumps(stats, indent=2, sort_keys=True, default=_plain) + "\n")
    out.flush()
    trouble = stats.get("refused_total", 0) or stats.get("dropped_total", 0) or not delivered
    if trouble:
        err.write("shipper demo: not every event was delivered (what was not is in the spool, "
                  "unless dropped); see the stats above\n")
    if interrupted:
        return 130
    return 1 if trouble else 0


def _emit_all(emitter: DemoEmitter, events: Iterable[DemoEvent], stop: threading.Event,
              emitted: list[int], *, rate: float | None = None,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Emit ``events`` (paced at ``rate`` per second when given) until ``stop`` is set,
    counting them in ``emitted[0]``."""
    started = clock()
    for i, event in enumerate(events):
        if rate is not None:
            delay = started + i / rate - clock()
            if delay > 0 and stop.wait(delay):
                break
        if stop.is_set():
            break
        emitter.emit(event)
        emitted[0] += 1


def _plain(value: Any) -> Any:
    """JSON for the stats' non-JSON parts (the spool's stats dataclass)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)

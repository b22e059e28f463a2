"""The demo's scenarios: the events of a run, in order, before anything is logged.

* :func:`live_events`: the live stream, ``normal`` traffic or an ``incident`` (normal traffic
  that turns, :data:`INCIDENT_START_S` seconds in, into slow and failing requests, failed
  payments and users staying away, so that every alert rule fires once);
* :func:`backfill_events`: history over a past window, busier by day than by night;
* :func:`yesterday_events`: the day before an incident, which the user-activity rule compares
  with.

They are pure: everything is drawn from one seeded :class:`random.Random` (same seed, same
events), and each request or job comes from :mod:`shipper.cli.demo.marketplace`.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections import deque
from collections.abc import Iterator, Sequence

from shipper._units import NS
from shipper.cli.demo.marketplace import (
    DemoError,
    DemoEvent,
    World,
    data_corruption,
    failed_login_burst,
    incident_group,
    normal_groups,
)

__all__ = [
    "INCIDENT_DURATION_S",
    "INCIDENT_START_S",
    "SCENARIOS",
    "backfill_events",
    "live_events",
    "yesterday_events",
]

#: ``--scenario`` values: normal traffic, or normal traffic that turns into an incident
SCENARIOS = ("normal", "incident")
#: an incident run lasts this long unless --count or --duration says otherwise
INCIDENT_DURATION_S = 600.0
#: seconds of normal traffic before the incident starts
INCIDENT_START_S = 30.0


def _burst_size(count: int) -> int:
    """Failed logins in the burst of a run of ``count`` events (0: too short for one)."""
    return 0 if count < 50 else min(12, max(6, count // 25))


def live_events(
    rng: random.Random,
    count: int | None,
    *,
    criticals: int = 1,
    rate: float = 5.0,
    scenario: str = "normal",
) -> Iterator[DemoEvent]:
    """The live stream: ``count`` events (None: without end), times left to the emitter.

    With ``scenario="incident"`` the traffic turns, :data:`INCIDENT_START_S` seconds in (at
    ``rate`` events per second), into an incident that trips every alert rule of
    grafana/provisioning/alerting/rules.yaml (see
    :func:`~shipper.cli.demo.marketplace.incident_group`); the day before is
    :func:`yesterday_events`.

    A run of ``count`` events holds exactly ``criticals`` DATA_CORRUPTION events (in its second
    half) and, from 50 events on, one burst of failed logins from one IP (in its first half).
    Without a count, the first burst (12) comes about 30 s in (at ``rate`` events per second) and
    then one every hour; the critical events about a minute in.
    """
    if count is not None and count < 0:
        raise DemoError(f"--count must not be negative, got {count}")
    if criticals < 0:
        raise DemoError(f"--criticals must not be negative, got {criticals}")
    if count is not None and criticals > count:
        raise DemoError(f"--criticals {criticals} does not fit in --count {count}")
    if scenario not in SCENARIOS:
        raise DemoError(f"--scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    world = World(rng)
    burst = 12 if count is None else _burst_size(count)
    # the specials: (index of their first event, kind), kept in index order
    plan: list[tuple[int, str]] = []
    if count is None:
        plan.append((max(10, int(rate * 30)), "burst"))
        plan += [(max(20, int(rate * 60)) + i, "critical") for i in range(criticals)]
    else:
        if burst:
            plan.append((rng.randint(count // 5, count // 2 - burst), "burst"))
        low = count // 2 if criticals <= count - count // 2 else 0
        plan += [(i, "critical") for i in rng.sample(range(low, count), criticals)]
    plan.sort()
    hourly = max(200, int(rate * 3600))
    next_hourly = plan[0][0] + hourly if count is None else -1
    groups = normal_groups(world, rng)
    pending: deque[DemoEvent] = deque()
    emitted = 0
    while count is None or emitted < count:
        if count is None and emitted >= next_hourly:
            bisect.insort(plan, (emitted, "burst"))
            next_hourly += hourly
        due = bool(plan) and plan[0][0] <= emitted
        if count is not None and plan:
            # what the specials still need must fit in what is left of the count
            reserved = sum(burst if kind == "burst" else 1 for _, kind in plan)
            due = due or count - emitted <= reserved
        if due:
            _, kind = plan.pop(0)
            specials = ([data_corruption(world, rng)] if kind == "critical"
                        else failed_login_burst(world, rng, burst))
            for event in specials:
                yield event
                emitted += 1
            continue
        if not pending:
            if scenario == "incident" and emitted >= INCIDENT_START_S * rate:
                pending.extend(incident_group(world, rng))
            else:
                pending.extend(next(groups))
        yield pending.popleft()
        emitted += 1


def _diurnal(hour_of_day: float) -> float:
    """Relative traffic by UTC hour: quiet at night, busiest mid-afternoon (mean 1.0)."""
    return (0.35 + 0.65 * (1 + math.cos(2 * math.pi * (hour_of_day - 15) / 24)) / 2) / 0.675


def backfill_events(
    rng: random.Random,
    *,
    start_ns: int,
    end_ns: int,
    per_hour: float = 60.0,
    criticals: int = 1,
    diurnal: bool = True,
    bursts: bool = True,
) -> list[DemoEvent]:
    """History between ``start_ns`` (inclusive) and ``end_ns`` (exclusive), oldest first.

    About ``per_hour`` events an hour, more by day than by night; each request's events a few
    milliseconds apart; one burst of failed logins (seconds apart, one IP) per started day; and
    ``criticals`` DATA_CORRUPTION events at random times. ``diurnal=False`` keeps the rate flat
    over the day, ``bursts=False`` leaves the failed-login bursts out.
    """
    if end_ns <= start_ns:
        raise DemoError("backfill window is empty: the end must be after the start")
    if per_hour <= 0:
        raise DemoError(f"--backfill-rate must be positive, got {per_hour}")
    if criticals < 0:
        raise DemoError(f"--criticals must not be negative, got {criticals}")
    world = World(rng)
    groups = normal_groups(world, rng)
    hour_ns = 3600 * NS
    out: list[DemoEvent] = []

    def place(group: Sequence[DemoEvent], at_ns: int, gap_ms: tuple[int, int]) -> None:
        t = at_ns
        for event in group:
            out.append(dataclasses.replace(event, time_ns=t))
            t += rng.randint(*gap_ms) * 1_000_000

    span = end_ns - start_ns
    bucket = start_ns
    while bucket < end_ns:
        width = min(hour_ns, end_ns - bucket)
        hour = (bucket / NS % 86400) / 3600
        target = per_hour * (_diurnal(hour) if diurnal else 1.0) * width / hour_ns
        n = int(target) + (1 if rng.random() < target - int(target) else 0)
        made = 0
        while made < n:
            group = next(groups)
            place(group, bucket + rng.randrange(width), (2, 180))
            made += len(group)
        bucket += width
    for day in range(max(1, math.ceil(span / (86400 * NS))) if bursts else 0):
        day_start = start_ns + day * 86400 * NS
        day_width = min(86400 * NS, end_ns - day_start)
        place(failed_login_burst(world, rng, rng.randint(8, 14)),
              day_start + rng.randrange(max(1, day_width - 60 * NS)), (800, 4000))
    for _ in range(criticals):
        place([data_corruption(world, rng)], start_ns + rng.randrange(span), (0, 0))
    # groups near the end may run past it by a few milliseconds: keep the window exact
    kept = [e for e in out if e.time_ns is not None and start_ns <= e.time_ns < end_ns]
    kept.sort(key=lambda e: e.time_ns or 0)
    return kept


def yesterday_events(rng: random.Random, *, start_ns: int, seconds: float,
                     rate: float) -> list[DemoEvent]:
    """Normal traffic at ``rate`` events per second from ``start_ns`` one day back, for
    ``seconds``: the baseline the user-activity rule compares with (``offset 1d``) when an
    incident run starts at ``start_ns``. It starts exactly one day before the run, so that the
    rule compares like with like while the run is younger than the rule's window."""
    day = 86400 * NS
    return backfill_events(rng, start_ns=start_ns - day,
                           end_ns=start_ns - day + int(seconds * NS), per_hour=rate * 3600,
                           criticals=0, diurnal=False, bursts=False)

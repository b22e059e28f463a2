"""``shipper demo``: realistic marketplace traffic through the handler, so the stack has data.

The traffic speaks the seed apps' vocabulary: logins (some failed, and a burst of failures from
one IP), sign-ups, profile updates, bookings, payments and payouts, Stripe-like webhooks (some
failing), API errors with real tracebacks, admin actions, ``HTTP_REQUEST`` access events and one
CRITICAL ``DATA_CORRUPTION``. It goes out the way an app sends it: :class:`~shipper.api.SystemLog`
calls and plain ``logging`` calls, received by a :class:`~shipper.handler.LokiHandler`.

The parts are separate so that each can be checked on its own:

* :func:`live_events` and :func:`backfill_events` are pure: they draw everything from one seeded
  :class:`random.Random` and return :class:`DemoEvent` values (same seed, same events).
* :class:`DemoEmitter` turns each :class:`DemoEvent` into the call an app would make.
* :class:`JsonLinesFileHandler` writes what the handler sends as JSON lines (``--file``), the
  shape the collector configs in ``promtail/`` read.
* :func:`run_demo` wires them to a handler and paces the live part.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import random
import re
import signal
import string
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from shipper.api import SystemLog
from shipper.config import ConfigError, ShipperConfig
from shipper.context import current_context, log_context
from shipper.event import (
    DEFAULT_MAX_LINE_BYTES,
    Actor,
    Entry,
    Level,
    LogEvent,
    TypeGuard,
    normalize_type,
    to_entry,
)
from shipper.integrations._common import DEFAULT_SLOW_REQUEST_MS

__all__ = [
    "BACKFILL_SAFETY_S",
    "DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE",
    "INCIDENT_DURATION_S",
    "INCIDENT_START_S",
    "KINDS",
    "SCENARIOS",
    "SLOW_REQUEST_MS",
    "DemoEmitter",
    "DemoError",
    "DemoEvent",
    "DemoOptions",
    "JsonLinesFileHandler",
    "backfill_events",
    "entry_to_file_object",
    "file_object_to_entry",
    "format_span",
    "live_events",
    "parse_span",
    "rfc3339_nano",
    "run_demo",
    "yesterday_events",
]

#: what each :class:`DemoEvent` becomes: the SystemLog helper (or plain ``logging`` for ``http``)
KINDS = ("auth", "user", "creator", "webhook", "api_error", "admin", "system", "http", "perf",
         "critical")

#: the access middleware's default slow-request threshold: slower requests get a SLOW_REQUEST
SLOW_REQUEST_MS = DEFAULT_SLOW_REQUEST_MS

#: Loki's default ``limits_config.reject_old_samples_max_age`` (1w), in seconds: the oldest entry
#: Loki accepts, used when the running Loki's own value cannot be read (spool-only runs).
DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE = 7 * 86400.0
#: Loki's default ``ingester.max_chunk_age`` (2h): a stream accepts entries down to half of it
#: behind its newest entry, so history can only be added to streams that are quiet that long.
_DEFAULT_MAX_CHUNK_AGE = 2 * 3600.0
#: the oldest backfilled event sits this far inside the acceptance window, so that it is still
#: accepted when it arrives (batching, retries and clock skew take time)
BACKFILL_SAFETY_S = 15 * 60.0
_NS = 1_000_000_000


class DemoError(ValueError):
    """A demo option that cannot work; the message names the option."""


# --------------------------------------------------------------------------- durations

_SPAN_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0,
}
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")


def parse_span(text: str) -> float:
    """Seconds in a duration such as ``7d``, ``36h``, ``1d12h``, ``90m``, ``1w`` or ``2h0m0s``
    (Loki's own notation); a bare number is seconds. Raises :class:`DemoError` otherwise."""
    value = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    if not value or _SPAN_PART.sub("", value) != "":
        raise DemoError(
            f"not a duration: {text!r} (use e.g. 7d, 36h, 1d12h, 90m; units y w d h m s ms)"
        )
    return sum(float(num) * _SPAN_UNITS[unit] for num, unit in _SPAN_PART.findall(value))


def format_span(seconds: float) -> str:
    """``604800`` → ``7d``, ``5400`` → ``1h30m``: the shortest exact d/h/m/s spelling."""
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def rfc3339_nano(timestamp_ns: int) -> str:
    """``2026-11-20T09:15:02.123456789Z``: UTC with nine fractional digits (Go's RFC3339Nano
    layout parses it)."""
    seconds, frac = divmod(timestamp_ns, _NS)
    stamp = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def _parse_rfc3339_nano(text: str) -> int:
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    whole, frac, zone = match.groups()
    base = _dt.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(base.timestamp()) * _NS + int((frac or "0").ljust(9, "0"))


# --------------------------------------------------------------------------- the events


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """One thing that happened in the demo marketplace, before it is logged.

    ``type``, ``level`` and ``actor`` are what the event will carry once logged (for ``auth`` and
    ``webhook`` the SystemLog helper derives them; they are recorded here so the plan can be
    checked without logging anything). ``params`` holds the call arguments that are not event
    fields: the auth action and outcome, the webhook provider and event, the API failure.
    ``time_ns`` is the event's own time (backfill); None means "when it is emitted".
    """

    kind: str
    type: str
    level: Level
    actor: Actor
    logger: str
    message: str = ""
    actor_id: str | None = None
    trace_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    time_ns: int | None = None


_B36 = string.digits + string.ascii_lowercase
_B62 = string.digits + string.ascii_letters
_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "MarketplaceApp/4.12.0 (Android 14; Pixel 8)",
)
_CITIES = ("Lisbon", "Berlin", "Austin", "Toronto", "Osaka", "Cape Town", "Melbourne", "Oslo")
_PROFILE_FIELDS = ("display_name", "bio", "avatar", "phone", "timezone", "notification_prefs")
_DECLINE_CODES = ("insufficient_funds", "card_declined", "expired_card", "do_not_honor")
_BROWSE = (
    ("GET", "/"), ("GET", "/search?q={city}"), ("GET", "/listings/{listing}"),
    ("GET", "/api/listings?city={city}&page={page}"), ("GET", "/api/listings/{listing}"),
    ("GET", "/api/users/me"), ("GET", "/api/bookings"), ("GET", "/api/messages/unread"),
    ("GET", "/creators/{creator}"),
)
#: the route template the web framework matched for each page in _BROWSE
_BROWSE_ROUTES = {
    "/": "/", "/search?q={city}": "/search", "/listings/{listing}": "/listings/{listing_id}",
    "/api/listings?city={city}&page={page}": "/api/listings",
    "/api/listings/{listing}": "/api/listings/{listing_id}", "/api/users/me": "/api/users/me",
    "/api/bookings": "/api/bookings", "/api/messages/unread": "/api/messages/unread",
    "/creators/{creator}": "/creators/{creator_id}",
}
_PROBES = ("/wp-login.php", "/.env", "/admin/config.php", "/api/v1/debug/vars", "/.git/config")
_JOBS = (
    ("session-cleanup", "expired sessions removed", "removed"),
    ("search-reindex", "listings reindexed", "documents"),
    ("payout-batch", "creator payouts queued", "payouts"),
    ("reminder-emails", "booking reminders sent", "emails"),
)


def _ident(rng: random.Random, prefix: str, n: int = 10, alphabet: str = _B36) -> str:
    return prefix + "".join(rng.choice(alphabet) for _ in range(n))


def _trace(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


class _World:
    """The marketplace's population, drawn once from the seed."""

    def __init__(self, rng: random.Random) -> None:
        self.users = [_ident(rng, "usr_") for _ in range(60)]
        self.creators = [_ident(rng, "cr_") for _ in range(15)]
        self.admins = [_ident(rng, "adm_", 6) for _ in range(3)]
        self.listings = [_ident(rng, "lst_") for _ in range(30)]
        # documentation address ranges (RFC 5737): realistic, and nobody's real address
        self.ips = [f"203.0.113.{rng.randint(2, 254)}" for _ in range(20)]
        self.ips += [f"192.0.2.{rng.randint(2, 254)}" for _ in range(10)]
        self.attacker_ip = f"198.51.100.{rng.randint(2, 254)}"
        self.home_ip = {u: rng.choice(self.ips) for u in self.users + self.creators}
        self.agent = {u: rng.choice(_USER_AGENTS) for u in self.users + self.creators}
        self.bookings: deque[tuple[str, str, str, int]] = deque(maxlen=40)

    def booking(self, rng: random.Random) -> tuple[str, str, str, int]:
        """A recent booking (booking id, user, creator, amount), or a new unseen one."""
        if self.bookings and rng.random() < 0.85:
            return rng.choice(self.bookings)
        return (_ident(rng, "bk_"), rng.choice(self.users), rng.choice(self.creators),
                rng.randrange(40, 400) * 100)


def _http(world: _World, rng: random.Random, method: str, path: str, status: int, *,
          actor: Actor, actor_id: str | None, trace_id: str, route: str | None,
          ip: str | None = None, agent: str | None = None, slow: bool = False) -> DemoEvent:
    """An ``HTTP_REQUEST`` access event as the middleware writes it: ``route`` is the
    framework's route template (None: the request matched no route, e.g. a 404 probe)."""
    duration = round(rng.lognormvariate(3.2, 0.55) * (12 if slow else 1), 1)
    metadata: dict[str, Any] = {
        "method": method, "path": path, "status": status, "duration_ms": duration,
        "ip": ip or (world.home_ip.get(actor_id, "") if actor_id else rng.choice(world.ips)),
        "user_agent": agent or (world.agent.get(actor_id, "") if actor_id
                                else rng.choice(_USER_AGENTS)),
    }
    if route is not None:
        metadata["route"] = route
    return DemoEvent(
        kind="http", type="HTTP_REQUEST", level=_http_level(status), actor=actor, logger="http",
        message=_http_message(method, path, status, duration), actor_id=actor_id,
        trace_id=trace_id, metadata=metadata,
    )


def _http_level(status: int) -> Level:
    return Level.ERROR if status >= 500 else Level.WARNING if status >= 400 else Level.INFO


def _http_message(method: str, path: str, status: int, duration_ms: float) -> str:
    return f"{method} {path} {status} ({duration_ms:.0f} ms)"


def _with_slow_requests(group: Sequence[DemoEvent]) -> list[DemoEvent]:
    """``group`` with a ``SLOW_REQUEST`` warning after each access event slower than
    :data:`SLOW_REQUEST_MS`, shaped as the HTTP middleware writes it."""
    out: list[DemoEvent] = []
    for event in group:
        out.append(event)
        duration = event.metadata.get("duration_ms", 0) if event.type == "HTTP_REQUEST" else 0
        if duration > SLOW_REQUEST_MS:
            meta = event.metadata
            out.append(dataclasses.replace(
                event, type="SLOW_REQUEST", level=Level.WARNING,
                message=(f"Slow request: {meta['method']} {meta['path']} took {duration:.0f} ms "
                         f"(threshold {SLOW_REQUEST_MS:.0f} ms)"),
                metadata={**meta, "threshold_ms": SLOW_REQUEST_MS}))
    return out


def _auth(world: _World, rng: random.Random, action: str, user: str | None, success: bool, *,
          trace_id: str, ip: str, agent: str, extra: Mapping[str, Any] | None = None) -> DemoEvent:
    meta: dict[str, Any] = {"ip": ip, "user_agent": agent, **(extra or {})}
    return DemoEvent(
        kind="auth", type="AUTH_" + normalize_type(action),
        level=Level.INFO if success else Level.WARNING, actor=Actor.USER, logger="auth",
        actor_id=user, trace_id=trace_id, metadata=meta,
        params={"action": action, "success": success},
    )


# ---- one request or job each: a list of events sharing a trace id


def _sc_browse(world: _World, rng: random.Random) -> list[DemoEvent]:
    signed_in = rng.random() < 0.6
    user = rng.choice(world.users) if signed_in else None
    method, template = rng.choice(_BROWSE)
    path = template.format(city=rng.choice(_CITIES).replace(" ", "+"), page=rng.randint(1, 6),
                           listing=rng.choice(world.listings), creator=rng.choice(world.creators))
    status = 200 if rng.random() < 0.96 else 304
    if template == "/api/users/me" and not signed_in:
        status = 401
    return [_http(world, rng, method, path, status, actor=Actor.USER if user else Actor.GUEST,
                  actor_id=user, trace_id=_trace(rng), route=_BROWSE_ROUTES[template])]


def _sc_login(world: _World, rng: random.Random) -> list[DemoEvent]:
    user = rng.choice(world.users)
    ok = rng.random() < 0.86
    trace = _trace(rng)
    ip, agent = world.home_ip[user], world.agent[user]
    extra: dict[str, Any] = {"method": rng.choice(("password", "password", "google", "magic_link"))}
    if not ok:
        extra["reason"] = rng.choice(("invalid_password", "invalid_password", "mfa_failed"))
    return [
        _http(world, rng, "POST", "/api/auth/login", 200 if ok else 401, actor=Actor.GUEST,
              actor_id=None, trace_id=trace, route="/api/auth/login", ip=ip, agent=agent),
        _auth(world, rng, "LOGIN", user, ok, trace_id=trace, ip=ip, agent=agent, extra=extra),
    ]


def _sc_logout(world: _World, rng: random.Random) -> list[DemoEvent]:
    user = rng.choice(world.users)
    trace = _trace(rng)
    return [
        _http(world, rng, "POST", "/api/auth/logout", 204, actor=Actor.USER, actor_id=user,
              trace_id=trace, route="/api/auth/logout"),
        _auth(world, rng, "LOGOUT", user, True, trace_id=trace, ip=world.home_ip[user],
              agent=world.agent[user]),
    ]


def _sc_signup(world: _World, rng: random.Random) -> list[DemoEvent]:
    user = _ident(rng, "usr_")
    ip, agent = rng.choice(world.ips), rng.choice(_USER_AGENTS)
    world.users.append(user)
    world.home_ip[user], world.agent[user] = ip, agent
    trace = _trace(rng)
    return [
        _http(world, rng, "POST", "/api/auth/signup", 201, actor=Actor.GUEST, actor_id=None,
              trace_id=trace, route="/api/auth/signup", ip=ip, agent=agent),
        _auth(world, rng, "SIGNUP", user, True, trace_id=trace, ip=ip, agent=agent,
              extra={"method": rng.choice(("password", "google"))}),
    ]


def _sc_password_reset(world: _World, rng: random.Random) -> list[DemoEvent]:
    user = rng.choice(world.users)
    ok = rng.random() < 0.9
    trace = _trace(rng)
    extra = {} if ok else {"reason": "token_expired"}
    return [
        _http(world, rng, "POST", "/api/auth/password-reset", 200 if ok else 400,
              actor=Actor.GUEST, actor_id=None, trace_id=trace,
              route="/api/auth/password-reset", ip=world.home_ip[user]),
        _auth(world, rng, "PASSWORD_RESET", user, ok, trace_id=trace, ip=world.home_ip[user],
              agent=world.agent[user], extra=extra),
    ]


def _sc_profile(world: _World, rng: random.Random) -> list[DemoEvent]:
    user = rng.choice(world.users)
    trace = _trace(rng)
    fields = sorted(rng.sample(_PROFILE_FIELDS, rng.randint(1, 3)))
    return [
        _http(world, rng, "PATCH", "/api/users/me", 200, actor=Actor.USER, actor_id=user,
              trace_id=trace, route="/api/users/me"),
        DemoEvent(kind="user", type="USER_PROFILE_UPDATE", level=Level.INFO, actor=Actor.USER,
                  logger="users", message=f"Profile updated: {', '.join(fields)}",
                  actor_id=user, trace_id=trace, metadata={"fields": fields}),
    ]


def _sc_booking(world: _World, rng: random.Random) -> list[DemoEvent]:
    user, creator, listing = (rng.choice(world.users), rng.choice(world.creators),
                              rng.choice(world.listings))
    booking, payment = _ident(rng, "bk_"), _ident(rng, "pi_3", 21, _B62)
    nights = rng.randint(1, 6)
    amount = nights * rng.randrange(40, 260) * 100
    trace = _trace(rng)
    paid = rng.random() < 0.97
    world.bookings.append((booking, user, creator, amount))
    events = [
        _http(world, rng, "POST", "/api/bookings", 201, actor=Actor.USER, actor_id=user,
              trace_id=trace, route="/api/bookings", slow=True),
        DemoEvent(kind="user", type="BOOKING_CREATED", level=Level.INFO, actor=Actor.USER,
                  logger="bookings", message=f"Booking {booking} created for {listing}",
                  actor_id=user, trace_id=trace,
                  metadata={"booking_id": booking, "listing_id": listing, "creator_id": creator,
                            "nights": nights, "amount_cents": amount, "currency": "usd"}),
    ]
    meta: dict[str, Any] = {"payment_id": payment, "booking_id": booking, "amount_cents": amount,
                            "currency": "usd", "provider": "stripe"}
    if paid:
        events.append(DemoEvent(kind="user", type="PAYMENT_SUCCEEDED", level=Level.INFO,
                                actor=Actor.USER, logger="payments",
                                message=f"Payment {payment} captured", actor_id=user,
                                trace_id=trace, metadata=meta))
    else:
        meta["decline_code"] = rng.choice(_DECLINE_CODES)
        events.append(DemoEvent(kind="user", type="PAYMENT_FAILED", level=Level.ERROR,
                                actor=Actor.USER, logger="payments",
                                message=f"Payment {payment} declined: {meta['decline_code']}",
                                actor_id=user, trace_id=trace, metadata=meta))
    return events


def _sc_cancel(world: _World, rng: random.Random) -> list[DemoEvent]:
    booking, user, _creator, amount = world.booking(rng)
    trace = _trace(rng)
    return [
        _http(world, rng, "POST", f"/api/bookings/{booking}/cancel", 200, actor=Actor.USER,
              actor_id=user, trace_id=trace, route="/api/bookings/{booking_id}/cancel"),
        DemoEvent(kind="user", type="BOOKING_CANCELLED", level=Level.INFO, actor=Actor.USER,
                  logger="bookings", message=f"Booking {booking} cancelled by guest",
                  actor_id=user, trace_id=trace,
                  metadata={"booking_id": booking, "refund_cents": amount // 2,
                            "reason": rng.choice(("plans_changed", "found_alternative",
                                                  "illness", "other"))}),
    ]


def _sc_confirm(world: _World, rng: random.Random) -> list[DemoEvent]:
    booking, _user, creator, _amount = world.booking(rng)
    trace = _trace(rng)
    return [
        _http(world, rng, "POST", f"/api/creator/bookings/{booking}/confirm", 200,
              actor=Actor.CREATOR, actor_id=creator, trace_id=trace,
              route="/api/creator/bookings/{booking_id}/confirm"),
        DemoEvent(kind="creator", type="BOOKING_CONFIRMED", level=Level.INFO,
                  actor=Actor.CREATOR, logger="bookings",
                  message=f"Booking {booking} confirmed by host", actor_id=creator,
                  trace_id=trace, metadata={"booking_id": booking}),
    ]


def _sc_listing(world: _World, rng: random.Random) -> list[DemoEvent]:
    creator, listing = rng.choice(world.creators), rng.choice(world.listings)
    trace = _trace(rng)
    changed = sorted(rng.sample(("price", "photos", "description", "calendar", "house_rules"),
                                rng.randint(1, 2)))
    return [
        _http(world, rng, "PUT", f"/api/creator/listings/{listing}", 200, actor=Actor.CREATOR,
              actor_id=creator, trace_id=trace, route="/api/creator/listings/{listing_id}"),
        DemoEvent(kind="creator", type="LISTING_UPDATED", level=Level.INFO, actor=Actor.CREATOR,
                  logger="listings", message=f"Listing {listing} updated",
                  actor_id=creator, trace_id=trace,
                  metadata={"listing_id": listing, "fields": changed}),
    ]


def _sc_payout(world: _World, rng: random.Random) -> list[DemoEvent]:
    creator = rng.choice(world.creators)
    payout = _ident(rng, "po_", 24, _B62)
    amount = rng.randrange(50, 2500) * 100
    trace = _trace(rng)
    meta: dict[str, Any] = {"payout_id": payout, "amount_cents": amount, "currency": "usd",
                            "destination": "bank_account"}
    events = [
        _http(world, rng, "POST", "/api/creator/payouts", 202, actor=Actor.CREATOR,
              actor_id=creator, trace_id=trace, route="/api/creator/payouts"),
        DemoEvent(kind="creator", type="PAYOUT_REQUESTED", level=Level.INFO,
                  actor=Actor.CREATOR, logger="payouts", message=f"Payout {payout} requested",
                  actor_id=creator, trace_id=trace, metadata=meta),
    ]
    if rng.random() < 0.97:
        events.append(DemoEvent(kind="system", type="PAYOUT_SENT", level=Level.INFO,
                                actor=Actor.SYSTEM, logger="payouts",
                                message=f"Payout {payout} sent to {creator}", trace_id=trace,
                                metadata={**meta, "creator_id": creator}))
    else:
        events.append(DemoEvent(kind="system", type="PAYOUT_FAILED", level=Level.ERROR,
                                actor=Actor.SYSTEM, logger="payouts",
                                message=f"Payout {payout} failed: bank account closed",
                                trace_id=trace,
                                metadata={**meta, "creator_id": creator,
                                          "failure_code": "account_closed"}))
    return events


_WEBHOOKS = (
    ("payment_intent.succeeded", 10), ("payment_intent.payment_failed", 2),
    ("charge.refunded", 2), ("payout.paid", 2), ("charge.dispute.created", 1),
    ("customer.subscription.updated", 1),
)
_WEBHOOK_FAILURES = (
    "signature verification failed: timestamp outside the tolerance zone",
    "handler raised: booking not found for payment intent",
    "handler timed out after 10s",
)


def _sc_webhook(world: _World, rng: random.Random) -> list[DemoEvent]:
    names, weights = zip(*_WEBHOOKS, strict=True)
    event_type = rng.choices(names, weights)[0]
    ok = rng.random() < 0.98
    trace = _trace(rng)
    meta: dict[str, Any] = {
        "event_id": _ident(rng, "evt_1", 23, _B62), "livemode": False,
        "attempt": 1 if ok else rng.randint(1, 4),
        "object_id": _ident(rng, "po_" if event_type.startswith("payout") else "pi_3", 21, _B62),
    }
    if not ok:
        meta["error"] = rng.choice(_WEBHOOK_FAILURES)
    stripe_ip = "192.0.2.10"
    return [
        _http(world, rng, "POST", "/api/webhooks/stripe", 200 if ok else 500, actor=Actor.SYSTEM,
              actor_id=None, trace_id=trace, route="/api/webhooks/stripe", ip=stripe_ip,
              agent="Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
        DemoEvent(kind="webhook", type="WEBHOOK_" + normalize_type(event_type),
                  level=Level.INFO if ok else Level.ERROR, actor=Actor.SYSTEM,
                  logger="webhooks", trace_id=trace, metadata=meta,
                  params={"provider": "stripe", "event_type": event_type, "success": ok}),
    ]


#: the API failures the demo raises for real (see :func:`_raise_failure`): kind → endpoint
_FAILURES = {
    "gateway_timeout": "POST /api/bookings/{booking}/pay",
    "missing_listing": "GET /api/listings/{listing}",
    "bad_payload": "POST /api/webhooks/stripe",
    "payout_split": "POST /api/creator/payouts",
    "duplicate_email": "PATCH /api/users/me",
}
_FAILURE_ROUTES = {
    "gateway_timeout": "/api/bookings/{booking_id}/pay",
    "missing_listing": "/api/listings/{listing_id}",
    "bad_payload": "/api/webhooks/stripe",
    "payout_split": "/api/creator/payouts",
    "duplicate_email": "/api/users/me",
}


def _sc_api_error(world: _World, rng: random.Random) -> list[DemoEvent]:
    failure = rng.choice(sorted(_FAILURES))
    booking, user, creator, amount = world.booking(rng)
    listing = _ident(rng, "lst_")
    endpoint = _FAILURES[failure].format(booking=booking, listing=listing)
    method, path = endpoint.split(" ", 1)
    actor, actor_id = {
        "gateway_timeout": (Actor.USER, user), "missing_listing": (Actor.GUEST, None),
        "bad_payload": (Actor.SYSTEM, None), "payout_split": (Actor.CREATOR, creator),
        "duplicate_email": (Actor.USER, user),
    }[failure]
    trace = _trace(rng)
    status = 504 if failure == "gateway_timeout" else 500
    return [
        _http(world, rng, method, path, status, actor=actor, actor_id=actor_id,
              trace_id=trace, route=_FAILURE_ROUTES[failure], slow=failure == "gateway_timeout"),
        DemoEvent(kind="api_error", type="API_ERROR", level=Level.ERROR, actor=actor,
                  logger="api", actor_id=actor_id, trace_id=trace,
                  metadata={"method": method, "status": status},
                  params={"endpoint": endpoint, "failure": failure, "booking_id": booking,
                          "listing_id": listing, "amount_cents": amount}),
    ]


_ADMIN_ACTIONS = (
    ("ADMIN_USER_SUSPENDED", Level.WARNING, "User {user} suspended: chargeback abuse"),
    ("ADMIN_REFUND_ISSUED", Level.INFO, "Refund issued for booking {booking}"),
    ("ADMIN_CREATOR_VERIFIED", Level.INFO, "Creator {creator} identity verified"),
    ("ADMIN_ROLE_CHANGED", Level.WARNING, "Role of {user} changed to support"),
    ("ADMIN_LOGS_EXPORTED", Level.INFO, "System log exported (CSV, last 7 days)"),
)


def _sc_admin(world: _World, rng: random.Random) -> list[DemoEvent]:
    admin = rng.choice(world.admins)
    type_, level, template = rng.choice(_ADMIN_ACTIONS)
    booking, user, creator, amount = world.booking(rng)
    trace = _trace(rng)
    by_type: dict[str, dict[str, Any]] = {
        "ADMIN_USER_SUSPENDED": {"target_user_id": user, "until": "permanent"},
        "ADMIN_REFUND_ISSUED": {"booking_id": booking, "amount_cents": amount},
        "ADMIN_CREATOR_VERIFIED": {"creator_id": creator, "document": "passport"},
        "ADMIN_ROLE_CHANGED": {"target_user_id": user, "from": "user", "to": "support"},
        "ADMIN_LOGS_EXPORTED": {"format": "csv", "range": "7d", "rows": rng.randint(900, 9000)},
    }
    meta = by_type[type_]
    return [
        _http(world, rng, "POST", f"/api/admin/{type_.removeprefix('ADMIN_').lower()}", 200,
              actor=Actor.ADMIN, actor_id=admin, trace_id=trace, route="/api/admin/{action}",
              ip="203.0.113.1"),
        DemoEvent(kind="admin", type=type_, level=level, actor=Actor.ADMIN, logger="admin",
                  message=template.format(user=user, booking=booking, creator=creator),
                  actor_id=admin, trace_id=trace, metadata=meta),
    ]


def _sc_job(world: _World, rng: random.Random) -> list[DemoEvent]:
    trace = _trace(rng)
    roll = rng.random()
    if roll < 0.7:
        job, what, unit = rng.choice(_JOBS)
        count = rng.randint(3, 900)
        duration = rng.randint(40, 90_000)
        return [_perf("OPERATION", f"job.{job}", duration, 60_000, "jobs", trace, {unit: count}),
                DemoEvent(kind="system", type="JOB_COMPLETED", level=Level.INFO,
                          actor=Actor.SYSTEM, logger="jobs",
                          message=f"{job}: {count} {what}", trace_id=trace,
                          metadata={"job": job, unit: count, "duration_ms": duration})]
    if roll < 0.85:
        user = rng.choice(world.users)
        return [DemoEvent(kind="system", type="EMAIL_DELIVERY_FAILED", level=Level.WARNING,
                          actor=Actor.SYSTEM, logger="mailer",
                          message=f"Booking reminder to {user} bounced", trace_id=trace,
                          metadata={"user_id": user, "template": "booking_reminder",
                                    "smtp_code": rng.choice((550, 552, 554))})]
    return [DemoEvent(kind="system", type="CACHE_MISS", level=Level.DEBUG, actor=Actor.SYSTEM,
                      logger="cache", message="listing cache miss, rebuilt from database",
                      trace_id=trace,
                      metadata={"key": f"listing:{rng.choice(world.listings)}",
                                "rebuild_ms": rng.randint(3, 120)})]


def _perf(type_: str, name: str, duration_ms: float, threshold_ms: float, logger: str,
          trace_id: str, metadata: Mapping[str, Any] | None = None) -> DemoEvent:
    """What ``log_operation`` (type OPERATION) or ``@log_performance`` (type PERFORMANCE)
    writes for a call of ``duration_ms`` that succeeded; the emitter runs the real helper."""
    slow = duration_ms > threshold_ms
    message = f"{name} took {duration_ms:.1f} ms"
    if slow:
        message += f" (slow: threshold {threshold_ms:.0f} ms)"
    return DemoEvent(
        kind="perf", type=type_, level=Level.WARNING if slow else Level.INFO, actor=Actor.SYSTEM,
        logger=logger, message=message, trace_id=trace_id,
        metadata={**(metadata or {}), "name": name, "duration_ms": duration_ms, "success": True,
                  "threshold_ms": float(threshold_ms), "slow": slow},
        params={"name": name, "duration_ms": duration_ms, "threshold_ms": threshold_ms,
                "metadata": dict(metadata or {})},
    )


def _sc_search(world: _World, rng: random.Random) -> list[DemoEvent]:
    """A listing search: the access event and the ``@log_performance`` timing of the query."""
    user = rng.choice(world.users) if rng.random() < 0.5 else None
    city = rng.choice(_CITIES)
    trace = _trace(rng)
    query_ms = round(rng.lognormvariate(4.0, 0.6), 1)
    http = _http(world, rng, "GET", f"/api/search?q={city.replace(' ', '+')}", 200,
                 actor=Actor.USER if user else Actor.GUEST, actor_id=user, trace_id=trace,
                 route="/api/search")
    total = round(query_ms + http.metadata["duration_ms"], 1)
    http = dataclasses.replace(
        http, metadata={**http.metadata, "duration_ms": total},
        message=_http_message("GET", http.metadata["path"], 200, total))
    return [_perf("PERFORMANCE", "search.listings", query_ms, 250, "search", trace,
                  {"city": city, "results": rng.randint(0, 60)}), http]


def _sc_probe(world: _World, rng: random.Random) -> list[DemoEvent]:
    ip = f"198.51.100.{rng.randint(2, 254)}"
    return [_http(world, rng, "GET", rng.choice(_PROBES), 404, actor=Actor.GUEST, actor_id=None,
                  trace_id=_trace(rng), route=None, ip=ip, agent="Mozilla/5.0 zgrab/0.x")]


_Scenario = Callable[[_World, random.Random], list[DemoEvent]]
#: relative weights; a healthy marketplace: ERROR events well under 1% of all events, 5xx
#: answers and failed payments rare (the alert rules' thresholds are far above these rates,
#: so the normal demo trips none of them; ``--scenario incident`` trips them all)
_SCENARIOS: tuple[tuple[_Scenario, float], ...] = (
    (_sc_browse, 60), (_sc_search, 6), (_sc_login, 12), (_sc_logout, 3), (_sc_signup, 2),
    (_sc_password_reset, 2), (_sc_profile, 6), (_sc_booking, 9), (_sc_cancel, 3),
    (_sc_confirm, 4), (_sc_listing, 3), (_sc_payout, 3), (_sc_webhook, 9), (_sc_api_error, 0.2),
    (_sc_admin, 3), (_sc_job, 5), (_sc_probe, 2),
)


def _failed_login_burst(world: _World, rng: random.Random, size: int) -> list[DemoEvent]:
    """Password guessing: ``size`` failed logins in a row from one address against one account
    (from 11 on, the "failed logins for one account" alert rule fires)."""
    agent = "python-requests/2.31.0"
    target = rng.choice(world.users)
    return [
        _auth(world, rng, "LOGIN", target, False, trace_id=_trace(rng), ip=world.attacker_ip,
              agent=agent, extra={"method": "password", "reason": "invalid_password"})
        for _ in range(size)
    ]


def _data_corruption(world: _World, rng: random.Random) -> DemoEvent:
    booking, user, _creator, amount = world.booking(rng)
    payments = [_ident(rng, "pi_3", 21, _B62) for _ in range(2)]
    return DemoEvent(
        kind="critical", type="DATA_CORRUPTION", level=Level.CRITICAL, actor=Actor.SYSTEM,
        logger="integrity", trace_id=_trace(rng),
        message=f"Ledger mismatch: booking {booking} was charged twice",
        metadata={"table": "ledger_entries", "booking_id": booking, "user_id": user,
                  "payment_ids": payments, "expected_cents": amount, "found_cents": amount * 2,
                  "detected_by": "nightly-reconciliation"},
    )


def _draw_group(world: _World, rng: random.Random) -> list[DemoEvent]:
    """One request or job of normal traffic, as planned (before slow-request warnings)."""
    scenarios, weights = zip(*_SCENARIOS, strict=True)
    scenario: _Scenario = rng.choices(scenarios, weights)[0]
    return scenario(world, rng)


def _normal_groups(world: _World, rng: random.Random) -> Iterator[list[DemoEvent]]:
    while True:
        yield _with_slow_requests(_draw_group(world, rng))


# ---- the incident (``--scenario incident``)

#: ``--scenario`` values: normal traffic, or normal traffic that turns into an incident
SCENARIOS = ("normal", "incident")
#: an incident run lasts this long unless --count or --duration says otherwise
INCIDENT_DURATION_S = 600.0
#: seconds of normal traffic before the incident starts
INCIDENT_START_S = 30.0
#: during the incident: share of requests that take seconds, share answered 5xx, share of the
#: user-driven requests that never arrive, share of renewal charges the provider declines
_INCIDENT_SLOW = 0.35
_INCIDENT_5XX = 0.10
_INCIDENT_USERS_GONE = 0.8
_INCIDENT_DECLINED = 0.45


def _degraded(event: DemoEvent, rng: random.Random) -> DemoEvent:
    """An access event or a timing during the incident: often seconds slow, sometimes 5xx."""
    if event.kind == "perf":
        slower = _perf(event.type, event.params["name"],
                       round(event.params["duration_ms"] * rng.uniform(6, 12), 1),
                       event.params["threshold_ms"], event.logger, event.trace_id or "",
                       event.params["metadata"])
        return slower
    if event.type != "HTTP_REQUEST":
        return event
    meta = dict(event.metadata)
    if rng.random() < _INCIDENT_SLOW:
        meta["duration_ms"] = round(rng.lognormvariate(math.log(3500), 0.35), 1)
    if meta["status"] < 500 and rng.random() < _INCIDENT_5XX:
        meta["status"] = rng.choice((502, 503, 504))
    return dataclasses.replace(
        event, level=_http_level(meta["status"]), metadata=meta,
        message=_http_message(meta["method"], meta["path"], meta["status"], meta["duration_ms"]))


def _renewal_charge(world: _World, rng: random.Random, declined: bool) -> DemoEvent:
    """The billing job charging a creator's subscription renewal (a SYSTEM payment)."""
    creator = rng.choice(world.creators)
    payment = _ident(rng, "pi_3", 21, _B62)
    meta: dict[str, Any] = {"payment_id": payment, "creator_id": creator, "amount_cents": 2900,
                            "currency": "usd", "provider": "stripe",
                            "purpose": "subscription_renewal"}
    if declined:
        meta["decline_code"] = "processing_error"
        return DemoEvent(kind="system", type="PAYMENT_FAILED", level=Level.ERROR,
                         actor=Actor.SYSTEM, logger="billing", trace_id=_trace(rng),
                         message=f"Renewal payment {payment} for {creator} failed: "
                                 "processing_error (provider timed out)", metadata=meta)
    return DemoEvent(kind="system", type="PAYMENT_SUCCEEDED", level=Level.INFO,
                     actor=Actor.SYSTEM, logger="billing", trace_id=_trace(rng),
                     message=f"Renewal payment {payment} for {creator} captured", metadata=meta)


def _incident_group(world: _World, rng: random.Random) -> list[DemoEvent]:
    """One request or job during the incident: a slow and failing payment provider behind the
    API (latency spike, 5xx answers, a burst of failed renewal charges) while most users cannot
    get in (USER activity falls far below the day before)."""
    if rng.random() < 0.1:
        return [_renewal_charge(world, rng, declined=rng.random() < _INCIDENT_DECLINED)]
    group = _draw_group(world, rng)
    while any(e.actor is Actor.USER for e in group) and rng.random() < _INCIDENT_USERS_GONE:
        group = _draw_group(world, rng)
    return _with_slow_requests([_degraded(e, rng) for e in group])


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
    grafana/provisioning/alerting/rules.yaml (see :func:`_incident_group`); the day before is
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
    world = _World(rng)
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
    groups = _normal_groups(world, rng)
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
            specials = ([_data_corruption(world, rng)] if kind == "critical"
                        else _failed_login_burst(world, rng, burst))
            for event in specials:
                yield event
                emitted += 1
            continue
        if not pending:
            if scenario == "incident" and emitted >= INCIDENT_START_S * rate:
                pending.extend(_incident_group(world, rng))
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
    world = _World(rng)
    groups = _normal_groups(world, rng)
    hour_ns = 3600 * _NS
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
        hour = (bucket / _NS % 86400) / 3600
        target = per_hour * (_diurnal(hour) if diurnal else 1.0) * width / hour_ns
        n = int(target) + (1 if rng.random() < target - int(target) else 0)
        made = 0
        while made < n:
            group = next(groups)
            place(group, bucket + rng.randrange(width), (2, 180))
            made += len(group)
        bucket += width
    for day in range(max(1, math.ceil(span / (86400 * _NS))) if bursts else 0):
        day_start = start_ns + day * 86400 * _NS
        day_width = min(86400 * _NS, end_ns - day_start)
        place(_failed_login_burst(world, rng, rng.randint(8, 14)),
              day_start + rng.randrange(max(1, day_width - 60 * _NS)), (800, 4000))
    for _ in range(criticals):
        place([_data_corruption(world, rng)], start_ns + rng.randrange(span), (0, 0))
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
    day = 86400 * _NS
    return backfill_events(rng, start_ns=start_ns - day,
                           end_ns=start_ns - day + int(seconds * _NS), per_hour=rate * 3600,
                           criticals=0, diurnal=False, bursts=False)


# --------------------------------------------------------------------------- emitting

_EVENT_TIME: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "shipper_demo_event_time", default=None
)


class _EventTimeFilter(logging.Filter):
    """Sets ``record.event_time`` (ns) for records logged while :class:`DemoEmitter` replays a
    past event: SystemLog's helpers take no ``extra``, and the handler reads ``event_time``."""

    def filter(self, record: logging.LogRecord) -> bool:
        when = _EVENT_TIME.get()
        if when is not None and getattr(record, "event_time", None) is None:
            record.event_time = when
        return True


class _IntegrityError(Exception):
    """What the ORM raises on a unique-constraint violation."""


_LISTING_CACHE: dict[str, dict[str, Any]] = {}


def _gateway_request(path: str, timeout: float) -> dict[str, Any]:
    raise TimeoutError(f"api.stripe.com{path}: read timed out after {timeout:.1f}s")


def _capture_payment(booking_id: str, amount_cents: int) -> dict[str, Any]:
    return _gateway_request(f"/v1/payment_intents/{booking_id}/capture?amount={amount_cents}",
                            timeout=10.0)


def _load_listing(listing_id: str) -> dict[str, Any]:
    return _LISTING_CACHE[listing_id]


def _parse_stripe_event(body: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(body)
    return event


def _split_payout(amount_cents: int, co_hosts: Sequence[str]) -> dict[str, int]:
    share = amount_cents // len(co_hosts)
    return dict.fromkeys(co_hosts, share)


def _save_profile(user_id: str, email: str) -> None:
    raise _IntegrityError(
        f'duplicate key value violates unique constraint "users_email_key" '
        f"DETAIL: Key (email)=({email}) already exists. (user {user_id})"
    )


def _raise_failure(params: Mapping[str, Any]) -> BaseException:
    """Run the failing code path for an ``api_error`` event and return what it raised (with
    its traceback), so the logged exception is a real one."""
    failure = params["failure"]
    try:
        if failure == "gateway_timeout":
            _capture_payment(params["booking_id"], params["amount_cents"])
        elif failure == "missing_listing":
            _load_listing(params["listing_id"])
        elif failure == "bad_payload":
            _parse_stripe_event('{"id": "evt_1", "type": "payment_intent.succeeded", "data": {')
        elif failure == "payout_split":
            _split_payout(params["amount_cents"], [])
        elif failure == "duplicate_email":
            _save_profile(params.get("user_id") or "usr_unknown", "guest@example.com")
        else:
            raise DemoError(f"unknown API failure {failure!r}")
    except DemoError:
        raise
    except Exception as exc:
        return exc
    raise AssertionError(f"failure {failure!r} did not raise")  # pragma: no cover


class DemoEmitter:
    """Logs :class:`DemoEvent` values the way an app would: SystemLog helpers, and plain
    ``logging`` for access events, on loggers named ``<base>.<event.logger>``."""

    def __init__(self, base: str = "marketplace") -> None:
        self.base = base
        self._slogs: dict[str, SystemLog] = {}

    def logger(self, name: str) -> logging.Logger:
        return logging.getLogger(f"{self.base}.{name}")

    def _slog(self, name: str) -> SystemLog:
        slog = self._slogs.get(name)
        if slog is None:
            slog = self._slogs[name] = SystemLog(self.logger(name))
        return slog

    def emit(self, event: DemoEvent) -> None:
        token = _EVENT_TIME.set(event.time_ns)
        scope = (log_context(trace_id=event.trace_id) if event.trace_id
                 else contextlib.nullcontext())
        try:
            with scope:
                self._dispatch(event)
        finally:
            _EVENT_TIME.reset(token)

    def _dispatch(self, ev: DemoEvent) -> None:
        slog = self._slog(ev.logger)
        meta = dict(ev.metadata)
        if ev.kind == "auth":
            slog.auth(ev.params["action"], ev.actor_id, bool(ev.params["success"]), meta)
        elif ev.kind == "user":
            slog.user_action(ev.type, ev.actor_id, ev.message, meta, level=ev.level)
        elif ev.kind == "creator":
            slog.creator_action(ev.type, ev.actor_id, ev.message, meta, level=ev.level)
        elif ev.kind == "webhook":
            slog.webhook(ev.params["provider"], ev.params["event_type"],
                         bool(ev.params["success"]), meta)
        elif ev.kind == "api_error":
            error = _raise_failure({**ev.params, "user_id": ev.actor_id})
            slog.api_error(ev.params["endpoint"], error, ev.actor, ev.actor_id, meta)
        elif ev.kind == "admin":
            slog.admin_action(ev.type, ev.actor_id, ev.message, level=ev.level, metadata=meta)
        elif ev.kind == "system":
            slog.system(ev.type, ev.message, level=ev.level, metadata=meta)
        elif ev.kind == "critical":
            slog.critical(ev.type, Actor.SYSTEM, ev.message, None, meta)
        elif ev.kind == "perf":
            _run_timed(ev.params, ev.type, self.logger(ev.logger))
        elif ev.kind == "http":
            extra: dict[str, Any] = {"type": ev.type, "actor": ev.actor.value,
                                     "actor_id": ev.actor_id, "metadata": meta}
            if ev.time_ns is not None:
                extra["event_time"] = ev.time_ns
            self.logger(ev.logger).log(ev.level.logging_level, ev.message, extra=extra)
        else:
            raise DemoError(f"unknown demo event kind {ev.kind!r} (known: {', '.join(KINDS)})")


def _run_timed(params: Mapping[str, Any], type_: str, logger: logging.Logger) -> None:
    """Time an empty block with the real :class:`~shipper.perf.Operation` on a clock that says
    it took ``params["duration_ms"]``: the event is exactly what the helper writes."""
    from shipper.perf import Operation

    ticks = iter((0.0, params["duration_ms"] / 1000.0))
    with Operation(params["name"], threshold_ms=params["threshold_ms"], logger=logger,
                   type=type_, metadata=params.get("metadata"), clock=lambda: next(ticks)):
        pass


# --------------------------------------------------------------------------- --file


def entry_to_file_object(entry: Entry) -> dict[str, Any]:
    """The ``--file`` JSON object for an entry: the labels, the structured metadata and the
    line's fields side by side. ``promtail/`` turns it back into exactly this entry."""
    labels = dict(entry.labels)
    structured = dict(entry.metadata)
    body = json.loads(entry.line)
    metadata = body.get("metadata")
    return {
        "ts": rfc3339_nano(entry.timestamp_ns),
        "service": labels["service_name"],
        "env": labels.get("env"),
        "level": labels["level"],
        "actor": labels["actor"],
        "type": labels["type"],
        "actor_id": structured.get("actor_id"),
        "trace_id": structured.get("trace_id"),
        "logger": structured.get("logger"),
        "message": body.get("message", ""),
        # a line cut to fit Loki's size limit may carry metadata as truncated text
        "metadata": metadata if isinstance(metadata, dict) else {"value": metadata},
        "exception": body.get("exception"),
    }


def file_object_to_entry(obj: Mapping[str, Any]) -> Entry:
    """What the collector pipelines in ``promtail/`` make of one ``--file`` object: labels
    ``service_name, env, level, actor, type``, structured metadata ``actor_id, trace_id,
    logger`` (each only when set), the line ``{"message", "metadata", "exception"?}``."""
    labels = [("service_name", obj["service"])]
    if obj.get("env"):
        labels.append(("env", obj["env"]))
    labels += [("level", obj["level"]), ("actor", obj["actor"]), ("type", obj["type"])]
    structured = tuple((k, str(obj[k])) for k in ("actor_id", "trace_id", "logger")
                       if obj.get(k) is not None)
    body: dict[str, Any] = {"message": obj["message"], "metadata": obj.get("metadata") or {}}
    if obj.get("exception"):
        body["exception"] = obj["exception"]
    return Entry(
        labels=tuple(labels),
        timestamp_ns=_parse_rfc3339_nano(obj["ts"]),
        line=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        metadata=structured,
    )


class JsonLinesFileHandler(logging.Handler):
    """Appends every record as one JSON object per line (see :func:`entry_to_file_object`),
    converted exactly as :class:`~shipper.handler.LokiHandler` converts it: the same event,
    labels, structured metadata, line and timestamp."""

    def __init__(self, path: str | os.PathLike[str], *, service: str, env: str | None = None,
                 type_limit: int = 100, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 redact: Callable[[LogEvent], LogEvent] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise DemoError(f"--file {path}: cannot open it for writing ({exc.strerror})") \
                from exc
        self.service = service
        self.env = env
        self._types = TypeGuard(type_limit)
        self._max_line_bytes = max_line_bytes
        self._redact = redact
        self.written = 0

    def emit(self, record: logging.LogRecord) -> None:
        from shipper.handler import event_from_record

        try:
            event = event_from_record(record, service=self.service, env=self.env,
                                      context=current_context())
            if self._redact is not None:
                event = self._redact(event)
            entry = to_entry(event, type_guard=self._types, max_line_bytes=self._max_line_bytes)
            line = json.dumps(entry_to_file_object(entry), ensure_ascii=False,
                              separators=(",", ":"))
            with self.lock or contextlib.nullcontext():
                if self._file is None:
                    return
                self._file.write(line + "\n")
                self._file.flush()
                self.written += 1
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()


# --------------------------------------------------------------------------- the command


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
            raise DemoError(f"--backfill must be positive, got {format_span(self.backfill)}")
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


def _loki_limits(config_text: str) -> tuple[float | None, float]:
    """(``reject_old_samples_max_age`` in seconds or None when old samples are accepted,
    ``ingester.max_chunk_age`` in seconds) from a Loki config YAML (``GET /config``)."""
    data = yaml.safe_load(config_text) or {}
    limits = data.get("limits_config") or {}
    ingester = data.get("ingester") or {}
    max_age: float | None = DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE
    if limits.get("reject_old_samples") is False:
        max_age = None
    elif limits.get("reject_old_samples_max_age") is not None:
        max_age = parse_span(str(limits["reject_old_samples_max_age"]))
    chunk_age = ingester.get("max_chunk_age")
    return max_age, parse_span(str(chunk_age)) if chunk_age is not None else \
        _DEFAULT_MAX_CHUNK_AGE


def _logql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prepare_backfill(opts: DemoOptions, config: ShipperConfig, err: TextIO,
                      transport: Any, reach: float | None = None) -> float | None:
    """Check how far back the history goes (``reach`` seconds: --backfill, or the day before
    for --scenario incident) against the Loki it goes to; the reach, or None to skip."""
    reach = opts.backfill if reach is None else reach
    assert reach is not None
    max_age: float | None = DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE
    source = "Loki's default"
    if config.url is not None:
        from shipper.loki.client import LokiClient, LokiError

        client = LokiClient(config, transport)
        try:
            max_age, chunk_age = _loki_limits(client.config_yaml())
            source = f"the Loki at {config.url}"
            # A stream accepts entries down to max_chunk_age/2 behind its newest one: history
            # can only go into streams that have been quiet that long.
            quiet = chunk_age / 2 + BACKFILL_SAFETY_S
            now = time.time_ns()
            selector = "{service_name=" + _logql_string(config.service)
            if config.env:
                selector += ", env=" + _logql_string(config.env)
            selector += "}"
            found = client.query_range(selector, now - int(quiet * _NS), now, limit=1)
            if any(s.get("values") for s in found.get("result", [])):
                err.write(
                    f"shipper demo: {selector} already has events from the last "
                    f"{format_span(quiet)}; Loki refuses entries more than "
                    f"{format_span(chunk_age / 2)} older than a stream's newest one, so the "
                    f"backfill is skipped (it only fills streams that are new or quiet)\n"
                )
                if opts.scenario == "incident":
                    err.write("shipper demo: without the day before, the user-activity rule "
                              "compares with whatever that service logged yesterday; give the "
                              "incident a --service of its own\n")
                return None
        except (LokiError, ValueError, yaml.YAMLError) as exc:
            err.write(f"shipper demo: could not read the limits of the Loki at {config.url} "
                      f"({exc}); assuming Loki's defaults\n")
        finally:
            client.close()
    if max_age is not None and reach > max_age:
        raise DemoError(
            f"--backfill {format_span(reach)} reaches further back than {source} "
            f"accepts: limits_config.reject_old_samples_max_age is {format_span(max_age)}, so "
            f"use --backfill {format_span(max_age)} or less"
        )
    if config.url is None:
        err.write(f"shipper demo: the backfill goes to the spool; push it with `shipper spool "
                  f"push` before it is older than Loki accepts "
                  f"({format_span(DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE)} by default)\n")
    return reach


def _make_redactor(config: ShipperConfig) -> Callable[[LogEvent], LogEvent]:
    """The pipeline's redaction, so that ``--file`` holds exactly what is sent."""
    from shipper.redact import Redactor

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
    from shipper.handler import LokiHandler

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
    time_filter = _EventTimeFilter()
    for h in handlers:
        h.addFilter(time_filter)
        base.addHandler(h)
    emitter = DemoEmitter(base_name)
    emitted = [0]
    interrupted = False
    restore = _stop_on_sigterm(stop)
    try:
        if backfill_span:
            now = time.time_ns()
            history: list[DemoEvent] = []
            if opts.backfill:
                start = now - int(opts.backfill * _NS) + int(BACKFILL_SAFETY_S * _NS)
                history = backfill_events(rng, start_ns=min(start, now - _NS), end_ns=now,
                                          per_hour=opts.backfill_rate,
                                          criticals=opts.criticals - live_criticals)
                err.write(f"shipper demo: backfilling {len(history)} events over the last "
                          f"{format_span(opts.backfill)}\n")
            if incident:
                seconds = (live_count or 0) / opts.rate + 120
                day_before = yesterday_events(rng, start_ns=now, seconds=seconds,
                                              rate=opts.rate)
                err.write(f"shipper demo: the day before: {len(day_before)} events of normal "
                          f"traffic over {format_span(seconds)}, one day back\n")
                history = sorted(history + day_before, key=lambda e: e.time_ns or 0)
            _emit_all(emitter, history, stop, emitted)
            # history first: a stream takes no entries far behind its newest one
            handler.flush(opts.flush_timeout)
        if live_count != 0 and not stop.is_set():
            err.write(f"shipper demo: sending {live_count if live_count is not None else 'live'}"
                      f" events at {opts.rate:g}/s to {config.url or 'the spool'}"
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


def _stop_on_sigterm(stop: threading.Event) -> Callable[[], None]:
    """Turn SIGTERM (``docker stop``) into a clean stop; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)

    def undo() -> None:
        signal.signal(signal.SIGTERM, previous)

    return undo

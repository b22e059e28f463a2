"""The demo marketplace: its people and places, and what one request or job logs.

The traffic speaks the seed apps' vocabulary: logins (some failed, and a burst of failures from
one IP), sign-ups, profile updates, bookings, payments and payouts, Stripe-like webhooks (some
failing), API errors with real tracebacks, admin actions, ``HTTP_REQUEST`` access events and one
CRITICAL ``DATA_CORRUPTION``.

Everything here is pure: a :class:`World` is drawn once from a seeded :class:`random.Random`,
and each request or job (:func:`normal_groups`, :func:`incident_group`,
:func:`failed_login_burst`, :func:`data_corruption`) draws from the same generator and returns
:class:`DemoEvent` values, so the same seed gives the same events.
:mod:`shipper.cli.demo.scenarios` strings them into a run; :mod:`shipper.cli.demo.emit` logs
them.
"""

from __future__ import annotations

import dataclasses
import math
import random
import string
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipper.event import Actor, Level, normalize_type
from shipper.integrations._common import DEFAULT_SLOW_REQUEST_MS

__all__ = [
    "KINDS",
    "SLOW_REQUEST_MS",
    "DemoError",
    "DemoEvent",
    "World",
    "data_corruption",
    "failed_login_burst",
    "incident_group",
    "normal_groups",
]

#: what each :class:`DemoEvent` becomes: the SystemLog helper (or plain ``logging`` for ``http``)
KINDS = ("auth", "user", "creator", "webhook", "api_error", "admin", "system", "http", "perf",
         "critical")

#: the access middleware's default slow-request threshold: slower requests get a SLOW_REQUEST
SLOW_REQUEST_MS = DEFAULT_SLOW_REQUEST_MS


class DemoError(ValueError):
    """A demo option that cannot work; the message names the option."""


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


class World:
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


def _http(world: World, rng: random.Random, method: str, path: str, status: int, *,
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


def _auth(world: World, rng: random.Random, action: str, user: str | None, success: bool, *,
          trace_id: str, ip: str, agent: str, extra: Mapping[str, Any] | None = None) -> DemoEvent:
    meta: dict[str, Any] = {"ip": ip, "user_agent": agent, **(extra or {})}
    return DemoEvent(
        kind="auth", type="AUTH_" + normalize_type(action),
        level=Level.INFO if success else Level.WARNING, actor=Actor.USER, logger="auth",
        actor_id=user, trace_id=trace_id, metadata=meta,
        params={"action": action, "success": success},
    )


# ---- one request or job each: a list of events sharing a trace id


def _sc_browse(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_login(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_logout(world: World, rng: random.Random) -> list[DemoEvent]:
    user = rng.choice(world.users)
    trace = _trace(rng)
    return [
        _http(world, rng, "POST", "/api/auth/logout", 204, actor=Actor.USER, actor_id=user,
              trace_id=trace, route="/api/auth/logout"),
        _auth(world, rng, "LOGOUT", user, True, trace_id=trace, ip=world.home_ip[user],
              agent=world.agent[user]),
    ]


def _sc_signup(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_password_reset(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_profile(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_booking(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_cancel(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_confirm(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_listing(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_payout(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_webhook(world: World, rng: random.Random) -> list[DemoEvent]:
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


#: the API failures the demo raises for real (see :mod:`shipper.cli.demo.emit`): kind → endpoint
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


def _sc_api_error(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_admin(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_job(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_search(world: World, rng: random.Random) -> list[DemoEvent]:
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


def _sc_probe(world: World, rng: random.Random) -> list[DemoEvent]:
    ip = f"198.51.100.{rng.randint(2, 254)}"
    return [_http(world, rng, "GET", rng.choice(_PROBES), 404, actor=Actor.GUEST, actor_id=None,
                  trace_id=_trace(rng), route=None, ip=ip, agent="Mozilla/5.0 zgrab/0.x")]


_Scenario = Callable[[World, random.Random], list[DemoEvent]]
#: relative weights; a healthy marketplace: ERROR events well under 1% of all events, 5xx
#: answers and failed payments rare (the alert rules' thresholds are far above these rates,
#: so the normal demo trips none of them; ``--scenario incident`` trips them all)
_SCENARIOS: tuple[tuple[_Scenario, float], ...] = (
    (_sc_browse, 60), (_sc_search, 6), (_sc_login, 12), (_sc_logout, 3), (_sc_signup, 2),
    (_sc_password_reset, 2), (_sc_profile, 6), (_sc_booking, 9), (_sc_cancel, 3),
    (_sc_confirm, 4), (_sc_listing, 3), (_sc_payout, 3), (_sc_webhook, 9), (_sc_api_error, 0.2),
    (_sc_admin, 3), (_sc_job, 5), (_sc_probe, 2),
)


def failed_login_burst(world: World, rng: random.Random, size: int) -> list[DemoEvent]:
    """Password guessing: ``size`` failed logins in a row from one address against one account
    (from 11 on, the "failed logins for one account" alert rule fires)."""
    agent = "python-requests/2.31.0"
    target = rng.choice(world.users)
    return [
        _auth(world, rng, "LOGIN", target, False, trace_id=_trace(rng), ip=world.attacker_ip,
              agent=agent, extra={"method": "password", "reason": "invalid_password"})
        for _ in range(size)
    ]


def data_corruption(world: World, rng: random.Random) -> DemoEvent:
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


def _draw_group(world: World, rng: random.Random) -> list[DemoEvent]:
    """One request or job of normal traffic, as planned (before slow-request warnings)."""
    scenarios, weights = zip(*_SCENARIOS, strict=True)
    scenario: _Scenario = rng.choices(scenarios, weights)[0]
    return scenario(world, rng)


def normal_groups(world: World, rng: random.Random) -> Iterator[list[DemoEvent]]:
    while True:
        yield _with_slow_requests(_draw_group(world, rng))


# ---- the incident (``--scenario incident``)

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


def _renewal_charge(world: World, rng: random.Random, declined: bool) -> DemoEvent:
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


def incident_group(world: World, rng: random.Random) -> list[DemoEvent]:
    """One request or job during the incident: a slow and failing payment provider behind the
    API (latency spike, 5xx answers, a burst of failed renewal charges) while most users cannot
    get in (USER activity falls far below the day before)."""
    if rng.random() < 0.1:
        return [_renewal_charge(world, rng, declined=rng.random() < _INCIDENT_DECLINED)]
    group = _draw_group(world, rng)
    while any(e.actor is Actor.USER for e in group) and rng.random() < _INCIDENT_USERS_GONE:
        group = _draw_group(world, rng)
    return _with_slow_requests([_degraded(e, rng) for e in group])

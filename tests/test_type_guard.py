"""The ``type`` label can be neither folded nor forged.

The type guard counts distinct types per service, so one service's made-up types never fold
another's; the types the alert rules and the retention rules select on are never folded into
``OTHER``; the deletion audit types (``LOGS_DELETED``, ``LOGS_DELETE_CANCELLED``) are written
only by ``shipper delete``: any other source's are renamed, the original kept in metadata."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper import LokiHandler, ShipperConfig, SystemLog
from shipper.delivery.pipeline import Pipeline
from shipper.event import LogEvent, TypeGuard, normalize_type, to_entry
from shipper.loki.selector import Matcher, Selector
from shipper.testing import capture_logs
from tests.support import _grafana
from tests.support.fakeloki import FakeLoki, Stored

REPO = Path(__file__).resolve().parents[1]
RETENTION = REPO / "loki" / "retention.yaml"
_NOW = time.time_ns() - 60 * 1_000_000_000


@pytest.fixture()
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as server:
        yield server


def _event(type_: object, service: str = "shop", **kw: Any) -> LogEvent:
    return LogEvent.create(service=service, level=kw.pop("level", "INFO"), message="m",
                           type=type_, timestamp_ns=_NOW, **kw)


def _label(entry_or_stored: Any, name: str = "type") -> str:
    return str(dict(entry_or_stored.labels)[name])


def _stored(fake: FakeLoki, count: int) -> list[Stored]:
    assert fake.wait_for_count(count, timeout=10) == count
    return sorted(fake.stored(), key=lambda s: s.ts)


# ------------------------------------------------------------------- counted per service


def test_one_services_made_up_types_never_fold_another_services_types() -> None:
    guard = TypeGuard(limit=100)
    noisy = [guard.admit(f"MADE_UP_{i}", "noisy") for i in range(150)]
    assert noisy.count("OTHER") == 50
    assert guard.admit("AUTH_FAILED", "shop") == "AUTH_FAILED"
    assert guard.admit("CART_UPDATED", "shop") == "CART_UPDATED"
    assert guard.overflowed == 50


def test_a_service_has_limit_types_of_its_own() -> None:
    guard = TypeGuard(limit=2)
    assert [guard.admit(t, "a") for t in ("X", "Y", "Z")] == ["X", "Y", "OTHER"]
    assert [guard.admit(t, "b") for t in ("Z", "Y", "X")] == ["Z", "Y", "OTHER"]
    # once admitted, a type stays admitted for its service
    assert guard.admit("X", "a") == "X" and guard.admit("Z", "b") == "Z"


def test_types_the_alert_and_retention_rules_select_on_are_never_folded() -> None:
    guard = TypeGuard(limit=4)
    for i in range(10):
        guard.admit(f"JUNK_{i}", "shop")
    for type_ in ("HTTP_REQUEST", "PAYMENT_FAILED", "PAYMENT_SUCCEEDED", "AUTH_FAILED",
                  "AUTH_LOGIN", "SECURITY_ALERT", "WEBHOOK_STRIPE_PAYMENT"):
        assert guard.admit(type_, "shop") == type_
    assert guard.admit("JUNK_NEW", "shop") == "OTHER"


def test_a_flood_of_protected_family_types_folds_each_within_its_family() -> None:
    """Past ``limit`` distinct AUTH_*, SECURITY_* and WEBHOOK_* types in one service a new
    one becomes AUTH_OTHER (SECURITY_OTHER, ...), which every rule that selects the real type
    selects too: alerts and the 365-day retention still see it."""
    guard = TypeGuard(limit=3)
    admitted = [guard.admit(f"AUTH_MADE_UP_{i}", "shop") for i in range(5)]
    assert admitted == ["AUTH_MADE_UP_0", "AUTH_MADE_UP_1", "AUTH_MADE_UP_2", "AUTH_OTHER",
                        "AUTH_OTHER"]
    assert guard.admit("SECURITY_BREACH", "shop") == "SECURITY_OTHER"
    assert guard.admit("WEBHOOK_X", "shop") == "WEBHOOK_OTHER"
    assert guard.admit("AUTH_MADE_UP_1", "shop") == "AUTH_MADE_UP_1"
    # the families' budget is apart from the others': an ordinary type still gets its place
    assert guard.admit("CART_UPDATED", "shop") == "CART_UPDATED"
    for selector in _type_selectors():
        for folded, kept in (("AUTH_MADE_UP_4", "AUTH_OTHER"),
                             ("SECURITY_BREACH", "SECURITY_OTHER"),
                             ("WEBHOOK_X", "WEBHOOK_OTHER")):
            assert selector.matches({"type": folded}) == selector.matches({"type": kept}), \
                str(selector)


def test_the_services_the_guard_remembers_are_capped_and_the_rest_share_one_budget() -> None:
    from shipper.typelabel import MAX_GUARDED_SERVICES

    guard = TypeGuard(limit=2, max_services=3)
    for service in ("a", "b", "c"):
        assert [guard.admit(t, service) for t in ("X", "Y")] == ["X", "Y"]
    assert guard.services == 3
    # d and e are past the cap: they share one budget of two types
    assert [guard.admit(t, "d") for t in ("P", "Q")] == ["P", "Q"]
    assert guard.admit("R", "e") == "OTHER"
    assert guard.admit("P", "e") == "P"
    # protected types are never folded there either, and the remembered services keep theirs
    assert guard.admit("AUTH_FAILED", "e") == "AUTH_FAILED"
    assert guard.admit("HTTP_REQUEST", "f") == "HTTP_REQUEST"
    assert guard.admit("X", "a") == "X"
    assert guard.services == 3
    assert guard.pooled
    assert TypeGuard().max_services == MAX_GUARDED_SERVICES == 256  # as docs/events.md says


def test_the_guards_memory_is_bounded_whatever_the_input() -> None:
    from shipper.typelabel import PROTECTED_TYPE_FAMILIES, PROTECTED_TYPES

    guard = TypeGuard(limit=5, max_services=10)
    for i in range(2000):
        for prefix in ("T", "AUTH_", "SECURITY_", "WEBHOOK_", "LOGS_DELETED_"):
            guard.admit(f"{prefix}{i}", f"service-{i % 50}")
        guard.admit("HTTP_REQUEST", f"service-{i}")
    assert guard.services == 10
    per_budget = 2 * 5 + len(PROTECTED_TYPE_FAMILIES) + len(PROTECTED_TYPES) + 2
    assert guard.remembered <= 11 * per_budget  # ten services and the shared budget
    assert guard.remembered > 10 * 5 * 2  # each budget did fill


def test_to_entry_counts_the_events_service() -> None:
    guard = TypeGuard(limit=1)
    assert _label(to_entry(_event("ONE", "a"), type_guard=guard)) == "ONE"
    assert _label(to_entry(_event("TWO", "b"), type_guard=guard)) == "TWO"
    folded = to_entry(_event("THREE", "a"), type_guard=guard)
    assert _label(folded) == "OTHER"
    assert json.loads(folded.line)["metadata"] == {"type": "THREE"}


def test_a_folded_type_is_kept_even_when_the_metadata_has_a_type_of_its_own() -> None:
    guard = TypeGuard(limit=0)
    entry = to_entry(_event("MADE_UP", metadata={"type": "bulk"}), type_guard=guard)
    assert _label(entry) == "OTHER"
    assert json.loads(entry.line)["metadata"] == {"type": "bulk", "original_type": "MADE_UP"}


# ----------------------------------------------------- the protected set and the rule files


_TYPE_MATCHER = re.compile(
    r'Matcher\(Identifier:"type" (?:Eq|Neq|Re|Nre):"(=|!=|=~|!~)" String\(("(?:[^"\\]|\\.)*")\)\)')


def _alert_type_matchers() -> list[tuple[str, str, str]]:
    """(where, op, value) of every matcher on ``type`` in the alerting files: in the rules'
    queries (stream selectors and label filters alike, read by Grafana's own LogQL grammar)
    and in the notification policies' matchers."""
    queries: list[tuple[str, str]] = []
    found: list[tuple[str, str, str]] = []
    for path in sorted((REPO / "grafana" / "provisioning" / "alerting").glob("*.yaml")):
        _collect(yaml.safe_load(path.read_text(encoding="utf-8")), path.name, queries, found)
    assert queries, "no alert rule queries found"
    results = _grafana.parse_logql([q for _, q in queries])
    for (where, _), result in zip(queries, results, strict=True):
        assert result["ok"], _grafana.describe_failures([result])
        for op, value in _TYPE_MATCHER.findall(result["tree"]):
            found.append((where, op, json.loads(value)))
    return found


def _collect(node: Any, where: str, queries: list[tuple[str, str]],
             matchers: list[tuple[str, str, str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                queries.append((f"{where}: {node.get('refId', '')}", value))
            elif key in ("object_matchers", "matchers") and isinstance(value, list):
                matchers.extend((where, str(m[1]), str(m[2])) for m in value
                                if isinstance(m, list) and len(m) == 3 and m[0] == "type")
            else:
                _collect(value, where, queries, matchers)
    elif isinstance(node, list):
        for item in node:
            _collect(item, where, queries, matchers)


def _retention_selectors() -> list[tuple[str, Selector]]:
    doc = yaml.safe_load(RETENTION.read_text(encoding="utf-8"))
    return [(f"retention.yaml: {rule['name']}", Selector.parse(rule["selector"]))
            for rule in doc.get("selectors") or []]


def _type_selectors() -> list[Selector]:
    selectors = [s for _, s in _retention_selectors()]
    selectors += [Selector((Matcher("type", op, value),))
                  for _, op, value in _alert_type_matchers()]
    return selectors


def unprotected(op: str, value: str) -> list[str]:
    """The parts of one ``type`` matcher the guard might fold: each name it names must be a
    protected type, each ``PREFIX.*`` or ``PREFIX.+`` a protected family."""
    from shipper.typelabel import PROTECTED_TYPE_FAMILIES, PROTECTED_TYPES

    if op in ("=", "!="):
        return [] if value in PROTECTED_TYPES else [value]
    missing = []
    for part in value.split("|"):
        family = re.fullmatch(r"([A-Z0-9_]+_)\.[*+]", part)
        if family is not None:
            if family.group(1) not in PROTECTED_TYPE_FAMILIES:
                missing.append(part)
        elif re.fullmatch(r"[A-Z0-9_]+", part):
            if part not in PROTECTED_TYPES:
                missing.append(part)
        else:
            missing.append(f"{part} (a regex the test cannot read: name the types or a "
                           "PREFIX_.* family)")
    return missing


def test_every_type_an_alert_or_retention_rule_selects_on_is_protected() -> None:
    """Adding a rule on a new type without adding that type to ``PROTECTED_TYPES`` (or its
    prefix to ``PROTECTED_TYPE_FAMILIES``) in shipper/event.py fails here."""
    matchers = [(where, m.op, m.value) for where, s in _retention_selectors()
                for m in s.matchers if m.name == "type"]
    matchers += _alert_type_matchers()
    assert {value for _, _, value in matchers} >= {"HTTP_REQUEST", "AUTH_.+", "PAYMENT_FAILED"}
    problems = [f"{where}: type{op}{value!r}: {', '.join(missing)}"
                for where, op, value in matchers if (missing := unprotected(op, value))]
    assert not problems, ("types selected by a rule but not protected from the type guard "
                          "(add them to shipper/event.py PROTECTED_TYPES or "
                          "PROTECTED_TYPE_FAMILIES):\n" + "\n".join(problems))


def test_the_protected_set_check_catches_a_rule_on_an_unprotected_type() -> None:
    assert unprotected("=", "REFUND_ISSUED") == ["REFUND_ISSUED"]
    assert unprotected("=~", "PAYMENT_FAILED|REFUND_.+") == ["REFUND_.+"]
    assert unprotected("=~", "(AUTH|SECURITY)_.*")
    assert unprotected("=~", "AUTH_.*|SECURITY_.+|HTTP_REQUEST") == []


def test_the_guard_admits_every_protected_type_and_family() -> None:
    from shipper.typelabel import PROTECTED_TYPE_FAMILIES, PROTECTED_TYPES

    guard = TypeGuard(limit=0, audit=True)
    for type_ in PROTECTED_TYPES:
        assert guard.admit(type_, "shop") == type_
    for family in PROTECTED_TYPE_FAMILIES:
        assert guard.admit(family + "SOMETHING", "shop") == family + "OTHER"


# ---------------------------------------------------------------- the audit types: forged

FORGERIES = [
    ("LOGS_DELETED", "APP_LOGS_DELETED"),
    ("logs_deleted", "APP_LOGS_DELETED"),
    ("Logs-Deleted", "APP_LOGS_DELETED"),
    ("logsDeleted", "APP_LOGS_DELETED"),
    ("logs.deleted", "APP_LOGS_DELETED"),
    (" LOGS_DELETED\n", "APP_LOGS_DELETED"),
    ("LOGS_DELETED\x00\x07\x1b", "APP_LOGS_DELETED"),
    ("\u200blogs deleted", "APP_LOGS_DELETED"),
    ("LOGS\u200b_DELETED", "APP_LOGS_DELETED"),
    ("\uff2c\uff2f\uff27\uff33_\uff24\uff25\uff2c\uff25\uff34\uff25\uff24",  # full-width
     "APP_LOGS_DELETED"),
    ("LOGS_DELETED" + "_" * 10_000, "APP_LOGS_DELETED"),
    ("LOGS_DELETE_CANCELLED", "APP_LOGS_DELETE_CANCELLED"),
    ("logsDeleteCancelled", "APP_LOGS_DELETE_CANCELLED"),
]


@pytest.mark.parametrize(("claimed", "renamed"), FORGERIES)
def test_an_apps_audit_type_through_the_handler_is_renamed_and_kept_in_metadata(
        fake: FakeLoki, claimed: str, renamed: str) -> None:
    handler = LokiHandler(fake.url, service="shop", spool=False, batch_max_wait=0.05)
    log = logging.getLogger(f"shop.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.critical("forged", extra={"type": claimed})
        assert handler.flush(timeout=10)
        stats = handler.stats()
    finally:
        log.removeHandler(handler)
        handler.close()
    [stored] = _stored(fake, 1)
    labels = dict(stored.labels)
    assert labels["type"] == renamed
    assert labels["level"] == "CRITICAL"  # the app's level is kept
    assert json.loads(stored.line)["metadata"]["type"] == renamed.removeprefix("APP_")
    assert stats["type_audit_renamed"] == 1


def test_a_look_alike_of_an_audit_type_is_not_shipped_as_one() -> None:
    """A type is ASCII once normalised: a Cyrillic letter cannot make a second
    ``LOGS_DELETED`` that reads the same in Grafana."""
    assert normalize_type("LOGS_D\u0415LETED") == "LOGS_D_LETED"  # Cyrillic Ie
    assert normalize_type("CAF\u00c9") == normalize_type("caf\u00e9") == "CAF"
    assert normalize_type("\uff21\uff35\uff34\uff28_FAILED") == "AUTH_FAILED"  # fullwidth


def test_systemlog_cannot_write_an_audit_type(fake: FakeLoki) -> None:
    handler = LokiHandler(fake.url, service="shop", spool=False, batch_max_wait=0.05)
    name = f"shop.{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        slog = SystemLog(name)
        slog.admin_action("LOGS_DELETED", "admin-1", "I deleted everything",
                          metadata={"type": "bulk", "count": 3})
        slog.critical("logs_delete_cancelled", "ADMIN", "cancelled")
        assert handler.flush(timeout=10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    first, second = _stored(fake, 2)
    assert _label(first) == "APP_LOGS_DELETED"
    # the app's own metadata.type stays; the claimed type is kept beside it
    assert json.loads(first.line)["metadata"] == {"type": "bulk", "count": 3,
                                                 "original_type": "LOGS_DELETED"}
    assert _label(second) == "APP_LOGS_DELETE_CANCELLED"


def test_an_audit_event_submitted_to_an_ordinary_pipeline_is_renamed(
        fake: FakeLoki, capfd: pytest.CaptureFixture[str]) -> None:
    pipeline = Pipeline(ShipperConfig(url=fake.url, service="shop", spool=False,
                                      batch_max_wait=0.05))
    try:
        for _ in range(3):
            pipeline.submit(_event("LOGS_DELETED", actor="ADMIN"))
        assert pipeline.flush(10)
        stats = pipeline.stats()
    finally:
        pipeline.close(5)
    [stored] = _stored(fake, 1)  # three identical entries: Loki keeps one
    assert _label(stored) == "APP_LOGS_DELETED"
    assert stats["type_audit_renamed"] == 3
    err = capfd.readouterr().err
    # said once, naming the service, the type claimed and what it became
    assert err.count("audit_type") == 1, err
    assert "shop" in err and "LOGS_DELETED" in err and "APP_LOGS_DELETED" in err


def test_the_delete_commands_audit_pipeline_writes_the_audit_types(fake: FakeLoki) -> None:
    from shipper.cli.admin.delete import audit_event, log_audit

    config = ShipperConfig(url=fake.url, service="shop", spool=False, batch_max_wait=0.05)
    for type_ in ("LOGS_DELETED", "LOGS_DELETE_CANCELLED"):
        event = audit_event(event_type=type_, service="shop", admin="admin-1",
                            message=f"{type_} by admin-1", metadata={"count": 1})
        assert log_audit(config, event, timeout=10)
    types = sorted(_label(s) for s in _stored(fake, 2))
    assert types == ["LOGS_DELETED", "LOGS_DELETE_CANCELLED"]


def test_only_a_guard_built_for_audit_admits_the_audit_types() -> None:
    ordinary, audit = TypeGuard(), TypeGuard(audit=True)
    assert ordinary.admit("LOGS_DELETED", "shop") == "APP_LOGS_DELETED"
    assert audit.admit("LOGS_DELETED", "shop") == "LOGS_DELETED"
    assert audit.admit("LOGS_DELETE_CANCELLED", "shop") == "LOGS_DELETE_CANCELLED"
    # no setting turns it on: the handler's configuration has no such field
    assert not any("audit" in name for name in ShipperConfig.__dataclass_fields__)


def test_capture_logs_shows_an_apps_audit_type_renamed_as_it_would_be_shipped() -> None:
    with capture_logs("shop") as logs:
        logging.getLogger("shop").warning("deleted", extra={"type": "LOGS_DELETED"})
    [shipped] = logs.entries
    assert shipped.type == "APP_LOGS_DELETED"
    assert shipped.metadata["type"] == "LOGS_DELETED"

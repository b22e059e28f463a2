"""The ``type`` label: its normal form, the types no guard may fold, and the guard itself.

An event's type is a stream label, so every distinct value is a new stream in Loki. The
:class:`TypeGuard` keeps their number bounded **per service** (the ``service_name`` label): the
first ``limit`` distinct types of a service pass, and a further one becomes ``OTHER`` (the real
type kept in the event's metadata), so one service's made-up types never fold another's.

Two kinds of type are never folded into ``OTHER``:

* the types the alert rules (``grafana/provisioning/alerting/``) and the retention rules
  (``loki/retention.yaml``) select on: :data:`PROTECTED_TYPES` by name, and the families of
  :data:`PROTECTED_TYPE_FAMILIES` by prefix (``AUTH_*``, ...). The families have a budget of
  their own per service (``limit`` types together, apart from the other types, so made-up
  types never spend it); past it, a new type of a family becomes ``<FAMILY>OTHER``
  (``AUTH_OTHER``), which every rule on the family still selects.
  ``tests/test_type_guard.py`` fails when a rule selects a type these two do not cover.
* the deletion audit types, :data:`AUDIT_TYPES`, which only ``shipper delete`` writes: its
  pipeline is built with ``TypeGuard(audit=True)``. Every other guard renames them
  (``LOGS_DELETED`` → ``APP_LOGS_DELETED``), so no app or sidecar client can write a record
  that reads as an audit record, is kept like one, and that no deletion can remove.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import MutableMapping
from typing import Any

from shipper.line import text_of

__all__ = [
    "AUDIT_CANCEL_TYPE",
    "AUDIT_DELETE_TYPE",
    "AUDIT_TYPES",
    "CLAIMED_AUDIT_PREFIX",
    "DEFAULT_TYPE",
    "HEALTH_TYPE",
    "MAX_GUARDED_SERVICES",
    "OVERFLOW_TYPE",
    "PROTECTED_TYPES",
    "PROTECTED_TYPE_FAMILIES",
    "TypeGuard",
    "is_protected_type",
    "keep_original_type",
    "normalize_type",
]

DEFAULT_TYPE = "LOG"
OVERFLOW_TYPE = "OTHER"
#: the audit event of a deletion, written by ``shipper delete``; deletions never remove it
AUDIT_DELETE_TYPE = "LOGS_DELETED"
#: the audit event of a cancelled deletion request, written by ``shipper delete --cancel``
AUDIT_CANCEL_TYPE = "LOGS_DELETE_CANCELLED"
AUDIT_TYPES = frozenset({AUDIT_DELETE_TYPE, AUDIT_CANCEL_TYPE})
#: what an audit type written by anything but ``shipper delete`` becomes: ``APP_LOGS_DELETED``
CLAIMED_AUDIT_PREFIX = "APP_"
#: the heartbeat every pipeline ships every ``health_interval`` (the Shipping health dashboard
#: and alert rules read it; a retention rule keeps it a week)
HEALTH_TYPE = "SHIPPER_HEALTH"
#: types an alert or retention rule selects by name (and the audit types): never folded
PROTECTED_TYPES = frozenset({"HTTP_REQUEST", "PAYMENT_FAILED", "PAYMENT_SUCCEEDED",
                             HEALTH_TYPE}) | AUDIT_TYPES
#: prefixes of the type families an alert or retention rule selects (``type=~"AUTH_.+"``)
PROTECTED_TYPE_FAMILIES: tuple[str, ...] = ("AUTH_", "SECURITY_", "WEBHOOK_")
#: services a guard keeps a budget for; the services past them share one budget
MAX_GUARDED_SERVICES = 256

_MAX_TYPE_LEN = 64
_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def normalize_type(value: object) -> str:
    """Coerce an event type to UPPER_SNAKE: ``userLogin`` → ``USER_LOGIN``, ``auth.failed`` →
    ``AUTH_FAILED``; empty → ``LOG``; ASCII only (compatibility forms such as full-width
    letters are read as the letters they stand for, any other character separates words); at
    most 64 characters; never starts with a digit."""
    if value is None:
        return DEFAULT_TYPE
    if isinstance(value, str) and len(value) <= 256:
        return _normalize_type_cached(value)
    return _normalize_type(text_of(value))


@functools.lru_cache(maxsize=4096)
def _normalize_type_cached(value: str) -> str:
    return _normalize_type(value)


def _normalize_type(value: str) -> str:
    text = value.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).strip()
    if not text:
        return DEFAULT_TYPE
    if not (text.isascii() and text.isupper() and text.replace("_", "").isalnum()):
        text = _CAMEL_1.sub(r"\1_\2", text)
        text = _CAMEL_2.sub(r"\1_\2", text)
        text = _NON_WORD.sub("_", text).strip("_").upper()
    if not text:
        return DEFAULT_TYPE
    if text[0].isdigit():
        text = "T_" + text
    return text[:_MAX_TYPE_LEN].rstrip("_")


def _family(type_: str) -> int:
    """The index of the type's family in PROTECTED_TYPE_FAMILIES, or -1."""
    for index, prefix in enumerate(PROTECTED_TYPE_FAMILIES):
        if type_.startswith(prefix) and len(type_) > len(prefix):
            return index
    return -1


def is_protected_type(type_: str) -> bool:
    """True for a (normal) type that a rule selects on: by name or by its family."""
    return type_ in PROTECTED_TYPES or _family(type_) >= 0


def keep_original_type(metadata: MutableMapping[str, Any], type_: str) -> None:
    """Keep, in an event's metadata, the type the guard replaced: as ``type``, or as
    ``original_type`` when the metadata has a ``type`` of its own (which stays)."""
    key = "type" if metadata.get("type", type_) == type_ else "original_type"
    metadata.setdefault(key, type_)


class _Budget:
    """The types one service (or the services past the cap, together) has been admitted."""

    __slots__ = ("families", "general", "seen")

    def __init__(self) -> None:
        self.seen: set[str] = {DEFAULT_TYPE, OVERFLOW_TYPE}
        self.general = 0  # types counted against the limit
        self.families = 0  # types of the protected families, against a limit of their own


class TypeGuard:
    """Caps the number of distinct ``type`` label values per service (see the module's docs).

    ``admit(type_, service)`` answers the label to ship: ``type_`` itself, or ``OTHER`` (or
    ``<FAMILY>OTHER``) once the service has had ``limit`` others, or ``APP_<type>`` for an
    audit type in a guard not built with ``audit=True``. A known type costs two lookups and
    no lock. At most ``max_services`` services get a budget of their own; the services after
    them share one, so the guard's memory stays bounded whatever the input: at most
    ``(max_services + 1) * (2 * limit + len(PROTECTED_TYPE_FAMILIES) + len(PROTECTED_TYPES)
    + 2)`` type names of at most 64 characters.

    ``audit=True`` is for ``shipper delete``'s own pipeline only: no setting, environment
    variable or event field turns it on.
    """

    def __init__(self, limit: int = 100, *, audit: bool = False,
                 max_services: int = MAX_GUARDED_SERVICES) -> None:
        self.limit = limit
        self.max_services = max_services
        self._audit = audit
        self._services: dict[str, _Budget] = {}
        self._pool = _Budget()
        self._lock = threading.Lock()
        #: events whose type became OTHER (or a family's OTHER)
        self.overflowed = 0
        #: events of an audit type renamed, and the last one: (service, its type, the new one)
        self.audit_renamed = 0
        self.last_renamed: tuple[str, str, str] | None = None
        #: True once a service past ``max_services`` was seen (they share one budget)
        self.pooled = False

    @property
    def services(self) -> int:
        """The services with a budget of their own."""
        return len(self._services)

    @property
    def remembered(self) -> int:
        """The type names the guard holds, every budget together."""
        with self._lock:
            return len(self._pool.seen) + sum(len(b.seen) for b in self._services.values())

    def admit(self, type_: str, service: str = "") -> str:
        budget = self._services.get(service)
        if budget is not None and type_ in budget.seen:
            return type_
        if type_ in AUDIT_TYPES and not self._audit:
            renamed = CLAIMED_AUDIT_PREFIX + type_
            with self._lock:
                self.audit_renamed += 1
                self.last_renamed = (service, type_, renamed)
            return self.admit(renamed, service)
        with self._lock:
            return self._admit_new(type_, service, budget)

    def _admit_new(self, type_: str, service: str, budget: _Budget | None) -> str:
        if budget is None:
            budget = self._services.get(service)
            if budget is None:
                if len(self._services) < self.max_services:
                    budget = self._services[service] = _Budget()
                else:
                    budget = self._pool
                    self.pooled = True
        seen = budget.seen
        if type_ in seen:
            return type_
        if type_ in PROTECTED_TYPES:
            seen.add(type_)
            return type_
        family = _family(type_)
        if family < 0:
            if budget.general < self.limit:
                budget.general += 1
                seen.add(type_)
                return type_
            self.overflowed += 1
            return OVERFLOW_TYPE
        if budget.families < self.limit:
            budget.families += 1
            seen.add(type_)
            return type_
        self.overflowed += 1
        folded = PROTECTED_TYPE_FAMILIES[family] + OVERFLOW_TYPE
        seen.add(folded)
        return folded

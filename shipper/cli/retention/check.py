"""Does a running Loki apply the policy? ``shipper retention check``: the drift table.

:func:`check` compares Loki's effective configuration (``GET /config``, read by
:meth:`shipper.loki.client.LokiClient.loki_config`) with a
:class:`~shipper.cli.retention.policy.RetentionPolicy`, rule by rule; :func:`check_url` asks
the Loki at a URL; :func:`format_check_table` prints the rows.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipper._units import UnitError, format_duration, parse_duration
from shipper.cli.retention.policy import (
    FOREVER_PERIOD,
    RetentionError,
    RetentionPolicy,
    describe_period,
)
from shipper.config import ConfigError, ShipperConfig
from shipper.loki.client import LokiClient, LokiError, parse_config
from shipper.loki.selector import Selector, SelectorError
from shipper.redact import hide_url_credentials

__all__ = ["CheckRow", "check", "check_url", "format_check_table"]


@dataclass(frozen=True)
class CheckRow:
    """One line of the drift table."""

    selector: str
    policy: str
    live: str
    ok: bool

    @property
    def status(self) -> str:
        return "OK" if self.ok else "DRIFT"


def _live_rule_text(priority: object, period: object) -> str:
    return f"{period}, priority {priority}"


def check(policy: RetentionPolicy, live_config: Mapping[str, Any] | str) -> list[CheckRow]:
    """Compare a live Loki's configuration (``GET /config``: the parsed document, or its YAML
    text) with the policy, rule by rule.

    Durations compare by value (``720h0m0s`` is ``30d``), selectors by their matchers (order
    and spacing do not matter). Also checks that the compactor applies retention at all.
    """
    if isinstance(live_config, str):
        try:
            live_config = parse_config(live_config)
        except LokiError as exc:
            raise RetentionError(str(exc)) from exc
    live = live_config
    if not isinstance(live.get("limits_config"), Mapping):
        raise RetentionError("the live config has no limits_config: is this Loki's GET /config?")
    limits: Mapping[str, Any] = live["limits_config"]
    rows: list[CheckRow] = []

    compactor = live.get("compactor")
    enabled = compactor.get("retention_enabled") if isinstance(compactor, Mapping) else None
    rows.append(
        CheckRow("(compactor.retention_enabled)", "true", str(enabled).lower(), enabled is True)
    )

    expected_default = dt.timedelta(0) if policy.default is None else policy.default
    live_default = limits.get("retention_period")
    rows.append(
        CheckRow(
            "(default: retention_period)",
            "forever (0s)" if policy.default is None else format_duration(policy.default),
            str(live_default),
            _same_duration(live_default, expected_default),
        )
    )

    live_rules = limits.get("retention_stream") or []
    if not isinstance(live_rules, list):
        raise RetentionError("the live config's limits_config.retention_stream is not a list")
    by_key: dict[frozenset[tuple[str, str, str]], list[Mapping[str, Any]]] = {}
    unparsable: list[Mapping[str, Any]] = []
    for item in live_rules:
        if not isinstance(item, Mapping):
            raise RetentionError(f"the live config has a retention_stream item {item!r}")
        try:
            key = Selector.parse(str(item.get("selector"))).key
        except SelectorError:
            unparsable.append(item)
            continue
        by_key.setdefault(key, []).append(item)

    for rule in policy.rules:
        want = f"{describe_period(rule.period)}, priority {rule.priority}"
        if rule.period is None:
            want = f"forever (as {format_duration(FOREVER_PERIOD)}), priority {rule.priority}"
        found = by_key.pop(rule.selector.key, [])
        if not found:
            rows.append(CheckRow(str(rule.selector), want, "missing", False))
            continue
        for item in found:
            ok = item.get("priority") == rule.priority and _same_duration(
                item.get("period"), rule.loki_period
            )
            live_text = _live_rule_text(item.get("priority"), item.get("period"))
            if len(found) > 1:
                live_text += " (duplicate)"
                ok = False
            rows.append(CheckRow(str(rule.selector), want, live_text, ok))
    extra = [item for items in by_key.values() for item in items] + unparsable
    rows += [
        CheckRow(
            str(item.get("selector")),
            "not in policy",
            _live_rule_text(item.get("priority"), item.get("period")),
            False,
        )
        for item in extra
    ]
    return rows


def _same_duration(live: object, expected: dt.timedelta) -> bool:
    if not isinstance(live, str):
        return False
    try:
        return parse_duration(live) == expected
    except UnitError:
        return False


def format_check_table(rows: Iterable[CheckRow]) -> str:
    """The drift table: selector, policy, live, OK/DRIFT."""
    table = [("SELECTOR", "POLICY", "LIVE", "STATUS")]
    table += [(r.selector, r.policy, r.live, r.status) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        + "\n"
        for row in table
    )


def check_url(policy: RetentionPolicy, url: str | ShipperConfig,
              timeout: float = 10.0) -> list[CheckRow]:
    """:func:`check` against the Loki at ``url`` (its base URL, e.g. http://localhost:3100),
    asked through the shipper's Loki client (so ``LOKI_TENANT``, ``LOKI_USERNAME`` /
    ``LOKI_PASSWORD``, ``LOKI_BEARER_TOKEN`` and ``LOKI_CA_BUNDLE`` apply as for pushes); or
    with a loaded configuration, its URL and credentials as they are."""
    if isinstance(url, ShipperConfig):
        config: ShipperConfig | None = url
        url = url.url or ""
    else:
        config = None
    base = url.strip().rstrip("/")
    shown = hide_url_credentials(base)
    if not re.match(r"https?://[^/\s]+", base):
        raise RetentionError(f"--url {shown!r}: expected Loki's base URL, like http://localhost:3100")
    try:
        client = LokiClient(config or ShipperConfig.load(url=base, timeout=timeout, spool=False))
    except ConfigError as exc:
        raise RetentionError(f"cannot talk to Loki at {shown}: {exc}") from exc
    try:
        live = client.loki_config()
    except LokiError as exc:
        if exc.kind == "unreachable":
            raise RetentionError(f"cannot reach Loki at {shown}: {exc}") from exc
        raise RetentionError(str(exc)) from exc
    finally:
        client.close()
    return check(policy, live)

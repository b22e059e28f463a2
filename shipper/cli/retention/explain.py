"""Which retention rule decides a stream, and when its entries go: ``shipper retention
explain``.

:func:`explain` evaluates a :class:`~shipper.cli.retention.policy.RetentionPolicy` for one
label set the way Loki's compactor does (``RetentionPeriodFor``: the highest priority wins, on
equal priority the shorter period), and :class:`Explanation` says so in words.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from shipper._units import format_duration
from shipper.cli.retention.policy import (
    FOREVER_PERIOD,
    FOREVER_PRIORITY,
    STREAM_LABELS,
    RetentionError,
    RetentionPolicy,
    RetentionRule,
    describe_period,
)
from shipper.delivery.labels import LabelSyntaxError, parse_labels
from shipper.event import Actor, Level
from shipper.loki.logql import quote

__all__ = ["Explanation", "explain"]

_LEVELS: Final = tuple(lvl.value for lvl in Level)
_ACTORS: Final = tuple(a.value for a in Actor)


@dataclass(frozen=True)
class Explanation:
    """Which rule decides the retention of a stream with ``labels``, and why."""

    labels: tuple[tuple[str, str], ...]
    matched: tuple[RetentionRule, ...]
    winner: RetentionRule | None
    period: dt.timedelta | None  # None: forever
    reason: str
    notes: tuple[str, ...]

    @property
    def forever(self) -> bool:
        return self.period is None

    def deleted_after(self, timestamp: dt.datetime) -> dt.datetime | None:
        """The moment an entry stamped ``timestamp`` becomes eligible for deletion (None:
        never, by retention)."""
        return None if self.period is None else timestamp + self.period

    def describe(self, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        label_text = "{" + ", ".join(f"{k}={quote(v)}" for k, v in self.labels) + "}"
        lines = [f"labels:   {label_text}"]
        if self.matched:
            lines.append("matching rules:")
            for rule in self.matched:
                mark = "  <- wins" if rule is self.winner else ""
                lines.append(f"  {rule.describe()}{mark}")
        else:
            lines.append("matching rules: none")
        lines.append(f"decision: {self.reason}")
        if self.period is None:
            if self.winner is not None:
                lines.append(
                    "deleted:  in effect never. Loki cannot write forever in retention_stream "
                    "(periods must be >= 24h, 0s is refused), so this rule is rendered as "
                    f"{format_duration(FOREVER_PERIOD)} at priority {FOREVER_PRIORITY}, which no "
                    "other rule may use: retention would delete such an entry "
                    f"{format_duration(FOREVER_PERIOD)} after its timestamp. Only a deletion "
                    "request (POST /loki/api/v1/delete) removes it sooner."
                )
            else:
                lines.append(
                    "deleted:  never by retention (retention_period 0s); only a deletion "
                    "request (POST /loki/api/v1/delete) removes it."
                )
        else:
            due = now + self.period
            lines.append(
                f"deleted:  {format_duration(self.period)} after the entry's timestamp (one "
                f"written now: from {due:%Y-%m-%d %H:%M} UTC), at the compactor's next "
                "retention run plus retention_delete_delay. Loki deletes whole chunks, judged "
                "by the chunk's newest entry, so an entry can outlive its period by its "
                "chunk's time span."
            )
        lines += [f"note:     {note}" for note in self.notes]
        return "".join(
            textwrap.fill(line, width=100, subsequent_indent=" " * 10, break_on_hyphens=False)
            + "\n"
            for line in lines
        )


def explain(policy: RetentionPolicy, labels: Mapping[str, str] | str) -> Explanation:
    """Evaluate the policy for one stream the way Loki's compactor does."""
    if isinstance(labels, str):
        try:
            stream = parse_labels(labels, empty=False)
        except LabelSyntaxError as exc:
            raise RetentionError(str(exc)) from None
    else:
        stream = dict(labels)
    matched = tuple(rule for rule in policy.rules if rule.selector.matches(stream))
    winner: RetentionRule | None = None
    for rule in matched:  # Loki's RetentionPeriodFor, rule by rule
        if winner is not None:
            if winner.priority > rule.priority:
                continue
            if winner.priority == rule.priority and winner.loki_period <= rule.loki_period:
                continue
        winner = rule
    if winner is None:
        period = policy.default
        reason = (
            "no retention_stream rule matches, so retention_period applies: the default, "
            f"{describe_period(policy.default)}"
        )
    else:
        period = winner.period
        rivals = [r for r in matched if r is not winner]
        tied = [r for r in rivals if r.priority == winner.priority]
        if not rivals:
            reason = f"{winner.name} is the only matching rule"
        elif tied:
            reason = (
                f"{winner.name} shares the highest priority ({winner.priority}) with "
                f"{', '.join(r.name for r in tied)}; on equal priority Loki keeps the shorter "
                "period"
            )
        else:
            reason = (
                f"{winner.name} has the highest priority ({winner.priority}) of the "
                f"{len(matched)} matching rules"
            )
        reason += f": {describe_period(period)}"
    return Explanation(
        labels=tuple(stream.items()),
        matched=matched,
        winner=winner,
        period=period,
        reason=reason,
        notes=tuple(_label_notes(stream)),
    )


def _label_notes(labels: Mapping[str, str]) -> Iterable[str]:
    extra = [name for name in labels if name not in STREAM_LABELS]
    if extra:
        yield (
            f"{', '.join(extra)} is not a stream label of the shipper ({', '.join(STREAM_LABELS)})"
        )
    level = labels.get("level")
    if level is None:
        yield "no level label: no per-level rule can match"
    elif level not in _LEVELS:
        yield f"level {level!r} is not one the shipper sends ({', '.join(_LEVELS)})"
    actor = labels.get("actor")
    if actor is not None and actor not in _ACTORS:
        yield f"actor {actor!r} is not one the shipper sends ({', '.join(_ACTORS)})"

"""LogQL stream selectors: parsed, checked and evaluated against a stream's labels as Loki does.

``{level="INFO", type=~"AUTH_.*", env!="dev"}`` becomes a :class:`Selector` of
:class:`Matcher` values. The text is read by :func:`shipper.delivery.labels.parse_matchers`
(the one reader of label text); this module adds what makes it a selector Loki accepts: at
least one matcher, and regexes that RE2, Loki's regex engine, can run. Evaluation follows
Loki: a missing label reads as the empty string and a regex must match the whole value.
Written back with :func:`str`, every value is quoted by :func:`shipper.loki.logql.quote`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from shipper.delivery.labels import LabelSyntaxError, parse_matchers
from shipper.loki.logql import quote

__all__ = ["Matcher", "Selector", "SelectorError"]

# RE2 (Go, and so Loki) has no lookaround, backreferences or atomic groups.
_NOT_RE2 = re.compile(r"\(\?(?:=|!|<=|<!|>|P=)|\\[1-9]")


class SelectorError(ValueError):
    """A stream selector Loki would refuse: bad syntax, no matcher, or a regex RE2 cannot
    run. The message quotes the selector and says what is wrong."""


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    # Prometheus anchors label regexes at both ends and lets "." match a newline.
    return re.compile(pattern, re.DOTALL)


def _check_regex(pattern: str, where: str) -> None:
    if _NOT_RE2.search(pattern):
        raise SelectorError(
            f"{where}: regex {pattern!r} uses lookaround, a backreference or an atomic group, "
            "which Loki's regex engine (RE2) does not support"
        )
    try:
        _regex(pattern)
    except re.error as exc:
        raise SelectorError(f"{where}: invalid regex {pattern!r}: {exc}") from exc


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``name`` ``op`` ``value`` with op ``=``, ``!=``, ``=~`` or ``!~``.

    A missing label reads as the empty string, and regexes are anchored at both ends, as in
    Loki (``{type=~"AUTH"}`` does not match ``AUTH_LOGIN``).
    """

    name: str
    op: str
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = _regex(self.value).fullmatch(value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{quote(self.value)}"


@dataclass(frozen=True)
class Selector:
    """A stream selector: matchers that must all match (a missing label reads as "")."""

    matchers: tuple[Matcher, ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``{name op "value", ...}``; checks the syntax and every regex."""
        try:
            found = parse_matchers(text, empty=False)
        except LabelSyntaxError as exc:
            raise SelectorError(str(exc)) from None
        matchers = tuple(Matcher(name, op, value) for name, op, value in found)
        for m in matchers:
            if m.op in ("=~", "!~"):
                _check_regex(m.value, f"selector {text!r}")
        return cls(matchers)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    @property
    def key(self) -> frozenset[tuple[str, str, str]]:
        """Identity regardless of matcher order: ``{a="1",b="2"}`` is ``{b="2", a="1"}``."""
        return frozenset((m.name, m.op, m.value) for m in self.matchers)

    def __str__(self) -> str:
        return "{" + ", ".join(str(m) for m in self.matchers) + "}"

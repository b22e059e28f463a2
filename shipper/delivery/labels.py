"""Loki's label text, read in one place: ``{name="value", ...}``.

Loki, Prometheus and every Loki client write a stream's labels this way (a label set), and a
LogQL stream selector is written the same way with four operators
(``{level=~"ERROR|CRITICAL", env!="dev"}``). The values are Go string literals: double-quoted
with Go's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\x41``, ``\\u00e9``, ``\\101``) or a
`` `raw` `` string. This module reads that text for the whole project:

* :func:`parse_labels`: a label set, ``=`` only: what Promtail and Alloy put in a protobuf
  push, what Loki prints when it refuses entries, what ``shipper retention explain`` is given;
* :func:`parse_matchers`: the matchers of a stream selector, which
  :class:`shipper.loki.selector.Selector` evaluates.

It sits with the delivery engine because the engine reads the streams Loki names in its
refusals (:func:`shipper.delivery.push.refused_entries`), and the engine imports nothing of
``shipper.loki``; the readers of Loki and the sidecar import it from here. Writing a LogQL
string is :func:`shipper.loki.logql.quote`'s job.
"""

from __future__ import annotations

import re
import string
from typing import Final

__all__ = ["OPERATORS", "LabelSyntaxError", "parse_labels", "parse_matchers"]

#: The matcher operators, longest first (the order they are tried in).
OPERATORS: Final = ("=~", "!~", "!=", "=")

# Loki's label names are [A-Za-z_][A-Za-z0-9_]*; some clients push dotted names, which the
# sidecar keeps as metadata, so a dot is read too.
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PLAIN = re.compile(r'[^"\\\n]*')
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}
_HEX_ESCAPE_SIZES: Final = {"x": 2, "u": 4, "U": 8}
_EXAMPLES: Final = {
    "selector": 'a stream selector like {level="INFO", type=~"AUTH_.*"}',
    "label set": 'a label set like {level="INFO", actor="USER"}',
}


class LabelSyntaxError(ValueError):
    """Label text that cannot be read; the message quotes the text and says where and why."""


def parse_matchers(text: str, *, what: str = "selector",
                   empty: bool = True) -> tuple[tuple[str, str, str], ...]:
    """``{name op "value", ...}`` → ``(name, op, value)`` in the order written, ``op`` one of
    :data:`OPERATORS`; ``{}`` gives none, or is refused when not ``empty``. ``what``
    (``selector`` or ``label set``) names the text in error messages. Nothing may follow the
    closing brace."""
    return _Reader(text, what).matchers(empty)


def parse_labels(text: str, *, empty: bool = True) -> dict[str, str]:
    """A label set → a dict: ``{a="1", b="x\\"y"}`` → ``{"a": "1", "b": 'x"y'}``; ``{}`` is
    empty, or refused when not ``empty``. Every label is written with ``=``, once."""
    labels: dict[str, str] = {}
    for name, op, value in parse_matchers(text, what="label set", empty=empty):
        if op != "=":
            raise LabelSyntaxError(
                f"label set {text!r}: {name}{op}... is a matcher, not a label; write the "
                'stream\'s labels with = only, e.g. {level="INFO", actor="USER"}'
            )
        if name in labels:
            raise LabelSyntaxError(f"label set {text!r}: label {name!r} is given twice")
        labels[name] = value
    return labels


class _Reader:
    """One pass over ``{name op "value", ...}`` with Go string literals."""

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.pos = 0

    def fail(self, why: str) -> LabelSyntaxError:
        shown = self.text[self.pos : self.pos + 12] or "end of text"
        return LabelSyntaxError(
            f"{self.what} {self.text!r}: {why} at position {self.pos} (at {shown!r}); "
            f"expected {_EXAMPLES.get(self.what, _EXAMPLES['selector'])}"
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def take(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def matchers(self, empty: bool) -> tuple[tuple[str, str, str], ...]:
        self.skip_ws()
        if not self.take("{"):
            raise self.fail("missing '{'")
        found: list[tuple[str, str, str]] = []
        self.skip_ws()
        if self.text.startswith("}", self.pos) and not empty:
            raise self.fail("no matcher (Loki needs at least one)" if self.what == "selector"
                            else "no label (Loki needs at least one)")
        if not self.take("}"):
            while True:
                self.skip_ws()
                found.append(self.matcher())
                self.skip_ws()
                if self.take(","):
                    continue
                if self.take("}"):
                    break
                raise self.fail("expected ',' or '}'")
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected text after '}}' (only a {self.what} is allowed)")
        return tuple(found)

    def matcher(self) -> tuple[str, str, str]:
        name = _LABEL_NAME.match(self.text, self.pos)
        if name is None:
            raise self.fail("expected a label name")
        self.pos = name.end()
        self.skip_ws()
        for op in OPERATORS:
            if self.take(op):
                break
        else:
            raise self.fail(f"expected =, !=, =~ or !~ after {name.group()!r}")
        self.skip_ws()
        return name.group(), op, self.string()

    def string(self) -> str:
        if self.take("`"):
            end = self.text.find("`", self.pos)
            if end < 0:
                raise self.fail("unterminated `raw string`")
            value = self.text[self.pos : end]
            self.pos = end + 1
            return value
        if not self.take('"'):
            raise self.fail("expected a quoted value")
        out: list[str] = []
        while True:
            plain = _PLAIN.match(self.text, self.pos)
            if plain is not None and plain.end() > self.pos:
                out.append(plain.group())
                self.pos = plain.end()
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\n":
                raise self.fail("newline inside a string")
            out.append(self.escape())

    def escape(self) -> str:
        if self.pos >= len(self.text):
            raise self.fail("unterminated escape")
        ch = self.text[self.pos]
        if ch in _SIMPLE_ESCAPES:
            self.pos += 1
            return _SIMPLE_ESCAPES[ch]
        if ch in _HEX_ESCAPE_SIZES:
            size = _HEX_ESCAPE_SIZES[ch]
            digits = self.text[self.pos + 1 : self.pos + 1 + size]
            valid = len(digits) == size and all(c in string.hexdigits for c in digits)
            base, consumed = 16, 1 + size
        elif ch in string.octdigits:
            digits = self.text[self.pos : self.pos + 3]
            valid = len(digits) == 3 and all(c in string.octdigits for c in digits)
            base, consumed = 8, 3
        else:
            raise self.fail(
                f"invalid escape \\{ch} (LogQL strings are Go strings: write \\\\{ch} for a "
                "literal backslash, e.g. \\\\. for a literal dot in a regex)"
            )
        if not valid:
            raise self.fail(f"malformed escape \\{ch}")
        code = int(digits, base)
        if ch not in "uU" and code > 0x7F:
            raise self.fail("byte escape above \\x7f (write the character itself)")
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise self.fail(f"escape \\{ch}{digits if ch in 'uU' else ''} is not a character")
        self.pos += consumed
        return chr(code)

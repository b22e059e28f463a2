"""JSON from clients, read with a bound on nesting: what is nested deeper is kept as its text.

``json.loads`` recurses once per level and raises ``RecursionError`` at about 1,000 levels; and
everything after it (reading fields, redacting, encoding the line) recurses too. So the
sidecar's HTTP source reads every body and every pushed line with :func:`load_json`: a value
nested deeper than ``max_depth`` (the outermost object or array is level 1) comes back as its
text exactly as it was sent: a ``str``, or a :class:`DeepJson` (a ``str`` that says so) for a
reader that must tell it from a string the client sent; or :class:`NestedTooDeep` is raised,
for a reader that ships the whole text as it is. An integer too long for Python's ``int``
(over 4,300 digits) comes back as its digits, a ``str``. Everything else is what
``json.loads`` gives (``NaN`` and ``Infinity`` included).

The common case costs one ``json.loads``, plus one walk over the containers it made when the
text holds more brackets than ``max_depth``. Only a text that really is too deep (or holds such
an integer) is read again, by a small iterative parser built on the standard library's own
string and number scanners.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import JSONDecodeError
from json.scanner import NUMBER_RE
from typing import Any

#: the standard library's string reader (C): the text after an opening quote → (str, end)
scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

__all__ = ["DeepJson", "NestedTooDeep", "load_json", "open_deep"]


class DeepJson(str):
    """The text of a JSON object or array nested deeper than the bound, as it was sent."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        """``object`` or ``array``: what the text holds."""
        return "object" if self[:1] == "{" else "array"


class NestedTooDeep(ValueError):
    """The text nests deeper than the bound (raised when no ``keep`` is given)."""


def load_json(data: bytes | str, max_depth: int,
              keep: Callable[[str], Any] | None = str, *, walk: bool = True) -> Any:
    """``json.loads(data)``, with each value nested deeper than ``max_depth`` replaced by
    ``keep(its text)`` (``str`` or :class:`DeepJson`), or :class:`NestedTooDeep` raised when
    ``keep`` is None; raises ``ValueError`` (``JSONDecodeError``, ``UnicodeDecodeError``) for
    what is not JSON.

    ``walk=False`` is for a reader that checks the type of every value it takes, and so never
    recurses into what it was not promised: the text is then bounded only where ``json.loads``
    cannot read it (about 1,000 levels), and the walk over what it made is saved."""
    text = data if isinstance(data, str) else \
        data.decode(json.detect_encoding(data), "surrogatepass")
    try:
        doc = json.loads(text)
    except RecursionError:
        if keep is None:
            raise NestedTooDeep(f"nested deeper than {max_depth} levels") from None
        return _Parser(text, max_depth, keep).document()
    except JSONDecodeError:
        raise
    except ValueError as exc:  # an integer of more digits than int() converts
        if "integer string conversion" not in str(exc):
            raise  # pragma: no cover - json.loads raises no other ValueError on a str
        return _Parser(text, max_depth, keep).document()
    if walk and (doc.__class__ is dict or doc.__class__ is list) and \
            text.count("[") + text.count("{") > max_depth and _deeper(doc, max_depth):
        if keep is None:
            raise NestedTooDeep(f"nested deeper than {max_depth} levels")
        return _Parser(text, max_depth, keep).document()
    return doc


def open_deep(value: Any) -> Any:
    """A :class:`DeepJson` opened one level (its members :class:`DeepJson` in turn), for a
    reader that must see a structure's shape; any other value as it is."""
    if value.__class__ is DeepJson:
        return load_json(value, 1, DeepJson)
    return value


def _deeper(doc: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether ``doc`` (level 1) holds a container at a level past ``limit``."""
    level: list[Any] = [doc]
    for _ in range(limit):
        below: list[Any] = []
        for container in level:
            below += [value for value in
                      (container.values() if container.__class__ is dict else container)
                      if value.__class__ is dict or value.__class__ is list]
        if not below:
            return False
        level = below
    return True


_WS = re.compile(r"[ \t\n\r]*")
#: inside a value skipped as text: the next quote, a flat pair of brackets or a run of them
_NEXT = re.compile(r'"|\[[^"\[\]{}]*\]|\{[^"\[\]{}]*\}|[\[{]+|[\]}]+')
#: the rest of a string after its opening quote (escapes skipped, not decoded)
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_CLOSER = str.maketrans("[{", "]}")
_CLOSE_OF = {"[": "]", "{": "}"}
_CONSTANTS: dict[str, Any] = {"null": None, "true": True, "false": False,
                              "NaN": float("nan"), "Infinity": float("inf"),
                              "-Infinity": float("-inf")}


class _Parser:
    """An iterative JSON reader: no recursion, whatever the depth of the text."""

    def __init__(self, text: str, max_depth: int, keep: Callable[[str], Any] | None) -> None:
        self.text = text
        self.max_depth = max_depth
        self.keep = keep

    def fail(self, message: str, pos: int) -> JSONDecodeError:
        return JSONDecodeError(message, self.text, pos)

    def document(self) -> Any:
        text = self.text
        # each open container with the key its next value goes under (None in an array)
        stack: list[tuple[dict[str, Any] | list[Any], str | None]] = []
        pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
        while True:
            value, pos, opened = self.value(pos, len(stack))
            if opened is not None:  # a container with at least one member: read it next
                stack.append(opened)
                continue
            while True:  # the value is whole: put it in its container, then look past it
                if not stack:
                    end = _WS.match(text, pos).end()  # type: ignore[union-attr]
                    if end != len(text):
                        raise self.fail("Extra data", end)
                    return value
                container, key = stack[-1]
                if key is None:
                    container.append(value)  # type: ignore[union-attr]
                else:
                    container[key] = value  # type: ignore[call-overload]
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                char = text[pos:pos + 1]
                if char == ",":
                    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                    if key is not None:
                        key, pos = self.key(pos)
                        stack[-1] = (container, key)
                    break
                if char == ("]" if key is None else "}"):
                    stack.pop()
                    value = container
                    pos += 1
                    continue
                raise self.fail("Expecting ',' delimiter", pos)

    def value(self, pos: int, depth: int) -> tuple[Any, int, Any]:
        """The value at ``pos``: (value, end, None), or for a container that has members
        (its empty self, the position of its first member, the stack entry to push)."""
        text = self.text
        char = text[pos:pos + 1]
        if char == '"':
            return (*scanstring(text, pos + 1, True), None)
        if char in ("[", "{"):
            if depth >= self.max_depth:
                if self.keep is None:
                    raise NestedTooDeep(f"nested deeper than {self.max_depth} levels")
                end = self.skip(pos)
                return self.keep(text[pos:end]), end, None
            inner = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if char == "[":
                if text[inner:inner + 1] == "]":
                    return [], inner + 1, None
                array: list[Any] = []
                return array, inner, (array, None)
            if text[inner:inner + 1] == "}":
                return {}, inner + 1, None
            obj: dict[str, Any] = {}
            key, inner = self.key(inner)
            return obj, inner, (obj, key)
        number = NUMBER_RE.match(text, pos)
        if number is not None:
            integer, frac, exp = number.groups()
            if frac or exp:
                return float(integer + (frac or "") + (exp or "")), number.end(), None
            return _int(integer), number.end(), None
        for word, constant in _CONSTANTS.items():
            if text.startswith(word, pos):
                return constant, pos + len(word), None
        raise self.fail("Expecting value", pos)

    def key(self, pos: int) -> tuple[str, int]:
        """A member's name and the position of its value."""
        text = self.text
        if text[pos:pos + 1] != '"':
            raise self.fail("Expecting property name enclosed in double quotes", pos)
        key, pos = scanstring(text, pos + 1, True)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos:pos + 1] != ":":
            raise self.fail("Expecting ':' delimiter", pos)
        return key, _WS.match(text, pos + 1).end()  # type: ignore[union-attr]

    def skip(self, pos: int) -> int:
        """The end of the object or array that starts at ``pos``: its brackets matched,
        strings stepped over, runs of brackets (and flat pairs) taken at once."""
        text = self.text
        search = _NEXT.search
        opened: list[str] = []
        push = opened.append
        pop = opened.pop
        at = pos
        while True:
            match = search(text, at)
            if match is None:
                raise self.fail("Unterminated object or array", pos)
            token = match.group()
            at = match.end()
            first = token[0]
            if first == '"':
                rest = _STRING_REST.match(text, at)
                if rest is None:
                    raise self.fail("Unterminated string starting at", match.start())
                at = rest.end()
            elif first in "[{":
                if len(token) == 1:
                    push(first)
                elif token[-1] == "]" or token[-1] == "}":
                    if not opened:  # pragma: no cover - skip() starts on an opening bracket
                        return at
                else:
                    opened.extend(token)
            elif len(token) == 1 and opened:
                if _CLOSE_OF[pop()] != first:
                    raise self.fail(f"Expecting '{_CLOSE_OF[opened[-1] if opened else '[']}'",
                                    match.start())
                if not opened:
                    return at
            else:
                n = min(len(token), len(opened))
                expected = "".join(reversed(opened[len(opened) - n:])).translate(_CLOSER)
                if not n or token[:n] != expected:
                    bad = next((i for i in range(n) if token[i] != expected[i]), 0)
                    raise self.fail("Unbalanced object or array", match.start() + bad)
                del opened[len(opened) - n:]
                if not opened:
                    return match.start() + n


def _int(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:  # more digits than int() converts: kept as they were written
        return digits

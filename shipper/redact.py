"""Masks secrets in an event before anything leaves the process.

The pipeline runs :meth:`Redactor.redact_event` on every event (from the logging handler and from
the sidecar alike) on its background thread, before the event is encoded. What is masked:

* **Values under secret-looking keys**, at any depth of ``metadata``: a key matches when, lower
  cased and with ``-``, ``_``, ``.`` and spaces removed, it *contains* one of the configured keys
  (``X-Api-Key``, ``db_password``, ``sessionid``, ``Set-Cookie`` all match). The whole value
  becomes ``[REDACTED]``, whatever its type, except ``None`` and booleans, which cannot carry a
  secret. Matching by substring errs on the safe side: ``max_tokens`` is masked too.
* **Secrets inside text** (messages, exception text, string values, bytes, and the ``repr`` of
  any other object): ``password=...`` / ``"token": "..."`` / ``Authorization: Basic ...`` pairs
  whose key matches, ``Bearer <token>``, JSON Web Tokens, the password in
  ``scheme://user:password@host`` URLs, PEM private-key blocks, payment card numbers and,
  when enabled, e-mail addresses.
* **Card numbers**: 13 to 19 digits, optionally grouped by spaces or dashes, that pass the Luhn
  check and start with 2-6 (the ranges card networks issue from: Visa, Mastercard, Amex,
  Discover, JCB, Diners, UnionPay, Maestro), so epoch timestamps in ms or ns, which start
  with 1, are never taken for cards; nor are digits glued to letters (hex ids, tokens) or
  the digit groups of a UUID. They become ``[CARD ****4242]`` (the last four digits kept).
  Numbers stored as ``int`` are not inspected; put them under a secret key (``card_number``).

Redaction never raises: a value it cannot process is replaced by ``[REDACTED: unreadable]``
rather than let through, and only that value: the message, the exception text and the rest
of the metadata are redacted as usual. It is fast on ordinary events: every key verdict is
cached and a string is only searched by a pattern when a cheap check shows it could match.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from shipper.event import LogEvent, text_of

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "MASK",
    "Redactor",
    "hide_url_credentials",
    "redact_text",
    "redact_value",
]

#: Keys (matched as substrings of normalised metadata keys and of ``key=value`` names in text)
#: whose values are always masked.
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "api_key",
    "access_key",
    "private_key",
    "credential",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "jwt",
    "card_number",
    "cvv",
    "cvc",
)

MASK = "[REDACTED]"
_UNREADABLE = "[REDACTED: unreadable]"
_MAX_DEPTH = 16
_KEY_CACHE_SIZE = 4096
#: types whose ``repr``/``str`` cannot carry a secret: kept as they are
_SAFE_TYPES = (_dt.date, _dt.time, _dt.timedelta, decimal.Decimal, uuid.UUID, enum.Enum)

_SCALARS = frozenset({int, float, bool, type(None)})
_KEY_SEPARATORS = str.maketrans("", "", "-_. ")

# ``key = value`` / ``"key": "value"`` in text. The key is found first (anchored at the start
# of a word, so scanning is linear); its value is only consumed when the key is a secret one.
_KV_KEY = re.compile(r"""(?<![\w.\-])(["']?)([A-Za-z_][\w.\-]{0,63})\1\s*[:=]\s*""")
_KV_VALUE = re.compile(
    r"""(?P<dq>"(?:[^"\\\n]|\\.)*")"""
    r"""|(?P<sq>'(?:[^'\\\n]|\\.)*')"""
    r"""|(?:(?P<scheme>bearer|basic|digest|token|bot)\s+)?"""
    r"""(?P<bare>[^\s"',;&<>(){}\[\]][^\s"',;&<>(){}]*)""",
    re.IGNORECASE,
)
_BEARER = re.compile(
    r"\b(bearer)(\s+)(?=[A-Za-z]*[0-9\-._~+/=]|[A-Za-z]{20})[A-Za-z0-9\-._~+/]+=*",
    re.IGNORECASE,
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*")
#: ``scheme://userinfo@`` of a URL in text: the userinfo runs to the last ``@`` before the first
#: ``/`` or blank, so a password with an unencoded ``@``, ``?`` or ``#`` is still all of it
_URL_USERINFO = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/]*)@")
_PEM_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
#: a card number: digits not glued to letters or digits on either side (hex ids, tokens) and
#: not followed by a dash and more of an identifier; UUIDs are matched first, as a whole, and
#: kept (their all-digit groups could otherwise pass for a grouped card)
_CARD = re.compile(
    r"(?P<uuid>(?<![0-9A-Za-z])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}"
    r"-[0-9A-Fa-f]{12}(?![0-9A-Za-z]))"
    r"|(?<![0-9A-Za-z.])[2-6](?:[ \-]?[0-9]){12,18}(?![0-9A-Za-z]|-[0-9A-Za-z])"
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})+"
)


def _normalise_key(key: str) -> str:
    return key.lower().translate(_KEY_SEPARATORS)


#: digits → "0", every other byte → "x"; spaces and dashes are deleted before the lookup
_DIGIT_MAP = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_THIRTEEN_DIGITS = b"0" * 13


def _may_hold_card(text: str) -> bool:
    """A cheap test (about 0.3 µs for a line) for 13+ digits separated by nothing but spaces and
    dashes: only text that passes is searched with the card pattern."""
    data = text.encode("utf-8", "surrogatepass").translate(_DIGIT_MAP, b" -")
    # find, not ``in``: ``in`` on bytes first tries its operand as an int, and that costs
    # more than the search
    return data.find(_THIRTEEN_DIGITS) >= 0


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.lastgroup == "uuid":
        return text
    digits = text.replace(" ", "").replace("-", "")
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return f"[CARD ****{digits[-4:]}]"
    return text


class Redactor:
    """Masks secrets in events, values and text; see the module documentation for the rules.

    ``keys`` are added to :data:`DEFAULT_REDACT_KEYS` (pass ``include_defaults=False`` to use
    only your own). ``emails=True`` also masks e-mail addresses in text. ``extra_patterns``
    are regular expressions (strings or compiled) whose every match becomes ``[REDACTED]``.
    Instances are thread-safe and meant to be shared.
    """

    def __init__(
        self,
        keys: Iterable[str] = (),
        emails: bool = False,
        extra_patterns: Iterable[str | re.Pattern[str]] = (),
        *,
        include_defaults: bool = True,
    ) -> None:
        if isinstance(keys, str):
            raise TypeError(f"keys: expected a list of key names, got the string {keys!r}")
        names = (*DEFAULT_REDACT_KEYS, *keys) if include_defaults else tuple(keys)
        normalised: list[str] = []
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"keys: expected strings, got {name!r}")
            norm = _normalise_key(name)
            if not norm:
                raise ValueError(
                    f"keys: {name!r} is empty once '-', '_', '.' and spaces are removed"
                )
            if norm not in normalised:
                normalised.append(norm)
        self.keys: tuple[str, ...] = tuple(normalised)
        self.emails = bool(emails)
        patterns: list[re.Pattern[str]] = []
        if isinstance(extra_patterns, (str, re.Pattern)):
            extra_patterns = (extra_patterns,)
        for pattern in extra_patterns:
            if isinstance(pattern, re.Pattern):
                patterns.append(pattern)
                continue
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(
                    f"extra_patterns: expected a non-empty regular expression, got {pattern!r}"
                )
            try:
                patterns.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(
                    f"extra_patterns: {pattern!r} is not a valid regular expression: {exc}"
                ) from None
        self.extra_patterns: tuple[re.Pattern[str], ...] = tuple(patterns)
        self._key_cache: dict[str, bool] = {}

    @classmethod
    def from_config(cls, config: Any) -> Redactor:
        """The redactor a :class:`~shipper.config.ShipperConfig` asks for (``redact_keys`` on
        top of the defaults, ``redact_emails``)."""
        return cls(keys=tuple(config.redact_keys), emails=bool(config.redact_emails))

    def __repr__(self) -> str:
        return (f"Redactor(keys={list(self.keys)!r}, emails={self.emails}, "
                f"extra_patterns={[p.pattern for p in self.extra_patterns]!r})")

    # ------------------------------------------------------------------ public

    def is_secret_key(self, key: object) -> bool:
        """True when values under ``key`` are masked."""
        name = key if isinstance(key, str) else text_of(key)
        hit = self._key_cache.get(name)
        if hit is None:
            norm = _normalise_key(name)
            hit = False
            for secret in self.keys:
                if secret in norm:
                    hit = True
                    break
            if len(self._key_cache) < _KEY_CACHE_SIZE:
                self._key_cache[name] = hit
        return hit

    def redact_text(self, text: str) -> str:
        """``text`` with every secret it contains masked (the same object when there is none)."""
        try:
            return self._text(text if isinstance(text, str) else str(text))
        except Exception:
            return _UNREADABLE

    def redact_value(self, value: Any) -> Any:
        """A copy of ``value`` with secrets masked: mappings, lists, tuples and sets are walked
        (sets and tuples come back as lists when something changed), bytes are decoded, strings
        searched, other objects replaced by their redacted ``repr``. Cycles become ``<cycle>``.
        Unchanged values are returned as they are."""
        try:
            return self._walk(value, 0, set())
        except Exception:
            return _UNREADABLE

    def clean_texts(self, texts: list[str]) -> list[bool]:
        """For each group of up to :data:`CLEAN_GROUP` consecutive texts, whether none of them
        can hold anything :meth:`redact_text` masks (True: they need no redaction).

        One pass over the group's texts joined by newlines, with the same cheap tests
        :meth:`redact_text` starts with: whatever one text triggers, the joined text triggers
        too, so a group found clean is clean text by text. A group that fails (or holds a
        non-string) is simply redacted text by text. With ``extra_patterns`` (which may be
        anchored) nothing is found clean."""
        groups: list[bool] = []
        if self.extra_patterns:
            return [False] * -(-len(texts) // CLEAN_GROUP)
        for start in range(0, len(texts), CLEAN_GROUP):
            try:
                joined = "\n".join(texts[start:start + CLEAN_GROUP])
            except TypeError:
                groups.append(False)
                continue
            groups.append(not self._may_need_masking(joined))
        return groups

    def clean_events(self, events: Sequence[LogEvent]) -> list[bool]:
        """:meth:`clean_texts` for events: for each group of up to :data:`CLEAN_GROUP`
        events, whether :meth:`redact_event` would return every one of them unchanged.

        The group's metadata keys are looked up once; its messages, exception texts and
        metadata (as one JSON array, which shows every key and string they hold) are tested
        together. Metadata holding anything but JSON's own types (objects, bytes, sets,
        non-string keys: what the walk would turn into text) makes its group go through
        :meth:`redact_event` event by event."""
        if self.extra_patterns:
            return [False] * -(-len(events) // CLEAN_GROUP)
        groups: list[bool] = []
        dumps = orjson.dumps
        secret = self.is_secret_key
        for start in range(0, len(events), CLEAN_GROUP):
            group = events[start:start + CLEAN_GROUP]
            try:
                metadatas = [event.metadata for event in group]
                texts = [event.message for event in group]
                texts += [event.exception for event in group if event.exception]
                # one orjson call and C-level walks for the whole group, not a step per event
                texts.append(dumps(metadatas, default=_refuse, option=_PLAIN_JSON).decode())
                joined = "\n".join(texts)
                # dicts only: the counts below take one '{' and len() ':' for each
                if list(map(type, metadatas)).count(dict) != len(metadatas):
                    raise TypeError("metadata that is not a dict")
                names: set[Any] = set().union(*metadatas)
                pairs = sum(map(len, metadatas))
            except (TypeError, ValueError):  # orjson's refusal is a TypeError
                groups.append(False)
                continue
            if any(name.__class__ is not str or secret(name) for name in names):
                groups.append(False)
                continue
            # Each metadata object brings one '{' and each of its keys one ':'. When the text
            # holds no more than that (and no '='), no nested object hides a key and no text
            # holds a key=value pair: the keys looked up above are all there is to test, and
            # the scan of the whole text for secret names is skipped.
            pairs_only = (joined.count("{") == len(metadatas) and joined.count(":") == pairs
                          and "=" not in joined)
            groups.append(not self._may_need_masking(joined, keys=not pairs_only))
        return groups

    def _may_need_masking(self, text: str, keys: bool = True) -> bool:
        """The cheap tests of :meth:`_text`: False only when it would change nothing
        (``keys=False``: but for a ``key=value`` or ``key: value`` pair)."""
        return bool(
            (keys and ("=" in text or ":" in text) and self._may_hold_key(text))
            or "earer" in text or "EARER" in text or "eyJ" in text or "://" in text
            or "PRIVATE KEY-----" in text
            or (len(text) >= 13 and _may_hold_card(text))
            or (self.emails and "@" in text)
        )

    def redact_event(self, event: LogEvent) -> LogEvent:
        """The event with its message, metadata and exception text redacted (the same event
        when nothing needed masking). Never raises: an event that cannot be processed keeps
        only its labels and a marker."""
        parts = self.redact_parts(event.message, event.metadata, event.exception)
        message, metadata, exception = parts
        if (message is event.message and metadata is event.metadata
                and exception is event.exception):
            return event
        return dataclasses.replace(event, message=message, metadata=metadata, exception=exception)

    def redact_parts(
        self, message: str, metadata: Mapping[str, Any], exception: str | None
    ) -> tuple[str, Mapping[str, Any], str | None]:
        """:meth:`redact_event` on the three free-text parts of an event (each returned as the
        same object when nothing in it needed masking; an empty metadata mapping is not
        walked). Never raises: a part that cannot be processed becomes a marker, the others
        are redacted as usual."""
        message = self.redact_text(message)
        try:
            if metadata:
                walked = self._walk(metadata, 0, set())
                metadata = walked if isinstance(walked, Mapping) else {"value": walked}
        except Exception:
            metadata = {"value": _UNREADABLE}
        if exception:
            exception = self.redact_text(exception)
        return message, metadata, exception

    # ------------------------------------------------------------------ internals

    def _walk(self, value: Any, depth: int, seen: set[int]) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, _SAFE_TYPES):
            return value
        is_mapping = isinstance(value, Mapping)
        if is_mapping or isinstance(value, (list, tuple, set, frozenset)):
            if depth >= _MAX_DEPTH:
                return "<nested too deep>"
            if id(value) in seen:
                return "<cycle>"
            seen.add(id(value))
            try:
                if is_mapping:
                    return self._walk_mapping(value, depth, seen)
                return self._walk_sequence(value, depth, seen)
            except Exception:  # a mapping or sequence that cannot be read: masked whole
                return _UNREADABLE
            finally:
                seen.discard(id(value))
        try:
            text = repr(value)
        except Exception:
            return f"<unrepresentable {type(value).__name__}>"
        return self._text(text)

    # _walk_mapping and _walk_sequence sort each item as _walk would (text, scalar, anything
    # else) inline: handing every item to _walk makes walking metadata 10-30% slower
    def _walk_mapping(self, value: Mapping[Any, Any], depth: int, seen: set[int]) -> Any:
        out: dict[Any, Any] = {}
        changed = type(value) is not dict
        cache = self._key_cache
        for key, item in value.items():
            secret = cache.get(key)
            if secret is None:
                secret = self.is_secret_key(key)
            cls = type(item)
            if secret and item is not None and cls is not bool:
                new: Any = MASK
            elif cls is str:
                new = self._text(item)
            elif cls in _SCALARS:
                new = item
            else:
                new = self._walk(item, depth + 1, seen)
            if new is not item:
                changed = True
            out[key] = new
        return out if changed else value

    def _walk_sequence(self, value: Any, depth: int, seen: set[int]) -> Any:
        out: list[Any] = []
        changed = not isinstance(value, (list, tuple))
        if isinstance(value, (set, frozenset)):
            try:
                value = sorted(value, key=repr)  # the order to_entry would give them
            except Exception:  # a member's repr raises: the set's own order
                value = list(value)
        for item in value:
            cls = type(item)
            if cls is str:
                new = self._text(item)
            elif cls in _SCALARS:
                new = item
            else:
                new = self._walk(item, depth + 1, seen)
            if new is not item:
                changed = True
            out.append(new)
        return out if changed else value

    def _text(self, text: str) -> str:
        # each masking step runs only past a cheap test; _may_need_masking is those tests
        # alone (for whole groups): a new step needs its test there too
        if len(text) < 5:
            return text
        out = text
        if ("=" in text or ":" in text) and self._may_hold_key(text):
            out = self._mask_pairs(out)
        if "earer" in out or "EARER" in out:
            out = _BEARER.sub(r"\1\2" + MASK, out)
        if "eyJ" in out:
            out = _JWT.sub(MASK, out)
        if "://" in out:
            out = _URL_USERINFO.sub(_mask_url_password, out)
        if "PRIVATE KEY-----" in out:
            out = _PEM_KEY.sub(MASK, out)
        if len(out) >= 13 and _may_hold_card(out):
            out = _CARD.sub(_mask_card, out)
        if self.emails and "@" in out:
            out = _EMAIL.sub("[EMAIL]", out)
        for pattern in self.extra_patterns:
            out = pattern.sub(MASK, out)
        return text if out == text else out

    def _may_hold_key(self, text: str) -> bool:
        norm = text.lower()
        for sep in ("-", "_", ".", " "):
            if sep in norm:
                norm = norm.replace(sep, "")
        return any(secret in norm for secret in self.keys)

    def _mask_pairs(self, text: str) -> str:
        parts: list[str] = []
        done = 0  # text[:done] is in parts
        pos = 0  # where the next key search starts
        search = _KV_KEY.search
        while True:
            match = search(text, pos)
            if match is None:
                break
            pos = match.end()
            if not self.is_secret_key(match.group(2)):
                continue
            value = _KV_VALUE.match(text, pos)
            if value is None:
                continue
            if value.group("dq") is not None:
                masked = f'"{MASK}"'
            elif value.group("sq") is not None:
                masked = f"'{MASK}'"
            elif value.group("scheme") is not None:
                masked = text[value.start("scheme"):value.start("bare")] + MASK
            else:
                masked = MASK
            parts.append(text[done:pos])
            parts.append(masked)
            done = pos = value.end()
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)


#: orjson writes JSON's own types and refuses the rest (see Redactor.clean_events)
_PLAIN_JSON = (orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
               | orjson.OPT_PASSTHROUGH_SUBCLASS)


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


#: texts per group :meth:`Redactor.clean_texts` checks together (one text that needs masking
#: sends its whole group through the text-by-text path)
CLEAN_GROUP = 64

#: the redactor of the module-level functions (default keys; made here: it has no side effects)
_DEFAULT = Redactor()


def _mask_url_password(match: re.Match[str]) -> str:
    user, colon, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}:{MASK}@" if colon else match.group(0)


def hide_url_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` (or ``token@``) of every URL in it removed:
    ``http://shipper:s3cret@loki:3100/x`` becomes ``http://loki:3100/x``.

    Whatever shows a URL (a start line, ``--check``, ``doctor``, an error message) shows it
    through this, so a credential given in a URL is never printed or logged. Never raises."""
    if "@" not in text or "://" not in text:
        return text
    return _URL_USERINFO.sub(r"\1", text)


def redact_text(text: str) -> str:
    """:meth:`Redactor.redact_text` with the default keys."""
    return _DEFAULT.redact_text(text)


def redact_value(value: Any) -> Any:
    """:meth:`Redactor.redact_value` with the default keys."""
    return _DEFAULT.redact_value(value)

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import re
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.config import ShipperConfig
from shipper.event import LogEvent, to_entry
from shipper.redact import DEFAULT_REDACT_KEYS, MASK, Redactor, redact_text, redact_value

VISA = "4242424242424242"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def _event(message: str = "hello", metadata: Any = None, exception: str | None = None) -> LogEvent:
    return LogEvent.create(service="shop", level="INFO", message=message, timestamp_ns=1,
                           metadata=metadata, exception=exception)


# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_password", "X-Api-Key", "api_key", "apiKey", "sessionid",
     "Set-Cookie", "authToken", "Authorization", "client_secret", "csrfmiddlewaretoken",
     "AWS_ACCESS_KEY_ID", "private.key", "card_number", "cvv"],
)
def test_secret_named_keys_are_masked(key: str) -> None:
    assert redact_value({key: "s3cr3t-value"}) == {key: MASK}


@pytest.mark.parametrize("key", ["user", "email", "method", "path", "status", "author", "keyboard"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert redact_value({key: "visible"}) == {key: "visible"}


def test_keys_are_masked_at_any_depth_in_dicts_lists_and_tuples() -> None:
    value: dict[str, Any] = {
        "request": {
            "headers": {"Authorization": "Basic dXNlcjpwdw==", "Accept": "text/html"},
            "forms": [{"user": "bob", "password": "hunter2"}, ({"token": "t0k3n"},)],
        }
    }
    out = redact_value(value)
    assert out["request"]["headers"] == {"Authorization": MASK, "Accept": "text/html"}
    assert out["request"]["forms"][0] == {"user": "bob", "password": MASK}
    assert out["request"]["forms"][1][0] == {"token": MASK}
    assert value["request"]["forms"][0]["password"] == "hunter2"  # the input is not changed


def test_every_value_type_under_a_secret_key_is_masked_but_none_and_booleans() -> None:
    out = redact_value({"password": 1234, "token": {"a": 1}, "secret": ["x"], "api_key": b"k",
                        "session": None, "has_password": True})
    assert out == {"password": MASK, "token": MASK, "secret": MASK, "api_key": MASK,
                   "session": None, "has_password": True}


def test_configured_keys_extend_the_defaults() -> None:
    redactor = Redactor(keys=["ssn", "X-Internal-Code"])
    out = redactor.redact_value({"ssn": "123-45-6789", "x_internal_code": "7", "password": "p"})
    assert out == {"ssn": MASK, "x_internal_code": MASK, "password": MASK}


def test_include_defaults_false_uses_only_the_given_keys() -> None:
    redactor = Redactor(keys=["ssn"], include_defaults=False)
    assert redactor.redact_value({"ssn": "1", "password": "p"}) == {"ssn": MASK, "password": "p"}


def test_from_config_takes_redact_keys_and_redact_emails() -> None:
    config = ShipperConfig(redact_keys=("ssn",), redact_emails=True)
    redactor = Redactor.from_config(config)
    assert redactor.redact_value({"ssn": "1", "token": "t"}) == {"ssn": MASK, "token": MASK}
    assert redactor.redact_text("mail bob@example.com now") == "mail [EMAIL] now"


def test_default_keys_cover_what_the_seed_apps_asked_for() -> None:
    for name in ("password", "passwd", "secret", "token", "authorization", "api_key", "cookie",
                 "session"):
        assert name in DEFAULT_REDACT_KEYS


# ---------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login password=hunter2 ok", "hunter2"),
        ("login password = 'hunter 2' ok", "hunter 2"),
        ('{"user": "bob", "api_key": "AKIA1234"}', "AKIA1234"),
        ("{'db_password': 'zz9', 'host': 'db'}", "zz9"),
        ("GET /cb?code=1&access_token=abcDEF123&page=2", "abcDEF123"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("Cookie: sessionid=abc123; theme=dark", "abc123"),
        ("calling upstream with Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
        ("header: bearer zzzzzzzzzzzzzzzzzzzzzzzzzzzz", "zzzzzzzzzzzzzzzzzzzzzzzzzzzz"),
        (f"token in url ?t={JWT}", JWT),
        ("connect postgres://app:pa55w0rd@db:5432/shop failed", "pa55w0rd"),
        ("User(name='bob', secret_answer='blue')", "blue"),
    ],
)
def test_secrets_inside_text_are_masked(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert MASK in out


def test_masking_keeps_the_shape_of_the_text() -> None:
    assert redact_text("login password=hunter2 user=bob") == "login password=[REDACTED] user=bob"
    assert redact_text("Authorization: Bearer abc123") == "Authorization: Bearer [REDACTED]"
    assert redact_text("with Bearer abc123 done") == "with Bearer [REDACTED] done"
    assert redact_text("{'password': 'x1'}") == "{'password': '[REDACTED]'}"
    assert redact_text("postgres://app:pw1@db/x") == "postgres://app:[REDACTED]@db/x"


def test_ordinary_text_is_returned_unchanged() -> None:
    for text in ("User updated profile", "GET /api/items/42 200 12.3 ms", "missing Bearer token",
                 "ratio: 0.4242424242424242", "took 1700000000123 ms", "ts=1732247000123456789",
                 "see https://example.com/docs?page=2"):
        assert redact_text(text) is text


def test_pem_private_key_block_is_masked() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----"
    out = redact_text(f"loaded {pem} from disk")
    assert "MIIEow" not in out and out == f"loaded {MASK} from disk"


# ---------------------------------------------------------------------------- cards


@pytest.mark.parametrize(
    "card",
    [VISA, "4242 4242 4242 4242", "4242-4242-4242-4242", "5555555555554444", "378282246310005",
     "3782 822463 10005", "4222222222222", "6011111111111117", "2223003122003222",
     "6304000000000000000"],
)
def test_luhn_valid_card_numbers_are_masked_keeping_the_last_four(card: str) -> None:
    out = redact_text(f"paid with {card} today")
    digits = card.replace(" ", "").replace("-", "")
    assert out == f"paid with [CARD ****{digits[-4:]}] today"


@pytest.mark.parametrize(
    "number",
    ["4242424242424241",  # fails the Luhn check
     "424242424242",  # 12 digits
     "42424242424242424242",  # 20 digits
     "1700000000000000000",  # an epoch in ns, Luhn-valid, but no card starts with 1
     ],
)
def test_numbers_that_are_not_cards_are_kept(number: str) -> None:
    assert redact_text(f"value {number} end") == f"value {number} end"


def test_uuids_and_hex_ids_are_never_taken_for_cards() -> None:
    """A task id whose digits ran '2-4780-8638-7863' (13, Luhn-valid, starting after a hex
    letter) lost its middle to '[CARD ****7863]'; an all-digit UUID tail is 16 digits."""
    rng = random.Random(20261130)
    ids = ["62fa82ef-e8e2-4780-8638-7863feccd710", "52b57198-5842-4993-9724-22434e0a38ed",
           "9c1d0a2e-1234-4242-4242-424242424242", "ab4242424242424242",
           "4bf92f3577b34da6a3ce929d0e0e4736"]
    ids += [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20_000)]
    changed = [i for i in ids if redact_text(f"task {i} done") != f"task {i} done"]
    assert changed == []
    assert redact_value({"task_id": ids[0], "note": f"retry of {ids[1]}"}) == {
        "task_id": ids[0], "note": f"retry of {ids[1]}"}


@pytest.mark.parametrize("text", ["card-{card}.", "card={card},", "({card})", "'{card}'",
                                  "paid: {card}", "cards {card} and {card}"])
def test_cards_next_to_punctuation_are_still_masked(text: str) -> None:
    out = redact_text(text.format(card=VISA))
    assert VISA not in out and out == text.format(card="[CARD ****4242]")


def test_cards_in_metadata_strings_are_masked() -> None:
    assert redact_value({"note": f"card {VISA}"}) == {"note": "card [CARD ****4242]"}


# ---------------------------------------------------------------------------- emails


def test_emails_are_kept_by_default_and_masked_when_enabled() -> None:
    text = "sent to bob.smith+shop@mail.example.co.uk and ann@example.org"
    assert redact_text(text) == text
    out = Redactor(emails=True).redact_text(text)
    assert out == "sent to [EMAIL] and [EMAIL]"


# ---------------------------------------------------------------------------- value kinds


def test_bytes_are_decoded_and_searched() -> None:
    out = redact_value({"body": b"user=bob&password=hunter2", "raw": bytearray(b"\xff ok")})
    assert out["body"] == "user=bob&password=[REDACTED]"
    assert out["raw"] == "\ufffd ok"


def test_objects_become_their_redacted_repr() -> None:
    @dataclasses.dataclass
    class Login:
        user: str
        password: str

    class Opaque:
        def __repr__(self) -> str:
            return f"<Opaque token={JWT}>"

    out = redact_value({"login": Login("bob", "hunter2"), "o": Opaque()})
    assert out["login"] == "test_objects_become_their_redacted_repr.<locals>.Login(user='bob', " \
        "password='[REDACTED]')"
    assert JWT not in out["o"]


def test_safe_values_are_kept_as_they_are() -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5)
    value = {"n": 1, "f": 1.5, "b": False, "none": None, "when": when, "items": [1, "a"]}
    assert redact_value(value) is value


def test_sets_come_back_as_sorted_lists() -> None:
    out = redact_value({"tags": {"b", "token=x1", "a"}})
    assert out == {"tags": ["a", "b", "token=[REDACTED]"]}


def test_cycles_and_deep_nesting_are_safe() -> None:
    loop: dict[str, Any] = {"password": "p", "name": "x"}
    loop["self"] = loop
    items: list[Any] = ["token=abc123"]
    items.append(items)
    out = redact_value({"loop": loop, "items": items})
    assert out["loop"] == {"password": MASK, "name": "x", "self": "<cycle>"}
    assert out["items"] == ["token=[REDACTED]", "<cycle>"]
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(50):
        node["next"] = {}
        node = node["next"]
    node["password"] = "hunter2"
    out_deep = json.dumps(redact_value(deep))
    assert "hunter2" not in out_deep and "<nested too deep>" in out_deep


def test_redaction_never_raises_and_fails_closed() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    class BadMapping(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("broken items")

    assert redact_value({"x": BadRepr()}) == {"x": "<unrepresentable BadRepr>"}
    assert redact_value(BadMapping(password="p")) == "[REDACTED: unreadable]"
    event = _event(metadata=BadMapping(password="hunter2"))
    redacted = Redactor().redact_event(event)
    assert "hunter2" not in to_entry(redacted).to_json()


def test_large_adversarial_text_is_processed() -> None:
    # long runs without separators and many near-matches must not backtrack catastrophically
    text = "a" * 200_000 + " password=" + "b" * 200_000 + " " + "1 " * 50_000 + "x@" * 20_000
    out = Redactor(emails=True).redact_text(text)
    assert "b" * 1000 not in out


def test_redacting_twice_changes_nothing_more() -> None:
    text = f"password=hunter2 Bearer abc123 {VISA} postgres://u:p1@h/x {JWT}"
    once = redact_text(text)
    assert redact_text(once) == once


# ---------------------------------------------------------------------------- events


def test_redact_event_masks_message_metadata_and_exception() -> None:
    event = _event(
        message=f"charge failed for card {VISA} with token=tok_live_123",
        metadata={"user": "bob", "payment": {"card_number": VISA, "cvv": "123"},
                  "headers": [("Authorization", "Bearer abc123")]},
        exception="Traceback...\nValueError: bad password='hunter2'",
    )
    redacted = Redactor().redact_event(event)
    assert redacted is not event
    assert redacted.message == "charge failed for card [CARD ****4242] with token=[REDACTED]"
    assert redacted.metadata["payment"] == {"card_number": MASK, "cvv": MASK}
    assert redacted.metadata["headers"] == [["Authorization", "Bearer [REDACTED]"]]
    assert redacted.exception == "Traceback...\nValueError: bad password='[REDACTED]'"
    assert (redacted.service, redacted.level, redacted.timestamp_ns) == (
        event.service, event.level, event.timestamp_ns)
    line = to_entry(redacted).to_json()
    for secret in (VISA, "tok_live_123", "abc123", "hunter2"):
        assert secret not in line


def test_redact_event_returns_the_same_event_when_nothing_is_secret() -> None:
    event = _event(message="User updated profile", metadata={"user_id": "u1", "fields": ["bio"]})
    assert Redactor().redact_event(event) is event


def test_extra_patterns_mask_every_match() -> None:
    redactor = Redactor(extra_patterns=[r"\bORD-\d{6}\b", re.compile("internal-[a-z]+")])
    assert redactor.redact_text("order ORD-123456 via internal-api") == (
        f"order {MASK} via {MASK}")


def test_bad_settings_raise_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="extra_patterns"):
        Redactor(extra_patterns=["(unclosed"])
    with pytest.raises(TypeError, match="keys"):
        Redactor(keys="password")
    with pytest.raises(ValueError, match="keys"):
        Redactor(keys=["--"])


# ---------------------------------------------------------------------------- batches

_SECRET_TEXTS = ["password=hunter2", "Authorization: Basic dXNlcjpwYXNz", f"token {JWT}",
                 "postgres://app:pa55w0rd@db/shop", f"card {VISA}", "calling with Bearer abc.DEF"]


def test_a_group_of_clean_texts_is_found_clean_and_one_secret_spoils_only_its_group() -> None:
    from shipper.redact import CLEAN_GROUP

    texts = [f"User {i} logged in from 203.0.113.9" for i in range(3 * CLEAN_GROUP)]
    redactor = Redactor()
    assert redactor.clean_texts(texts) == [True, True, True]
    for secret in _SECRET_TEXTS:
        spoiled = list(texts)
        spoiled[CLEAN_GROUP + 5] = secret
        assert redactor.clean_texts(spoiled) == [True, False, True], secret


def test_texts_are_never_found_clean_with_extra_patterns_or_a_non_string() -> None:
    assert Redactor(extra_patterns=[r"^secret"]).clean_texts(["secret sauce", "ok"]) == [False]
    assert Redactor().clean_texts(["ok", 42]) == [False]  # type: ignore[list-item]


def test_emails_spoil_a_group_only_when_emails_are_masked() -> None:
    texts = ["mail from ann@example.com", "hello there"]
    assert Redactor().clean_texts(texts) == [True]
    assert Redactor(emails=True).clean_texts(texts) == [False]



_pieces = st.sampled_from(
    ["User ", "42", " ", "-", "=", ":", "pass", "word", "token", "@", "example.com", "://",
     "eyJ", "Bearer ", "4242", "4242 ", "\n", "é", "x", ".", "api_key", "PRIVATE KEY-----"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_pieces, max_size=12).map("".join), min_size=1, max_size=80),
       st.booleans())
def test_a_text_in_a_group_found_clean_is_never_changed_by_redaction(
        texts: list[str], emails: bool) -> None:
    from shipper.redact import CLEAN_GROUP

    redactor = Redactor(emails=emails)
    for index, clean in enumerate(redactor.clean_texts(texts)):
        if clean:
            for text in texts[index * CLEAN_GROUP:(index + 1) * CLEAN_GROUP]:
                assert redactor.redact_text(text) is text, text


def test_events_found_clean_are_the_events_redaction_leaves_unchanged() -> None:
    from shipper.redact import CLEAN_GROUP

    plain = [_event(f"order {i} paid", {"order": i, "tags": ["a", "b"], "n": {"x": 1.5}})
             for i in range(2 * CLEAN_GROUP)]
    redactor = Redactor()
    assert redactor.clean_events(plain) == [True, True]
    for spoiler in [_event("ok", {"password": "hunter2"}), _event("ok", {"note": f"card {VISA}"}),
                    _event("ok", exception=f"Bearer {JWT}"), _event("ok", {"k": b"bytes"}),
                    _event("ok", {1: "non-string key"}), _event("ok", {"s": {"a", "b"}}),
                    _event("ok", {"o": object()}), _event("ok", {"deep": [{"api_key": "x"}]}),
                    # a key=value or key: value pair in text, where the metadata's own colons
                    # and braces could pass for the text's
                    _event("password: hunter2"), _event("password=hunter2"),
                    _event('{"password": "hunter2"}', {"a": 1}),
                    _event("ok", {"note": "token: abc"}), _event("ok", {"a": {"secret": 1}}),
                    _event("ok", {"a": ["{", "token: x"]}), _event("ok", exception="pwd: x"),
                    # metadata that is not a dict (built without LogEvent.create)
                    dataclasses.replace(_event("ok"), metadata=["token: x"])]:
        events = list(plain)
        events[CLEAN_GROUP + 1] = spoiler
        assert redactor.clean_events(events) == [True, False], spoiler
    for event in plain:
        assert redactor.redact_event(event) is event


#: text for events: with the braces and quotes a metadata object is written with too
_event_pieces = st.sampled_from(
    ["User ", "42", " ", "=", ":", "pass", "word", "password", "token", "://", "eyJ", "4242 ",
     "{", "}", '"', "\\", "é", "x", "api_key"])


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.lists(_event_pieces).map("".join),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.lists(_event_pieces, max_size=3).map("".join), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_event_pieces, max_size=8).map("".join),
                          st.dictionaries(st.lists(_event_pieces, max_size=3).map("".join),
                                          _values,
                                          max_size=4)),
                min_size=1, max_size=70))
def test_an_event_in_a_group_found_clean_is_never_changed_by_redaction(
        parts: list[tuple[str, dict[str, Any]]]) -> None:
    from shipper.redact import CLEAN_GROUP

    redactor = Redactor()
    events = [_event(message, metadata) for message, metadata in parts]
    for index, clean in enumerate(redactor.clean_events(events)):
        if clean:
            for event in events[index * CLEAN_GROUP:(index + 1) * CLEAN_GROUP]:
                assert redactor.redact_event(event) is event, event


def test_a_value_that_cannot_be_read_is_masked_alone() -> None:
    from collections.abc import Iterator, Mapping

    from tests.support.hostile import BadBoth

    class Unreadable(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("no")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("no")

        def __len__(self) -> int:
            return 1

    event = LogEvent.create(service="s", level="INFO", message="login password=hunter2",
                            timestamp_ns=1, exception="token=abc123",
                            metadata={"odd": Unreadable(), "set": {BadBoth()}, "keep": "me",
                                      "api_key": "k"})
    redacted = Redactor().redact_event(event)
    assert redacted.message == "login password=[REDACTED]"
    assert redacted.exception == "token=[REDACTED]"
    assert redacted.metadata["odd"] == "[REDACTED: unreadable]"
    assert redacted.metadata["keep"] == "me" and redacted.metadata["api_key"] == "[REDACTED]"
    assert len(redacted.metadata["set"]) == 1


def test_a_list_for_metadata_cannot_make_up_for_a_nested_secret_key() -> None:
    """A group's metadata is counted as dicts: a list in one event's place (one item, no
    brace, no colon) must not make up for the brace and colon of a dict nested in another's,
    which hides a secret key."""
    from shipper.redact import CLEAN_GROUP

    listed = dataclasses.replace(_event("ok"), metadata=["x"])
    nested = _event("ok", {"a": {"password": "hunter2"}})
    events = [listed, nested] + [_event("ok")] * (CLEAN_GROUP - 2)
    redactor = Redactor()
    assert redactor.clean_events(events) == [False]
    assert redactor.redact_event(nested).metadata == {"a": {"password": "[REDACTED]"}}

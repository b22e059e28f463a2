"""Nothing refused is silently gone, and one bad entry never costs its push.

* A push Loki refuses whole as unparsable is split in halves until what it refuses stands
  alone; every other entry is stored, at most 2·k·log2(N) more requests for k bad entries.
* Every entry Loki refuses for good is kept as a dead letter, with its reason and Loki's
  message, in the spool directory's ``dead-letters`` (bounded, never replayed by itself), and
  ``shipper spool dead-letters`` lists them and pushes them again.

Against the fake Loki (tests/support/fakeloki.py), which answers as Loki 3.7.6 does, including
its whole-push refusals (a timestamp past int64, a label name it cannot parse).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper import LokiHandler
from shipper.cli.main import main as cli_main
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.push import PushClient, nothing_stored, refusal_reason
from shipper.delivery.spool import Spool
from shipper.delivery.spool.deadletters import (
    DeadLetter,
    DeadLetterReader,
    DeadLetters,
    dead_letter_dir,
    dead_letter_status,
)
from shipper.event import Entry
from tests.support import contract, fakeloki
from tests.support.fakeloki import FakeLoki, Request

DAY = 86400 * 10**9
#: a time after 2262: past int64 nanoseconds, which Loki's JSON decoder cannot read
AFTER_2262 = 2**63 + 5 * 10**18
_run = itertools.count()


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


def _entry(i: int, *, service: str = "dl", ts: int | None = None, line: str | None = None,
           labels: tuple[tuple[str, str], ...] = ()) -> Entry:
    return Entry(
        labels=labels or (("service_name", service), ("level", "INFO"), ("actor", "SYSTEM"),
                          ("type", "LOG")),
        timestamp_ns=ts if ts is not None else time.time_ns() - 10**9 + i,
        line=line if line is not None else json.dumps({"message": f"entry {i}"}),
    )


def _key(entry: Entry) -> tuple[Any, ...]:
    return (tuple(sorted(entry.labels)), entry.timestamp_ns, entry.line)


def _poison_hook(word: str) -> Any:
    """Refuse, as Loki refuses a push it cannot parse, every push holding ``word``."""
    status, body, _ = contract.answer("push_400_bad_json")

    def hook(request: Request) -> tuple[int, str, dict[str, str]] | None:
        return (status, body, {}) if word.encode() in request.body else None

    return hook


def _pushes(fake: FakeLoki) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/push"))


def _letters(spool_dir: Path) -> list[DeadLetter]:
    return list(DeadLetterReader(dead_letter_dir(spool_dir)))


def ship_entries(config: ShipperConfig, entries: list[Entry]) -> dict[str, Any]:
    """Ship hand-built entries through a pipeline (as a source that makes its own entries
    would) until Loki has answered them all; the pipeline's stats."""
    pipeline = Pipeline(config, convert_entry=lambda entry: entry)
    try:
        for entry in entries:
            pipeline.submit(entry)
        assert pipeline.flush(30)
        return pipeline.stats()
    finally:
        pipeline.close(5)


# ------------------------------------------------------------------------ whole-push refusals


def test_loki_refuses_a_push_with_a_time_past_int64_whole_and_stores_none_of_it(
        fake: FakeLoki) -> None:
    """What Loki 3.7.6 answers (measured): the JSON decoder's error, nothing stored."""
    client = PushClient(ShipperConfig(url=fake.url, spool=False))
    outcome = client.push_once([_entry(0), _entry(1, ts=AFTER_2262)])
    assert (outcome.kind, outcome.status, outcome.reason) == ("refused", 400, "bad_request")
    assert outcome.message.startswith("loghttp.PushRequest.Streams")
    assert nothing_stored(400, outcome.message)
    assert fake.count() == 0


@pytest.mark.parametrize("poison", ["time_past_int64", "label_name"])
def test_a_push_refused_whole_is_split_until_the_bad_entry_stands_alone(
        fake: FakeLoki, poison: str) -> None:
    good = [_entry(i) for i in range(11)]
    bad = _entry(99, ts=AFTER_2262) if poison == "time_past_int64" else _entry(
        99, labels=(("service_name", "dl"), ("bad-name", "x")))
    entries = [*good[:6], bad, *good[6:]]
    outcomes = PushClient(ShipperConfig(url=fake.url, spool=False)).push(entries)
    assert all(fake.stores[_key(e)] == 1 for e in good)  # each stored once
    assert fake.stores[_key(bad)] == 0
    refused = [o for o in outcomes if o.kind == "refused"]
    assert [(o.entries, o.reason) for o in refused] == [
        (1, "bad_request" if poison == "time_past_int64" else "invalid_labels")]
    assert refused[0].refused[0].index == 0 and refused[0].refused[0].certain
    # the outcomes cover the entries in order: the refused one sits where the bad entry is
    offsets = list(itertools.accumulate([0] + [o.entries for o in outcomes]))
    assert entries[offsets[outcomes.index(refused[0])]] is bad
    assert _pushes(fake) <= 1 + 2 * math.ceil(math.log2(len(entries)))


@pytest.mark.parametrize(("n", "bad"), [(64, [0]), (64, [63]), (100, [3, 50, 97]),
                                        (1000, [1, 2, 500, 999]), (7, list(range(7)))])
def test_isolating_k_bad_entries_of_n_costs_at_most_2k_log2_n_more_requests(
        fake: FakeLoki, n: int, bad: list[int]) -> None:
    fake.hook = _poison_hook("poison")
    entries = [_entry(i, line=json.dumps({"message": f"{'poison' if i in bad else 'fine'} {i}"}))
               for i in range(n)]
    outcomes = PushClient(ShipperConfig(url=fake.url, spool=False)).push(entries)
    assert _pushes(fake) - 1 <= 2 * len(bad) * math.ceil(math.log2(n))
    assert sorted(json.loads(line)["message"] for line in fake.lines()) == sorted(
        f"fine {i}" for i in range(n) if i not in bad)
    assert sum(o.entries for o in outcomes if o.kind == "refused") == len(bad)


def test_a_poisoned_event_costs_only_itself_through_the_handler(fake: FakeLoki,
                                                                tmp_path: Path) -> None:
    fake.hook = _poison_hook("poison")
    handler = LokiHandler(fake.url, service="shop", spool_dir=str(tmp_path / "spool"),
                          batch_max_wait=0.05)
    log = logging.getLogger(f"dl.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        for i in range(40):
            log.info("poison %d" if i == 17 else "order %d paid", i)
        assert handler.flush(timeout=10)
        stats = handler.stats()
    finally:
        handler.close()
        log.removeHandler(handler)
    assert sorted(json.loads(line)["message"] for line in fake.lines()) == sorted(
        f"order {i} paid" for i in range(40) if i != 17)
    assert stats["dead_lettered"] == {"bad_request": 1}
    [letter] = _letters(tmp_path / "spool")
    assert json.loads(letter.entry.line)["message"] == "poison 17"
    assert letter.reason == "bad_request" and letter.certain
    assert letter.message.startswith("loghttp.PushRequest.Streams")


# ------------------------------------------------------------------------ the property

_KINDS = ("time_past_int64", "too_old", "line_too_long", "label_name")
_REASONS = {"time_past_int64": "bad_request", "too_old": "too_old",
            "line_too_long": "line_too_long", "label_name": "invalid_labels"}


def _bad(kind: str, i: int, service: str) -> Entry:
    line = json.dumps({"message": f"bad {i}"})
    if kind == "time_past_int64":
        return _entry(i, service=service, ts=AFTER_2262 + i, line=line)
    if kind == "too_old":
        return _entry(i, service=service, ts=time.time_ns() - 30 * DAY + i, line=line)
    if kind == "line_too_long":
        return _entry(i, service=service, line=json.dumps({"message": f"bad {i}",
                                                           "pad": "x" * 300_000}))
    return _entry(i, line=line, labels=(("service_name", service), ("bad-name", "x")))


@settings(max_examples=30, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(min_value=1, max_value=60),
    poisons=st.lists(st.tuples(st.integers(min_value=0, max_value=59), st.sampled_from(_KINDS)),
                     max_size=4, unique_by=lambda p: p[0]),
    batch=st.sampled_from([1, 7, 100]),
)
def test_every_good_entry_is_stored_once_and_every_bad_one_dead_lettered_once(
        fake: FakeLoki, tmp_path_factory: pytest.TempPathFactory, n: int,
        poisons: list[tuple[int, str]], batch: int) -> None:
    service = f"prop{next(_run)}"
    kinds = {i: kind for i, kind in poisons if i < n}
    entries = [_bad(kinds[i], i, service) if i in kinds else _entry(i, service=service)
               for i in range(n)]
    spool_dir = tmp_path_factory.mktemp("spool")
    stats = ship_entries(ShipperConfig(url=fake.url, service=service, spool_dir=str(spool_dir),
                                       batch_max_events=batch, batch_max_wait=0.01), entries)
    for i, entry in enumerate(entries):
        assert fake.stores[_key(entry)] == (0 if i in kinds else 1), (i, kinds)
    letters = _letters(spool_dir)
    assert sorted((json.loads(letter.entry.line)["message"], letter.reason)
                  for letter in letters) == sorted((f"bad {i}", _REASONS[kind])
                                                   for i, kind in kinds.items())
    assert all(letter.entry in entries for letter in letters)  # byte-identical entries
    assert sum(stats["dead_lettered"].values()) == len(kinds)
    assert stats["dropped_total"] == 0


# ------------------------------------------------------------------------ dead letters


def _handler(url: str, spool_dir: Path, **kw: Any) -> tuple[LokiHandler, logging.Logger]:
    handler = LokiHandler(url, service="shop", spool_dir=str(spool_dir), batch_max_wait=0.05,
                          **kw)
    log = logging.getLogger(f"dl.{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return handler, log


def _refused_trio(url: str, spool_dir: Path, **kw: Any) -> dict[str, Any]:
    """One good event, one three weeks old, one too long for Loki; the handler's stats."""
    handler, log = _handler(url, spool_dir, max_line_bytes=1 << 20, **kw)
    try:
        log.info("good")
        log.info("old", extra={"event_time": time.time() - 21 * 86400})
        log.info("long %s", "x" * 300_000)
        assert handler.flush(timeout=10)
        return handler.stats()
    finally:
        handler.close()


def test_entries_loki_refuses_are_kept_as_dead_letters_with_reason_and_message(
        fake: FakeLoki, tmp_path: Path) -> None:
    stats = _refused_trio(fake.url, tmp_path / "spool")
    assert [json.loads(line)["message"] for line in fake.lines()] == ["good"]
    assert stats["dead_lettered"] == {"too_old": 1, "line_too_long": 1}
    letters = {json.loads(letter.entry.line)["message"][:4]: letter
               for letter in _letters(tmp_path / "spool")}
    assert sorted(letters) == ["long", "old"]
    assert letters["old"].reason == "too_old"
    assert "has timestamp too old" in letters["old"].message
    assert letters["long"].reason == "line_too_long"
    assert "max entry size '262144' bytes exceeded" in letters["long"].message
    assert all(letter.certain for letter in letters.values())
    status = dead_letter_status(dead_letter_dir(tmp_path / "spool"))
    assert (status.letters, status.by_reason) == (2, {"line_too_long": 1, "too_old": 1})


def test_without_a_spool_refused_entries_are_counted_and_reported_as_before(
        fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = _refused_trio(fake.url, tmp_path / "spool", spool=False)
    assert (stats["refused_total"], stats["refused_events"]) == (1, 3)  # one request
    assert stats["dead_lettered"] == {} and stats["dead_letters_dropped"] == 0
    assert "timestamp too old" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing on disk


def test_dead_letters_are_never_replayed_by_themselves(fake: FakeLoki, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    _refused_trio(fake.url, spool_dir)
    requests = len(fake.requests)
    # a new process on the same spool replays what it finds, and a spool push drains it: neither
    # sends a dead letter
    handler, log = _handler(fake.url, spool_dir)
    log.info("later")
    assert handler.flush(timeout=10)
    handler.close()
    assert cli_main(["spool", "push", "--dir", str(spool_dir), "--url", fake.url]) == 0
    sent = [json.loads(v[1])["message"][:5] for r in fake.requests[requests:]
            for s in json.loads(r.body)["streams"] for v in s["values"]]
    assert sent == ["later"]
    assert len(_letters(spool_dir)) == 2
    assert Spool(spool_dir).stats(count=True).records == 0  # the spool itself: empty


def test_dead_letters_over_their_cap_drop_the_oldest_and_count_them(tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path / "dead", max_bytes=64 * 1024)
    lost = 0
    for i in range(400):
        letter = DeadLetter(_entry(i, line=json.dumps({"message": f"n{i}", "pad": "x" * 400})),
                            "too_old", "entry ... has timestamp too old", time.time_ns())
        kept, dropped = dead.add([letter])
        assert kept == 1
        lost += dropped
    dead.close()
    status = dead_letter_status(tmp_path / "dead")
    assert status.bytes <= 64 * 1024
    assert lost > 0 and status.letters + lost == 400  # every one kept or counted
    names = [json.loads(letter.entry.line)["message"] for letter in
             DeadLetterReader(tmp_path / "dead")]
    assert names == [f"n{i}" for i in range(400 - len(names), 400)]  # the newest are kept


def test_the_pipeline_counts_dead_letters_it_could_not_keep(fake: FakeLoki,
                                                           tmp_path: Path) -> None:
    stats = _refused_trio(fake.url, tmp_path / "spool", dead_letter_max_bytes=1024)
    # the long line's letter is over the cap by itself: refused by the store, and counted
    assert stats["dead_letters_dropped"] >= 1
    assert stats["dead_lettered"].get("line_too_long", 0) == 0


def test_a_damaged_dead_letter_is_skipped_and_counted_and_its_neighbours_kept(
        tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path / "dead")
    letters = [DeadLetter(_entry(i), "too_old", "old", time.time_ns()) for i in range(3)]
    dead.add(letters[:1])
    dead.put_back([b'{"reason": "too_old"}', b"\x00garbage"])
    dead.add(letters[1:])
    dead.close()
    reader = DeadLetterReader(tmp_path / "dead")
    assert list(reader) == letters
    assert reader.damaged == 2
    assert dead_letter_status(tmp_path / "dead").damaged == 2


@pytest.mark.parametrize("entry", [
    _entry(1),
    _entry(2, ts=AFTER_2262, line='é \u2028 "quoted" \\ \x00'),
    _entry(3, ts=-5, labels=(("service_name", 'a"b'), ("bad-name", "{x}"))),
])
def test_a_dead_letter_keeps_its_entry_byte_identical(entry: Entry) -> None:
    letter = DeadLetter(entry, "bad_request", "loghttp.PushRequest...", 123, certain=False)
    again = DeadLetter.from_record(letter.to_record())
    assert again == letter
    assert again.entry.to_record() == entry.to_record()


@pytest.mark.parametrize("payload", [b"", b"[]", b'{"reason": 1}', b'{"reason": "a", '
                                     b'"message": "b", "refused_at": "x", "entry": []}',
                                     b'{"reason": "a", "message": "b", "refused_at": "1"}',
                                     b'{"reason": "a", "message": "b", "refused_at": "1", '
                                     b'"entry": [1, 2]}', b'{"reason": "a", "message": "b", '
                                     b'"refused_at": "1", "entry": [{}, "1", "l", 5]}',
                                     b'{"reason": "a", "message": "b", "refused_at": "1", '
                                     b'"entry": [{"a": 1}, "1", "l", {}]}',
                                     b'{"reason": "a", "message": "b", "refused_at": "1", '
                                     b'"entry": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_a_record_that_is_not_a_dead_letter_is_refused_with_the_reason(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"^not a dead letter"):
        DeadLetter.from_record(payload)


def test_refusal_reasons_read_only_the_start_of_a_whole_push_refusal() -> None:
    """The JSON decoder quotes the body after its message, and a validation message quotes
    label values: neither decides the reason."""
    quoted = ("loghttp.PushRequest.Streams: ... bigger context ...|max entry size "
              "timestamp too old|...")
    assert refusal_reason(400, quoted) == "bad_request" and nothing_stored(400, quoted)
    named = ("entry for stream '{service_name=\"couldn't parse labels\"}' has timestamp too "
             "old: 2026-10-13T02:45:36Z")
    assert refusal_reason(400, named) == "too_old" and not nothing_stored(400, named)
    assert not nothing_stored(500, "couldn't parse push request")


# ------------------------------------------------------------------------ pushing them again


def test_pushed_again_what_loki_takes_goes_and_what_it_refuses_stays_with_the_new_reason(
        fake: FakeLoki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool_dir = tmp_path / "spool"
    handler, log = _handler(fake.url, spool_dir, max_line_bytes=1 << 20)
    three_weeks = time.time() - 21 * 86400
    log.info("old", extra={"event_time": three_weeks})
    log.info("old and long %s", "x" * 300_000, extra={"event_time": three_weeks + 1})
    log.info("long %s", "x" * 300_000)
    assert handler.flush(timeout=10)
    handler.close()
    assert sorted(letter.reason for letter in _letters(spool_dir)) == [
        "line_too_long", "too_old", "too_old"]  # Loki checks the time first
    monkeypatch.setattr(fakeloki, "REJECT_OLD_NS", 400 * DAY)  # the age limit is lifted
    pipeline = Pipeline(ShipperConfig(url=fake.url, spool_dir=str(spool_dir)),
                        start_replay=False)
    result = pipeline.push_dead_letters(10)
    pipeline.close(0)
    assert (result.letters, result.stored, result.refused, result.left) == (
        3, 1, {"line_too_long": 2}, 0)
    assert result.complete
    assert [json.loads(line)["message"] for line in fake.lines()] == ["old"]
    left = {json.loads(letter.entry.line)["message"][:12]: letter.reason
            for letter in _letters(spool_dir)}
    assert left == {"old and long": "line_too_long", "long " + "x" * 7: "line_too_long"}


def test_pushed_again_while_loki_is_away_every_dead_letter_stays(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    with FakeLoki(rate_limit=False) as fake:
        _refused_trio(fake.url, spool_dir)
        url = fake.url
    before = _letters(spool_dir)
    pipeline = Pipeline(ShipperConfig(url=url, spool_dir=str(spool_dir), timeout=1),
                        start_replay=False)
    result = pipeline.push_dead_letters(5)
    pipeline.close(0)
    assert (result.stored, result.left, result.complete) == (0, 2, False)
    assert _letters(spool_dir) == before


def test_a_push_again_stopped_half_way_keeps_only_what_loki_did_not_answer(
        fake: FakeLoki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool_dir = tmp_path / "spool"
    dead = DeadLetters(dead_letter_dir(spool_dir))
    letters = [DeadLetter(_entry(i), "too_old", "old", time.time_ns()) for i in range(5)]
    dead.add(letters)
    dead.close()
    answers = iter([None])  # the first request goes through, then Loki fails for good

    def hook(request: Request) -> tuple[int, str, dict[str, str]] | None:
        return next(answers, (503, "upstream connect error\n", {}))

    fake.hook = hook
    pipeline = Pipeline(ShipperConfig(url=fake.url, spool_dir=str(spool_dir),
                                      batch_max_events=2, retry_budget=0.2, backoff_min=0.01,
                                      backoff_max=0.05), start_replay=False)
    result = pipeline.push_dead_letters(5)
    pipeline.close(0)
    assert (result.stored, result.left, result.complete) == (2, 3, False)
    assert fake.count() == 2
    stored = {line for line in fake.lines()}
    kept = _letters(spool_dir)
    assert kept == letters[2:]  # the rest, as they were; nothing both stored and kept
    assert not stored & {letter.entry.line for letter in kept}


# ------------------------------------------------------------------------ the command


def test_the_command_lists_dead_letters_by_reason_and_pushes_them_again(
        fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    spool_dir = tmp_path / "spool"
    _refused_trio(fake.url, spool_dir)
    capsys.readouterr()
    assert cli_main(["spool", "dead-letters", "list", "--dir", str(spool_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["letters"], listed["by_reason"]) == (2, {"line_too_long": 1, "too_old": 1})
    assert {d["reason"] for d in listed["dead_letters"]} == {"too_old", "line_too_long"}
    assert cli_main(["spool", "dead-letters", "list", "--dir", str(spool_dir), "--json",
                     "--reason", "too_old"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert [d["reason"] for d in only["dead_letters"]] == ["too_old"]
    assert only["letters"] == 2  # the counts cover them all
    assert cli_main(["spool", "dead-letters", "list", "--dir", str(spool_dir), "--format",
                     "table"]) == 0
    table = capsys.readouterr().out
    assert "2 dead letters" in table and "1 too_old: entry for stream" in table
    assert cli_main(["spool", "status", "--dir", str(spool_dir), "--format", "table"]) == 0
    assert "dead       2 dead letters (line_too_long 1, too_old 1)" in capsys.readouterr().out
    assert cli_main(["spool", "status", "--dir", str(spool_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dead_letters"]["by_reason"] == {
        "line_too_long": 1, "too_old": 1}
    # Loki still refuses them: they stay, with the same reasons, and the command says so
    code = cli_main(["spool", "dead-letters", "push", "--dir", str(spool_dir), "--url",
                     fake.url])
    out = capsys.readouterr().out
    assert code == 1
    assert "pushed 2 dead letters" in out and "0 stored, 2 refused again" in out
    assert dead_letter_status(dead_letter_dir(spool_dir)).by_reason == {
        "line_too_long": 1, "too_old": 1}
    monkeypatch.setattr(fakeloki, "REJECT_OLD_NS", 400 * DAY)
    monkeypatch.setattr(fakeloki, "MAX_LINE_BYTES", 1 << 20)
    assert cli_main(["spool", "dead-letters", "push", "--dir", str(spool_dir), "--url",
                     fake.url]) == 0
    assert "2 stored, 0 refused again, 0 left" in capsys.readouterr().out
    assert dead_letter_status(dead_letter_dir(spool_dir)).letters == 0


def test_the_listing_escapes_what_a_refused_line_holds(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    dead = DeadLetters(dead_letter_dir(tmp_path))
    line = "\x1b]0;owned\x07\x1b[2J" + "y" * 10
    dead.add([DeadLetter(_entry(0, line=line, ts=AFTER_2262), "bad_request", "\x1b[31mred",
                         time.time_ns())])
    dead.close()
    assert cli_main(["spool", "dead-letters", "list", "--dir", str(tmp_path), "--format",
                     "table"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\u001b]0;owned" in out
    assert f"{AFTER_2262}ns" in out  # a time RFC 3339 cannot write, as nanoseconds


def test_the_push_command_needs_a_url_and_says_when_there_is_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOKI_URL", raising=False)
    assert cli_main(["spool", "dead-letters", "push", "--dir", str(tmp_path)]) == 2
    assert "no Loki URL" in capsys.readouterr().err
    assert cli_main(["spool", "dead-letters", "push", "--dir", str(tmp_path), "--url",
                     "http://127.0.0.1:9"]) == 0
    assert "no dead letters" in capsys.readouterr().out
    assert cli_main(["spool", "dead-letters", "list", "--dir", str(tmp_path), "--format",
                     "table"]) == 0
    assert "no dead letters" in capsys.readouterr().out

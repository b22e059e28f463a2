"""Against a real Loki 3.7 at its default limits: nothing refused is silently gone, and one bad
entry never costs its batch.

* a batch with one entry three weeks old and one line over 256 KB among good ones: the good
  ones are stored, the two kept as dead letters with Loki's reasons; pushed again (this Loki's
  limits cannot change in a test) they stay, with the same reasons;
* a batch with an entry Loki cannot parse (a time after 2262: Loki refuses the whole push) is
  split until that entry stands alone: every other entry is stored.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import urllib3

from shipper import LokiHandler
from shipper.cli.main import main as cli_main
from shipper.config import ShipperConfig
from shipper.delivery.spool.deadletters import DeadLetterReader, dead_letter_dir
from shipper.event import Entry
from tests.delivery.test_dead_letters import ship_entries
from tests.live.conftest import query_range, wait_for


def _messages(pool: urllib3.PoolManager, loki_url: str, service: str, start: int) -> list[str]:
    data = query_range(pool, loki_url, f'{{service_name="{service}"}}', start,
                       time.time_ns() + 60 * 10**9)["data"]
    return sorted(json.loads(v[1])["message"] for s in data["result"] for v in s["values"])


def test_refused_entries_are_dead_letters_and_stay_so_when_pushed_again(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
) -> None:
    start = time.time_ns() - 60 * 10**9
    spool_dir = tmp_path / "spool"
    handler = LokiHandler(loki_url, service=unique_service, spool_dir=str(spool_dir),
                          max_line_bytes=1 << 20, batch_max_wait=0.2)
    log = logging.getLogger(f"it.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        for i in range(5):
            log.info("good %d", i)
        log.info("three weeks old", extra={"event_time": time.time() - 21 * 86400})
        log.info("too long %s", "x" * 300_000)
        for i in range(5, 10):
            log.info("good %d", i)
        assert handler.flush(timeout=30)
        stats = handler.stats()
    finally:
        handler.close()
    good = sorted(f"good {i}" for i in range(10))
    assert wait_for(lambda: _messages(loki_http, loki_url, unique_service, start) == good)
    assert stats["dead_lettered"] == {"too_old": 1, "line_too_long": 1}

    def reasons() -> dict[str, str]:
        return {json.loads(letter.entry.line)["message"][:8]: letter.reason
                for letter in DeadLetterReader(dead_letter_dir(spool_dir))}

    assert reasons() == {"three we": "too_old", "too long": "line_too_long"}
    # Loki's limits are what they were: pushed again, both are refused again, for the same
    # reasons, and stay dead letters
    code = cli_main(["spool", "dead-letters", "push", "--dir", str(spool_dir), "--url",
                     loki_url])
    assert code == 1
    assert reasons() == {"three we": "too_old", "too long": "line_too_long"}
    assert _messages(loki_http, loki_url, unique_service, start) == good


def test_an_entry_loki_cannot_parse_costs_only_itself(
    loki_url: str, loki_http: urllib3.PoolManager, unique_service: str, tmp_path: Path,
) -> None:
    start = time.time_ns() - 60 * 10**9
    labels = (("service_name", unique_service), ("level", "INFO"), ("actor", "SYSTEM"),
              ("type", "LOG"))
    entries = [Entry(labels, time.time_ns() - 10**9 + i, json.dumps({"message": f"good {i}"}))
               for i in range(20)]
    poisoned = Entry(labels, 2**63 + 10**18, json.dumps({"message": "after 2262"}))
    entries.insert(13, poisoned)
    spool_dir = tmp_path / "spool"
    stats = ship_entries(ShipperConfig(url=loki_url, service=unique_service,
                                       spool_dir=str(spool_dir)), entries)
    good = sorted(f"good {i}" for i in range(20))
    assert wait_for(lambda: _messages(loki_http, loki_url, unique_service, start) == good)
    assert stats["dead_lettered"] == {"bad_request": 1}
    [letter] = DeadLetterReader(dead_letter_dir(spool_dir))
    assert letter.entry == poisoned
    assert letter.message.startswith("loghttp.PushRequest.Streams")

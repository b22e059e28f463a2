"""docs/promtail.md's example against a real Loki 3.7: Promtail's configuration converted, the
sidecar run on the log file with Promtail's positions file; Loki holds exactly the lines Promtail
had not read and its drop stage kept, with the labels and structured metadata the page promises."""

from __future__ import annotations

import json
import time
from pathlib import Path

import urllib3

from tests.live.conftest import query_range, wait_for
from tests.support.promtail_example import lay_out, page_files, run


def test_the_pages_example_ships_only_what_promtail_had_not_read_nor_dropped_to_a_real_loki(
        tmp_path: Path, loki_url: str, loki_http: urllib3.PoolManager,
        unique_service: str) -> None:
    service = f"promtail-{unique_service}"
    files = page_files()
    files["promtail.yaml"] = files["promtail.yaml"].replace("http://loki:3100", loki_url)
    lay_out(tmp_path, files, service=service)
    result = run(tmp_path)
    assert result.sidecar_status == 0, result.sidecar_stderr
    assert "1 file started where Promtail stopped" in result.sidecar_stderr

    def stored() -> list[tuple[dict[str, str], dict[str, object]]]:
        body = query_range(loki_http, loki_url, f'{{service_name="{service}"}}',
                           time.time_ns() - 3600 * 10**9, time.time_ns() + 60 * 10**9)
        return [(stream["stream"], json.loads(value[1]))
                for stream in body["data"]["result"] for value in stream["values"]]

    assert wait_for(lambda: len(stored()) >= 2, timeout=30)
    time.sleep(1)  # anything more would show now
    entries = sorted(stored(), key=lambda e: str(e[1]["message"]))
    assert [(labels["level"], labels["type"], labels["actor"], labels["env"],
             labels.get("actor_id"), line["message"]) for labels, line in entries] == [
        ("ERROR", "PAYMENT_FAILED", "USER", "production", "user_42", "Card declined"),
        ("INFO", "ORDER_PLACED", "USER", "production", "user_42", "Order placed"),
    ]  # the debug line is dropped by the converted drop stage, as Promtail dropped it
    assert 'drop rule 0' in result.sidecar_stderr

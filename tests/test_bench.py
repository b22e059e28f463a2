"""The benchmark scripts still run against the code as it is (they reach into the pipeline's
worker and start the real sidecar): small counts, counts checked, no timing asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_worker_profile_converts_and_sends_every_queued_record() -> None:
    out = _run("bench/profile_worker.py", "--events", "3000")
    # three timed passes over the same 3,000 queued records, all answered 204
    assert re.search(r"worker: [\d.]+ us of CPU per event .*; sent 9000, dropped 0", out), out


def test_the_encodings_table_has_every_encoding() -> None:
    out = _run("bench/run.py", "--only", "encodings")
    rows = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"json", "json+gzip", "protobuf"} <= rows, out


def test_the_sidecar_benchmark_delivers_every_line_of_its_file() -> None:
    """``python -m shipper sidecar`` tails the file into the fake Loki, which counts them."""
    out = _run("bench/sidecar.py", "--lines", "3000", timeout=180)
    rows = [line for line in out.splitlines() if line.startswith("| shipper sidecar")]
    assert [row.split("|")[1].strip() for row in rows] == \
        ["shipper sidecar, one process", "shipper sidecar, `workers: 2`"], out
    assert [row.split("|")[2].strip() for row in rows] == ["3,000", "3,000"], out

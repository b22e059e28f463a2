"""The benchmark scripts still run against the code as it is (they reach into the pipeline's
worker and start the real sidecar): small counts, counts checked, no timing asserted."""

from __future__ import annotations

import json
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


def test_the_line_floor_reads_every_line_at_every_stage() -> None:
    out = _run("bench/line_floor.py", "--lines", "2000")
    rows = re.findall(r"^  (.+?)\s+[\d.]+ µs of CPU per line \(2,000 lines\)$", out, re.M)
    assert rows == ["read, decode, split", "+ msgspec parse", "+ labels, an event object",
                    "+ the JSON line", "+ streams grouped, push body",
                    "parse into events", "redaction check", "entries (labels, JSON line)",
                    "push bodies", "freeing the events"], out
    assert re.search(r"^  all of them\s+[\d.]+ µs of CPU per line$", out, re.M), out


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


_FAKE_PROMTAIL = '''#!{python}
"""Stands in for Promtail: reads its -config.file, pushes the file's lines to the client's
URL as a JSON push, then answers /metrics with promtail_sent_entries_total."""
import http.server, json, sys, urllib.request
config = json.load(open(sys.argv[1].split("=", 1)[1]))
with open({record!r}, "a") as out:
    out.write(json.dumps(config["scrape_configs"][0]["pipeline_stages"]) + "\\n")
target = config["scrape_configs"][0]["static_configs"][0]["labels"]
lines = open(target["__path__"]).read().splitlines()
body = json.dumps({{"streams": [{{"stream": {{"service_name": target["service_name"]}},
                                 "values": [[str(1_700_000_000_000_000_000 + i), line]
                                            for i, line in enumerate(lines)]}}]}}).encode()
request = urllib.request.Request(config["clients"][0]["url"], data=body,
                                 headers={{"Content-Type": "application/json"}})
urllib.request.urlopen(request, timeout=30).read()
metrics = f'promtail_sent_entries_total{{{{host="x",tenant=""}}}} {{len(lines)}}\\n'.encode()

class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(metrics)

    def log_message(self, *args):
        pass

port = config["server"]["http_listen_port"]
http.server.HTTPServer(("127.0.0.1", port), Metrics).serve_forever()
'''


def test_the_sidecar_benchmark_runs_promtail_with_and_without_the_pipeline(
        tmp_path: Path) -> None:
    """``--promtail PATH``: two more rows per round, Promtail done when its own counter says
    so, Loki's count checked; the first run gets the stages that do the sidecar's work, the
    second none. A path that is not there is said and skipped."""
    record = tmp_path / "stages.jsonl"
    promtail = tmp_path / "promtail"
    promtail.write_text(_FAKE_PROMTAIL.format(python=sys.executable, record=str(record)))
    promtail.chmod(0o755)
    out = _run("bench/sidecar.py", "--lines", "2000", "--workers", "1", "--promtail",
               str(promtail), timeout=180)
    table = out.split("\n\n")[1]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")][2:]
    assert [(r[1].strip(), r[2].strip()) for r in rows[:3]] == [
        ("shipper sidecar, one process", "2,000"),
        ("Promtail, json + labels + structured_metadata + timestamp stages", "2,000"),
        ("Promtail, no pipeline stages", "2,000")], out
    with_stages, without = (json.loads(line) for line in record.read_text().splitlines())
    assert [next(iter(stage)) for stage in with_stages] == \
        ["json", "labels", "structured_metadata", "timestamp"]
    assert with_stages[0]["json"]["expressions"]["actor_id"] == "actorId"
    assert without == []
    assert "one process against Promtail with the equivalent pipeline" in out

    skipped = _run("bench/sidecar.py", "--lines", "500", "--workers", "1", "--promtail",
                   str(tmp_path / "absent"), timeout=180)
    assert f"--promtail {tmp_path / 'absent'}: no executable file there" in skipped
    assert "| Promtail" not in skipped

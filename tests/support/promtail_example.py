"""The example of docs/promtail.md, run as a user moving from Promtail would: Promtail's
``promtail.yaml`` converted with ``shipper sidecar convert-promtail``, the result loaded by the
sidecar's own loader, then the sidecar run on the log file with Promtail's positions file, until
it has read the file to its end (a line its drop rules keep out counts as read).

Absolute paths of the example (``/var/log/...``, ``/var/lib/promtail/...``) are taken inside a
work directory, and the times in the log lines are moved to the last minute (same length, same
order), so that Loki takes them whenever the test runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from shipper.sidecar.config import load_config
from tests.support.docsnippets import ROOT, blocks
from tests.support.waiting import wait_until

PAGE = ROOT / "docs" / "promtail.md"
_ABSOLUTE = re.compile(r"(?<=[\s'\"])/var/")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


@dataclass
class Run:
    convert_status: int
    convert_stderr: str
    sidecar_stderr: str
    sidecar_status: int


def page_files() -> dict[str, str]:
    """The example's files from the page: project file name -> text."""
    return {block.options["file"]: block.code for block in blocks(PAGE)
            if block.options.get("harness") == "promtail_migration"}


def recent_times(text: str) -> str:
    """Every RFC 3339 time moved to the last minute, in order, each keeping its length."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    count = 0

    def recent(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        when = start + dt.timedelta(seconds=count)
        digits = len(match.group(1) or ".") - 1
        fraction = f".{when.microsecond:06d}"[:digits + 1] if digits else ""
        return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"

    return _TIME.sub(recent, text)


def lay_out(work: Path, files: dict[str, str], *, service: str | None = None) -> None:
    """The example's files in ``work``, absolute paths taken inside it; ``service`` in place
    of the job's name (a run of its own in a shared Loki)."""
    for name, given in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".log"):
            text = recent_times(given)
        else:
            text = _ABSOLUTE.sub(f"{work}/var/", given)
            if service is not None:
                text = text.replace("job: checkout", f"job: {service}")
        target.write_text(text, encoding="utf-8")


def run(work: Path, *, timeout: float = 60.0) -> Run:
    """Convert ``work/promtail.yaml``, load the result, run the sidecar on it until it has read
    every log file to its end, stop it with SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "SHIPPER_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    converted = subprocess.run(
        [sys.executable, "-m", "shipper", "sidecar", "convert-promtail", "promtail.yaml"],
        check=False, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    if converted.returncode not in (0, 3):
        raise AssertionError(f"convert-promtail exited {converted.returncode}:\n"
                             f"{converted.stderr}")
    sidecar_yaml = work / "sidecar.yaml"
    sidecar_yaml.write_text(converted.stdout, encoding="utf-8")
    load_config(sidecar_yaml, environ=env)  # as printed, the sidecar's loader takes it
    # where this run may write: its own positions file, spool, no metrics port
    config = yaml.safe_load(converted.stdout)
    config.update(positions_file=str(work / "positions.json"), spool_dir=str(work / "spool"),
                  metrics_listen=None, positions_interval="100ms")
    config["loki"].update(batch_max_wait="100ms")
    for source in config["sources"]:
        source.update(poll_interval="20ms", scan_interval="100ms")
    local = work / "sidecar-local.yaml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    logs = list((work / "var" / "log").rglob("*.log"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipper", "sidecar", "--config", str(local)],
        cwd=work, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        read = wait_until(lambda: _read_to_end(work / "positions.json", logs), timeout)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    if not read:
        raise AssertionError(f"the sidecar did not read the files to their end:\n{stderr}")
    return Run(converted.returncode, converted.stderr, stderr, proc.returncode)


def _read_to_end(positions: Path, logs: list[Path]) -> bool:
    try:
        saved = json.loads(positions.read_text())
    except (OSError, ValueError):
        return False
    offsets = {item["path"]: item["offset"] for item in saved["files"]}
    return all(offsets.get(str(log)) == log.stat().st_size for log in logs)

"""Real servers the harnesses start as subprocesses and stop as a deploy does."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The server, killed on the way out if it is still there."""
    proc = subprocess.Popen(argv, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def stop_with_sigterm(proc: subprocess.Popen[bytes], what: str) -> None:
    """SIGTERM, as a deploy sends it; the server must end cleanly (exit status 0)."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    if code != 0:
        sys.exit(f"{what} exited with {code} after SIGTERM")

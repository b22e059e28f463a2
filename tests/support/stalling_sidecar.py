"""``shipper`` whose file sources hang, as on a hung network filesystem, while the file named
by ``$STALL_MARKER`` exists, and count as stalled after one second (instead of 30): the real
sidecar process, for the tests of /healthz and /ready."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from shipper.cli.main import main
from shipper.sidecar.sources.file import FileSource

_MARKER = os.environ["STALL_MARKER"]
_real_poll = FileSource._poll


def _hung(self: FileSource, tail: Any, now: float, draining: bool) -> bool:
    while os.path.exists(_MARKER):  # a read that does not return
        time.sleep(0.02)
    return _real_poll(self, tail, now, draining)


FileSource.stalled_after = 1.0
FileSource._poll = _hung  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())

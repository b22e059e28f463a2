"""``python -m shipper.cli``: the ``shipper`` command."""

from __future__ import annotations

import sys

from shipper.cli.main import main

if __name__ == "__main__":  # not when a worker process (multiprocessing spawn) imports it
    sys.exit(main())

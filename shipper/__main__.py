"""``python -m shipper ...``: the same as the ``shipper`` command."""

import sys

from shipper.cli import main

sys.exit(main())

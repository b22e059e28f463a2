"""``shipper retention``: per-level retention as code, ``loki/retention.yaml`` → Loki's
``limits_config``, and back.

* :mod:`~shipper.cli.retention.policy`: the policy, loaded and validated, and rendered into a
  Loki config file or a Helm values file;
* :mod:`~shipper.cli.retention.explain`: which rule decides a stream, and when its entries go;
* :mod:`~shipper.cli.retention.check`: whether a running Loki applies the policy (drift).

The selectors are LogQL's, parsed and evaluated by :mod:`shipper.loki.selector`. Re-exported
here: what the ``shipper`` command, ``shipper doctor`` and the tests use.
"""

from shipper.cli.retention.check import CheckRow, check, check_url, format_check_table
from shipper.cli.retention.explain import Explanation, explain
from shipper.cli.retention.policy import (
    BLOCK_BEGIN,
    BLOCK_END,
    FOREVER_PERIOD,
    FOREVER_PRIORITY,
    LEVEL_PRIORITY,
    SELECTOR_PRIORITY,
    RetentionError,
    RetentionPolicy,
    resolve_retention_file,
)

__all__ = [
    "BLOCK_BEGIN",
    "BLOCK_END",
    "FOREVER_PERIOD",
    "FOREVER_PRIORITY",
    "LEVEL_PRIORITY",
    "SELECTOR_PRIORITY",
    "CheckRow",
    "Explanation",
    "RetentionError",
    "RetentionPolicy",
    "check",
    "check_url",
    "explain",
    "format_check_table",
    "resolve_retention_file",
]

"""Where the admin commands take their time range from: :mod:`shipper.loki.timerange`,
shared with :class:`shipper.loki.LokiReader` (re-exported here for the commands' imports)."""

from __future__ import annotations

from shipper.loki.timerange import TimeError, TimeRange, resolve_range

__all__ = ["TimeError", "TimeRange", "resolve_range"]

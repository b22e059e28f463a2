"""The sidecar: ship what other apps write to files, to stdout (Docker), over HTTP or OTLP.

Every source parses what it reads into a :class:`~shipper.event.LogEvent` and hands it to the
one :class:`~shipper.delivery.pipeline.Pipeline` the handler uses: the same batching, Loki client,
redaction and spool. ``shipper sidecar --config sidecar.yaml`` runs it (see docs/sidecar.md).
"""

from __future__ import annotations

from shipper.sidecar.config import (
    DockerSourceConfig,
    FileSourceConfig,
    HttpSourceConfig,
    MultilineConfig,
    SidecarConfig,
    SidecarConfigError,
    load_config,
)
from shipper.sidecar.formats import LineParser, parse_logfmt, parse_timestamp
from shipper.sidecar.runner import Sidecar, StartupError

__all__ = [
    "DockerSourceConfig",
    "FileSourceConfig",
    "HttpSourceConfig",
    "LineParser",
    "MultilineConfig",
    "Sidecar",
    "SidecarConfig",
    "SidecarConfigError",
    "StartupError",
    "load_config",
    "parse_logfmt",
    "parse_timestamp",
]

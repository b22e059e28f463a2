"""shipper: labeled system logs from Python apps to Grafana Loki.

What apps import: the logging handler, the SystemLog API, the event contract, configuration,
request context, redaction and shutdown; and what scripts read Loki with (``LokiReader``,
``LokiError``). The delivery engine (:mod:`shipper.delivery`), reading Loki
(:mod:`shipper.loki`), the sidecar (:mod:`shipper.sidecar`) and the command line
(:mod:`shipper.cli`) are reachable through their packages; docs/development.md maps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipper._version import __version__
from shipper.api import (
    SystemLog,
    log_admin_action,
    log_api_error,
    log_auth,
    log_creator_action,
    log_critical,
    log_error,
    log_info,
    log_system,
    log_user_action,
    log_warning,
    log_webhook,
)
from shipper.config import ConfigError, ShipperConfig
from shipper.context import LogContext, bind_context, current_context, log_context, reset_context
from shipper.event import Actor, Entry, Level, LogEvent
from shipper.handler import LokiHandler
from shipper.lifecycle import ShutdownReport, shutdown
from shipper.perf import log_operation, log_performance
from shipper.redact import DEFAULT_REDACT_KEYS, Redactor, redact_text, redact_value

if TYPE_CHECKING:
    from shipper.loki.client import LokiError
    from shipper.loki.read_api import LokiReader

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "Actor",
    "ConfigError",
    "Entry",
    "Level",
    "LogContext",
    "LogEvent",
    "LokiError",
    "LokiHandler",
    "LokiReader",
    "Redactor",
    "ShipperConfig",
    "ShutdownReport",
    "SystemLog",
    "__version__",
    "bind_context",
    "current_context",
    "log_admin_action",
    "log_api_error",
    "log_auth",
    "log_context",
    "log_creator_action",
    "log_critical",
    "log_error",
    "log_info",
    "log_operation",
    "log_performance",
    "log_system",
    "log_user_action",
    "log_warning",
    "log_webhook",
    "redact_text",
    "redact_value",
    "reset_context",
    "shutdown",
]


def __getattr__(name: str) -> Any:
    """``LokiReader`` and ``LokiError`` load on first use: an app that only logs never pays
    for the read side's imports."""
    if name == "LokiReader":
        from shipper.loki.read_api import LokiReader

        return LokiReader
    if name == "LokiError":
        from shipper.loki.client import LokiError

        return LokiError
    raise AttributeError(f"module 'shipper' has no attribute {name!r}")

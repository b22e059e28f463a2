"""shipper: labeled system logs from Python apps to Grafana Loki.

What apps import: the logging handler, the SystemLog API, the event contract, configuration,
request context, redaction and shutdown. The delivery engine (:mod:`shipper.delivery`), reading
Loki (:mod:`shipper.loki`), the sidecar (:mod:`shipper.sidecar`) and the command line
(:mod:`shipper.cli`) are reachable through their packages; docs/development.md maps them.
"""

from __future__ import annotations

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

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "Actor",
    "ConfigError",
    "Entry",
    "Level",
    "LogContext",
    "LogEvent",
    "LokiHandler",
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

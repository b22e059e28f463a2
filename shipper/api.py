"""``SystemLog``: the seed apps' system-log API, on top of standard ``logging``.

Each call becomes one ``logging`` record whose ``extra`` carries the event fields (``type``,
``actor``, ``actor_id``, ``metadata``), so the records go wherever the app's logging config sends
them (a :class:`~shipper.handler.LokiHandler`, the console, a file) and nothing here talks to Loki.

An app adds its own domain helpers by subclassing::

    class AppLog(SystemLog):
        def payment(self, payment_id: str, user_id: str, amount: int, ok: bool) -> None:
            self.user_action("PAYMENT_" + ("SUCCEEDED" if ok else "FAILED"), user_id,
                             f"Payment {payment_id}", {"payment_id": payment_id, "amount": amount},
                             level=Level.INFO if ok else Level.ERROR)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shipper.event import Actor, Level, normalize_level, normalize_type, text_of

__all__ = [
    "DEFAULT_LOGGER_NAME",
    "SystemLog",
    "log_admin_action",
    "log_api_error",
    "log_auth",
    "log_creator_action",
    "log_critical",
    "log_error",
    "log_info",
    "log_system",
    "log_user_action",
    "log_warning",
    "log_webhook",
]

#: the logger the module-level ``log_*`` helpers write to
DEFAULT_LOGGER_NAME = "systemlog"

Metadata = Mapping[str, Any] | None


class SystemLog:
    """Structured system-log calls: ``slog.info("USER_PROFILE_UPDATE", Actor.USER, "Updated",
    "user_42", {"fields": ["bio"]})``. Never raises into the caller for bad input: levels,
    actors and types are normalised downstream, exactly like records from plain ``logging``."""

    def __init__(self, logger: logging.Logger | str | None = None) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or DEFAULT_LOGGER_NAME)
        self.logger = logger

    # ------------------------------------------------------------------ the core call

    def log(
        self,
        level: Level | str | int,
        type: str,
        actor: Actor | str | None,
        message: str,
        actor_id: str | None = None,
        metadata: Metadata = None,
        *,
        exc_info: Any = None,
        stacklevel: int = 1,
    ) -> None:
        lvl, original = normalize_level(level)
        extra: dict[str, Any] = {
            "type": type,
            "actor": actor.value if isinstance(actor, Actor) else actor,
            "actor_id": actor_id,
            "metadata": metadata,
        }
        if original is not None:
            extra["original_level"] = original
        # +2: this frame and the public helper that called it
        self.logger.log(
            lvl.logging_level, message, extra=extra, exc_info=exc_info, stacklevel=stacklevel + 2
        )

    def debug(self, type: str, actor: Actor | str | None, message: str,
              actor_id: str | None = None, metadata: Metadata = None) -> None:
        self.log(Level.DEBUG, type, actor, message, actor_id, metadata)

    def info(self, type: str, actor: Actor | str | None, message: str,
             actor_id: str | None = None, metadata: Metadata = None) -> None:
        self.log(Level.INFO, type, actor, message, actor_id, metadata)

    def warning(self, type: str, actor: Actor | str | None, message: str,
                actor_id: str | None = None, metadata: Metadata = None) -> None:
        self.log(Level.WARNING, type, actor, message, actor_id, metadata)

    def error(self, type: str, actor: Actor | str | None, message: str,
              actor_id: str | None = None, metadata: Metadata = None) -> None:
        self.log(Level.ERROR, type, actor, message, actor_id, metadata)

    def critical(self, type: str, actor: Actor | str | None, message: str,
                 actor_id: str | None = None, metadata: Metadata = None) -> None:
        self.log(Level.CRITICAL, type, actor, message, actor_id, metadata)

    # ------------------------------------------------------------------ domain helpers

    def auth(self, action: str, actor_id: str | None, success: bool,
             metadata: Metadata = None) -> None:
        """``AUTH_<ACTION>`` by a USER; a failure is a WARNING. ``metadata.success`` is set."""
        action_type = normalize_type(action)
        outcome = "succeeded" if success else "failed"
        self.log(
            Level.INFO if success else Level.WARNING,
            f"AUTH_{action_type}",
            Actor.USER,
            f"Auth {action_type.lower().replace('_', ' ')} {outcome}",
            actor_id,
            _with(metadata, success=bool(success)),
        )

    def user_action(self, type: str, user_id: str | None, message: str,
                    metadata: Metadata = None, level: Level | str | int = Level.INFO) -> None:
        self.log(level, type, Actor.USER, message, user_id, metadata)

    def creator_action(self, type: str, creator_id: str | None, message: str,
                       metadata: Metadata = None, level: Level | str | int = Level.INFO) -> None:
        self.log(level, type, Actor.CREATOR, message, creator_id, metadata)

    def admin_action(self, type: str, admin_id: str | None, message: str,
                     level: Level | str | int = Level.INFO, metadata: Metadata = None) -> None:
        self.log(level, type, Actor.ADMIN, message, admin_id, metadata)

    def system(self, type: str, message: str, level: Level | str | int = Level.INFO,
               metadata: Metadata = None) -> None:
        self.log(level, type, Actor.SYSTEM, message, None, metadata)

    def webhook(self, provider: str, event_type: str, success: bool,
                metadata: Metadata = None) -> None:
        """``WEBHOOK_<EVENT_TYPE>`` from SYSTEM with ``provider``, ``event_type`` and ``success``
        in metadata; a failure is an ERROR."""
        outcome = "processed" if success else "failed"
        self.log(
            Level.INFO if success else Level.ERROR,
            f"WEBHOOK_{normalize_type(event_type)}",
            Actor.SYSTEM,
            f"Webhook {provider} {event_type} {outcome}",
            None,
            _with(metadata, provider=provider, event_type=event_type, success=bool(success)),
        )

    def api_error(self, endpoint: str, error: BaseException | str,
                  actor: Actor | str | None = Actor.SYSTEM, actor_id: str | None = None,
                  metadata: Metadata = None) -> None:
        """``API_ERROR`` at ERROR; an exception keeps its type, message and traceback."""
        meta = _with(metadata, endpoint=endpoint)
        exc_info: Any = None
        if isinstance(error, BaseException):
            meta["error_type"] = type(error).__name__
            exc_info = (type(error), error, error.__traceback__)
            text = text_of(error) or type(error).__name__
        else:
            text = text_of(error)
        self.log(Level.ERROR, "API_ERROR", actor, f"{endpoint}: {text}", actor_id, meta,
                 exc_info=exc_info)


def _with(metadata: object, **fields: Any) -> dict[str, Any]:
    """The caller's metadata with the helper's own fields; metadata that is not a mapping (or
    cannot be read as one) is kept under ``value``, as the handler keeps it."""
    merged: dict[str, Any] = {}
    if isinstance(metadata, Mapping):
        try:
            merged.update(metadata)
        except Exception:
            merged = {"value": metadata}
    elif metadata is not None:
        merged["value"] = metadata
    merged.update(fields)
    return merged


_default: SystemLog | None = None


def _slog() -> SystemLog:
    global _default
    if _default is None:
        _default = SystemLog()
    return _default


def log_info(type: str, actor: Actor | str | None, message: str, actor_id: str | None = None,
             metadata: Metadata = None) -> None:
    _slog().log(Level.INFO, type, actor, message, actor_id, metadata)


def log_warning(type: str, actor: Actor | str | None, message: str,
                actor_id: str | None = None, metadata: Metadata = None) -> None:
    _slog().log(Level.WARNING, type, actor, message, actor_id, metadata)


def log_error(type: str, actor: Actor | str | None, message: str, actor_id: str | None = None,
              metadata: Metadata = None) -> None:
    _slog().log(Level.ERROR, type, actor, message, actor_id, metadata)


def log_critical(type: str, actor: Actor | str | None, message: str,
                 actor_id: str | None = None, metadata: Metadata = None) -> None:
    _slog().log(Level.CRITICAL, type, actor, message, actor_id, metadata)


def log_auth(action: str, actor_id: str | None, success: bool, metadata: Metadata = None) -> None:
    _slog().auth(action, actor_id, success, metadata)


def log_user_action(type: str, user_id: str | None, message: str, metadata: Metadata = None,
                    level: Level | str | int = Level.INFO) -> None:
    _slog().user_action(type, user_id, message, metadata, level)


def log_creator_action(type: str, creator_id: str | None, message: str,
                       metadata: Metadata = None, level: Level | str | int = Level.INFO) -> None:
    _slog().creator_action(type, creator_id, message, metadata, level)


def log_admin_action(type: str, admin_id: str | None, message: str,
                     level: Level | str | int = Level.INFO, metadata: Metadata = None) -> None:
    _slog().admin_action(type, admin_id, message, level, metadata)


def log_system(type: str, message: str, level: Level | str | int = Level.INFO,
               metadata: Metadata = None) -> None:
    _slog().system(type, message, level, metadata)


def log_webhook(provider: str, event_type: str, success: bool, metadata: Metadata = None) -> None:
    _slog().webhook(provider, event_type, success, metadata)


def log_api_error(endpoint: str, error: BaseException | str,
                  actor: Actor | str | None = Actor.SYSTEM, actor_id: str | None = None,
                  metadata: Metadata = None) -> None:
    _slog().api_error(endpoint, error, actor, actor_id, metadata)

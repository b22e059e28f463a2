"""The arguments of the other Loki handlers, as shipper settings or an error saying what to write.

An app moving from python-logging-loki (``LokiHandler(url, tags, auth, version)``) or
loki-logger-handler (``LokiLoggerHandler(url, labels, label_keys, auth, additional_headers,
compressed, ...)``) may keep its call: :func:`translate_arguments` turns what maps cleanly into
shipper's settings (``auth=(user, password)``, ``version="1"``, ``compressed``, the
``service`` and ``env`` that ``tags`` or ``labels`` name) and refuses the rest with a
:class:`~shipper.config.ConfigError` that names the argument and says what to write instead.
docs/migrating.md is the table of every argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shipper.config import ConfigError
from shipper.line import text_of

__all__ = ["ENV_TAGS", "SERVICE_TAGS", "translate_arguments"]

#: label names of the other handlers that mean the app's name: the ``service_name`` label
SERVICE_TAGS = ("service_name", "service", "application", "app", "job")
#: label names that mean the deployment environment: the ``env`` label
ENV_TAGS = ("env", "environment")

_LABELS_ONLY = ("shipper's labels are service_name, env, level, actor and type, so that the "
                "streams stay few")


def translate_arguments(settings: dict[str, Any], service: Any, env: Any,
                        ) -> tuple[dict[str, Any], Any, Any]:
    """``(settings, service, env)`` with the other handlers' arguments translated (a new
    dict; ``settings`` is left as it was). Raises :class:`~shipper.config.ConfigError` for an
    argument that has no clean equivalent, naming it and what to write instead."""
    if isinstance(service, Mapping):  # LokiLoggerHandler(url, labels): its second argument
        settings = {**settings, "labels": service}
        service = None
    if not any(name in settings for name in _ARGUMENTS):
        return settings, service, env
    out = dict(settings)
    for name, take in _ARGUMENTS.items():
        if name in out:
            service, env = take(out, out.pop(name), service, env)
    return out, service, env


def _auth(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
    if value is None:
        return service, env
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(part, str) for part in value)):
        raise ConfigError("auth: expected a (user, password) pair of strings; or set username= "
                          "and password= (LOKI_USERNAME, LOKI_PASSWORD)")
    for key, part in zip(("username", "password"), value, strict=True):
        if out.get(key) not in (None, part):
            raise ConfigError(f"auth: {key} is given twice (auth= and {key}=): give it once")
        out[key] = part
    return service, env


def _version(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
    if value is None or str(value).strip() == "1":
        return service, env  # Loki's /loki/api/v1/push: the only one shipper uses
    raise ConfigError(f"version: shipper pushes to Loki's /loki/api/v1/push (version '1') only, "
                      f"got {value!r}; Loki no longer has the version 0 endpoint "
                      f"(/api/prom/push): remove version=")


def _labels(name: str) -> Any:
    def take(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
        if value is None:
            return service, env
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of label names to values, got "
                              f"{type(value).__name__}; write service='my-app' and env='prod'")
        other = {}
        try:
            items = [(key if key.__class__ is str else None, key, label)
                     for key, label in value.items()]
        except Exception as exc:
            raise ConfigError(f"{name}: cannot read it as a mapping ({type(exc).__name__})"
                              ) from None
        for text, key, label in items:
            if text in SERVICE_TAGS:
                service = _one(name, "service", service, label)
            elif text in ENV_TAGS:
                env = _one(name, "env", env, label)
            else:
                other[key] = label
        if other:
            keys = sorted(text_of(key) for key in other)
            fields = "{" + ", ".join(f"{key!r}: ..." for key in keys) + "}"
            raise ConfigError(
                f"{name}: {_LABELS_ONLY}; {', '.join(map(repr, keys))} cannot be one. Write "
                f"service= and env= for the app's name and environment, and put the other "
                f"fields in the events' metadata: shipper.log_context(metadata={fields}) "
                f"around a request, or extra={fields} on a record")
        return service, env
    return take


def _one(name: str, setting: str, given: Any, label: Any) -> Any:
    if not isinstance(label, str):
        raise ConfigError(f"{name}: the {setting} must be text, got {type(label).__name__}")
    if given not in (None, "") and str(given) != str(label):
        raise ConfigError(f"{name}: it names the {setting} {label!r} and {setting}= says "
                          f"{given!r}: give it once")
    return label


def _label_keys(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
    if value:
        raise ConfigError("label_keys: a record's fields become no label in shipper but type "
                          "and actor (extra={'type': 'LOGIN', 'actor': 'USER'}); every other "
                          "extra field arrives in the line's metadata: remove label_keys=")
    return service, env


def _compressed(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
    encoding = "json+gzip" if value not in (False, "false", "0", 0, None) else "json"
    if out.get("encoding") not in (None, encoding):
        raise ConfigError(f"compressed: it means encoding={encoding!r}, and encoding= says "
                          f"{out['encoding']!r}: give encoding= only")
    out["encoding"] = encoding
    return service, env


def _headers(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
    if value:
        if out.get("headers"):
            raise ConfigError("additional_headers: headers= is given too: give headers= only")
        out["headers"] = value
    return service, env


def _json_lines(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
    if value is not None and value is not True:
        raise ConfigError("message_in_json_format: shipper's line is always a JSON object "
                          "(message, metadata, exception): remove message_in_json_format=")
    return service, env


def _refused(name: str, instead: str) -> Any:
    def refuse(out: dict[str, Any], value: Any, service: Any, env: Any) -> tuple[Any, Any]:
        raise ConfigError(f"{name}: {instead}")
    return refuse


_ARGUMENTS: dict[str, Any] = {
    "auth": _auth,
    "version": _version,
    "tags": _labels("tags"),
    "labels": _labels("labels"),
    "label_keys": _label_keys,
    "compressed": _compressed,
    "additional_headers": _headers,
    "message_in_json_format": _json_lines,
    "default_formatter": _refused(
        "default_formatter", "shipper writes the line itself (message, metadata, exception); "
        "a structlog ProcessorFormatter is read with handler.setFormatter(...): remove "
        "default_formatter="),
    "enable_self_errors": _refused(
        "enable_self_errors", "shipper says its own problems on stderr, once per kind, and "
        "counts them in handler.stats(): remove enable_self_errors="),
    "enable_structured_loki_metadata": _refused(
        "enable_structured_loki_metadata", "shipper's structured metadata is always on "
        "(actor_id, trace_id, logger): remove enable_structured_loki_metadata="),
    "loki_metadata": _refused(
        "loki_metadata", "fields every event carries go in the line's metadata: set them on "
        "each record with a logging filter (handler.addFilter; docs/migrating.md), or "
        "shipper.log_context(metadata={...}) around a request; trace_id and actor_id are "
        "structured metadata already"),
    "loki_metadata_keys": _refused(
        "loki_metadata_keys", "shipper's structured metadata is actor_id, trace_id and "
        "logger (extra={'trace_id': ...}); every other extra field arrives in the line's "
        "metadata: remove loki_metadata_keys="),
}

"""One frozen configuration object, from keyword arguments, environment variables or YAML.

Precedence: explicit keyword arguments > YAML file > environment variables > defaults. Every
value may be given as a string (``logging.config.dictConfig`` and env vars only carry strings):
``"1MiB"``, ``"1s"``, ``"true"`` are understood. A bad value raises :class:`ConfigError` naming
the setting and the value.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

__all__ = ["ENV_VARS", "ConfigError", "Encoding", "ShipperConfig", "default_spool_dir"]

Encoding = Literal["json", "json+gzip", "protobuf"]

#: Loki answers a push larger than this with a 500 (gRPC ResourceExhausted).
LOKI_MAX_REQUEST_BYTES = 4 * 1024 * 1024


class ConfigError(ValueError):
    """A setting has a value shipper cannot use; the message names the setting."""


#: environment variable → setting
ENV_VARS: dict[str, str] = {
    "LOKI_URL": "url",
    "LOKI_TENANT": "tenant",
    "LOKI_USERNAME": "username",
    "LOKI_PASSWORD": "password",
    "LOKI_BEARER_TOKEN": "bearer_token",
    "LOKI_CA_BUNDLE": "ca_bundle",
    "LOKI_VERIFY_TLS": "verify_tls",
    "LOKI_TIMEOUT": "timeout",
    "SHIPPER_SERVICE": "service",
    "SHIPPER_ENV": "env",
    "SHIPPER_ENCODING": "encoding",
    "SHIPPER_SPOOL_DIR": "spool_dir",
    "SHIPPER_SPOOL": "spool",
    "SHIPPER_SPOOL_MAX_BYTES": "spool_max_bytes",
    "SHIPPER_SPOOL_FSYNC": "spool_fsync",
    "SHIPPER_BATCH_MAX_BYTES": "batch_max_bytes",
    "SHIPPER_BATCH_MAX_WAIT": "batch_max_wait",
    "SHIPPER_QUEUE_MAX_EVENTS": "queue_max_events",
    "SHIPPER_MAX_LINE_BYTES": "max_line_bytes",
    "SHIPPER_TYPE_LIMIT": "type_limit",
    "SHIPPER_REDACT_KEYS": "redact_keys",
    "SHIPPER_REDACT_EMAILS": "redact_emails",
    "SHIPPER_SHUTDOWN_TIMEOUT": "shutdown_timeout",
    "SHIPPER_HANDLE_SIGTERM": "handle_sigterm",
}

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*$")


def default_spool_dir(service: str) -> Path:
    """``<user cache dir>/shipper/spool/<service>``: per user, per service, per platform."""
    import platformdirs

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", service) or "unknown_service"
    return Path(platformdirs.user_cache_dir("shipper")) / "spool" / safe


def _size(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a size such as 1048576 or '1MiB', got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(f"{name}: expected a size such as 1048576 or '1MiB', got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _duration(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected seconds or a duration such as '500ms', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if match is None:
        raise ConfigError(f"{name}: expected seconds or a duration such as '500ms', got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _int(name: str, value: object) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None


def _str_tuple(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    raise ConfigError(f"{name}: expected a list or a comma-separated string, got {value!r}")


@dataclass(frozen=True)
class ShipperConfig:
    """Everything the pipeline needs. Build it with :meth:`load` (env + YAML + kwargs) or
    directly; :meth:`replace` returns a changed copy."""

    #: Loki base URL (``http://loki:3100``) or full push URL; None → spool only (no server).
    url: str | None = None
    service: str = "unknown_service"
    env: str | None = None
    tenant: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    verify_tls: bool = True
    #: seconds for connecting and for reading each HTTP answer
    timeout: float = 10.0
    encoding: Encoding = "json"

    batch_max_bytes: int = 1024 * 1024
    batch_max_events: int = 10_000
    batch_max_wait: float = 1.0
    #: a queued record costs about 1.5 KB of memory: 20,000 of them ~30 MB; past that, events
    #: go to the spool (or are dropped and counted without one)
    queue_max_events: int = 20_000
    queue_max_bytes: int = 32 * 1024 * 1024

    #: how long one batch may be retried in memory before it goes to the spool (or is dropped)
    retry_budget: float = 30.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0

    spool: bool = True
    spool_dir: str | None = None
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    #: fsync every spool write: survives power loss, not just a killed process (slower)
    spool_fsync: bool = False

    max_line_bytes: int = 256 * 1024
    type_limit: int = 100
    redact_keys: tuple[str, ...] = ()
    redact_emails: bool = False
    #: loggers whose records never reach the handler (its own HTTP stack is always excluded)
    ignore_loggers: tuple[str, ...] = ()
    #: seconds ``close()`` and the exit hook may spend draining
    shutdown_timeout: float = 5.0
    handle_sigterm: bool = field(default=True, metadata={
        "help": "when SIGTERM still has its default action (nothing in the process handles it), "
                "run shipper.shutdown() on SIGTERM first, then let the signal end the process "
                "as before"})

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.url is not None:
            url = str(self.url).strip()
            if not url:
                set_(self, "url", None)
            elif not re.match(r"^https?://[^/\s]+", url):
                raise ConfigError(f"url: expected http(s)://host[:port][/path], got {self.url!r}")
            else:
                set_(self, "url", url)
        if self.encoding not in get_args(Encoding):
            raise ConfigError(
                f"encoding: expected one of {', '.join(get_args(Encoding))}, got {self.encoding!r}"
            )
        if self.username and not self.password:
            raise ConfigError("password: LOKI_USERNAME is set but LOKI_PASSWORD is not")
        if self.username and self.bearer_token:
            raise ConfigError("bearer_token: use basic auth or a bearer token, not both")
        if not 1024 <= self.batch_max_bytes <= LOKI_MAX_REQUEST_BYTES:
            raise ConfigError(
                f"batch_max_bytes: must be between 1 KiB and 4 MiB (Loki answers larger pushes "
                f"with a 500), got {self.batch_max_bytes}"
            )
        for name in ("batch_max_events", "queue_max_events", "queue_max_bytes", "type_limit",
                     "spool_max_bytes", "spool_segment_bytes", "max_line_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("timeout", "batch_max_wait", "backoff_min", "backoff_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be a positive duration, got {getattr(self, name)}")
        if self.retry_budget < 0 or self.shutdown_timeout < 0:
            raise ConfigError("retry_budget and shutdown_timeout must not be negative")

    # ------------------------------------------------------------------ building

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ShipperConfig:
        """Defaults, then environment variables (:data:`ENV_VARS`), then the YAML ``file``
        (``SHIPPER_CONFIG`` when not given), then ``overrides`` (None values are ignored)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var, name in ENV_VARS.items():
            if environ.get(var, "") != "":
                values[name] = environ[var]
        path = file if file is not None else environ.get("SHIPPER_CONFIG") or None
        if path is not None:
            values.update(cls._read_yaml(Path(path)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    @staticmethod
    def _read_yaml(path: Path) -> dict[str, Any]:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings at the top")
        section = data.get("shipper", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: 'shipper' must be a mapping of settings")
        return dict(section)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ShipperConfig:
        """Build from plain values (strings allowed), converting each to its type."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                close = [k for k in known if k.startswith(name[:4])]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"unknown setting {name!r}{hint}")
            kwargs[name] = _coerce(name, known[name].type, value)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> ShipperConfig:
        return ShipperConfig.from_mapping({**dataclasses.asdict(self), **changes})

    # ------------------------------------------------------------------ derived

    def resolved_spool_dir(self) -> Path | None:
        """The spool directory, or None when the spool is off."""
        if not self.spool:
            return None
        if self.spool_dir:
            return Path(self.spool_dir).expanduser()
        return default_spool_dir(self.service)


def _coerce(name: str, annotation: object, value: Any) -> Any:
    kind = str(annotation)
    if value is None:
        return None
    if name in {"batch_max_bytes", "queue_max_bytes", "spool_max_bytes", "spool_segment_bytes",
                "max_line_bytes"}:
        return _size(name, value)
    if name in {"timeout", "batch_max_wait", "retry_budget", "backoff_min", "backoff_max",
                "shutdown_timeout"}:
        return _duration(name, value)
    if kind == "bool":
        return _bool(name, value)
    if kind == "int":
        return _int(name, value)
    if kind.startswith("tuple"):
        return _str_tuple(name, value)
    if kind in ("str", "str | None", "Encoding"):
        return str(value)
    raise ConfigError(f"{name}: cannot use {value!r}")  # pragma: no cover - every field is above

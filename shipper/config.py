"""One frozen configuration object, from keyword arguments, environment variables or YAML.

Precedence: explicit keyword arguments > YAML file > environment variables > defaults. Every
value may be given as a string (``logging.config.dictConfig`` and env vars only carry strings):
``"1MiB"``, ``"1h30m"``, ``"true"`` are understood; sizes and durations are read by
:mod:`shipper._units`, as everywhere else. A bad value raises :class:`ConfigError` naming the
setting and the value.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from shipper._units import UnitError, parse_seconds, parse_size
from shipper.redact import hide_url_credentials

__all__ = ["ENV_VARS", "LOGCLI_ENV_VARS", "MIN_HEALTH_INTERVAL", "ConfigError", "Encoding",
           "ShipperConfig", "default_spool_dir", "env_vars"]

Encoding = Literal["json", "json+gzip", "protobuf"]

#: Loki answers a push larger than this with a 500 (gRPC ResourceExhausted).
LOKI_MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: the shortest ``health_interval`` but 0 (off): a heartbeat is one event per interval
MIN_HEALTH_INTERVAL = 1.0


class ConfigError(ValueError):
    """A setting has a value shipper cannot use; the message names the setting."""


def default_spool_dir(service: str) -> Path:
    """``<user cache dir>/shipper/spool/<service>``: per user, per service, per platform."""
    import platformdirs

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", service) or "unknown_service"
    return Path(platformdirs.user_cache_dir("shipper")) / "spool" / safe


def _size(name: str, value: object) -> int:
    try:
        return parse_size(value)
    except UnitError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _duration(name: str, value: object) -> float:
    try:
        return parse_seconds(value)
    except UnitError as exc:
        raise ConfigError(f"{name}: {exc}") from None


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
    directly; :meth:`replace` returns a changed copy.

    Each setting carries one line of help in ``metadata["help"]`` (and, where the default is
    computed, ``metadata["default_doc"]``): docs/configuration.md is generated from them. Each
    has an environment variable, ``SHIPPER_<SETTING>``, or the ``LOKI_*`` name its
    ``metadata["env"]`` gives (the connection to Loki): see :func:`env_vars`."""

    url: str | None = field(default=None, metadata={
        "env": "LOKI_URL",
        "help": "Loki base URL (`http://loki:3100`) or full push URL; unset: the spool only. "
                "A `user:password@` in it is sent as basic auth, like `username` and "
                "`password`, and never shown. logcli's `LOKI_ADDR` is read too "
                "(`LOKI_URL` wins)",
        "default_doc": "none: spool only"})
    service: str = field(default="unknown_service", metadata={
        "help": "the `service_name` label: the app's name"})
    env: str | None = field(default=None, metadata={
        "help": "the `env` label (deployment environment); left out when unset"})
    tenant: str | None = field(default=None, metadata={
        "env": "LOKI_TENANT",
        "help": "tenant sent as the `X-Scope-OrgID` header; logcli's `LOKI_ORG_ID` is read "
                "too (`LOKI_TENANT` wins)"})
    username: str | None = field(default=None, metadata={
        "env": "LOKI_USERNAME",
        "help": "basic-auth user (needs `password`)"})
    password: str | None = field(default=None, repr=False, metadata={
        "env": "LOKI_PASSWORD",
        "help": "basic-auth password"})
    bearer_token: str | None = field(default=None, repr=False, metadata={
        "env": "LOKI_BEARER_TOKEN",
        "help": "sent as `Authorization: Bearer ...`; not together with basic auth"})
    bearer_token_file: str | None = field(default=None, metadata={
        "env": "LOKI_BEARER_TOKEN_FILE",
        "help": "file holding the bearer token (a Kubernetes service account token): read "
                "again whenever it changes (its size, time or inode), so a rotated token is "
                "sent from the next request on; not together with `bearer_token` or basic auth"})
    ca_bundle: str | None = field(default=None, metadata={
        "env": "LOKI_CA_BUNDLE",
        "help": "CA bundle file that verifies Loki's TLS certificate; logcli's "
                "`LOKI_CA_CERT_PATH` is read too (`LOKI_CA_BUNDLE` wins)",
        "default_doc": "system CAs"})
    verify_tls: bool = field(default=True, metadata={
        "env": "LOKI_VERIFY_TLS",
        "help": "verify Loki's TLS certificate; logcli's `LOKI_TLS_SKIP_VERIFY=true` turns "
                "it off too (`LOKI_VERIFY_TLS` wins)"})
    client_cert: str | None = field(default=None, metadata={
        "env": "LOKI_CLIENT_CERT_PATH",
        "help": "client certificate (PEM) for mutual TLS, its key in the same file or in "
                "`client_key`; read again for new connections when it changes"})
    client_key: str | None = field(default=None, metadata={
        "env": "LOKI_CLIENT_KEY_PATH",
        "help": "private key (PEM, not encrypted) of `client_cert`"})
    proxy_url: str | None = field(default=None, metadata={
        "env": "LOKI_HTTP_PROXY_URL",
        "help": "HTTP proxy (`http://` or `https://`) for every request to Loki; a "
                "`user:password@` in it is sent to the proxy as basic auth and never shown",
        "default_doc": "from the environment (`proxy_from_env`)"})
    proxy_from_env: bool = field(default=True, metadata={
        "help": "without `proxy_url`: use `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and "
                "`NO_PROXY` (or their lower-case forms) as curl and requests do; false: "
                "connect to Loki directly whatever they say"})
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False, metadata={
        "help": "extra HTTP headers on every request to Loki: a mapping; in the variable "
                "`Name=value,Name2=value` or a JSON object. Not the headers shipper sets "
                "(`Content-Type`, `Content-Encoding`, `X-Scope-OrgID`: use `tenant`, ...), "
                "nor `Authorization` when credentials are set",
        "type_doc": "mapping of header name to text",
        "default_doc": "none"})
    timeout: float = field(default=10.0, metadata={
        "env": "LOKI_TIMEOUT",
        "help": "connect and read timeout of every HTTP request to Loki"})
    encoding: Encoding = field(default="json", metadata={
        "help": "push body: JSON, gzip-compressed JSON, or snappy protobuf (`protobuf` extra)"})

    batch_max_bytes: int = field(default=1024 * 1024, metadata={
        "help": "one push at most this big (1 KiB to 4 MiB: Loki answers larger ones with 500)"})
    batch_max_events: int = field(default=10_000, metadata={
        "help": "one push at most this many events"})
    batch_max_wait: float = field(default=1.0, metadata={
        "help": "an event waits at most this long for its batch"})
    queue_max_events: int = field(default=100_000, metadata={
        "help": "in-memory queue bound in events (a queued record costs about 400 bytes plus "
                "its message, so `queue_max_bytes` binds first for most); past it, as many "
                "again wait for the worker to spool them, then `emit` compacts them for it"})
    queue_max_bytes: int = field(default=32 * 1024 * 1024, metadata={
        "help": "in-memory queue bound by memory (measured per record: about 75,000 "
                "short events), and the bound of each overflow"})

    retry_budget: float = field(default=30.0, metadata={
        "help": "how long Loki may fail continuously (429, 5xx: no request accepted "
                "meanwhile) before batches go to the spool (or are dropped without one); a "
                "refused connection or a timeout goes there at once"})
    backoff_min: float = field(default=0.5, metadata={
        "help": "first retry delay; it doubles per attempt, with jitter"})
    backoff_max: float = field(default=30.0, metadata={
        "help": "longest retry delay (Loki's `Retry-After` wins)"})

    spool: bool = field(default=True, metadata={
        "help": "keep events on disk while they cannot be sent"})
    spool_dir: str | None = field(default=None, metadata={
        "help": "the spool directory",
        "default_doc": "`<user cache dir>/shipper/spool/<service>`"})
    spool_max_bytes: int = field(default=1024 * 1024 * 1024, metadata={
        "help": "spool size cap: DEBUG/INFO are evicted first, CRITICAL never"})
    spool_segment_bytes: int = field(default=4 * 1024 * 1024, metadata={
        "help": "size of one spool segment file"})
    spool_fsync: bool = field(default=False, metadata={
        "help": "fsync every spool write: survives power loss, not just a crash (slower)"})
    dead_letter_max_bytes: int = field(default=64 * 1024 * 1024, metadata={
        "help": "cap of the dead letters, the entries Loki refused (kept in the spool "
                "directory's `dead-letters`): the oldest are dropped over it, and counted"})

    max_line_bytes: int = field(default=256 * 1024, metadata={
        "help": "lines are truncated (still valid JSON) to this: Loki's `max_line_size`"})
    type_limit: int = field(default=100, metadata={
        "help": "distinct `type` values per service, in each process, before new ones "
                "become `OTHER`"})
    redact_keys: tuple[str, ...] = field(default=(), metadata={
        "help": "key names to mask, added to the built-in ones"})
    redact_emails: bool = field(default=False, metadata={
        "help": "also mask e-mail addresses"})
    extra_fields: bool = field(default=True, metadata={
        "help": "a record's other extra attributes (`extra={\"order_id\": 42}`, structlog's "
                "fields, python-logging-loki's `tags`) go into the line's `metadata` under "
                "their own names; off: only the event fields are read"})
    ignore_loggers: tuple[str, ...] = field(default=(), metadata={
        "help": "loggers whose records the handler skips (its own HTTP stack always is)"})
    shutdown_timeout: float = field(default=5.0, metadata={
        "help": "how long `close()`, `shipper.shutdown()` and the exit hook deliver the queue "
                "and the spool before leaving the rest on disk (and saying so on stderr)"})
    health_interval: float = field(default=60.0, metadata={
        "help": "how often every pipeline (each app process, the sidecar and each of its "
                "workers) ships a `SHIPPER_HEALTH` heartbeat event with what it accepted, sent, "
                "spooled, refused and dropped since the last one (and a last one at shutdown); "
                "`0` turns heartbeats off, else at least 1s"})
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
            else:
                self._take_url(url)
        if self.encoding not in get_args(Encoding):
            raise ConfigError(
                f"encoding: expected one of {', '.join(get_args(Encoding))}, got {self.encoding!r}"
            )
        if self.username and not self.password:
            raise ConfigError("password: LOKI_USERNAME is set but LOKI_PASSWORD is not")
        if self.username and self.bearer_token:
            raise ConfigError("bearer_token: use basic auth or a bearer token, not both")
        self._check_connection()
        if not 1024 <= self.batch_max_bytes <= LOKI_MAX_REQUEST_BYTES:
            raise ConfigError(
                f"batch_max_bytes: must be between 1 KiB and 4 MiB (Loki answers larger pushes "
                f"with a 500), got {self.batch_max_bytes}"
            )
        for name in ("batch_max_events", "queue_max_events", "queue_max_bytes", "type_limit",
                     "spool_max_bytes", "spool_segment_bytes", "max_line_bytes",
                     "dead_letter_max_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("timeout", "batch_max_wait", "backoff_min", "backoff_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be a positive duration, got {getattr(self, name)}")
        if self.retry_budget < 0 or self.shutdown_timeout < 0:
            raise ConfigError("retry_budget and shutdown_timeout must not be negative")
        if self.health_interval != 0 and not self.health_interval >= MIN_HEALTH_INTERVAL:
            raise ConfigError(f"health_interval: 0 (off) or at least {MIN_HEALTH_INTERVAL:g}s, "
                              f"got {self.health_interval!r}")

    def _take_url(self, url: str) -> None:
        """Check ``url``; a ``user:password@`` in it becomes ``username`` and ``password`` (sent
        as basic auth, as LOKI_USERNAME / LOKI_PASSWORD are) and leaves the URL, so the URL
        the config holds, and every message that shows it, carries no credential."""
        if not re.match(r"^https?://[^/\s]+", url):
            shown = (repr(hide_url_credentials(url)) if "://" in url
                     else "a value without http:// or https://")
            raise ConfigError(f"url: expected http(s)://host[:port][/path], got {shown}")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError when the port is not a number
        except ValueError:
            # not shown: a careless password (with a /) is what makes such a URL invalid
            raise ConfigError(
                "url: not a valid URL (a port that is not a number, or unbalanced [ ]); "
                "characters such as / ? # @ in a password must be percent-encoded "
                "(%2F %3F %23 %40)") from None
        userinfo, at, host = parts.netloc.rpartition("@")
        if not at:
            object.__setattr__(self, "url", url)
            return
        user, colon, password = (unquote(p) for p in userinfo.partition(":"))
        if not (user and colon and password):
            raise ConfigError("url: credentials in a URL need a user and a password "
                              "(http://user:password@host); or set username and password")
        if self.username or self.bearer_token:
            raise ConfigError("url: it carries credentials (user:password@) and username or "
                              "bearer_token is set too: give them one way")
        if self.bearer_token_file:
            raise ConfigError("url: it carries credentials (user:password@) and "
                              "bearer_token_file is set too: give them one way")
        object.__setattr__(self, "url", urlunsplit(parts._replace(netloc=host)))
        object.__setattr__(self, "username", user)
        object.__setattr__(self, "password", password)

    def _check_connection(self) -> None:
        """The settings every request to Loki carries: credentials and headers that cannot
        break a request (no line break smuggled into a header), a proxy URL that is one, a
        certificate's key with its certificate."""
        set_ = object.__setattr__
        for name in ("tenant", "username", "password", "bearer_token"):
            value = getattr(self, name)
            if value is not None and _CONTROL.search(str(value)):
                raise ConfigError(f"{name}: must not hold a line break or another control "
                                  "character (it is sent in an HTTP header)")
        for name in ("tenant", "bearer_token"):
            value = getattr(self, name)
            if value is not None and not _header_text(str(value)):
                raise ConfigError(f"{name}: holds characters an HTTP header cannot carry "
                                  "(ASCII and Latin-1 only)")
        for name in ("bearer_token_file", "client_cert", "client_key", "ca_bundle",
                     "proxy_url"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, str(value).strip() or None)
        if self.bearer_token_file and (self.bearer_token or self.username):
            raise ConfigError("bearer_token_file: set either it, bearer_token or "
                              "username/password, not two of them")
        if self.client_key and not self.client_cert:
            raise ConfigError("client_key: LOKI_CLIENT_KEY_PATH is set but "
                              "LOKI_CLIENT_CERT_PATH (client_cert) is not")
        if self.proxy_url is not None:
            _check_proxy_url(self.proxy_url)
        headers = _headers("headers", self.headers)
        taken = {"authorization"} if (self.username or self.bearer_token
                                      or self.bearer_token_file) else set()
        for header, _ in headers:
            if header.lower() in taken:
                raise ConfigError(f"headers: {header} is set by username/password or "
                                  "bearer_token (or its file) too: give credentials one way")
        set_(self, "headers", headers)

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
        for var, name in LOGCLI_ENV_VARS.items():  # shipper's own variables, below, win
            if environ.get(var, "") != "":
                values[name] = environ[var]
        if environ.get("LOKI_TLS_SKIP_VERIFY", "") != "":
            values["verify_tls"] = not _bool("LOKI_TLS_SKIP_VERIFY",
                                             environ["LOKI_TLS_SKIP_VERIFY"])
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


def env_vars(cls: type[Any]) -> dict[str, str]:
    """Environment variable → setting, for every field of the config dataclass ``cls``: the
    field's ``metadata["env"]`` when it names one, else ``SHIPPER_`` and its name in capitals
    (``batch_max_wait``: ``SHIPPER_BATCH_MAX_WAIT``). A new field has its variable at once."""
    found: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        var = f.metadata.get("env") or f"SHIPPER_{f.name.upper()}"
        if var in found:
            raise ValueError(f"{cls.__name__}: {f.name} and {found[var]} both read {var}")
        found[var] = f.name
    return found


#: environment variable → setting (what :meth:`ShipperConfig.load` reads)
ENV_VARS: dict[str, str] = env_vars(ShipperConfig)

#: logcli's variables that name a setting under another name, read by
#: :meth:`ShipperConfig.load` when shipper's own variable is unset (``LOKI_TLS_SKIP_VERIFY``,
#: the opposite of ``verify_tls``, too). logcli's other names (``LOKI_USERNAME``,
#: ``LOKI_PASSWORD``, ``LOKI_BEARER_TOKEN``, ``LOKI_BEARER_TOKEN_FILE``,
#: ``LOKI_CLIENT_CERT_PATH``, ``LOKI_CLIENT_KEY_PATH``, ``LOKI_HTTP_PROXY_URL``) are the
#: settings' own.
LOGCLI_ENV_VARS: dict[str, str] = {
    "LOKI_ADDR": "url",
    "LOKI_ORG_ID": "tenant",
    "LOKI_CA_CERT_PATH": "ca_bundle",
}

#: a control character: never inside an HTTP header (CR and LF would start another one)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAX_HEADERS, _MAX_HEADER_BYTES = 64, 8192
#: headers shipper sets itself on each request (or that HTTP itself owns), with what to use
_OWN_HEADERS = {
    "content-type": "shipper sets it from `encoding`",
    "content-encoding": "shipper sets it from `encoding`",
    "content-length": "HTTP sets it for each request",
    "transfer-encoding": "HTTP sets it for each request",
    "host": "it comes from `url`",
    "connection": "HTTP sets it for each request",
    "x-scope-orgid": "set `tenant` (LOKI_TENANT) instead",
    "proxy-authorization": "put the credentials in `proxy_url` (http://user:password@proxy)",
}


def _headers(name: str, value: object) -> tuple[tuple[str, str], ...]:
    """Extra headers from a mapping, pairs, a JSON object or ``Name=value,Name2=value``;
    each checked: a header name, a value without control characters, none of the headers
    shipper sets, no name twice. An error names the header, never its value (a key, say)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{name}: not a JSON object: {exc}") from None
            except RecursionError:
                raise ConfigError(f"{name}: not a JSON object of header names and values "
                                  "(nested too deep)") from None
        else:
            pairs: list[tuple[str, str]] = []
            for item in filter(None, (p.strip() for p in text.split(","))):
                key, eq, val = item.partition("=")
                if not eq:
                    raise ConfigError(f"{name}: expected Name=value pairs separated by commas "
                                      f"(or a JSON object), got {key[:64]!r} without '='")
                pairs.append((key.strip(), val.strip()))
            value = pairs
    if isinstance(value, Mapping):
        value = list(value.items())
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        raise ConfigError(f"{name}: expected a mapping of header names to values, got "
                          f"{type(value).__name__}")
    if len(value) > _MAX_HEADERS:
        raise ConfigError(f"{name}: {len(value)} headers, at most {_MAX_HEADERS}")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, val in value:
        if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key) or len(key) > 256:
            raise ConfigError(f"{name}: {str(key)[:64]!r} is not a header name (letters, "
                              "digits and !#$%&'*+-.^_`|~)")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise ConfigError(f"{name}: {key}: expected text, got {type(val).__name__}")
        text = str(val).strip()
        if _CONTROL.search(text):
            raise ConfigError(f"{name}: {key}: the value holds a line break or another "
                              "control character")
        if not _header_text(text):
            raise ConfigError(f"{name}: {key}: the value holds characters an HTTP header "
                              "cannot carry (ASCII and Latin-1 only)")
        if len(text.encode("utf-8")) > _MAX_HEADER_BYTES:
            raise ConfigError(f"{name}: {key}: the value is longer than {_MAX_HEADER_BYTES} "
                              "bytes")
        lower = key.lower()
        if lower in _OWN_HEADERS:
            raise ConfigError(f"{name}: {key} cannot be set here: {_OWN_HEADERS[lower]}")
        if lower in seen:
            raise ConfigError(f"{name}: {key} is given twice")
        seen.add(lower)
        out.append((key, text))
    return tuple(out)


def _header_text(text: str) -> bool:
    """Whether HTTP can send ``text`` in a header (as Latin-1, as http.client encodes it)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _check_proxy_url(url: str) -> None:
    """A proxy URL shipper can use: ``http(s)://[user:password@]host[:port]``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        raise ConfigError("proxy_url: not a valid URL (characters such as / ? # @ in a "
                          "password must be percent-encoded)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if "://" not in url:
            what = "got a value without http:// or https://"
        elif parts.hostname and parts.scheme:
            what = f"{parts.scheme}:// proxies are not supported"
        else:
            what = f"got {hide_url_credentials(url)!r}"
        raise ConfigError(f"proxy_url: expected http(s)://[user:password@]host[:port]; {what}")


def _coerce(name: str, annotation: object, value: Any) -> Any:
    kind = str(annotation)
    if value is None:
        return None
    if name == "headers":
        return _headers(name, value)
    if name in {"batch_max_bytes", "queue_max_bytes", "spool_max_bytes", "spool_segment_bytes",
                "max_line_bytes", "dead_letter_max_bytes"}:
        return _size(name, value)
    if name in {"timeout", "batch_max_wait", "retry_budget", "backoff_min", "backoff_max",
                "shutdown_timeout", "health_interval"}:
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

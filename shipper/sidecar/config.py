"""The sidecar's configuration file: a schema of nested frozen dataclasses, loaded from YAML.

Every field carries ``metadata={"help": ...}`` (one line for the reference docs) and, where the
YAML value is not a plain string or number, a ``kind`` (``size``, ``duration``, ``regex``,
``listen``, ``timezone``) that says how it is read. Loading is all or nothing: a wrong key, a bad
value or a missing file raises :class:`SidecarConfigError` naming the file, the key, the value
and what was expected, before anything starts.

Strings may use ``${VAR}`` or ``${VAR:-default}``: the value is taken from the environment (a
token from a Kubernetes secret, say). The ``loki:`` section is the handler's own
:class:`~shipper.config.ShipperConfig`, read with the same environment variables (``LOKI_URL``,
``LOKI_TENANT``, ``LOKI_PASSWORD`` ...), so a sidecar and a handler are configured alike.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from shipper._units import UnitError, parse_seconds, parse_size
from shipper.config import ConfigError, ShipperConfig
from shipper.redact import hide_url_credentials
from shipper.sidecar.drop import DropError, DropRule, read_rules
from shipper.sidecar.formats import DEFAULT_LEVEL_PATTERN

__all__ = [
    "DEFAULT_LEVEL_PATTERN",
    "MAX_JSON_DEPTH",
    "MIN_JSON_DEPTH",
    "SOURCE_NAME",
    "DockerSourceConfig",
    "FileSourceConfig",
    "HttpSourceConfig",
    "MultilineConfig",
    "SidecarConfig",
    "SidecarConfigError",
    "SourceConfig",
    "load_config",
    "parse_listen",
]

Format = Literal["auto", "json", "logfmt", "text"]



class SidecarConfigError(ConfigError):
    """The configuration file cannot be used; the message names file, key, value, expectation."""


def _help(text: str, kind: str | None = None) -> dict[str, str]:
    return {"help": text, "kind": kind} if kind else {"help": text}


@dataclass(frozen=True, kw_only=True)
class MultilineConfig:
    """Joins the lines of one record (a traceback, a Java stack trace) into one event."""

    start: str = field(metadata=_help(
        "regex that matches the first line of a record; other lines join the record before "
        "them", "regex"))
    timeout: float = field(default=1.0, metadata=_help(
        "a record whose next line has not come after this long is shipped as it is",
        "duration"))
    max_lines: int = field(default=500, metadata=_help(
        "a record is shipped when it reaches this many lines (the next line starts another)"))


#: what a source's ``name`` may be: it is a label value in /metrics and starts messages
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True, kw_only=True)
class _NamedSourceConfig:
    """What every source shares: its name."""

    name: str | None = field(default=None, metadata=_help(
        "the source's name in /metrics (the source label), /healthz, /ready and messages: "
        "letters, digits, '_', '-', '.', up to 63, unique (default: <type>#<index>, e.g. "
        "file#0)"))


@dataclass(frozen=True, kw_only=True)
class _ParsedSourceConfig(_NamedSourceConfig):
    """What every source that reads log lines shares: how a line becomes an event."""

    format: Format = field(default="auto", metadata=_help(
        "json, logfmt, text, or auto (JSON when the line starts with '{', logfmt when every "
        "word is key=value, else text)"))
    level_pattern: str = field(default=DEFAULT_LEVEL_PATTERN, metadata=_help(
        "regex whose 'level' group gives a text line's level (INFO when it does not match); "
        "other named groups ('time', 'message', any name) fill those fields or metadata",
        "regex"))
    timezone: str = field(default="UTC", metadata=_help(
        "zone of timestamps written without an offset: UTC, local, or a name such as "
        "Europe/Berlin", "timezone"))
    multiline: MultilineConfig | None = field(default=None, metadata=_help(
        "join multi-line records (off when unset): {start: REGEX, timeout, max_lines}"))
    service: str | None = field(default=None, metadata=_help(
        "service_name for this source's events that do not carry one (default: the top-level "
        "service; docker: see service_label)"))
    max_line_bytes: int = field(default=256 * 1024, metadata=_help(
        "longer lines are cut to this size and end with a truncation marker", "size"))
    drop: tuple[DropRule, ...] = field(default=(), metadata=_help(
        "lines not to ship, as Promtail's drop stage: a list of rules, each dropping a line "
        "when all it gives hold (source with value or expression, expression, older_than, "
        "longer_than; drop_counter_reason); see docs/sidecar.md", "drop") | {
            "type_doc": "list of rules"})


@dataclass(frozen=True, kw_only=True)
class FileSourceConfig(_ParsedSourceConfig):
    """Tails files matched by globs, across rotation, truncation and re-creation."""

    type: Literal["file"] = field(default="file", metadata=_help("file: tail files"))
    paths: tuple[str, ...] = field(metadata=_help(
        "glob patterns of the files to tail ('**' reaches into subdirectories); files that "
        "appear later are picked up"))
    exclude: tuple[str, ...] = field(default=(), metadata=_help(
        "glob patterns of matched files to leave alone (e.g. rotated '*.gz')"))
    start_at: Literal["beginning", "end"] = field(default="beginning", metadata=_help(
        "where to start a file found at start-up that has no saved position; files that "
        "appear later are always read from their start"))
    poll_interval: float = field(default=0.25, metadata=_help(
        "how often open files are checked for new data, rotation and truncation", "duration"))
    scan_interval: float = field(default=5.0, metadata=_help(
        "how often the globs are expanded again to find new files", "duration"))
    partial_line_timeout: float = field(default=2.0, metadata=_help(
        "a last line without its newline is shipped after it has waited this long",
        "duration"))
    read_chunk_bytes: int = field(default=256 * 1024, metadata=_help(
        "bytes read from one file at a time before the next file gets a turn", "size"))
    max_files: int = field(default=10_000, metadata=_help(
        "files followed at once; files the globs match beyond it are left alone (said once)"))
    max_scan_entries: int = field(default=100_000, metadata=_help(
        "files and directories one expansion of the globs may visit; past it the scan stops "
        "there and says so, naming the pattern"))
    scan_timeout: float = field(default=60.0, metadata=_help(
        "how long one expansion of the globs may take (open files are read meanwhile); past "
        "it the scan stops there and says so, naming the pattern", "duration"))


#: the bounds of max_json_depth: deep enough for the protocols' own nesting (an OTLP log
#: record's attributes are at level 9), shallow enough for the steps after (they recurse)
MIN_JSON_DEPTH, MAX_JSON_DEPTH = 16, 500


@dataclass(frozen=True, kw_only=True)
class HttpSourceConfig(_NamedSourceConfig):
    """Receives events over HTTP: /v1/events, Loki's push API and OTLP/HTTP JSON logs."""

    type: Literal["http"] = field(default="http", metadata=_help("http: receive events"))
    listen: str = field(default="127.0.0.1:3500", metadata=_help(
        "host:port to listen on; any address other than loopback needs a token", "listen"))
    token: str | None = field(default=None, repr=False, metadata=_help(
        "bearer token every request must carry (Authorization: Bearer ...); use "
        "${VAR} to read it from the environment"))
    token_file: str | None = field(default=None, metadata=_help(
        "file holding the bearer token (a mounted secret); read at start-up"))
    max_body_bytes: int = field(default=4 * 1024 * 1024, metadata=_help(
        "larger request bodies are answered 413 (after decompression too, every gzip member "
        "counted)", "size"))
    request_timeout: float = field(default=30.0, metadata=_help(
        "each request must arrive whole, headers and body, within this long (a kept-alive "
        "connection's idle time counts too); a slower one is answered 408 and closed",
        "duration"))
    max_connections: int = field(default=128, metadata=_help(
        "open connections at most; the next one is answered 503 and closed at once"))
    max_json_depth: int = field(default=100, metadata=_help(
        f"JSON nested deeper than this ({MIN_JSON_DEPTH} to {MAX_JSON_DEPTH}; the outermost "
        "object or array is level 1) is kept as its text: a pushed line is shipped as a text "
        "line, a deeper value as a string"))
    service: str | None = field(default=None, metadata=_help(
        "service_name for events that do not carry one (default: the top-level service)"))
    timezone: str = field(default="UTC", metadata=_help(
        "zone of createdAt values written without an offset", "timezone"))
    otlp_grpc_listen: str | None = field(default=None, metadata=_help(
        "host:port of an OTLP/gRPC logs receiver (conventionally :4317) with the same token, "
        "limits and mapping as /v1/logs; needs pip install 'shipper[otlp-grpc]' (null: off)",
        "listen"))
    max_entries_per_request: int = field(default=100_000, metadata=_help(
        "a request holding more entries than this (events, Loki push entries or streams, OTLP "
        "log records, resources or scopes) is refused whole, before any is read: 413 naming "
        "the count and the limit (OTLP/gRPC: RESOURCE_EXHAUSTED); the OpenTelemetry SDKs "
        "send 512 records per request, the Collector 8192, Promtail and Alloy 1 MiB of lines"))


@dataclass(frozen=True, kw_only=True)
class DockerSourceConfig(_ParsedSourceConfig):
    """Follows the logs of containers selected by label, through restarts."""

    type: Literal["docker"] = field(default="docker", metadata=_help(
        "docker: follow container logs"))
    host: str = field(default="unix:///var/run/docker.sock", metadata=_help(
        "Docker Engine API address (unix:///path or tcp://host:port); access to it is root "
        "on the host, read-only mount or not: prefer a proxy that allows only reading "
        "containers (docs/sidecar.md)"))
    labels: Mapping[str, str] = field(default_factory=lambda: {"shipper.enable": "true"},
                                      metadata=_help(
        "follow containers carrying all these labels ({} follows every container)"))
    service_label: str = field(default="shipper.service", metadata=_help(
        "container label whose value is the service_name; else the compose service "
        "(com.docker.compose.service), else the container name"))
    refresh_interval: float = field(default=10.0, metadata=_help(
        "how often the container list is read again (start events are followed at once)",
        "duration"))


SourceConfig = FileSourceConfig | HttpSourceConfig | DockerSourceConfig
_SOURCE_TYPES: dict[str, type[Any]] = {
    "file": FileSourceConfig, "http": HttpSourceConfig, "docker": DockerSourceConfig,
}


@dataclass(frozen=True, kw_only=True)
class SidecarConfig:
    """The whole file. ``loki`` is the handler's ShipperConfig (same keys and env vars)."""

    loki: ShipperConfig = field(default_factory=ShipperConfig, metadata=_help(
        "Loki connection, batching, retry and spool settings: the handler's settings "
        "(url, tenant, username, password, bearer_token, ca_bundle, ...) and env vars"))
    service: str | None = field(default=None, metadata=_help(
        "service_name of events that carry none (default: $SHIPPER_SERVICE, else "
        "unknown_service)"))
    env: str | None = field(default=None, metadata=_help(
        "the env label (default: $SHIPPER_ENV, else none)"))
    spool_dir: str | None = field(default=None, metadata=_help(
        "where events wait while Loki is away (default: $SHIPPER_SPOOL_DIR, else the user "
        "cache dir)"))
    positions_file: str = field(default="/var/lib/shipper/positions.json", metadata=_help(
        "where file offsets and container timestamps are kept across restarts"))
    promtail_positions: str | None = field(default=None, metadata=_help(
        "a Promtail positions.yaml, read once at start-up: files with no position of their "
        "own start where Promtail stopped, matched by path (docs/promtail.md); not read once "
        "positions_file exists"))
    positions_interval: float = field(default=2.0, metadata=_help(
        "how often positions are saved (only what Loki or the spool has taken)",
        "duration"))
    drain_timeout: float = field(default=10.0, metadata=_help(
        "on SIGTERM: how long to ship what was read before exiting", "duration"))
    workers: int = field(default=1, metadata=_help(
        "processes that parse and ship the file sources' lines: 1 does everything in the "
        "sidecar's own process; N (2 to 32) starts N worker processes, each with its own "
        "pipeline, while this one reads the files (about 1.4x the lines/s of one process on "
        "2 cores; see docs/sidecar.md)"))
    metrics_listen: str | None = field(default="127.0.0.1:3501", metadata=_help(
        "host:port of /ready, /healthz and /metrics (null turns them off)", "listen"))
    sources: tuple[SourceConfig, ...] = field(default=(), metadata=_help(
        "what to ship: a list of sources, each with a type (file, http, docker)"))


# --------------------------------------------------------------------------- loading


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:3500`` for IPv6) → (host, port); raises ValueError."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\s]*):(\d+)", value.strip())
    if match is None:
        raise ValueError("host:port, e.g. 127.0.0.1:3500")
    host = match.group(1) or match.group(3) or "0.0.0.0"
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError("a port between 0 and 65535")
    return host, port


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reader:
    """Walks the YAML against the schema, collecting the path of each key for the errors."""

    def __init__(self, file: Path, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ

    def fail(self, key: str, value: object, expected: str) -> SidecarConfigError:
        shown = "(missing)" if value is _MISSING else hide_url_credentials(repr(value))
        return SidecarConfigError(f"{self.file}: {key}: {shown}: expected {expected}")

    def expand(self, key: str, value: object) -> object:
        if not isinstance(value, str) or "${" not in value:
            return value

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            raise self.fail(key, value, f"environment variable {name} to be set (or write "
                                        f"${{{name}:-default}})")

        return _ENV_REF.sub(sub, value)

    def dataclass(self, cls: type[Any], data: object, key: str) -> Any:
        if not isinstance(data, Mapping):
            raise self.fail(key or "(top)", data, "a mapping of settings")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            where = f"{key}.{name}" if key else str(name)
            if name not in fields:
                import difflib  # only for a misspelt name: not at every start
                close = difflib.get_close_matches(str(name), list(fields), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise self.fail(where, value, f"one of the keys {', '.join(fields)}{hint}")
            kwargs[name] = self.value(fields[name], hints[name], value, where)
        for name, f in fields.items():
            missing = f.default is dataclasses.MISSING and \
                f.default_factory is dataclasses.MISSING
            if missing and name not in kwargs:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, _MISSING, f"{f.metadata.get('help', 'a value')}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # pragma: no cover - every field is checked
            raise self.fail(key or "(top)", data, str(exc)) from None

    def value(self, f: dataclasses.Field[Any], hint: Any, value: Any, key: str) -> Any:
        value = self.expand(key, value)
        kind = f.metadata.get("kind")
        origin = get_origin(hint)
        args = get_args(hint)
        optional = (origin in (Union, types.UnionType)) and type(None) in args
        if optional:
            if value is None:
                return None
            rest = [a for a in args if a is not type(None)]
            hint = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
            origin, args = get_origin(hint), get_args(hint)
        if hint is ShipperConfig:
            return value  # the loki section is read by ShipperConfig.load (see load_config)
        if kind == "size":
            try:
                size = parse_size(value)
            except UnitError:
                size = 0
            if size <= 0:
                raise self.fail(key, value, "a positive size: bytes, or e.g. '512KiB', '1MiB'")
            return size
        if kind == "duration":
            try:
                return parse_seconds(value, allow_zero=False)
            except UnitError:
                raise self.fail(key, value, "a positive duration: seconds, or e.g. '500ms', "
                                            "'2s', '1h30m'") from None
        if kind == "regex":
            if not isinstance(value, str):
                raise self.fail(key, value, "a regular expression (a string)")
            try:
                re.compile(value)
            except re.error as exc:
                raise self.fail(key, value, f"a valid regular expression ({exc})") from None
            return value
        if kind == "drop":
            try:
                return read_rules(value)
            except DropError as exc:
                raise self.fail(f"{key}{exc.key}", exc.value, exc.expected) from None
        if kind == "listen":
            try:
                parse_listen(str(value))
            except ValueError as exc:
                raise self.fail(key, value, str(exc)) from None
            return str(value)
        if kind == "timezone":
            if not isinstance(value, str) or not value:
                raise self.fail(key, value, "UTC, local, or a zone name such as Europe/Berlin")
            if value not in ("UTC", "local"):
                try:
                    zoneinfo.ZoneInfo(value)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    raise self.fail(key, value, "UTC, local, or a zone name known to this "
                                                "system, such as Europe/Berlin") from None
            return value
        if origin is Literal:
            if value not in args:
                raise self.fail(key, value, f"one of {', '.join(map(str, args))}")
            return value
        if dataclasses.is_dataclass(hint):
            return self.dataclass(hint, value, key)  # type: ignore[arg-type]
        if hint is str:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise self.fail(key, value, "a string")
            return str(value)
        if hint is bool:
            if not isinstance(value, bool):
                raise self.fail(key, value, "true or false")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise self.fail(key, value, "a positive whole number")
            return value
        if origin is tuple and args[0] is str:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise self.fail(key, value, "a list of strings")
            return tuple(self.expand(key, v) for v in items)
        if origin is Mapping:
            if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, (str, int, float, bool))
                    for k, v in value.items()):
                raise self.fail(key, value, "a mapping of names to strings")
            return {k: (str(v).lower() if isinstance(v, bool) else str(self.expand(key, v)))
                    for k, v in value.items()}
        if origin is tuple:  # the sources
            if not isinstance(value, list) or not value:
                raise self.fail(key, value, "a list of sources, each with a type: "
                                            f"{', '.join(_SOURCE_TYPES)}")
            out = []
            for i, item in enumerate(value):
                where = f"{key}[{i}]"
                kind_name = item.get("type") if isinstance(item, Mapping) else None
                cls = _SOURCE_TYPES.get(kind_name) if isinstance(kind_name, str) else None
                if cls is None:
                    raise self.fail(f"{where}.type", kind_name if isinstance(item, Mapping)
                                    else item, f"one of {', '.join(_SOURCE_TYPES)}")
                out.append(self.dataclass(cls, item, where))
            return tuple(out)
        raise self.fail(key, value, f"a {hint}")  # pragma: no cover - every field is above


class _Missing:
    pass


_MISSING: Any = _Missing()

#: top-level keys that also exist in ShipperConfig; the loki section must not set them
_TOP_LEVEL_SHIPPER_KEYS = ("service", "env", "spool_dir")
#: the most worker processes ``workers`` may ask for
MAX_WORKERS = 32


def load_config(path: str | os.PathLike[str], *,
                environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read and check the whole file; raise :class:`SidecarConfigError` on the first problem."""
    file = Path(path)
    environ = os.environ if environ is None else environ
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SidecarConfigError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SidecarConfigError(f"{file}: cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SidecarConfigError(f"{file}: not valid YAML: {exc}") from None
    reader = _Reader(file, environ)
    if not isinstance(data, Mapping):
        raise reader.fail("(top)", data, "a mapping with at least 'sources'")
    if "sources" not in data:
        raise reader.fail("sources", _MISSING, "a list of sources, each with a type: "
                                               f"{', '.join(_SOURCE_TYPES)}")
    config: SidecarConfig = reader.dataclass(SidecarConfig, data, "")
    loki_section = data.get("loki") or {}
    if not isinstance(loki_section, Mapping):
        raise reader.fail("loki", loki_section, "a mapping of Loki settings, e.g. "
                                                "{url: http://loki:3100}")
    for name in _TOP_LEVEL_SHIPPER_KEYS:
        if name in loki_section:
            raise reader.fail(f"loki.{name}", loki_section[name],
                              f"'{name}' at the top level of the file, not under loki")
    overrides: dict[str, Any] = {k: reader.expand(f"loki.{k}", v)
                                 for k, v in loki_section.items()}
    if isinstance(overrides.get("headers"), Mapping):  # header values may be ${VAR}
        overrides["headers"] = {name: reader.expand(f"loki.headers.{name}", value)
                                for name, value in overrides["headers"].items()}
    for name in _TOP_LEVEL_SHIPPER_KEYS:
        if getattr(config, name) is not None:
            overrides[name] = getattr(config, name)
    # SHIPPER_CONFIG would make ShipperConfig read a second file: this file is the config
    loki_environ = {k: v for k, v in environ.items() if k != "SHIPPER_CONFIG"}
    try:
        loki = ShipperConfig.load(environ=loki_environ, **overrides)
    except ConfigError as exc:
        message = str(exc)
        unknown = re.match(r"unknown setting '([^']*)'(.*)", message)
        if unknown:
            name = unknown.group(1)
            import difflib  # only for a misspelt name: not at every start
            close = difflib.get_close_matches(name, [f.name for f in dataclasses.fields(
                ShipperConfig)], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise reader.fail(f"loki.{name}", loki_section[name],
                              f"a setting of the handler's ShipperConfig{hint}") from None
        raise SidecarConfigError(f"{file}: loki.{message}") from None
    if config.workers > MAX_WORKERS:
        raise reader.fail("workers", config.workers,
                          f"a number of processes from 1 to {MAX_WORKERS}")
    _check_sources(reader, config)
    if config.promtail_positions is not None and os.path.abspath(
            config.promtail_positions) == os.path.abspath(config.positions_file):
        raise reader.fail("promtail_positions", config.promtail_positions,
                          "a file other than positions_file (the sidecar writes its own "
                          "positions there, as JSON)")
    return dataclasses.replace(config, loki=loki)


def _check_sources(reader: _Reader, config: SidecarConfig) -> None:
    listens: dict[tuple[str, int], str] = {}
    if config.metrics_listen:
        listens[parse_listen(config.metrics_listen)] = "metrics_listen"
    docker = 0
    names: dict[str, str] = {}
    for i, source in enumerate(config.sources):
        where = f"sources[{i}]"
        if source.name is not None:
            if not SOURCE_NAME.fullmatch(source.name):
                raise reader.fail(f"{where}.name", source.name,
                                  "a name of letters, digits, '_', '-' and '.' (starting with a "
                                  "letter or digit, at most 63), e.g. app-logs")
            if source.name in names:
                raise reader.fail(f"{where}.name", source.name,
                                  f"a name not already used by {names[source.name]}")
            names[source.name] = where
        if isinstance(source, _ParsedSourceConfig):
            for n, rule in enumerate(source.drop):
                if rule.longer_than is not None and rule.longer_than >= source.max_line_bytes:
                    raise reader.fail(f"{where}.drop[{n}].longer_than", rule.longer_than,
                                      f"a size below max_line_bytes ({source.max_line_bytes})"
                                      ": longer lines are cut to it first")
        if isinstance(source, FileSourceConfig):
            if not source.paths:
                raise reader.fail(f"{where}.paths", list(source.paths),
                                  "at least one glob pattern")
            for pattern in source.paths:
                if not os.path.isabs(pattern):
                    raise reader.fail(f"{where}.paths", pattern,
                                      "an absolute path or glob (starting with /)")
        elif isinstance(source, HttpSourceConfig):
            address = parse_listen(source.listen)
            if address in listens and address[1] != 0:
                raise reader.fail(f"{where}.listen", source.listen,
                                  f"an address not already used by {listens[address]}")
            listens[address] = f"{where}.listen"
            if source.token and source.token_file:
                raise reader.fail(f"{where}.token_file", source.token_file,
                                  "either token or token_file, not both")
            if source.token_file:
                try:
                    token = Path(source.token_file).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise reader.fail(f"{where}.token_file", source.token_file,
                                      f"a readable file ({exc.strerror})") from None
                if not token:
                    raise reader.fail(f"{where}.token_file", source.token_file,
                                      "a file holding a token (it is empty)")
            elif source.token is not None and len(source.token) < 16:
                raise reader.fail(f"{where}.token", "(hidden)",
                                  "a token of at least 16 characters")
            if not MIN_JSON_DEPTH <= source.max_json_depth <= MAX_JSON_DEPTH:
                raise reader.fail(f"{where}.max_json_depth", source.max_json_depth,
                                  f"a depth from {MIN_JSON_DEPTH} to {MAX_JSON_DEPTH}")
            if not _is_loopback(address[0]) and not (source.token or source.token_file):
                raise reader.fail(f"{where}.listen", source.listen,
                                  "a loopback address (127.0.0.1, [::1] or localhost; no "
                                  "other host name counts) unless token or token_file is "
                                  "set: anyone who reaches the port could write logs")
            if source.otlp_grpc_listen is not None:
                _check_grpc(reader, source, f"{where}.otlp_grpc_listen", listens)
        elif isinstance(source, DockerSourceConfig):
            docker += 1
            if not re.match(r"^(unix|tcp|http|https|npipe)://", source.host):
                raise reader.fail(f"{where}.host", source.host,
                                  "unix:///path/docker.sock or tcp://host:port")
    if docker > 1:
        raise reader.fail("sources", "(two docker sources)",
                          "at most one docker source (list all labels in it)")


def _check_grpc(reader: _Reader, source: HttpSourceConfig, key: str,
                listens: dict[tuple[str, int], str]) -> None:
    """An http source's ``otlp_grpc_listen``: an address of its own, loopback unless a token
    is set, and grpcio installed."""
    import importlib.util

    value = source.otlp_grpc_listen
    assert value is not None
    address = parse_listen(value)
    if address in listens and address[1] != 0:
        raise reader.fail(key, value, f"an address not already used by {listens[address]}")
    listens[address] = key
    if not _is_loopback(address[0]) and not (source.token or source.token_file):
        raise reader.fail(key, value, "a loopback address unless token or token_file is set: "
                                      "anyone who reaches the port could write logs")
    if importlib.util.find_spec("grpc") is None:
        raise reader.fail(key, value, "grpcio installed: OTLP/gRPC needs pip install "
                                      "'shipper[otlp-grpc]'")


def _is_loopback(host: str) -> bool:
    """An address only this machine reaches: ``127.0.0.0/8``, ``::1`` (``[::1]`` in a
    listen value), their IPv4-mapped form, or the name ``localhost``. Any other name is not
    loopback, whatever it looks like (``127.evil.example``): it is not resolved, since what a
    name resolves to can change after the check."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)

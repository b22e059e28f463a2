"""A Promtail configuration turned into the sidecar's (``shipper sidecar convert-promtail``).

The common subset converts: ``static_configs`` targets (``__path__``, ``__path_exclude__`` and
their labels), the pipeline stages ``json``, ``logfmt``, ``regex``, ``labels``,
``structured_metadata``, ``timestamp``, ``output``, ``multiline`` and ``static_labels``, the
first client (``url``, ``tenant_id``, ``basic_auth``, ``bearer_token``, ``bearer_token_file``,
``tls_config``, ``proxy_url``, ``headers``, batching and backoff) and ``positions.filename``,
which becomes ``promtail_positions``.

Promtail's model is not the sidecar's: Promtail ships the line as it is, with any label the
stages extract; the sidecar ships each line as an event (``{"message", "metadata", ...}``) whose
only labels are ``service_name``, ``env``, ``level``, ``type`` and ``actor`` (docs/events.md).
So each label is mapped to what the event contract makes of the same field: a level label to
the ``level`` label, a ``service``/``app``/``job`` label to ``service_name`` as Loki 3 derives
it, any other extracted label to the event's metadata, kept in the line (``| json`` reaches it).
Every such change is listed (:attr:`Conversion.changed`), and everything that has no
equivalent (a ``drop`` stage, a Kubernetes target, a static label with no place in the
contract) is listed as left out (:attr:`Conversion.left_out`), each with its line in the file.
The result is checked by the sidecar's own loader before it is returned.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from shipper._files import read_small_file
from shipper.config import ShipperConfig
from shipper.sidecar.config import SidecarConfigError, load_config
from shipper.sidecar.promtail_stages import SERVICE_LABELS, Notes, Parsing, Stages, shown

__all__ = ["MAX_CONFIG_BYTES", "Conversion", "PromtailConfigError", "convert_promtail",
           "read_promtail_config"]

#: a Promtail configuration larger than this is refused
MAX_CONFIG_BYTES = 1024 * 1024
#: deeper nesting is refused (a Promtail configuration is about 6 levels deep)
_MAX_DEPTH = 64
#: YAML nodes visited at most (anchors and aliases may repeat a node many times)
_MAX_NODES = 200_000


class PromtailConfigError(ValueError):
    """The file cannot be read as a Promtail configuration, or nothing in it converts."""


@dataclass
class Conversion:
    """The sidecar configuration, and what the conversion changed or left out."""

    config: dict[str, Any]
    #: ``file:line: where: what`` for each part with no equivalent
    left_out: list[str] = field(default_factory=list)
    #: ``file:line: where: what`` for each part whose meaning changes
    changed: list[str] = field(default_factory=list)

    def text(self, source_name: str) -> str:
        """The configuration as YAML, the lists in comments on top."""
        head = [f"# Converted from Promtail's {source_name} by shipper sidecar convert-promtail "
                "(docs/promtail.md).",
                "# Check it with: shipper sidecar --config FILE --check"]
        for title, notes in (("Left out", self.left_out), ("Changed", self.changed)):
            if notes:
                head.append(f"# {title}:")
                head.extend(f"#   {note}" for note in notes)
        # one line per value, however long: a regular expression stays as written
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=1 << 20)
        return "\n".join(head) + "\n" + body


# --------------------------------------------------------------------------- reading


def read_promtail_config(path: str) -> str:
    """The text of the file at ``path``; :class:`PromtailConfigError` when it is not a regular
    file of UTF-8 text within :data:`MAX_CONFIG_BYTES` (a FIFO is refused, never waited on)."""
    try:
        data = read_small_file(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise PromtailConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PromtailConfigError(f"{path}: {exc}: not a Promtail configuration") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromtailConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte "
                                  f"{exc.start})") from None


def _load(text: str, name: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document and the line of each key and list item, by its path."""
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise PromtailConfigError(f"{name}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a "
                                  "Promtail configuration")
    try:
        depth = 0
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise PromtailConfigError(f"{name}: nested deeper than {_MAX_DEPTH} "
                                              "levels: not a Promtail configuration")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise PromtailConfigError(f"{name}: not valid YAML: {' '.join(str(exc).split())}"
                                  ) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        budget = [_MAX_NODES]
        _walk(node, (), lines, budget, name)
    return data, lines


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
          budget: list[int], name: str) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise PromtailConfigError(f"{name}: more than {_MAX_NODES} values (anchors repeated "
                                  "over and over?): not a Promtail configuration")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines.setdefault((*path, key.value), key.start_mark.line + 1)
                _walk(value, (*path, key.value), lines, budget, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, budget, name)


def _expand_braces(pattern: str, limit: int = 64) -> list[str]:
    """doublestar's ``{a,b}`` alternatives, which the sidecar's globs do not read, as separate
    patterns (at most ``limit``)."""
    if pattern.count("{") > 16:
        raise ValueError("more than 16 {...} alternatives")
    match = re.search(r"(?<!\$)\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    out: list[str] = []
    for choice in match.group(1).split(","):
        out.extend(_expand_braces(pattern[:match.start()] + choice + pattern[match.end():],
                                  limit))
        if len(out) > limit:
            raise ValueError(f"more than {limit} patterns")
    return out


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _as_set(match: re.Match[str]) -> str:
    """``${VAR:-default}`` as its default, ``${VAR}`` as an absolute stand-in: whether a path
    is absolute, before the environment is known."""
    return match.group(2) if match.group(2) is not None else "/"


def _stand_ins(text: str) -> dict[str, str]:
    """A value for each ``${VAR}`` without a default, of the kind its place needs."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        for match in _ENV_REF.finditer(line):
            if match.group(2) is not None:
                continue
            before = line[:match.start()].rstrip()
            out.setdefault(match.group(1), "/stand-in" if before.endswith(
                ("-", "promtail_positions:", "ca_bundle:", "bearer_token_file:"))
                else "http://stand-in" if before.endswith("url:") else "stand-in")
    return out


# --------------------------------------------------------------------------- the file


_IGNORED_CLIENT = {
    "drop_rate_limited_batches": "the sidecar never drops a batch Loki pushes back: it waits, "
                                 "then keeps it in the spool",
    "max_retries": "retries are bounded by time (retry_budget, 30s); what is left goes to the "
                   "spool",
}


class _Converter:
    def __init__(self, data: Mapping[str, Any], notes: Notes) -> None:
        self.data = data
        self.notes = notes
        self.loki: dict[str, Any] = {}
        self.external: dict[str, str] = {}
        self.envs: set[str] = set()
        self.out: dict[str, Any] = {}
        self.sources: list[dict[str, Any]] = []
        self.has = {f.name for f in dataclasses.fields(ShipperConfig)}

    def run(self) -> dict[str, Any]:
        left = self.notes.left
        for key, value in self.data.items():
            if key == "clients":
                self.clients(value)
            elif key == "client":
                self.clients([value])
            elif key == "positions":
                self.positions(value)
            elif key == "server":
                self.notes.change(("server",), "the sidecar serves /metrics and /healthz on "
                                  "metrics_listen (127.0.0.1:3501), not on Promtail's server")
            elif key == "scrape_configs":
                pass  # after the clients: their external_labels apply to every job
            else:
                left((key,), "no equivalent in the sidecar")
        scrape = self.data.get("scrape_configs")
        if not isinstance(scrape, list):
            left(("scrape_configs",), f"{shown(scrape)}: expected a list of jobs")
        else:
            for i, job in enumerate(scrape):
                self.job(job, ("scrape_configs", i))
        if self.loki:
            self.out = {"loki": self.loki, **self.out}
        if len(self.envs) == 1:
            self.out["env"] = next(iter(self.envs))
        if self.sources:
            self.notes.change(("scrape_configs",), "Promtail's filename label is not shipped")
        self.out["sources"] = self.sources
        return self.out

    def clients(self, clients: object) -> None:
        if not isinstance(clients, list) or not clients:
            self.notes.left(("clients",), f"{shown(clients)}: expected a list of clients")
            return
        for i in range(1, len(clients)):
            self.notes.left(("clients", i), "the sidecar ships to one Loki: only the first "
                            "client is converted")
        client = clients[0]
        path: tuple[Any, ...] = ("clients", 0)
        if not isinstance(client, Mapping):
            self.notes.left(path, f"{shown(client)}: expected a client's settings")
            return
        simple = {"url": "url", "tenant_id": "tenant", "bearer_token": "bearer_token",
                  "bearer_token_file": "bearer_token_file", "timeout": "timeout",
                  "batchwait": "batch_max_wait", "batchsize": "batch_max_bytes",
                  "proxy_url": "proxy_url"}
        for key, value in client.items():
            where = (*path, key)
            if key in simple and simple[key] in self.has and isinstance(value, (str, int)):
                self.loki[simple[key]] = value
            elif key == "bearer_token_file":
                self.notes.left(where, "the loki section reads no token file: give the token "
                                "in loki.bearer_token, e.g. ${LOKI_BEARER_TOKEN}")
            elif key == "basic_auth" and isinstance(value, Mapping):
                self.basic_auth(value, where)
            elif key == "headers" and isinstance(value, Mapping) and "headers" in self.has:
                self.loki["headers"] = {str(k): str(v) for k, v in value.items()}
            elif key == "tls_config" and isinstance(value, Mapping):
                self.tls(value, where)
            elif key == "backoff_config" and isinstance(value, Mapping):
                for name, ours in (("min_period", "backoff_min"), ("max_period", "backoff_max")):
                    if name in value:
                        self.loki[ours] = value[name]
                if "max_retries" in value:
                    self.notes.change((*where, "max_retries"), _IGNORED_CLIENT["max_retries"])
            elif key == "external_labels" and isinstance(value, Mapping):
                self.external.update({str(k): str(v) for k, v in value.items()})
            elif key in _IGNORED_CLIENT:
                self.notes.change(where, _IGNORED_CLIENT[key])
            else:
                self.notes.left(where, "not converted")

    def basic_auth(self, auth: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for key, value in auth.items():
            ours = {"username": "username", "password": "password",
                    "password_file": "password_file"}.get(key)
            if ours in self.has:
                self.loki[ours] = value
            else:
                self.notes.left((*path, key), "not converted (give the password in "
                                "loki.password, e.g. ${LOKI_PASSWORD})")

    def tls(self, tls: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for key, value in tls.items():
            ours = {"ca_file": "ca_bundle", "cert_file": "client_cert",
                    "key_file": "client_key"}.get(key)
            if ours is not None and ours in self.has:
                self.loki[ours] = value
            elif key == "insecure_skip_verify":
                if value is True:
                    self.loki["verify_tls"] = False
            else:
                self.notes.left((*path, key), "not converted")

    def positions(self, positions: object) -> None:
        if not isinstance(positions, Mapping):
            self.notes.left(("positions",), f"{shown(positions)}: expected its settings")
            return
        for key, value in positions.items():
            if key == "filename" and isinstance(value, str) and value:
                self.out["promtail_positions"] = value
                self.notes.change(("positions", key), "read once at start-up "
                                  "(promtail_positions); the sidecar keeps its own positions "
                                  "in positions_file")
            else:
                self.notes.change(("positions", key), "the sidecar saves its positions every "
                                  "positions_interval (2s) and moves a damaged file aside")

    def job(self, job: object, path: tuple[Any, ...]) -> None:
        if not isinstance(job, Mapping):
            self.notes.left(path, f"{shown(job)}: expected a job")
            return
        parsing = Stages(self.notes).run(job.get("pipeline_stages"),
                                          (*path, "pipeline_stages"))
        statics = job.get("static_configs")
        for key in job:
            if key not in ("job_name", "static_configs", "pipeline_stages"):
                hint = {"docker_sd_configs": " (a docker source follows containers)",
                        "loki_push_api": " (an http source takes Loki's push API)"}.get(
                    str(key), "")
                self.notes.left((*path, key), f"not converted{hint}")
        if statics is None:
            return
        if not isinstance(statics, list):
            self.notes.left((*path, "static_configs"), "expected a list")
            return
        for i, static in enumerate(statics):
            self.static(static, (*path, "static_configs", i), parsing)

    def static(self, static: object, path: tuple[Any, ...], parsing: Parsing) -> None:
        labels = static.get("labels") if isinstance(static, Mapping) else None
        if not isinstance(labels, Mapping) or "__path__" not in labels:
            self.notes.left(path, "a target without __path__: nothing to tail")
            return
        paths = self.globs(labels["__path__"], (*path, "labels", "__path__"))
        if not paths:
            return
        source: dict[str, Any] = {"type": "file", "paths": paths}
        if "__path_exclude__" in labels:
            exclude = self.globs(labels["__path_exclude__"], (*path, "labels",
                                                              "__path_exclude__"))
            if exclude:
                source["exclude"] = exclude
        every = {**self.external, **parsing.labels,
                 **{str(k): str(v) for k, v in labels.items()}}
        service = next((name for name in SERVICE_LABELS if every.get(name)), None)
        if service is not None:
            source["service"] = every[service]
            if service != "service_name":
                self.notes.change((*path, "labels", service),
                                  f"label {service}={every[service]}: service_name="
                                  f"{every[service]}, as Loki 3 derives it; {service} is not "
                                  "shipped as a label")
        for name, value in every.items():
            if name.startswith("__") or name == service:
                continue
            where = (*path, "labels", name)
            if name == "env":
                if self.envs and value not in self.envs:
                    self.notes.left(where, f"env={value}: the sidecar has one env for all "
                                    f"sources ({', '.join(sorted(self.envs))})")
                    continue
                self.envs.add(value)
            else:
                self.notes.left(where, f"label {name}={value}: the sidecar's labels are "
                                "service_name, env, level, type and actor (docs/events.md)")
        source.update(parsing.settings())
        self.sources.append(source)

    def globs(self, value: object, path: tuple[Any, ...]) -> list[str]:
        if not isinstance(value, str) or not value:
            self.notes.left(path, f"{shown(value)}: expected a glob")
            return []
        try:
            patterns = _expand_braces(value)
        except ValueError as exc:
            self.notes.left(path, f"{shown(value)}: {exc}")
            return []
        relative = [p for p in patterns if not os.path.isabs(_ENV_REF.sub(_as_set, p))]
        if relative:
            self.notes.left(path, f"{shown(relative[0])}: the sidecar needs absolute paths")
            return []
        return patterns


def convert_promtail(text: str, name: str = "promtail.yaml") -> Conversion:
    """Convert a Promtail configuration (its text; ``name`` for the notes). Raises
    :class:`PromtailConfigError` when it is not one or no file target converts."""
    data, lines = _load(text, name)
    if not isinstance(data, Mapping):
        raise PromtailConfigError(f"{name}: {shown(data)}: expected a Promtail configuration "
                                  "(a mapping with scrape_configs)")
    notes = Notes(name, lines)
    config = _Converter(data, notes).run()
    if not config["sources"]:
        raise PromtailConfigError(
            f"{name}: no static_configs target with __path__ converts, so there is nothing "
            "for the sidecar to tail:\n" + "\n".join(notes.left_out))
    if "${" in json.dumps(config):
        notes.change((), "${VAR} is read from the environment when the sidecar starts (Promtail "
                     "did so only with -config.expand-env=true)")
    conversion = Conversion(config, notes.left_out, notes.changed)
    _check_loads(conversion, name)
    return conversion


def _check_loads(conversion: Conversion, name: str) -> None:
    """The sidecar's own loader takes the result (``${VAR}`` given a stand-in)."""
    text = conversion.text(name)
    environ = {**os.environ, **_stand_ins(text)}
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "sidecar.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_config(path, environ=environ)
        except SidecarConfigError as exc:
            raise PromtailConfigError(f"{name}: the converted configuration does not load: "
                                      f"{str(exc).replace(path, 'sidecar.yaml')}") from None

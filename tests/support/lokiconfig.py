"""loki/config.yaml as Loki reads it, and a local server that answers ``GET /config`` with it.

Loki's ``GET /config`` prints its whole effective config: every default (the contract's
``loki-3.7.6-config-defaults.yaml`` is that Loki's ``GET /config?mode=defaults``) with the
config file's values on top, ``${VAR:-default}`` expanded (``-config.expand-env=true``) and
durations printed by Prometheus' ``model.Duration`` (``30d``, ``1w``, ``1y``).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import http.server
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shipper._units import parse_duration
from tests.support.contract import CONTRACT_DIR

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = ROOT / "loki" / "config.yaml"
#: simple scalable mode: write, read and backend targets on object storage
SCALE_CONFIG_PATH = ROOT / "loki" / "config.scale.yaml"
#: every Loki config file of the project
LOKI_CONFIGS = (CONFIG_PATH, SCALE_CONFIG_PATH)
RETENTION_PATH = ROOT / "loki" / "retention.yaml"
DEFAULTS_PATH = CONTRACT_DIR / "loki-3.7.6-config-defaults.yaml"

_ENV_REF = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


# libyaml when PyYAML has it: the defaults file has 3,500 lines
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@functools.cache
def _defaults() -> dict[str, Any]:
    if not DEFAULTS_PATH.exists():
        raise FileNotFoundError(
            f"{DEFAULTS_PATH} is missing: the tests need ../shared/loki-contract beside the "
            "repository"
        )
    data: dict[str, Any] = yaml.load(DEFAULTS_PATH.read_text(encoding="utf-8"), Loader=_Loader)
    return data


def load_defaults() -> dict[str, Any]:
    """Loki 3.7.6's GET /config?mode=defaults (a fresh copy)."""
    return copy.deepcopy(_defaults())


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` and ``${VAR:-default}`` as Loki's -config.expand-env=true replaces them."""
    return _ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def loki_duration(value: dt.timedelta) -> str:
    """A duration as Loki prints a ``model.Duration`` (Prometheus' ``Duration.String``)."""
    ms = int(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = ""
    units = (
        ("y", 365 * 86_400_000, True),
        ("w", 7 * 86_400_000, True),
        ("d", 86_400_000, False),
        ("h", 3_600_000, False),
        ("m", 60_000, False),
        ("s", 1_000, False),
        ("ms", 1, False),
    )
    for unit, size, exact in units:
        if exact and ms % size:
            continue
        count, ms = divmod(ms, size)
        if count:
            out += f"{count}{unit}"
    return out


def _merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        merged = dict(base)
        for key, value in top.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return copy.deepcopy(top)


def effective_config(
    config_text: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What Loki started from ``config_text`` (default: loki/config.yaml) shows at /config."""
    text = CONFIG_PATH.read_text(encoding="utf-8") if config_text is None else config_text
    config = yaml.safe_load(expand_env(text, env or {}))
    merged: dict[str, Any] = _merge(load_defaults(), config)
    limits = merged["limits_config"]
    limits["retention_period"] = loki_duration(parse_duration(str(limits["retention_period"])))
    limits["retention_stream"] = [
        {
            "period": loki_duration(parse_duration(str(rule["period"]))),
            "priority": rule["priority"],
            "selector": rule["selector"],
        }
        for rule in limits.get("retention_stream") or []
    ]
    return merged


def to_yaml(config: Mapping[str, Any]) -> str:
    return yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


@dataclass
class ConfigServer:
    """A local HTTP server answering ``GET /config`` with ``body`` and ``status``."""

    body: str
    status: int = 200
    url: str = ""
    requests: int = 0
    #: the X-Scope-OrgID header of the last request (None: not sent)
    tenant: str | None = None


@contextmanager
def serve_config(body: str, status: int = 200) -> Iterator[ConfigServer]:
    state = ConfigServer(body=body, status=status)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            state.tenant = self.headers.get("X-Scope-OrgID")
            if self.path != "/config":
                self._answer(404, "404 page not found\n")
                return
            self._answer(state.status, state.body)

        def _answer(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

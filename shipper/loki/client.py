"""Reading Loki: queries, label values, deletion requests, ``/config`` and readiness.

Every read and admin call goes through :class:`LokiClient`; an answer it cannot use becomes a
:class:`LokiError` whose one line says what happened. The client shares its connection
(URL, credentials, tenant, TLS) with the push client it extends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote as url_quote
from urllib.parse import urlencode

import yaml

from shipper._units import UnitError, parse_duration, parse_time
from shipper.delivery.credentials import TokenFileError
from shipper.delivery.push import PushClient, not_served_hint, one_line
from shipper.delivery.transport import HttpResponse, TransportError

__all__ = [
    "DEFAULT_MAX_ENTRIES_PER_QUERY",
    "DEFAULT_MAX_QUERY_LENGTH_S",
    "LokiClient",
    "LokiError",
    "QueryLimits",
    "classify_error",
    "parse_config",
]


#: What went wrong with a read or admin call, as :attr:`LokiError.kind` says it.
ErrorKind = Literal["unreachable", "parse_error", "rate_limited", "too_large", "unauthorized",
                    "not_found", "http"]

_TOO_LARGE = re.compile(
    r"exceeds the limit|max entries limit|maximum number of series|max_query_series|"
    r"too many chunks|max_query_bytes|query would read too many bytes", re.I)


class LokiError(Exception):
    """A read/admin call got an answer it cannot use. ``str(error)`` is one line that says
    what happened (a parse error, a 429, "query too large", unreachable with the URL);
    ``kind`` classifies it, ``status`` is the HTTP status (None without an answer).
    ``target`` names the Loki target that serves the path when the answer was a 404 from a
    scalable Loki's other target (see :func:`serving_target`)."""

    def __init__(self, message: str, status: int | None = None,
                 kind: ErrorKind = "http", target: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind: ErrorKind = kind
        self.target = target


def classify_error(method: str, path: str, status: int, text: str) -> LokiError:
    """Loki's answer to a read/admin call → a :class:`LokiError` with one clear line."""
    message = one_line(text) or f"HTTP {status}"
    if status == 429:
        return LokiError(f"Loki is rate limiting (429: {message}): try again in a moment or "
                         "narrow the time range", status, "rate_limited")
    if _TOO_LARGE.search(message):
        return LokiError(f"query too large: {message}", status, "too_large")
    if status == 400 and re.search(r"parse error|invalid query|syntax error", message, re.I):
        return LokiError(f"Loki could not parse the query: {message}", status, "parse_error")
    if status in (401, 403):
        return LokiError(f"Loki refused the credentials ({status}: {message}): check "
                         "LOKI_USERNAME/LOKI_PASSWORD, LOKI_BEARER_TOKEN(_FILE) and LOKI_TENANT",
                         status, "unauthorized")
    if status == 404:
        hint, target = not_served_hint(path)
        if target is not None:
            return LokiError(f"{method} {path} answered 404: {message}{hint}", status,
                             "not_found", target)
        return LokiError(f"{method} {path} is not there (404: {message}): is LOKI_URL Loki's "
                         "base URL?", status, "not_found")
    return LokiError(f"{method} {path} answered {status}: {message}", status, "http")


# --------------------------------------------------------------------------- /config


# Loki prints ~90 KB of config: libyaml's loader reads it in milliseconds where available.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str) -> dict[str, Any]:
    """Loki's configuration as ``GET /config`` prints it (YAML) → the document; an empty one
    when the YAML is not a mapping. Raises :class:`LokiError` when the text is not YAML."""
    try:
        doc = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise LokiError(f"Loki's configuration is not YAML: {one_line(str(exc))}") from exc
    return doc if isinstance(doc, dict) else {}


DEFAULT_MAX_QUERY_LENGTH_S = 30 * 86400 + 3600  # 30d1h
DEFAULT_MAX_ENTRIES_PER_QUERY = 5000


@dataclass(frozen=True)
class QueryLimits:
    """What Loki lets one query read: ``max_query_length`` (0: no limit) and
    ``max_entries_limit_per_query``; ``oldest_ns``, the first day of the oldest
    ``schema_config`` period (Loki holds nothing older; 0: not known). ``source`` is
    ``config`` or ``default``."""

    max_query_length_s: float = DEFAULT_MAX_QUERY_LENGTH_S
    max_entries_per_query: int = DEFAULT_MAX_ENTRIES_PER_QUERY
    source: str = "default"
    oldest_ns: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QueryLimits:
        """The limits in Loki's configuration (:func:`parse_config`); Loki's defaults when
        they cannot be read from it."""
        try:
            limits = config.get("limits_config") or {}
            length = parse_duration(str(limits.get("max_query_length", "30d1h")))
            entries = int(limits.get("max_entries_limit_per_query", DEFAULT_MAX_ENTRIES_PER_QUERY))
        except (AttributeError, TypeError, ValueError, UnitError):
            return cls()
        return cls(length.total_seconds(), entries if entries > 0 else 10**9, "config",
                   _oldest(config))


def _oldest(config: Mapping[str, Any]) -> int:
    """The first day of the oldest schema period (``from: 2024-04-01``), in ns; 0 unknown."""
    try:
        periods = (config.get("schema_config") or {}).get("configs") or []
        days = [parse_time(str(p["from"])) for p in periods]
    except (AttributeError, TypeError, KeyError, UnitError):
        return 0
    return max(min(days), 0) if days else 0


# --------------------------------------------------------------------------- client


class LokiClient(PushClient):
    """One Loki endpoint to read from, push to and ask for deletions. ``config.url`` is the
    base (``http://loki:3100``) or the full push URL."""

    # ------------------------------------------------------------------ reads and admin

    def _get(self, path: str, params: Mapping[str, object] | None = None,
             method: str = "GET") -> HttpResponse:
        url = self.base_url + path
        if params:
            url += "?" + urlencode({k: str(v) for k, v in params.items() if v is not None})
        try:
            resp = self.transport.request(method, url, headers=self.headers,
                                          timeout=self.config.timeout)
        except TokenFileError as exc:
            raise LokiError(str(exc), None, "unauthorized") from exc
        except TransportError as exc:
            what = "timed out" if exc.timeout else "unreachable"
            raise LokiError(f"Loki is {what} at {self.base_url}: {one_line(str(exc))}",
                            None, "unreachable") from exc
        if resp.status >= 300:
            text = resp.text
            try:  # some answers are JSON: {"status": "invalid-query", "error": "..."}
                body = json.loads(resp.body)
                if isinstance(body, dict) and body.get("error"):
                    text = str(body["error"])
            except ValueError:
                pass
            raise classify_error(method, path, resp.status, text)
        return resp

    def _json(self, path: str, params: Mapping[str, object] | None = None) -> Any:
        resp = self._get(path, params)
        try:
            body = json.loads(resp.body)
        except ValueError as exc:
            raise LokiError(f"GET {path}: the answer is not JSON: {resp.text[:200]!r}",
                            resp.status) from exc
        if isinstance(body, dict) and body.get("status") not in (None, "success"):
            raise classify_error("GET", path, resp.status, str(body.get("error") or body))
        return body

    def ready(self) -> bool:
        try:
            self.check_ready()
        except LokiError:
            return False
        return True

    def check_ready(self) -> None:
        """Raise :class:`LokiError` saying why unless ``GET /ready`` answers ``ready``."""
        text = self._get("/ready").text.strip()
        if text != "ready":
            raise LokiError(f"Loki at {self.base_url} is not ready: {one_line(text)}", 200)

    def query(self, query: str, time_ns: int | None = None, limit: int = 100,
              direction: str | None = None) -> Any:
        """``GET /loki/api/v1/query``: an instant (metric) query at ``time_ns``."""
        return self._json("/loki/api/v1/query", {"query": query, "time": time_ns,
                                                 "limit": limit, "direction": direction})["data"]

    def query_range(self, query: str, start_ns: int, end_ns: int, *, limit: int = 1000,
                    direction: str = "backward", step: str | None = None) -> Any:
        return self._json("/loki/api/v1/query_range", {
            "query": query, "start": start_ns, "end": end_ns, "limit": limit,
            "direction": direction, "step": step,
        })["data"]

    def labels(self, start_ns: int | None = None, end_ns: int | None = None,
               query: str | None = None) -> list[str]:
        """Label names of the streams in the range (those ``query``, a stream selector,
        matches)."""
        return _strings(self._json("/loki/api/v1/labels",
                                   {"start": start_ns, "end": end_ns, "query": query}), "labels")

    def label_values(self, name: str, start_ns: int | None = None,
                     end_ns: int | None = None, query: str | None = None) -> list[str]:
        """The values of label ``name`` (escaped into the path, whatever it holds)."""
        path = f"/loki/api/v1/label/{url_quote(name, safe='')}/values"
        return _strings(self._json(path, {"start": start_ns, "end": end_ns, "query": query}),
                        "label values")

    def series(self, match: str, start_ns: int | None = None,
               end_ns: int | None = None) -> list[dict[str, str]]:
        """``GET /loki/api/v1/series``: the label sets of the streams ``match`` (a stream
        selector: Loki takes no pipeline here) selects in the range."""
        body = self._json("/loki/api/v1/series",
                          {"match[]": match, "start": start_ns, "end": end_ns})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
            raise LokiError(f"GET /loki/api/v1/series: not a list of label sets: "
                            f"{str(body)[:200]!r}")
        return [{str(k): str(v) for k, v in s.items()} for s in data]

    def format_query(self, query: str) -> str:
        return str(self._json("/loki/api/v1/format_query", {"query": query})["data"])

    def loki_config(self) -> dict[str, Any]:
        """``GET /config``: the effective configuration, parsed (:func:`parse_config`).
        Raises :class:`LokiError` when Loki cannot be asked or its answer is not YAML."""
        resp = self._get("/config")
        try:
            return parse_config(resp.text)
        except LokiError as exc:
            raise LokiError(str(exc), resp.status) from exc

    def query_limits(self) -> QueryLimits:
        """The limits a reader must respect, from ``GET /config``; Loki's defaults when the
        configuration cannot be read (a proxy may hide /config)."""
        try:
            return QueryLimits.from_config(self.loki_config())
        except LokiError as exc:
            if exc.kind == "unreachable":
                raise
            return QueryLimits()

    def delete(self, query: str, start_s: int, end_s: int | None = None) -> str | None:
        """Request deletion of matching entries between ``start_s`` and ``end_s`` (Unix
        seconds, both included); returns the request id (Loki 3.6+)."""
        resp = self._get("/loki/api/v1/delete",
                         {"query": query, "start": start_s, "end": end_s}, method="POST")
        return resp.headers.get("x-delete-request-id")

    def delete_requests(self) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = self._json("/loki/api/v1/delete")
        return body

    def cancel_delete(self, request_id: str) -> None:
        """Cancel a deletion request still within Loki's ``delete_request_cancel_period``."""
        self._get("/loki/api/v1/delete", {"request_id": request_id}, method="DELETE")


def _strings(body: Any, what: str) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    if data is None:
        return []
    if not isinstance(data, list):
        raise LokiError(f"Loki's {what} are not a list: {str(data)[:200]!r}")
    return [str(v) for v in data]

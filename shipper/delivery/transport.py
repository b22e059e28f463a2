"""The HTTP seam: the Loki client talks to a :class:`Transport`, never to a library directly.

:class:`Urllib3Transport` is the real one: connection pools, a timeout on every request, TLS
verified by default (an optional CA bundle), a client certificate for mutual TLS, and the
proxy each URL goes through (:func:`proxy_for`: the one given, or the environment's as
``urllib.request`` reads it). Tests swap in an in-memory transport instead of patching.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit, urlunsplit

import urllib3

from shipper.redact import hide_url_credentials

__all__ = ["HttpResponse", "Transport", "TransportError", "Urllib3Transport", "proxy_for"]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    #: header names in lower case
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class TransportError(Exception):
    """The request got no HTTP answer: connection refused or reset, DNS, TLS, timeout.

    Always worth a retry; ``timeout`` tells a timeout from a refused connection."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


def _error(message: str, *, timeout: bool = False) -> TransportError:
    """A :class:`TransportError` whose message shows no credential of a URL (the request's, or
    one urllib3 quotes)."""
    return TransportError(hide_url_credentials(message), timeout=timeout)


@runtime_checkable
class Transport(Protocol):
    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
    ) -> HttpResponse:
        """Send one request and return the answer; raise :class:`TransportError` when there
        is none. Never retries by itself."""
        ...

    def close(self) -> None: ...


def proxy_for(url: str) -> str | None:
    """The proxy a request to ``url`` goes through, as the environment says it, read the way
    :mod:`urllib.request` reads it (:func:`~urllib.request.getproxies`: ``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY`` or their lower-case forms; on macOS and Windows the system's
    settings when none is set): None when there is none or ``NO_PROXY`` names the host (a
    name, a domain and its subdomains, ``host:port`` or ``*``, as
    :func:`~urllib.request.proxy_bypass` reads it, or a network such as ``10.0.0.0/8``
    holding the host's address, as requests reads it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or not parts.hostname:
        return None
    host = parts.hostname
    hostport = f"{host}:{parts.port}" if parts.port else host
    if urllib.request.proxy_bypass(hostport) or _in_network(host, proxies.get("no", "")):
        return None
    return proxy if "://" in proxy else "http://" + proxy  # HTTP_PROXY=proxy:3128


def _in_network(host: str, no_proxy: str) -> bool:
    """Whether ``host`` is an IP address inside a network that ``no_proxy`` lists."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry.strip(), strict=False):
                    return True
            except ValueError:
                continue
    return False


class Urllib3Transport:
    """urllib3 connection pools: keep-alive, no built-in retries, a timeout on every call.

    ``client_cert`` (and ``client_key`` when the key is in a file of its own) is presented to
    a server that asks for one; it is checked before a request when the files change, so a
    missing or broken one is an error naming the file, not a TLS failure without a reason.
    ``proxy_url`` carries every request; without it, ``proxy_from_env`` takes the proxy of
    each host from the environment (:func:`proxy_for`, read at the first request to it)."""

    def __init__(
        self,
        *,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        proxy_url: str | None = None,
        proxy_from_env: bool = True,
        maxsize: int = 2,
    ) -> None:
        self._verify = verify_tls
        self._ca_bundle = ca_bundle
        self._cert = client_cert
        self._key = client_key
        self._proxy_url = proxy_url
        self._from_env = proxy_from_env and not proxy_url
        #: scheme://host:port -> its proxy from the environment (None: direct)
        self._env_proxy: dict[str, str | None] = {}
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._cert_seen: tuple[object, ...] | None = None
        self._pool = self._new_pool()
        self._proxied: dict[str, urllib3.ProxyManager] = {}

    def _pool_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "maxsize": self._maxsize,
            "retries": False,
            "cert_reqs": "CERT_REQUIRED" if self._verify else "CERT_NONE",
        }
        if self._ca_bundle:
            kwargs["ca_certs"] = self._ca_bundle
        if self._cert:
            kwargs["cert_file"] = self._cert
            kwargs["key_file"] = self._key
        return kwargs

    def _new_pool(self) -> urllib3.PoolManager:
        return urllib3.PoolManager(**self._pool_kwargs())  # type: ignore[arg-type]

    def _pool_for(self, url: str) -> tuple[urllib3.PoolManager, str | None]:
        """The pool a request to ``url`` goes through, and its proxy (credentials hidden)."""
        proxy = self._proxy_url
        if self._from_env:
            parts = urlsplit(url)
            key = f"{parts.scheme}://{parts.netloc}"
            if key not in self._env_proxy:
                self._env_proxy[key] = proxy_for(url)
            proxy = self._env_proxy[key]
        if proxy is None:
            return self._pool, None
        parts = urlsplit(proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _error(f"proxy {proxy}: only http:// and https:// proxies are supported")
        with self._lock:
            manager = self._proxied.get(proxy)
            if manager is None:
                userinfo, at, host = parts.netloc.rpartition("@")
                headers = (urllib3.make_headers(proxy_basic_auth=unquote(userinfo))
                           if at else None)
                manager = urllib3.ProxyManager(
                    urlunsplit(parts._replace(netloc=host)), proxy_headers=headers,
                    **self._pool_kwargs())  # type: ignore[arg-type]
                self._proxied[proxy] = manager
        return manager, hide_url_credentials(proxy)

    def _check_client_cert(self) -> None:
        """Load the client certificate and key again when their files changed since they
        last loaded; raise :class:`TransportError` naming the file that cannot be used."""
        files = [("client certificate (client_cert)", self._cert)]
        if self._key:
            files.append(("client key (client_key)", self._key))
        seen: list[object] = []
        for what, path in files:
            try:
                st = os.stat(str(path))
            except OSError as exc:
                raise _error(f"{what} {path}: cannot read it ({exc.strerror})") from exc
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the load
                raise _error(f"{what} {path}: not a regular file")
            seen.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        if tuple(seen) == self._cert_seen:
            return
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(self._cert), self._key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            names = f"{self._cert}" + (f" with the key {self._key}" if self._key else "")
            why = getattr(exc, "strerror", None) or str(exc)
            if "PEM lib" in why:
                why += " (a PEM certificate, and its key not encrypted, expected)"
            raise _error(f"client certificate {names}: cannot load it: {why}") from exc
        self._cert_seen = tuple(seen)

    def _tls_hint(self, url: str, message: str) -> str:
        """What a failure of an HTTPS request most likely means, with the client certificate
        set or not: a server that asks for one ends the handshake with an alert, or closes
        the connection before the client reads it."""
        if not url.startswith("https:"):
            return ""
        if "CERTIFICATE_REQUIRED" in message or "certificate required" in message:
            if self._cert:
                return f" (the server did not take the client certificate {self._cert})"
            return (" (the server asks for a client certificate: set client_cert, "
                    "LOKI_CLIENT_CERT_PATH, and client_key, LOKI_CLIENT_KEY_PATH)")
        if any(s in message for s in ("EOF occurred", "ALERT", "reset by peer", "aborted",
                                      "Broken pipe")):
            if self._cert:
                return (" (the server closed the TLS connection: it may not trust the client "
                        f"certificate {self._cert})")
            return (" (the server closed the TLS connection: if it asks for a client "
                    "certificate, set client_cert, LOKI_CLIENT_CERT_PATH, and client_key, "
                    "LOKI_CLIENT_KEY_PATH)")
        return ""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
    ) -> HttpResponse:
        if self._cert and url.startswith("https:"):
            self._check_client_cert()
        pool, proxy = self._pool_for(url)
        via = f" through the proxy {proxy}" if proxy else ""
        try:
            resp = pool.request(
                method,
                url,
                body=body,
                headers=dict(headers or {}),
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.ProxyError as exc:
            raise _error(f"{method} {url}{via}: the proxy failed: "
                         f"{getattr(exc, 'original_error', None) or exc}") from exc
        except urllib3.exceptions.NewConnectionError as exc:  # refused, DNS: not a timeout
            raise _error(f"{method} {url}{via}: cannot connect: {exc}") from exc
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
            raise _error(f"{method} {url}{via}: timed out after {timeout:g}s",
                         timeout=True) from exc
        except urllib3.exceptions.HTTPError as exc:
            reason = str(getattr(exc, "reason", None) or exc)
            raise _error(f"{method} {url}{via}: {reason}{self._tls_hint(url, reason)}") from exc
        except OSError as exc:
            raise _error(f"{method} {url}{via}: {exc}{self._tls_hint(url, str(exc))}") from exc
        except ValueError as exc:  # http.client: a header it cannot send; never show its value
            raise _error(f"{method} {url}{via}: the request cannot be sent: a header holds "
                         "what HTTP cannot carry") from exc
        return HttpResponse(
            status=resp.status,
            body=resp.data or b"",
            headers={k.lower(): v for k, v in resp.headers.items()},
        )

    def reset_after_fork(self) -> None:
        """A forked child must not share the parent's sockets."""
        self._pool = self._new_pool()
        self._lock = threading.Lock()
        self._proxied = {}

    def close(self) -> None:
        self._pool.clear()
        for manager in list(self._proxied.values()):
            manager.clear()

"""The HTTP seam: the Loki client talks to a :class:`Transport`, never to a library directly.

:class:`Urllib3Transport` is the real one (connection pool, per-request timeout, TLS verified by
default, optional CA bundle). Tests swap in an in-memory transport instead of patching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import urllib3

from shipper.redact import hide_url_credentials

__all__ = ["HttpResponse", "Transport", "TransportError", "Urllib3Transport"]


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


class Urllib3Transport:
    """urllib3 connection pool: keep-alive, no built-in retries, a timeout on every call."""

    def __init__(
        self,
        *,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        maxsize: int = 2,
    ) -> None:
        self._verify = verify_tls
        self._ca_bundle = ca_bundle
        self._maxsize = maxsize
        self._pool = self._new_pool()

    def _new_pool(self) -> urllib3.PoolManager:
        kwargs: dict[str, object] = {
            "maxsize": self._maxsize,
            "retries": False,
            "cert_reqs": "CERT_REQUIRED" if self._verify else "CERT_NONE",
        }
        if self._ca_bundle:
            kwargs["ca_certs"] = self._ca_bundle
        return urllib3.PoolManager(**kwargs)  # type: ignore[arg-type]

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
    ) -> HttpResponse:
        try:
            resp = self._pool.request(
                method,
                url,
                body=body,
                headers=dict(headers or {}),
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # refused, DNS: not a timeout
            raise _error(f"{method} {url}: cannot connect: {exc}") from exc
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
            raise _error(f"{method} {url}: timed out after {timeout:g}s", timeout=True) from exc
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise _error(f"{method} {url}: {reason}") from exc
        except OSError as exc:
            raise _error(f"{method} {url}: {exc}") from exc
        return HttpResponse(
            status=resp.status,
            body=resp.data or b"",
            headers={k.lower(): v for k, v in resp.headers.items()},
        )

    def reset_after_fork(self) -> None:
        """A forked child must not share the parent's sockets."""
        self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.clear()

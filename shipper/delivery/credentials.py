"""The headers every request to Loki carries: who is asking (basic auth, a bearer token, or a
bearer-token file read again when it changes), the tenant, and the extra headers set in the
configuration.

A token file is what Kubernetes mounts (a projected service account token) and rotates: the
file is checked with one ``stat`` per request (size, time, inode) and read only when that
changed. A file that cannot be read, or holds no usable token, raises :class:`TokenFileError`
naming the path; the caller treats it like a Loki that cannot be reached (the push keeps its
events), and never lets it reach the application.
"""

from __future__ import annotations

import base64
import os
import stat
import threading

from shipper._files import FileTooLarge, read_small_file
from shipper._version import __version__
from shipper.config import ShipperConfig
from shipper.delivery.transport import TransportError

__all__ = ["MAX_TOKEN_BYTES", "RequestHeaders", "TokenFile", "TokenFileError"]

#: a token file larger than this is not a token (a service account token is about 1 KiB)
MAX_TOKEN_BYTES = 64 * 1024


class TokenFileError(TransportError):
    """The bearer-token file cannot be read or holds no usable token; the message names it."""


class TokenFile:
    """A bearer token kept in a file, read again when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, ...] | None = None
        self._token = ""

    def token(self) -> str:
        """The file's token; one ``stat``, and a read only when the file changed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise self._fail(f"cannot read it ({exc.strerror})") from exc
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, a device never end
            raise self._fail("not a regular file")
        seen = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
        with self._lock:
            if seen != self._seen:
                self._token = self._read()
                self._seen = seen
            return self._token

    def _read(self) -> str:
        try:
            data = read_small_file(self.path, MAX_TOKEN_BYTES)
        except OSError as exc:
            raise self._fail(f"cannot read it ({exc.strerror})") from exc
        except FileTooLarge:
            raise self._fail(f"larger than {MAX_TOKEN_BYTES // 1024} KiB: not a token file") \
                from None
        except ValueError as exc:  # replaced by a directory or a FIFO since the stat
            raise self._fail(str(exc).removeprefix("it is ")) from None
        try:
            token = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._fail("not UTF-8 text: not a token file") from None
        if not token:
            raise self._fail("it is empty")
        if not token.isprintable():  # a line break would start another header
            raise self._fail("the token holds a line break or another control character")
        try:
            token.encode("latin-1")
        except UnicodeEncodeError:
            raise self._fail("the token holds characters an HTTP header cannot carry") from None
        return token

    def _fail(self, why: str) -> TokenFileError:
        return TokenFileError(f"bearer_token_file {self.path}: {why}")


class RequestHeaders:
    """The headers of the configuration's requests to Loki (``Content-*`` apart, which each
    request sets for its body)."""

    def __init__(self, config: ShipperConfig) -> None:
        headers = {"User-Agent": f"shipper/{__version__}"}
        headers.update(config.headers)
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        if config.username:
            token = base64.b64encode(f"{config.username}:{config.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        self._fixed = headers
        self._token_file = TokenFile(config.bearer_token_file) if config.bearer_token_file \
            else None

    def __call__(self) -> dict[str, str]:
        """A fresh dict of the headers now; raises :class:`TokenFileError` when the token file
        cannot be used."""
        headers = dict(self._fixed)
        if self._token_file is not None:
            headers["Authorization"] = f"Bearer {self._token_file.token()}"
        return headers

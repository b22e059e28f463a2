"""The positions file: where each file and container was read up to, across restarts.

It is one JSON document, replaced atomically (written to a temporary file beside it, fsynced,
renamed over the old one, the directory fsynced), so a crash leaves the old or the new version,
never a mix. A file is known by device, inode and a fingerprint of its first bytes: an inode
that the filesystem reuses for a new file after a delete does not match the fingerprint, so the
new file is read from its start instead of from a stale offset.

A positions file damaged in any way (NUL bytes from a crash on some filesystems, truncated, not
JSON, nested too deep to read, not the expected shape or types, larger than any positions file
is, unreadable, or not a file at all: a directory, a FIFO) is reported in one line, renamed
aside (``<name>.damaged-<time>``) for inspection, and the sidecar goes on as if it had none:
files are read again from their start (Loki drops the lines it already has when their
timestamps come from the line). Loading never raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipper._files import read_small_file
from shipper.sidecar.promtail import looks_like_promtail_positions

__all__ = ["FINGERPRINT_BYTES", "FilePosition", "Positions", "PositionsStore", "fingerprint"]

#: how many leading bytes of a file make its fingerprint
FINGERPRINT_BYTES = 1024
_VERSION = 1
#: a positions file larger than this is not one (100,000 files take about 15 MB)
_MAX_BYTES = 64 * 1024 * 1024


def fingerprint(data: bytes) -> str:
    """A short digest of a file's first bytes (``data`` is at most FINGERPRINT_BYTES long)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True)
class FilePosition:
    path: str
    dev: int
    ino: int
    #: bytes read and shipped: the end of the last line whose event the pipeline took
    offset: int
    #: length and digest of the first bytes the fingerprint was taken over
    fp_len: int
    fp: str


@dataclass(frozen=True)
class Positions:
    files: tuple[FilePosition, ...] = ()
    #: container id -> timestamp (ns) of the last log line shipped
    containers: Mapping[str, int] | None = None


class PositionsStore:
    def __init__(self, path: str | os.PathLike[str],
                 report: Callable[[str], None]) -> None:
        self.path = Path(path)
        self._report = report
        self.saved_at = 0.0
        self.saves = 0

    def check_writable(self) -> None:
        """Create the directory and prove a file can be written there (raises OSError)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        probe = self.path.with_name(f".{self.path.name}.probe-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()

    def load(self) -> Positions:
        """What the file holds; none (and the file moved aside, saying so) when it is damaged
        in any way. Never raises."""
        try:
            data = self._read()
        except FileNotFoundError:
            return Positions()
        except OSError as exc:
            self._set_aside(f"cannot read it: {exc.strerror or exc}")
            return Positions()
        except ValueError as exc:
            self._set_aside(str(exc))
            return Positions()
        try:
            return _decode(data)
        except RecursionError:
            self._set_aside("not JSON: nested too deep to read")
        except Exception as exc:  # damaged in a way not foreseen: still no traceback
            why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            self._set_aside(why[:300])
        return Positions()

    def _read(self) -> bytes:
        """The file's bytes; ValueError when it is not a file of a positions file's size."""
        return read_small_file(self.path, _MAX_BYTES)

    def _set_aside(self, why: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for n in range(1, 100):  # never over an earlier damaged file
            if not os.path.lexists(aside):
                break
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            os.replace(self.path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror}); it will be overwritten"
        self._report(f"positions file {self.path} is damaged ({why}): {where}; files are read "
                     "from their start (Loki drops lines it already has)")

    def save(self, positions: Positions) -> None:
        """Replace the file atomically (raises OSError; the old file is then intact)."""
        doc: dict[str, Any] = {
            "version": _VERSION,
            "files": [asdict(p) for p in positions.files],
            "containers": dict(positions.containers or {}),
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):  # the rename itself must survive a power cut
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.saved_at = time.time()
        self.saves += 1


def _decode(data: bytes) -> Positions:
    if b"\x00" in data:
        raise ValueError("it holds NUL bytes")
    if not data.strip():
        raise ValueError("it is empty")
    if looks_like_promtail_positions(data):
        raise ValueError("it is a Promtail positions file (YAML), not the sidecar's: name it "
                         "in promtail_positions and give positions_file a path of its own")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or type(doc.get("version")) is not int or \
            doc["version"] != _VERSION:
        raise ValueError(f"not a version {_VERSION} positions document")
    files = doc.get("files")
    containers = doc.get("containers", {})
    if not isinstance(files, list) or not isinstance(containers, dict):
        raise ValueError("'files' must be a list and 'containers' an object")
    out: list[FilePosition] = []
    for i, item in enumerate(files):
        try:
            pos = FilePosition(**item)
            ok = (type(pos.path) is str and all(type(getattr(pos, k)) is int and
                  getattr(pos, k) >= 0 for k in ("dev", "ino", "offset", "fp_len"))
                  and type(pos.fp) is str)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"files[{i}] is not a position: {str(item)[:200]}")
        out.append(pos)
    if not all(type(v) is int and v >= 0 for v in containers.values()):
        raise ValueError("'containers' must map container ids to timestamps in ns")
    return Positions(tuple(out), dict(containers))

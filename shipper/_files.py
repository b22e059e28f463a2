"""A small file read whole, within a size bound, never waiting: what the sidecar reads at start-up
(its positions file, Promtail's positions file, a Promtail configuration) and the bearer-token
file the requests to Loki carry."""

from __future__ import annotations

import os
import stat

__all__ = ["FileTooLarge", "read_small_file"]


class FileTooLarge(ValueError):
    """The file holds more than the bound it was read with."""


def read_small_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``. Raises OSError when it cannot be opened or
    read, ValueError (``it is a directory``, ``it is not a regular file``; :class:`FileTooLarge`,
    ``it is larger than N MiB``) when it is not a file of at most ``limit`` bytes. Opened
    without waiting: a FIFO in its place would block a plain open or read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ValueError(f"it is {kind}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                bound = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
                raise FileTooLarge(f"it is larger than {bound}")
        return b"".join(chunks)
    finally:
        os.close(fd)

"""Files opened without ever waiting (a FIFO put in a file's place would block a plain open or
read): a small file read whole, within a size bound (what the sidecar reads at start-up: its
positions file, Promtail's positions file, a Promtail configuration; and the bearer-token file
the requests to Loki carry), and a log file opened for tailing only when it is a regular file
and not a kernel pseudo file."""

from __future__ import annotations

import contextlib
import functools
import os
import stat

__all__ = ["FileTooLarge", "NotALogFile", "kind_of", "open_log_file", "read_small_file"]

#: where the kernel's pseudo files live: their size is not their content, and what they hold
#: (the sidecar's own environment, say) is not a log
_PSEUDO_ROOTS = ("/proc", "/sys")


class NotALogFile(Exception):
    """A path the file source will not read: why, in words that follow the path."""


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


def open_log_file(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading if it is a regular file and not a kernel pseudo file; raises
    OSError, or :class:`NotALogFile` saying what it is. Never waits: a FIFO put in a log file's
    place is opened without blocking, then refused."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotALogFile(f"is {kind_of(st.st_mode)}, not a regular file")
        real = _pseudo(fd, st)
        if real is not None:
            raise NotALogFile(f"is {real}, a pseudo file of the kernel, not a log")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _pseudo(fd: int, st: os.stat_result) -> str | None:
    """Where an open file really is, when that is under /proc or /sys (else None)."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc here
        real = ""
    if real.startswith(tuple(root + "/" for root in _PSEUDO_ROOTS)) or \
            st.st_dev in _pseudo_devices():
        return real or "a kernel pseudo file"
    return None


@functools.cache
def _pseudo_devices() -> frozenset[int]:
    devices = set()
    for root in _PSEUDO_ROOTS:
        with contextlib.suppress(OSError):
            devices.add(os.stat(root).st_dev)
    return frozenset(devices)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a file of this mode is, in words ("a directory", "a FIFO", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")

"""Locks on segment files: ``flock`` between processes, or process-local ones where the
platform or the filesystem has no ``flock``."""

from __future__ import annotations

import contextlib
import os
import threading
from types import ModuleType

try:
    import fcntl as _fcntl_module
except ImportError:  # pragma: no cover - Windows
    _fcntl_module = None  # type: ignore[assignment]

_fcntl: ModuleType | None = _fcntl_module

__all__ = ["LOCAL_LOCKS", "Locks", "default_locks"]


class Locks:
    """Exclusive, non-blocking locks on open segment files."""

    cross_process = True

    def try_lock(self, fd: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def unlock(self, fd: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def forget(self, fd: int) -> None:
        """The fd is about to be closed in a forked child: drop it without unlocking (flock
        locks belong to the open file description the parent shares)."""

    def probe_held(self, fd: int) -> bool | None:
        """Whether another holder has the file locked (None: cannot tell)."""
        return None


class _FlockLocks(Locks):
    """``flock`` locks: they hold between processes, and the kernel drops those of a process
    that dies."""

    def try_lock(self, fd: int) -> bool:
        assert _fcntl is not None
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(self, fd: int) -> None:
        assert _fcntl is not None
        with contextlib.suppress(OSError):
            _fcntl.flock(fd, _fcntl.LOCK_UN)

    def probe_held(self, fd: int) -> bool | None:
        assert _fcntl is not None
        try:
            _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        self.unlock(fd)
        return False


class _LocalLocks(Locks):
    """Process-local locks (by device and inode): safe for one process only."""

    cross_process = False

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owners: dict[tuple[int, int], int] = {}

    @staticmethod
    def _key(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino)

    def try_lock(self, fd: int) -> bool:
        key = self._key(fd)
        with self._mutex:
            owner = self._owners.get(key)
            if owner is not None and owner != fd:
                return False
            self._owners[key] = fd
            return True

    def unlock(self, fd: int) -> None:
        try:
            key = self._key(fd)
        except OSError:
            return
        with self._mutex:
            if self._owners.get(key) == fd:
                del self._owners[key]

    forget = unlock

    def probe_held(self, fd: int) -> bool | None:
        try:
            key = self._key(fd)
        except OSError:
            return None
        with self._mutex:
            return key in self._owners


#: the one set of process-local locks (every spool of the process shares it)
LOCAL_LOCKS: Locks = _LocalLocks()


def default_locks() -> Locks:
    """``flock`` locks where the platform has them, else the process-local ones."""
    return _FlockLocks() if _fcntl is not None else LOCAL_LOCKS

"""Expanding the file source's glob patterns: a bounded walk that never goes round a symlink loop.

``glob.iglob(pattern, recursive=True)`` follows every symbolic link to a directory under ``**``:
two links to ``.`` make about 2^40 paths before the kernel's ELOOP ends each of them, and the
expansion never finishes. :class:`GlobWalk` matches the names :mod:`glob` matches (each path
segment by :mod:`fnmatch`; ``**`` for zero or more directories, following links to directories;
a name starting with a dot only when the segment starts with one) and differs in four ways:

* under ``**`` a directory is entered once per walk, known by its device and inode, however
  many links lead to it: a loop is gone round once, an alias is walked once;
* it counts the files and directories it visits for each pattern and stops walking that
  pattern after ``max_entries`` of them or after ``timeout`` seconds, saying so
  (:attr:`GlobWalk.cuts`); the next pattern gets the same budget;
* it advances in slices (:meth:`GlobWalk.advance`), so that its caller reads its open files
  between two slices;
* its stack is a list, not recursion: a directory tree of any depth is walked.

What it finds is every regular file the patterns match, once per (device, inode), with the path
it was first found at and its ``stat``. The names of a directory are matched in sorted order, so
a walk cut short by ``max_entries`` covers about the same part of the tree each time (a
directory whose listing was cut short gives what it listed, in the directory's own order).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["GlobWalk", "Match"]

#: what the walk found: (device, inode) -> (the path it was first found at, its stat)
Match = dict[tuple[int, int], tuple[str, os.stat_result]]
#: the clock is read once per this many entries
_CLOCK_EVERY = 64


@dataclass(frozen=True)
class _Segment:
    text: str
    #: None: a literal name (no wildcard)
    match: Callable[[str], object] | None
    #: ``**``: zero or more directories
    recursive: bool
    #: the segment starts with a dot: it may match names that do
    dotted: bool


def _segments(pattern: str) -> tuple[str, list[_Segment]]:
    """The directory where the wildcards start, and the segments after it."""
    parts = pattern.split(os.sep)
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else os.curdir)
    segments = []
    for part in parts[first:]:
        if not part:  # a doubled or trailing separator
            continue
        magic = glob.has_magic(part)
        segments.append(_Segment(
            part, re.compile(fnmatch.translate(part)).match if magic else None,
            part == "**", part.startswith(".")))
    return root, segments


class GlobWalk:
    """One expansion of ``patterns``; :meth:`advance` until it returns True, then read
    :attr:`found` and :attr:`cut`."""

    def __init__(self, patterns: Sequence[str], *, max_entries: int, timeout: float,
                 exclude: Callable[[str], bool] = lambda path: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.found: Match = {}
        #: matched paths that are neither regular files nor directories (FIFOs, devices,
        #: sockets): path -> its mode
        self.others: dict[str, int] = {}
        #: files and directories visited so far for the pattern walked now
        self.entries = 0
        #: the patterns whose walk stopped early, and why
        self.cuts: dict[str, str] = {}
        #: the pattern being walked now
        self.pattern = ""
        self.done = False
        self._patterns = list(patterns)
        self._max_entries = max_entries
        self._timeout = timeout
        self._exclude = exclude
        self._clock = clock
        self._started = 0.0
        self._why: str | None = None  # why the pattern walked now stops early
        self._steps: Generator[str | None, None, None] | None = None

    def advance(self, until: float) -> bool:
        """Walk until the clock reads ``until`` (or to the end); True once the walk is over,
        whole or cut short."""
        clock = self._clock
        while not self.done:
            steps = self._steps
            if steps is None:
                if not self._patterns:
                    self.done = True
                    break
                self.pattern = self._patterns.pop(0)
                self.entries = 0
                self._why = None
                self._started = clock()
                steps = self._steps = self._walk(self.pattern)
            for path in steps:
                if path is not None:
                    self._consider(path)
                elif self.entries % _CLOCK_EVERY == 0 and clock() >= until:
                    return False
            if self._why is not None:
                self.cuts[self.pattern] = self._why
            self._steps = None
        return True

    def _consider(self, path: str) -> None:
        if self._exclude(path):
            return
        try:
            st = os.stat(path)
        except (OSError, ValueError):  # gone, a dangling link, a loop of links, a NUL
            return
        if stat.S_ISREG(st.st_mode):
            self.found.setdefault((st.st_dev, st.st_ino), (path, st))
        elif not stat.S_ISDIR(st.st_mode):
            self.others.setdefault(path, st.st_mode)

    # ------------------------------------------------------------------ the walk

    def _walk(self, pattern: str) -> Generator[str | None, None, None]:
        """Yields each candidate path, and None after each directory entry visited."""
        root, segments = _segments(pattern)
        if not segments:  # no wildcard: the path itself
            yield root
            return
        last = len(segments) - 1
        entered: set[tuple[int, int, int]] = set()  # (segment, device, inode) under '**'
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            path, i = stack.pop()
            segment = segments[i]
            if segment.match is None:  # a literal name
                full = os.path.join(path, segment.text)
                if i == last:
                    yield full
                else:
                    stack.append((full, i + 1))
                continue
            if segment.recursive:
                try:
                    st = os.stat(path)
                except (OSError, ValueError):
                    continue
                key = (i, st.st_dev, st.st_ino)
                if key in entered:  # a loop, or another link to a directory walked already
                    continue
                entered.add(key)
            listing: list[tuple[str, bool]] = []
            yield from self._list(path, listing)  # (cut short at a bound: what it listed)
            deeper: list[tuple[str, int]] = []
            yield from self._match(segments, path, listing, i, deeper)
            nearer: list[tuple[str, int]] = []
            if segment.recursive and i < last:  # '**' as no directory at all
                following = segments[i + 1]
                if following.match is None or following.recursive:
                    nearer.append((path, i + 1))
                else:  # the same listing serves the next segment: no second visit
                    yield from self._match(segments, path, listing, i + 1, nearer)
            if self._why is not None:
                return
            stack.extend(reversed(deeper))
            stack.extend(reversed(nearer))

    @staticmethod
    def _match(segments: list[_Segment], path: str, listing: list[tuple[str, bool]], i: int,
               deeper: list[tuple[str, int]]) -> Iterator[str]:
        """Segment ``i`` applied to the names in directory ``path``: yields the paths that
        match the last segment, and adds the directories to walk on to ``deeper``."""
        segment = segments[i]
        last = i == len(segments) - 1
        for name, is_dir in listing:
            if name[0] == "." and not segment.dotted:
                continue
            full = os.path.join(path, name)
            if segment.recursive:
                if is_dir:
                    deeper.append((full, i))
                elif last:
                    yield full
            elif segment.match is not None and segment.match(name):
                if last:
                    yield full
                elif is_dir:
                    deeper.append((full, i + 1))

    def _list(self, path: str, into: list[tuple[str, bool]]) -> Iterator[None]:
        """The names in directory ``path`` (sorted) and whether each is a directory (links
        followed) into ``into``; yields after each. At a bound it stops listing, saying why."""
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if self.entries >= self._max_entries:  # one more than it may visit
                        self._why = f"after {self._max_entries:,} files and directories"
                        break
                    self.entries += 1
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    into.append((entry.name, is_dir))
                    if self.entries % _CLOCK_EVERY == 0:
                        spent = self._clock() - self._started
                        if spent >= self._timeout:
                            self._why = f"after {spent:.0f}s"
                            break
                    yield None
        except (OSError, ValueError):  # not a directory, gone, not allowed: as glob does
            pass
        into.sort()

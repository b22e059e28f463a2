"""The spool's record format: how a payload is framed on disk, and the reader that checks and
resynchronises over damaged frames.

A record is ``MAGIC (ff d5) | length (u32 LE) | crc32 (u32 LE) | payload``; the crc32 covers
the length field and the payload. See the package documentation for why.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator

__all__ = [
    "MAX_RECORD_BYTES",
    "Frames",
    "count_headers",
    "count_records",
    "encode_record",
    "encode_records",
]

#: the frame header: magic, payload length, crc32 of the length field and the payload
_MAGIC = b"\xff\xd5"
_HEADER = struct.Struct("<2sII")
_U32 = struct.Struct("<I")
_HDR = _HEADER.size
#: a length above this is not a record (append refuses larger payloads as ``too_large``)
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: read size of the streaming reader
_CHUNK = 1 << 20


def _crc(length: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_U32.pack(length)))


def encode_records(payloads: Iterable[bytes]) -> bytes:
    """The framed records one after the other, as one :meth:`Spool.append` write holds them
    (each payload at most :data:`MAX_RECORD_BYTES`)."""
    pack, crc32, pack_u32 = _HEADER.pack, zlib.crc32, _U32.pack
    parts: list[bytes] = []
    for payload in payloads:
        size = len(payload)
        parts.append(pack(_MAGIC, size, crc32(payload, crc32(pack_u32(size)))))
        parts.append(payload)
    return b"".join(parts)


def encode_record(payload: bytes) -> bytes:
    """One framed record, as :meth:`Spool.append` writes it."""
    return encode_records((payload,))


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, size)  # pragma: no cover


class Frames:
    """Streams the payloads of one segment (through ``fd`` with ``pread``, up to the size the
    file had when the pass began), checking each frame; never raises for bad data.

    After the pass: ``records`` (good records), ``corrupt`` (records with a bad checksum, and
    stretches of garbage between good records), ``torn`` (the segment ends in an incomplete
    record or garbage), ``first_problem`` (file offset of the first of those).
    With ``verify=False`` only the headers are checked (for counting).
    """

    def __init__(self, fd: int, *, verify: bool = True) -> None:
        self._fd = fd
        self._verify = verify
        self._size = os.fstat(fd).st_size
        self._buf = b""
        self._base = 0  # file offset of _buf[0]
        self._pos = 0  # read position in _buf
        self.records = 0
        self.corrupt = 0
        self.torn = False
        self.first_problem: int | None = None

    def _problem(self, offset: int) -> None:
        if self.first_problem is None:
            self.first_problem = offset

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from the read position (compacting the buffer so the
        read position becomes 0). False at end of file: everything left is then buffered."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos:]]
        self._base += self._pos
        self._pos = 0
        offset = self._base + have
        while have < need and offset < self._size:
            data = _pread(self._fd, min(max(need - have, _CHUNK), self._size - offset), offset)
            if not data:  # the file shrank under us
                self._size = offset
                break
            parts.append(data)
            have += len(data)
            offset += len(data)
        self._buf = b"".join(parts)
        return have >= need

    def _seek_magic(self, start: int) -> bool:
        """Move the read position to the next magic at or after buffer index ``start``;
        False (everything consumed) when there is none before the end of the file."""
        while True:
            found = self._buf.find(_MAGIC, start)
            if found >= 0:
                self._pos = found
                return True
            # keep the last byte: it may be the first half of a magic
            self._pos = min(max(start, len(self._buf) - (len(_MAGIC) - 1)), len(self._buf))
            if not self._fill(len(self._buf) - self._pos + 1):
                self._pos = len(self._buf)
                return False
            start = 0

    def _skip_bad(self, bad_at: int, start: int) -> bool:
        """A bad stretch began at file offset ``bad_at``: move to the next magic at or after
        buffer index ``start``. False when there is none: the rest of the file is a torn tail."""
        if self._seek_magic(start):
            return True
        self.torn = True
        self._problem(bad_at)
        return False

    def __iter__(self) -> Iterator[bytes]:
        bad_at: int | None = None  # file offset where an unresolved bad stretch began
        while True:
            if len(self._buf) - self._pos < _HDR and not self._fill(_HDR):
                if self._pos < len(self._buf) and bad_at is None:
                    bad_at = self._base + self._pos  # a partial header at the end
                if bad_at is not None:
                    self.torn = True
                    self._problem(bad_at)
                return
            pos = self._pos
            magic, length, crc = _HEADER.unpack_from(self._buf, pos)
            if magic != _MAGIC or length > MAX_RECORD_BYTES:
                if bad_at is None:
                    bad_at = self._base + pos
                if not self._skip_bad(bad_at, pos + 1):
                    return
                continue
            total = _HDR + length
            if len(self._buf) - pos < total:
                if not self._fill(total):
                    # incomplete at the end: a torn tail, unless a good record follows (then it
                    # was a corrupt length, and the main loop resolves it as corruption)
                    if bad_at is None:
                        bad_at = self._base + self._pos
                    if not self._skip_bad(bad_at, self._pos + 1):
                        return
                    continue
                pos = self._pos
            end = pos + total
            if self._verify and _crc(length, self._buf[pos + _HDR:end]) != crc:
                # skip by its length when that lands on the next record (or the end of file),
                # else the length itself may be wrong: resynchronise on the next magic
                self._fill(total + len(_MAGIC))
                pos = self._pos
                end = pos + total
                at_end = self._base + end == self._size
                if at_end or self._buf[end:end + len(_MAGIC)] == _MAGIC:
                    if bad_at is not None:
                        self.corrupt += 1
                        bad_at = None
                    self.corrupt += 1
                    self._problem(self._base + pos)
                    self._pos = end
                    continue
                if bad_at is None:
                    bad_at = self._base + pos
                if not self._skip_bad(bad_at, pos + 1):
                    return
                continue
            if bad_at is not None:  # garbage between good records
                self.corrupt += 1
                self._problem(bad_at)
                bad_at = None
            payload = self._buf[pos + _HDR:end]
            self._pos = end
            self.records += 1
            yield payload


def count_records(fd: int, *, verify: bool) -> Frames:
    """Read a whole segment (see :class:`Frames`) and return the reader with its tallies."""
    frames = Frames(fd, verify=verify)
    for _ in frames:
        pass
    return frames


def count_headers(fd: int) -> int:
    """The records of a segment, from its headers alone (for eviction, which must be quick);
    falls back to the resynchronising reader when the framing is not clean."""
    size = os.fstat(fd).st_size
    unpack = _HEADER.unpack_from
    count = offset = base = 0
    buf = b""
    while offset < size:
        rel = offset - base
        if rel + _HDR > len(buf):
            buf = _pread(fd, min(_CHUNK, size - offset), offset)
            base, rel = offset, 0
            if len(buf) < _HDR:
                break
        magic, length, _checksum = unpack(buf, rel)
        if magic != _MAGIC or length > MAX_RECORD_BYTES:
            break
        offset += _HDR + length
        count += 1
    if offset == size:
        return count
    return count_records(fd, verify=False).records


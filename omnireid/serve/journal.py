"""An append-only, fsync'ed log of gallery changes: what makes an acknowledged change survive ``kill -9``.

Each record is ``MAGIC | length (u32) | crc32 (u32) | payload`` (little endian). A record is
acknowledged only after ``fsync`` returned, so a crash can only leave a *torn tail* (a record cut
short, or garbage after the last complete record); :func:`read_journal` stops at the first bad
record and reports where the valid prefix ends, so the log can be truncated there and appended to.
"""
from __future__ import annotations

import os
import struct
import zlib

MAGIC = b"ORJ1"
_HEADER = struct.Struct("<4sII")


def encode_record(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_journal(path: str) -> tuple[list[bytes], int]:
    """The payloads of the complete records and the byte offset where the valid prefix ends."""
    if not os.path.exists(path):
        return [], 0
    with open(path, "rb") as f:
        data = f.read()
    payloads, offset = [], 0
    while (parsed := _parse(data, offset)) is not None:
        payload, offset = parsed
        payloads.append(payload)
    return payloads, offset


def _parse(data: bytes, offset: int) -> tuple[bytes, int] | None:
    end = offset + _HEADER.size
    if end > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, offset)
    if magic != MAGIC or end + length > len(data):
        return None
    payload = data[end:end + length]
    if zlib.crc32(payload) != crc:
        return None
    return payload, end + length


class Journal:
    """Appends records durably; opening it cuts a torn tail left by a crash."""

    def __init__(self, path: str) -> None:
        self.path = path
        _, valid_end = read_journal(path)
        self._file = open(path, "ab")
        if self._file.tell() != valid_end:
            self._file.truncate(valid_end)
            self._fsync()
        self._fsync_dir()  # the file's directory entry must be durable too (a new journal)

    def append(self, payloads: list[bytes]) -> None:
        """Write the records and fsync: when this returns they survive a crash of the process or machine."""
        self._file.write(b"".join(encode_record(p) for p in payloads))
        self._fsync()

    def _fsync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def _fsync_dir(self) -> None:
        fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

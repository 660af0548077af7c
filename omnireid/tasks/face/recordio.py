"""MXNet RecordIO (insightface's ``train.rec`` / ``train.idx``) read and written without mxnet.

Format (dmlc-core ``recordio``, as insightface uses it):

- ``train.idx``: one ``key<TAB>offset`` line per record (offset in bytes into ``train.rec``).
- ``train.rec``: records, each ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (top 3 bits: the
  continuation flag, low 29 bits: the length), the payload part, zero padding to 4 bytes. A payload
  that contains the magic word at a 4-byte aligned position is written as several parts (flag 1 =
  first, 2 = middle, 3 = last; 0 = whole record) with the magic word removed at each cut; reading
  puts it back between the parts.
- payload: ``IRHeader`` = struct ``<IfQQ`` (``flag``, ``label``, ``id``, ``id2``); when ``flag > 0``,
  ``flag`` float32 labels follow and replace ``label``; then the encoded image.
- insightface's record 0 is a header only: its labels ``(a, b)`` say that images are keys ``1..a-1``
  and identities keys ``a..b-1``, each identity record's labels being its image key range
  ``[start, end)``. Without such a header every key is an image whose label is its class.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from omnireid.utils.errors import MissingFileError
from omnireid.utils.file_io import atomic_write_text

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)

# Continuation flags of a record part.
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3


class RecordIOError(ValueError):
    """A ``.rec`` / ``.idx`` pair is malformed; the message names the file, key and offset."""


@dataclass(frozen=True)
class IRHeader:
    """insightface's image-record header; ``labels`` holds ``label`` or the ``flag`` extra labels."""

    flag: int
    labels: tuple[float, ...]
    id: int
    id2: int

    @property
    def label(self) -> float:
        return self.labels[0]


def pack_record(header: IRHeader, image: bytes = b"") -> bytes:
    """The payload of one record: ``IRHeader`` (+ extra labels when ``flag > 0``) + image bytes."""
    if header.flag > 0:
        if len(header.labels) != header.flag:
            raise ValueError(f"IRHeader flag {header.flag} needs {header.flag} labels, got {len(header.labels)}")
        head = struct.pack(IR_FORMAT, header.flag, 0.0, header.id, header.id2)
        head += struct.pack(f"<{header.flag}f", *header.labels)
    else:
        head = struct.pack(IR_FORMAT, 0, header.labels[0], header.id, header.id2)
    return head + image


def unpack_record(payload: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """Split a payload into its header and the image bytes."""
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"{where}: payload of {len(payload)} bytes is shorter than an IRHeader ({IR_SIZE})")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload)
    if flag == 0:
        return IRHeader(0, (float(label),), id_, id2), payload[IR_SIZE:]
    end = IR_SIZE + 4 * flag
    if len(payload) < end:
        raise RecordIOError(f"{where}: IRHeader flag {flag} announces {flag} labels but the payload ends first")
    labels = struct.unpack_from(f"<{flag}f", payload, IR_SIZE)
    return IRHeader(flag, tuple(float(v) for v in labels), id_, id2), payload[end:]


def read_index(idx_path: str) -> dict[int, int]:
    """``{key: offset}`` from an ``.idx`` file (``key<TAB>offset`` lines)."""
    index: dict[int, int] = {}
    with open(idx_path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise RecordIOError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line.strip()!r}")
            try:
                index[int(parts[0])] = int(parts[1])
            except ValueError:
                raise RecordIOError(f"{idx_path}:{number}: key and offset must be integers, "
                                    f"got {line.strip()!r}") from None
    return index


def _read_exact(f: BinaryIO, size: int, where: str) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise RecordIOError(f"{where}: file ends after {len(data)} of {size} bytes (truncated .rec?)")
    return data


def read_payload(f: BinaryIO, offset: int, where: str = "record") -> bytes:
    """The whole payload of the record starting at ``offset``, split parts rejoined."""
    f.seek(offset)
    parts: list[bytes] = []
    expected_flags = (WHOLE, FIRST)
    while True:
        magic, lrecord = struct.unpack("<II", _read_exact(f, 8, where))
        if magic != MAGIC:
            raise RecordIOError(f"{where}: bad magic 0x{magic:08x} at offset {f.tell() - 8} (expected 0x{MAGIC:08x}); "
                                "the .idx does not belong to this .rec, or the file is corrupt")
        flag, length = lrecord >> _LENGTH_BITS, lrecord & _LENGTH_MASK
        if flag not in expected_flags:
            raise RecordIOError(f"{where}: continuation flag {flag} at offset {f.tell() - 8} where {expected_flags} "
                                "was expected (corrupt split record)")
        parts.append(_read_exact(f, length, where))
        f.seek((4 - length % 4) % 4, os.SEEK_CUR)
        if flag in (WHOLE, LAST):
            return _MAGIC_BYTES.join(parts)
        expected_flags = (MIDDLE, LAST)


def write_payload(f: BinaryIO, payload: bytes) -> int:
    """Append one record (split at 4-byte aligned magic words, as dmlc-core does); returns its offset."""
    offset = f.tell()
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == _MAGIC_BYTES]
    bounds = [0] + [c + 4 for c in cuts]
    ends = cuts + [len(payload)]
    pieces = [payload[b:e] for b, e in zip(bounds, ends)]
    for number, piece in enumerate(pieces):
        if len(pieces) == 1:
            flag = WHOLE
        else:
            flag = FIRST if number == 0 else LAST if number == len(pieces) - 1 else MIDDLE
        if len(piece) > _LENGTH_MASK:
            raise ValueError(f"record part of {len(piece)} bytes exceeds the RecordIO limit of {_LENGTH_MASK}")
        f.write(struct.pack("<II", MAGIC, (flag << _LENGTH_BITS) | len(piece)))
        f.write(piece)
        f.write(b"\0" * ((4 - len(piece) % 4) % 4))
    return offset


class RecordIOReader:
    """Random access to the records of a ``.rec`` through its ``.idx``.

    The file is opened lazily and reopened in a new process (fork-safe for data-loader workers).
    """

    def __init__(self, rec_path: str, idx_path: str | None = None) -> None:
        self.rec_path = rec_path
        self.idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
        for path in (self.rec_path, self.idx_path):
            if not os.path.isfile(path):
                raise MissingFileError(f"RecordIO file not found: {path}")
        self.index = read_index(self.idx_path)
        self._file: BinaryIO | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def _handle(self) -> BinaryIO:
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._file

    def keys(self) -> list[int]:
        return list(self.index)

    def read(self, key: int) -> bytes:
        """The payload of record ``key``."""
        if key not in self.index:
            raise RecordIOError(f"{self.idx_path}: no record with key {key}")
        return read_payload(self._handle(), self.index[key], f"{self.rec_path} key {key}")

    def read_header(self, key: int) -> IRHeader:
        return unpack_record(self.read(key), f"{self.rec_path} key {key}")[0]

    def read_image(self, key: int) -> bytes:
        """The encoded image of record ``key``."""
        return unpack_record(self.read(key), f"{self.rec_path} key {key}")[1]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def insightface_labels(reader: RecordIOReader) -> list[tuple[int, int]]:
    """``[(image key, class)]`` of an insightface training set.

    With insightface's record-0 header the images are keys ``1..a-1`` and, when identity records
    exist, their classes come from those (one read per identity, not per image); otherwise each
    image record's own label is its class.
    """
    where = reader.rec_path
    image_keys = sorted(reader.index)
    head = reader.read_header(0) if 0 in reader.index else None
    if head is not None and head.flag > 0:
        if len(head.labels) < 2:
            raise RecordIOError(f"{where}: record 0 has {len(head.labels)} labels; insightface's header has "
                                "(end of image keys, end of identity keys)")
        first_id, end_id = int(head.labels[0]), int(head.labels[1])
        image_keys = list(range(1, first_id))
        if end_id > first_id:
            pairs: list[tuple[int, int]] = []
            for cls, key in enumerate(range(first_id, end_id)):
                span = reader.read_header(key)
                if len(span.labels) < 2:
                    raise RecordIOError(f"{where}: identity record {key} has no (start, end) image range")
                pairs.extend((image, cls) for image in range(int(span.labels[0]), int(span.labels[1])))
            image_keys = [k for k, _ in pairs]
        missing = [k for k in image_keys if k not in reader.index]
        if missing:
            raise RecordIOError(f"{where}: record 0 / identity records name image keys missing from "
                                f"{reader.idx_path} (e.g. {missing[:3]})")
        if end_id > first_id:
            return pairs
    return [(key, int(reader.read_header(key).label)) for key in image_keys]


class RecordIOWriter:
    """Writes ``.rec`` + ``.idx`` (used by the synthetic data generator; tests use their own writer)."""

    def __init__(self, rec_path: str, idx_path: str | None = None) -> None:
        self.rec_path = rec_path
        self.idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
        os.makedirs(os.path.dirname(os.path.abspath(rec_path)), exist_ok=True)
        self._file = open(rec_path, "wb")
        self._lines: list[str] = []

    def write(self, key: int, payload: bytes) -> None:
        self._lines.append(f"{key}\t{write_payload(self._file, payload)}\n")

    def close(self) -> None:
        self._file.close()
        atomic_write_text(self.idx_path, "".join(self._lines))

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_insightface_rec(rec_path: str, images: list[tuple[bytes, int]]) -> None:
    """An insightface-layout ``train.rec``/``.idx``: record 0 header, images ``1..N``, one record per identity.

    ``images`` are ``(encoded image, class)`` grouped by class (classes ``0..C-1`` in order).
    """
    classes = [c for _, c in images]
    if classes != sorted(classes) or (classes and (classes[0] != 0 or len(set(classes)) != classes[-1] + 1)):
        raise ValueError("images must be grouped by contiguous classes 0..C-1 in order")
    num_classes = len(set(classes))
    first_id = len(images) + 1
    with RecordIOWriter(rec_path) as writer:
        writer.write(0, pack_record(IRHeader(2, (float(first_id), float(first_id + num_classes)), 0, 0)))
        for key, (image, cls) in enumerate(images, start=1):
            writer.write(key, pack_record(IRHeader(0, (float(cls),), key, 0), image))
        start = 1
        for cls in range(num_classes):
            end = start + classes.count(cls)
            writer.write(first_id + cls, pack_record(IRHeader(2, (float(start), float(end)), 0, 0)))
            start = end

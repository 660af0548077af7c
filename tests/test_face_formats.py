"""insightface formats read without mxnet: RecordIO against an independent writer, .bin through a literal-only unpickler."""
from __future__ import annotations

import os
import pickle
import struct

import pytest

from omnireid.tasks.face.recordio import (IRHeader, RecordIOError, RecordIOReader, insightface_labels,
                                          write_insightface_rec)
from omnireid.tasks.face.verification_bin import VerificationBinError, read_verification_bin, write_verification_bin

MAGIC = 0xCED7230A


# ------------------------------------------------------------------ an independent minimal RecordIO writer
class MinimalRecWriter:
    """Writes records part by part exactly as the format describes (no splitting logic of its own:
    a test says where a record is cut and the reader must put the magic word back there)."""

    def __init__(self, folder):
        self.rec = open(os.path.join(folder, "train.rec"), "wb")
        self.idx_lines = []
        self.folder = folder

    def _part(self, cflag, data):
        self.rec.write(struct.pack("<I", MAGIC))
        self.rec.write(struct.pack("<I", (cflag << 29) | len(data)))
        self.rec.write(data)
        self.rec.write(b"\x00" * (-len(data) % 4))

    def record(self, key, payload, cuts=()):
        """``cuts``: offsets of magic words inside ``payload`` at which the record is split."""
        self.idx_lines.append(f"{key}\t{self.rec.tell()}\n")
        if not cuts:
            self._part(0, payload)
            return
        starts = [0] + [c + 4 for c in cuts]
        ends = list(cuts) + [len(payload)]
        for n, (s, e) in enumerate(zip(starts, ends)):
            self._part(1 if n == 0 else 3 if n == len(starts) - 1 else 2, payload[s:e])

    def close(self):
        self.rec.close()
        with open(os.path.join(self.folder, "train.idx"), "w") as f:
            f.writelines(self.idx_lines)


def ir_header(flag, label, id_=0, id2=0, extra=()):
    return struct.pack("<IfQQ", flag, label, id_, id2) + b"".join(struct.pack("<f", v) for v in extra)


def test_recordio_reads_insightface_layout_with_split_records(tmp_path):
    magic = struct.pack("<I", MAGIC)
    images = {
        1: b"\xff\xd8jpeg-one\xff\xd9",
        2: b"abcd" + magic + b"efgh" + magic + b"tail!",  # magic at payload offsets 28 and 36 (4-aligned)
        3: b"xyz",  # payload length 27: padding
        4: magic + b"starts with magic",
    }
    classes = {1: 0, 2: 0, 3: 1, 4: 1}
    w = MinimalRecWriter(str(tmp_path))
    w.record(0, ir_header(2, 0.0, extra=(5.0, 7.0)))  # images 1..4, identities 5..6
    for key, image in images.items():
        payload = ir_header(0, float(classes[key]), key) + image
        cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == magic]
        w.record(key, payload, cuts)
    w.record(5, ir_header(2, 0.0, extra=(1.0, 3.0)))
    w.record(6, ir_header(2, 0.0, extra=(3.0, 5.0)))
    w.close()

    reader = RecordIOReader(str(tmp_path / "train.rec"))
    for key, image in images.items():
        assert reader.read_image(key) == image
        assert reader.read_header(key) == IRHeader(0, (float(classes[key]),), key, 0)
    assert insightface_labels(reader) == [(1, 0), (2, 0), (3, 1), (4, 1)]
    assert reader.read_header(0).labels == (5.0, 7.0)


def test_recordio_without_header_uses_each_records_label_and_extra_labels(tmp_path):
    w = MinimalRecWriter(str(tmp_path))
    w.record(0, ir_header(0, 3.0, 0) + b"img0")
    w.record(1, ir_header(3, 0.0, 1, extra=(2.0, 0.5, 0.25)) + b"img1")  # flag 3: labels replace label
    w.close()
    reader = RecordIOReader(str(tmp_path / "train.rec"), str(tmp_path / "train.idx"))
    assert insightface_labels(reader) == [(0, 3), (1, 2)]
    assert reader.read_header(1).labels == (2.0, 0.5, 0.25)
    assert reader.read_image(1) == b"img1"


def test_library_writer_output_is_read_by_the_independent_rules(tmp_path):
    """The generator's writer splits records where dmlc-core does; parse its file by hand."""
    magic = struct.pack("<I", MAGIC)
    images = [(b"A" * 4 + magic + b"B" * 9, 0), (b"plain", 1)]
    path = str(tmp_path / "train.rec")
    write_insightface_rec(path, images)
    data = open(path, "rb").read()
    offsets = dict(tuple(map(int, line.split())) for line in open(tmp_path / "train.idx"))
    pos = offsets[1]
    flags, parts = [], []
    while True:
        m, lrec = struct.unpack_from("<II", data, pos)
        assert m == MAGIC
        flags.append(lrec >> 29)
        length = lrec & ((1 << 29) - 1)
        parts.append(data[pos + 8: pos + 8 + length])
        pos += 8 + length + (-length % 4)
        if flags[-1] in (0, 3):
            break
    assert flags == [1, 3]
    assert magic.join(parts)[24:] == images[0][0]
    reader = RecordIOReader(path)
    assert [reader.read_image(k) for k in (1, 2)] == [im for im, _ in images]
    assert insightface_labels(reader) == [(1, 0), (2, 1)]


def test_corrupt_recordio_is_a_clear_error(tmp_path):
    w = MinimalRecWriter(str(tmp_path))
    w.record(0, ir_header(0, 1.0) + b"data")
    w.close()
    with open(tmp_path / "train.idx", "w") as f:
        f.write("0\t4\n")  # points into the middle of the record
    reader = RecordIOReader(str(tmp_path / "train.rec"))
    with pytest.raises(RecordIOError, match=r"train\.rec key 0: bad magic"):
        reader.read(0)
    with open(tmp_path / "train.idx", "w") as f:
        f.write("zero four\n")
    with pytest.raises(RecordIOError, match=r"train\.idx:1: key and offset must be integers"):
        RecordIOReader(str(tmp_path / "train.rec"))


# ------------------------------------------------------------------ .bin verification sets
def python2_bin(images, issame):
    """The bytes Python 2's ``pickle.dump((bins, issame), f, protocol=2)`` writes (str -> SHORT_BINSTRING)."""
    out = bytearray(b"\x80\x02")
    memo = 0

    def put():
        nonlocal memo
        out.extend(b"q" + bytes([memo]))
        memo += 1

    out.extend(b"]")
    put()
    out.extend(b"(")
    for image in images:
        out.extend(b"U" + bytes([len(image)]) + image)
        put()
    out.extend(b"e]")
    put()
    out.extend(b"(")
    out.extend(b"".join(b"\x88" if s else b"\x89" for s in issame))
    out.extend(b"e\x86")
    put()
    out.extend(b".")
    return bytes(out)


def test_python2_bin_is_read(tmp_path):
    images = [b"\xff\xd8a", b"\xff\xd8b", b"\xff\xd8c", b"\xff\xd8d"]
    path = tmp_path / "lfw.bin"
    path.write_bytes(python2_bin(images, [True, False]))
    bins, issame = read_verification_bin(str(path))
    assert bins == images and issame.tolist() == [True, False]
    # and our own writer round-trips
    write_verification_bin(str(tmp_path / "own.bin"), images, [False, True])
    bins, issame = read_verification_bin(str(tmp_path / "own.bin"))
    assert bins == images and issame.tolist() == [False, True]


def test_malicious_bin_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    # the payload is live: plain pickle would run it
    live = tmp_path / "live"
    pickle.loads(payload.replace(str(marker).encode(), str(live).encode()))
    assert live.exists()

    path = tmp_path / "evil.bin"
    path.write_bytes(payload)
    with pytest.raises(VerificationBinError, match=r"evil\.bin: refused to load: the pickle references os\.system"):
        read_verification_bin(str(path))
    assert not marker.exists()

    # a reduce hidden inside the expected structure is refused too
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(([b"a", Evil()], [True]), protocol=2))
    with pytest.raises(VerificationBinError, match="refused to load"):
        read_verification_bin(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("obj,message", [
    ({"images": []}, "found dict"),
    (([b"a", b"b"], [True], b"x"), "expected a pair"),
    (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
    (([b"a", "text"], [True]), "found str"),
    (([b"a", b"b"], [1.0]), "found float"),
])
def test_bin_with_other_literals_is_refused(tmp_path, obj, message):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(VerificationBinError, match=message):
        read_verification_bin(str(path))


def test_truncated_bin_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(python2_bin([b"a", b"b"], [True])[:-5])
    with pytest.raises(VerificationBinError, match=r"cut\.bin: not a readable insightface \.bin"):
        read_verification_bin(str(path))

"""Caffe's wire format: the net structure as text (``.prototxt``) and with weights as binary protobuf
(``.caffemodel``), written with the message classes of ``omnireid.inference.caffe_proto``.

Weights are encoded by hand (packed little-endian float32 straight from NumPy): going through the
message classes' Python float lists is ~100x slower for a ResNet-50.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import text_format

from omnireid.inference import caffe_proto
from omnireid.utils.file_io import atomic_write_bytes, atomic_write_text


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint (least significant group first, high bit = more to come)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (wire type 2): tag, payload length, payload."""
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload


_LAYER_FIELD = 100  # NetParameter.layer
_BLOBS_FIELD = 7  # LayerParameter.blobs
_DATA_FIELD = 5  # BlobProto.data (packed float)


def encode_blob(array: np.ndarray) -> bytes:
    """A BlobProto: ``shape`` through the message class, ``data`` as packed little-endian float32."""
    shape = caffe_proto.BlobProto()
    shape.shape.dim.extend(int(d) for d in array.shape)
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return shape.SerializeToString() + length_delimited(_DATA_FIELD, data)


@dataclass
class CaffeModel:
    """The net structure (layers without blobs) and each layer's weights, in Caffe's blob order."""

    net: Any  # caffe_proto.NetParameter
    weights: dict[str, list[np.ndarray]]

    def prototxt(self) -> str:
        return text_format.MessageToString(self.net)

    def caffemodel_bytes(self) -> bytes:
        """NetParameter with blobs. A protobuf message may be emitted field by field, so each layer is
        its serialized structure followed by its ``blobs`` entries."""
        header = caffe_proto.NetParameter(name=self.net.name).SerializeToString()
        parts = [header]
        for layer in self.net.layer:
            body = layer.SerializeToString() + b"".join(
                length_delimited(_BLOBS_FIELD, encode_blob(array)) for array in self.weights.get(layer.name, []))
            parts.append(length_delimited(_LAYER_FIELD, body))
        return b"".join(parts)

    def layer_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.net.layer:
            counts[layer.type] = counts.get(layer.type, 0) + 1
        return counts


def write_caffe(model: CaffeModel, prototxt_path: str, caffemodel_path: str) -> None:
    atomic_write_bytes(caffemodel_path, model.caffemodel_bytes())
    atomic_write_text(prototxt_path, model.prototxt())

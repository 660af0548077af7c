"""The subset of Caffe's ``caffe.proto`` that omnireid writes and reads, built at import time.

It lives with the reader (the ``Predictor``'s Caffe backend parses a ``.prototxt`` for its input
shape); the writer (``omnireid.export.caffe``) imports it from here: export depends on inference,
never the reverse.

Why not ship generated ``caffe_pb2``: it would pin a protoc version, and only a few messages are
needed. The messages are declared as descriptors with protobuf's runtime, with the field numbers,
types and enum values of the official BVLC ``caffe.proto`` (proto2, package ``caffe``), so the
binary ``.caffemodel`` and text ``.prototxt`` are read by Caffe and by any other Caffe reader
(OpenCV's dnn module uses its own copy of ``caffe.proto``).
"""
from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALAR_TYPES = {
    "string": _FIELD.TYPE_STRING,
    "bool": _FIELD.TYPE_BOOL,
    "float": _FIELD.TYPE_FLOAT,
    "int32": _FIELD.TYPE_INT32,
    "uint32": _FIELD.TYPE_UINT32,
    "int64": _FIELD.TYPE_INT64,
}

# message -> [(field name, number, type, repeated, packed)]; a type starting with a capital letter is
# a message, "enum:Name" an enum nested in the same message.
_MESSAGES: dict[str, list[tuple[str, int, str, bool, bool]]] = {
    "BlobShape": [("dim", 1, "int64", True, True)],
    "BlobProto": [
        ("num", 1, "int32", False, False),
        ("channels", 2, "int32", False, False),
        ("height", 3, "int32", False, False),
        ("width", 4, "int32", False, False),
        ("data", 5, "float", True, True),
        ("shape", 7, "BlobShape", False, False),
    ],
    "NetParameter": [
        ("name", 1, "string", False, False),
        ("layer", 100, "LayerParameter", True, False),
    ],
    "LayerParameter": [
        ("name", 1, "string", False, False),
        ("type", 2, "string", False, False),
        ("bottom", 3, "string", True, False),
        ("top", 4, "string", True, False),
        ("blobs", 7, "BlobProto", True, False),
        ("concat_param", 104, "ConcatParameter", False, False),
        ("convolution_param", 106, "ConvolutionParameter", False, False),
        ("eltwise_param", 110, "EltwiseParameter", False, False),
        ("inner_product_param", 117, "InnerProductParameter", False, False),
        ("mvn_param", 120, "MVNParameter", False, False),
        ("pooling_param", 121, "PoolingParameter", False, False),
        ("power_param", 122, "PowerParameter", False, False),
        ("relu_param", 123, "ReLUParameter", False, False),
        ("slice_param", 126, "SliceParameter", False, False),
        ("reshape_param", 133, "ReshapeParameter", False, False),
        ("flatten_param", 135, "FlattenParameter", False, False),
        ("batch_norm_param", 139, "BatchNormParameter", False, False),
        ("scale_param", 142, "ScaleParameter", False, False),
        ("input_param", 143, "InputParameter", False, False),
    ],
    "ConcatParameter": [("axis", 2, "int32", False, False)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", False, False),
        ("bias_term", 2, "bool", False, False),
        ("pad", 3, "uint32", True, False),
        ("kernel_size", 4, "uint32", True, False),
        ("group", 5, "uint32", False, False),
        ("stride", 6, "uint32", True, False),
        ("pad_h", 9, "uint32", False, False),
        ("pad_w", 10, "uint32", False, False),
        ("kernel_h", 11, "uint32", False, False),
        ("kernel_w", 12, "uint32", False, False),
        ("stride_h", 13, "uint32", False, False),
        ("stride_w", 14, "uint32", False, False),
        ("dilation", 18, "uint32", True, False),
    ],
    "EltwiseParameter": [
        ("operation", 1, "enum:EltwiseOp", False, False),
        ("coeff", 2, "float", True, False),
    ],
    "InnerProductParameter": [
        ("num_output", 1, "uint32", False, False),
        ("bias_term", 2, "bool", False, False),
        ("axis", 5, "int32", False, False),
    ],
    "MVNParameter": [
        ("normalize_variance", 1, "bool", False, False),
        ("across_channels", 2, "bool", False, False),
        ("eps", 3, "float", False, False),
    ],
    "PoolingParameter": [
        ("pool", 1, "enum:PoolMethod", False, False),
        ("kernel_size", 2, "uint32", False, False),
        ("stride", 3, "uint32", False, False),
        ("pad", 4, "uint32", False, False),
        ("kernel_h", 5, "uint32", False, False),
        ("kernel_w", 6, "uint32", False, False),
        ("stride_h", 7, "uint32", False, False),
        ("stride_w", 8, "uint32", False, False),
        ("pad_h", 9, "uint32", False, False),
        ("pad_w", 10, "uint32", False, False),
        ("global_pooling", 12, "bool", False, False),
    ],
    "PowerParameter": [
        ("power", 1, "float", False, False),
        ("scale", 2, "float", False, False),
        ("shift", 3, "float", False, False),
    ],
    "ReLUParameter": [("negative_slope", 1, "float", False, False)],
    "SliceParameter": [
        ("slice_point", 2, "uint32", True, False),
        ("axis", 3, "int32", False, False),
    ],
    "ReshapeParameter": [
        ("shape", 1, "BlobShape", False, False),
        ("axis", 2, "int32", False, False),
        ("num_axes", 3, "int32", False, False),
    ],
    "FlattenParameter": [
        ("axis", 1, "int32", False, False),
        ("end_axis", 2, "int32", False, False),
    ],
    "BatchNormParameter": [
        ("use_global_stats", 1, "bool", False, False),
        ("moving_average_fraction", 2, "float", False, False),
        ("eps", 3, "float", False, False),
    ],
    "ScaleParameter": [
        ("axis", 1, "int32", False, False),
        ("num_axes", 2, "int32", False, False),
        ("bias_term", 4, "bool", False, False),
    ],
    "InputParameter": [("shape", 1, "BlobShape", True, False)],
}

_ENUMS: dict[str, dict[str, dict[str, int]]] = {
    "EltwiseParameter": {"EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2}},
    "PoolingParameter": {"PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}},
}

PACKAGE = "caffe"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="omnireid_caffe_subset.proto", package=PACKAGE, syntax="proto2")
    for message_name, fields in _MESSAGES.items():
        message = fdp.message_type.add(name=message_name)
        for enum_name, values in _ENUMS.get(message_name, {}).items():
            enum = message.enum_type.add(name=enum_name)
            for value_name, number in values.items():
                enum.value.add(name=value_name, number=number)
        for name, number, type_name, repeated, packed in fields:
            field = message.field.add(name=name, number=number)
            field.label = _FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL
            if type_name in _SCALAR_TYPES:
                field.type = _SCALAR_TYPES[type_name]
            elif type_name.startswith("enum:"):
                field.type = _FIELD.TYPE_ENUM
                field.type_name = f".{PACKAGE}.{message_name}.{type_name[5:]}"
            else:
                field.type = _FIELD.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{type_name}"
            if packed:
                field.options.packed = True
    return fdp


def _build_classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()  # private pool: never clashes with another caffe_pb2
    pool.Add(_file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _MESSAGES}


_CLASSES = _build_classes()
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
BlobProto = _CLASSES["BlobProto"]
BlobShape = _CLASSES["BlobShape"]

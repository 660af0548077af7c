"""ONNX: dynamic batch by default, selectable opset, simplified, checked with ``onnx.checker``.

Two exporters exist in torch: the legacy TorchScript-based one writes any opset from 7, the
``torch.export``-based (dynamo) one targets opset 18+ (its down-conversion to older opsets fails on
common ops). ``auto`` picks the one that can write the requested opset exactly.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import warnings
from typing import Any

import torch
from torch import nn

from .base import EXPORTER_REGISTRY, INPUT_NAME, ExportedArtifact, ExportError, Exporter, ExportOptions, input_shape

logger = logging.getLogger(__name__)

DYNAMO_MIN_OPSET = 18


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_onnx_exporter(options: ExportOptions) -> str:
    if options.onnx_exporter == "auto":
        return "dynamo" if options.opset >= DYNAMO_MIN_OPSET else "legacy"
    if options.onnx_exporter == "dynamo" and options.opset < DYNAMO_MIN_OPSET:
        raise ExportError(f"the dynamo ONNX exporter writes opset >= {DYNAMO_MIN_OPSET}; got --opset {options.opset} "
                          "(use the legacy exporter or a newer opset)")
    return options.onnx_exporter


def _torch_export(model: nn.Module, path: str, options: ExportOptions, exporter: str) -> None:
    # A dynamic batch is traced with 2 images: torch.export specialises a size-1 dimension.
    example = options.example_input(max(2, options.batch_size) if options.dynamic_batch else options.batch_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # instance norm always uses the input's statistics; the legacy exporter warns about "train=True"
        warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True.*")
        if exporter == "legacy":
            dynamic_axes = ({name: {0: "batch"} for name in (INPUT_NAME, *options.outputs)}
                            if options.dynamic_batch else None)
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=options.opset,
                              input_names=[INPUT_NAME], output_names=list(options.outputs), dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        else:
            dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if options.dynamic_batch else None
            torch.onnx.export(model, (example,), path, dynamo=True, opset_version=options.opset,
                              input_names=[INPUT_NAME], output_names=list(options.outputs),
                              dynamic_shapes=dynamic_shapes,
                              external_data=False, verbose=False, optimize=True)


def _opset_of(model_proto: Any) -> int:
    return next(int(o.version) for o in model_proto.opset_import if o.domain in ("", "ai.onnx"))


def _simplify(model_proto: Any) -> tuple[Any, str | None, str | None]:
    """Simplify with onnxslim, else onnxsim; returns (model, tool, note when neither ran)."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        return onnxslim.slim(model_proto), f"onnxslim {_package_version('onnxslim')}", None
    try:
        import onnxsim
    except ImportError:
        return model_proto, None, "not simplified: neither onnxslim nor onnxsim is installed (pip install onnxslim)"
    simplified, ok = onnxsim.simplify(model_proto)
    if not ok:
        return model_proto, None, "not simplified: onnxsim could not validate the simplified model"
    return simplified, f"onnxsim {_package_version('onnxsim')}", None


def export_onnx(model: nn.Module, path: str, options: ExportOptions) -> dict[str, Any]:
    """Write ``path`` (a single self-contained .onnx file) and return the report facts."""
    import onnx

    exporter = resolve_onnx_exporter(options)
    _torch_export(model, path, options, exporter)
    proto = onnx.load(path)
    if _opset_of(proto) != options.opset:
        raise ExportError(f"the {exporter} ONNX exporter wrote opset {_opset_of(proto)}, "
                          f"not the requested {options.opset}")
    onnx.checker.check_model(proto, full_check=True)
    tool, note = None, "simplification disabled"
    if options.simplify:
        proto, tool, note = _simplify(proto)
        onnx.checker.check_model(proto, full_check=True)
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(options.outputs):
        raise ExportError(f"{path}: expected the outputs {list(options.outputs)}, got {outputs}")
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if options.dynamic_batch and not batch_dim.dim_param:
        raise ExportError(f"{path}: the batch dimension became static ({batch_dim.dim_value}) during export")
    onnx.save(proto, path)
    return {"opset": options.opset, "exporter": f"torch.onnx ({exporter})", "torch": torch.__version__,
            "onnx": onnx.__version__, "simplifier": tool, "simplifier_note": note, "checker": "onnx.checker passed",
            "batchnorm_nodes_left": sum(node.op_type == "BatchNormalization" for node in proto.graph.node)}


@EXPORTER_REGISTRY.register("onnx")
class OnnxExporter(Exporter):
    name = "onnx"

    def export(self, model: nn.Module, options: ExportOptions, output_dir: str) -> ExportedArtifact:
        path = os.path.join(output_dir, "model.onnx")
        info = export_onnx(model, path, options)
        return ExportedArtifact(format=self.name, path=path, files=[path], input_shape=input_shape(options),
                                output_names=list(options.outputs), info=info)

"""The graph converter: an exported program (``torch.export``) -> Caffe layers, node by node.

Each ``call_function`` node is handed to the handler registered for its ATen operator in
``CAFFE_OP_HANDLERS`` (``omnireid.export.caffe.ops`` registers the built-in ones); the converter
keeps the blob table, names layers after the modules they came from, folds per-channel affine steps
into the producing convolution / inner product, and collects every node without a handler (or whose
handler refuses it) so the export fails once, listing them all.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx

from omnireid.inference import caffe_proto
from omnireid.utils.registry import Registry

from ..base import OUTPUT_NAME, ExportError
from .wire import CaffeModel

# ATen operator overload name ("aten.conv2d.default") -> handler(converter, node, args, kwargs)
CAFFE_OP_HANDLERS = Registry("caffe operator handler")

INPUT_BLOB = "data"


class UnsupportedOp(Exception):
    """Raised by a handler: this node cannot be expressed in Caffe (the message says why)."""


class CaffeExportError(ExportError):
    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems  # "module path (module type)" -> reasons
        listing = "\n".join(f"  - {module}: {'; '.join(reasons)}" for module, reasons in problems.items())
        super().__init__(f"cannot export to Caffe: {len(problems)} module(s) use operations Caffe cannot express:\n"
                         f"{listing}")


@dataclass
class Blob:
    """A runtime tensor of the Caffe net: its name, shape and the fx node that computes it."""

    name: str
    shape: tuple[int, ...]
    node: torch.fx.Node | None = None


@dataclass
class _LayerRecord:
    layer: Any  # caffe_proto.LayerParameter
    kind: str  # "conv", "ip", "affine" (foldable targets) or "other"
    weights: list[np.ndarray] = field(default_factory=list)


def register_op(*op_names: str) -> Callable:
    """Register a handler ``fn(converter, node, args, kwargs) -> value`` for ATen operators (first name, aliases)."""

    def deco(fn: Callable) -> Callable:
        CAFFE_OP_HANDLERS.register(op_names[0], aliases=op_names[1:])(fn)
        return fn

    return deco


def _module_of(node: torch.fx.Node) -> tuple[str, str]:
    """(module path, module type) a node came from, e.g. ("backbone.layer1.0.bn1", "torch.nn...BatchNorm2d")."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "<model>", "<model>"
    path, kind = list(stack.values())[-1]
    for prefix in ("L['self'].", "L__self__.", "L__self___"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    path = path if path not in ("L['self']", "L__self__", "") else "<model>"
    kind_name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
    return path, kind_name


def shape_of(node: torch.fx.Node) -> tuple[int, ...]:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise UnsupportedOp(f"no static tensor shape for {node.name}")
    return tuple(int(d) for d in value.shape)


class CaffeConverter:
    """Maps an exported program (one image input, its named tensor outputs) to a Caffe NetParameter
    whose output blobs (and their producing layers) carry ``output_names``."""

    def __init__(self, program: torch.export.ExportedProgram, batch_size: int, name: str = "omnireid",
                 output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
        self.program = program
        self.output_names = tuple(output_names)
        self.batch_size = batch_size
        self.net = caffe_proto.NetParameter(name=name)
        self.values: dict[torch.fx.Node, Any] = {}
        self.records: dict[str, _LayerRecord] = {}  # top blob name -> producing layer
        self.problems: dict[str, list[str]] = {}
        self._names: dict[str, int] = {}
        self._poisoned: set[torch.fx.Node] = set()

    # ------------------------------------------------------------------------------------------
    def convert(self) -> "CaffeModel":
        graph = self.program.graph_module.graph
        output_blobs = None
        for node in graph.nodes:
            if node.op == "placeholder":
                self.values[node] = self._placeholder(node)
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                output_blobs = self._output(node)
            elif node.op == "get_attr":
                self.values[node] = getattr(self.program.graph_module, node.target)
        if self.problems:
            raise CaffeExportError(self.problems)
        assert output_blobs is not None
        for blob, name in zip(output_blobs, self.output_names):
            self._rename_blob(blob.name, name)
        weights = {}
        for record in {id(r): r for r in self.records.values()}.values():
            if record.weights:
                weights[record.layer.name] = [np.ascontiguousarray(w, dtype=np.float32) for w in record.weights]
        return CaffeModel(self.net, weights)

    def _placeholder(self, node: torch.fx.Node) -> Any:
        signature = self.program.graph_signature
        name = node.name
        if name in signature.inputs_to_parameters:
            return self.program.state_dict[signature.inputs_to_parameters[name]].detach()
        if name in signature.inputs_to_buffers:
            key = signature.inputs_to_buffers[name]
            source = self.program.state_dict if key in self.program.state_dict else self.program.constants
            return source[key].detach()
        lifted = getattr(signature, "inputs_to_lifted_tensor_constants", {})
        if name in lifted:
            return self.program.constants[lifted[name]].detach()
        if name in signature.user_inputs:
            shape = (self.batch_size,) + shape_of(node)[1:]
            layer = self.net.layer.add(name=INPUT_BLOB, type="Input", top=[INPUT_BLOB])
            layer.input_param.shape.add().dim.extend(shape)
            self.records[INPUT_BLOB] = _LayerRecord(layer, "other")
            return Blob(INPUT_BLOB, shape_of(node), node)
        raise ExportError(f"unexpected graph input {name!r}")

    def _output(self, node: torch.fx.Node) -> list[Blob] | None:
        outputs = node.args[0]
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        if any(o in self._poisoned for o in outputs if isinstance(o, torch.fx.Node)):
            return None
        blobs = [self.values.get(o) for o in outputs]
        if len(outputs) != len(self.output_names) or not all(isinstance(b, Blob) for b in blobs):
            self._problem("<model>", f"expected {len(self.output_names)} tensor outputs {list(self.output_names)}, "
                                     f"got {len(outputs)}")
            return None
        if len({b.name for b in blobs}) != len(blobs):
            self._problem("<model>", f"the outputs {list(self.output_names)} are not distinct blobs")
            return None
        return blobs

    def _call(self, node: torch.fx.Node) -> None:
        inputs = [a for a in node.all_input_nodes]
        if any(a in self._poisoned for a in inputs):
            self._poisoned.add(node)
            return
        args = torch.fx.node.map_arg(node.args, lambda n: self.values[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self.values[n])
        if node.target is operator.getitem:
            container, index = args
            self.values[node] = container[index]
            return
        if not contains_blob((args, kwargs)):  # constant arithmetic (e.g. 1 / p of GeM): evaluate now
            with torch.no_grad():
                self.values[node] = node.target(*args, **kwargs)
            return
        op_name = str(node.target)
        path, kind = _module_of(node)
        if op_name not in CAFFE_OP_HANDLERS:
            self._unsupported(node, f"{path} ({kind})", f"{op_name} has no Caffe equivalent")
            return
        try:
            self.values[node] = CAFFE_OP_HANDLERS.get(op_name)(self, node, list(args), dict(kwargs))
        except UnsupportedOp as exc:
            self._unsupported(node, f"{path} ({kind})", f"{op_name}: {exc}")

    def _problem(self, module: str, reason: str) -> None:
        reasons = self.problems.setdefault(module, [])
        if reason not in reasons:
            reasons.append(reason)

    def _unsupported(self, node: torch.fx.Node, module: str, reason: str) -> None:
        """Record the problem, then go on with a stand-in output so later modules are checked too."""
        self._problem(module, reason)
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor):
            self.values[node] = Blob(f"<unsupported {node.name}>", tuple(int(d) for d in value.shape), node)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value):
            self.values[node] = tuple(Blob(f"<unsupported {node.name}.{i}>", tuple(int(d) for d in v.shape), node)
                                      for i, v in enumerate(value))
        else:
            self._poisoned.add(node)

    # ------------------------------------------------------------------------------------------
    # helpers for handlers
    def layer_name(self, node: torch.fx.Node, suffix: str) -> str:
        path, _ = _module_of(node)
        base = (path if path != "<model>" else "model").replace(".", "_") + "_" + suffix
        count = self._names.get(base, 0)
        self._names[base] = count + 1
        return base if count == 0 else f"{base}{count}"

    def add_layer(self, node: torch.fx.Node, layer_type: str, bottoms: list[Blob], kind: str = "other",
                  weights: list[np.ndarray] | None = None, tops: int = 1, suffix: str | None = None) -> Any:
        name = self.layer_name(node, suffix or layer_type.lower())
        top_names = [name] if tops == 1 else [f"{name}_{i}" for i in range(tops)]
        layer = self.net.layer.add(name=name, type=layer_type, bottom=[b.name for b in bottoms], top=top_names)
        record = _LayerRecord(layer, kind, list(weights or []))
        for top in top_names:
            self.records[top] = record
        return layer

    def blob_after(self, layer: Any, node: torch.fx.Node, index: int = 0, shape: tuple[int, ...] | None = None) -> Blob:
        return Blob(layer.top[index], shape if shape is not None else shape_of(node), node)

    def can_fold_into(self, blob: Blob) -> _LayerRecord | None:
        """The producer of ``blob`` when a following per-channel affine may be merged into it."""
        record = self.records.get(blob.name)
        if record is None or record.kind not in ("conv", "ip", "affine") or blob.node is None:
            return None
        return record if len(blob.node.users) == 1 else None

    def affine(self, node: torch.fx.Node, blob: Blob, scale: np.ndarray, bias: np.ndarray) -> Blob:
        """``blob * scale + bias`` per channel (axis 1): folded into the producer when possible."""
        scale = scale.astype(np.float64)
        bias = bias.astype(np.float64)
        record = self.can_fold_into(blob)
        shape = shape_of(node)
        if record is not None:
            weight = record.weights[0].astype(np.float64)
            old_bias = record.weights[1].astype(np.float64) if len(record.weights) > 1 else np.zeros(weight.shape[0])
            if record.kind == "affine":
                record.weights = [(weight * scale).astype(np.float32), (old_bias * scale + bias).astype(np.float32)]
            else:
                reshape = (-1,) + (1,) * (weight.ndim - 1)
                record.weights = [(weight * scale.reshape(reshape)).astype(np.float32),
                                  (old_bias * scale + bias).astype(np.float32)]
                params = record.layer.convolution_param if record.kind == "conv" else record.layer.inner_product_param
                params.bias_term = True
            return Blob(blob.name, shape, node)
        layer = self.add_layer(node, "Scale", [blob], kind="affine", suffix="scale",
                               weights=[scale.astype(np.float32), bias.astype(np.float32)])
        layer.scale_param.axis = 1
        layer.scale_param.num_axes = 1
        layer.scale_param.bias_term = True
        return self.blob_after(layer, node)

    def _rename_blob(self, old: str, new: str) -> None:
        for layer in self.net.layer:
            for names in (layer.top, layer.bottom):
                for i, name in enumerate(names):
                    if name == old:
                        names[i] = new
        if old in self.records:
            self.records[new] = self.records.pop(old)
            layer = self.records[new].layer
            if len(layer.top) == 1:  # readers such as OpenCV address outputs by layer name
                layer.name = new


def contains_blob(tree: Any) -> bool:
    if isinstance(tree, Blob):
        return True
    if isinstance(tree, (list, tuple)):
        return any(contains_blob(t) for t in tree)
    if isinstance(tree, dict):
        return any(contains_blob(t) for t in tree.values())
    return False

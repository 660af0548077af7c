"""Caffe: ``model.prototxt`` + ``model.caffemodel`` written directly from the model's traced graph.

Three parts: ``wire`` (the file formats), ``converter`` (graph walk, blob table, folding) and ``ops``
(one registered handler per ATen operator); ``exporter`` ties them to ``EXPORTER_REGISTRY``.

The model is captured with ``torch.export`` (an fx graph of ATen operators, each node tagged with the
module it came from), then every node is mapped to Caffe layers by a handler registered for its
operator in ``CAFFE_OP_HANDLERS``:

- convolution, linear -> Convolution, InnerProduct; a BatchNorm right after one is folded into its
  weights, any other BatchNorm becomes BatchNorm + Scale;
- per-channel affine arithmetic with constants (pixel normalisation ``(x - mean) / std``) -> one
  Scale layer with bias, merged with neighbouring affine steps;
- IBN's InstanceNorm -> MVN (per sample, per channel) + Scale; the half-channel split -> Slice, the
  re-join -> Concat;
- relu, max/avg/global/adaptive pooling, GeM (clamp -> pow -> mean -> pow as ReLU/Power/Pooling),
  residual sums (Eltwise), SE / OSNet channel gates (Flatten + two-input Scale), cat (Concat),
  split/chunk/slice (Slice), flatten/view (Flatten/Reshape).

Anything else is collected, and the export fails with one error listing every offending node with
its module path, module type and operator: never a silently different network.

Known numeric difference: Caffe's MVN divides by ``std + eps`` where InstanceNorm divides by
``sqrt(var + eps)``; for non-degenerate activations the gap is ~eps/std (1e-5 relative).
"""
from . import ops  # noqa: F401  (registers the op handlers)
from .converter import CAFFE_OP_HANDLERS, INPUT_BLOB, Blob, CaffeConverter, CaffeExportError, UnsupportedOp, register_op
from .exporter import CaffeExporter, convert_to_caffe
from .wire import CaffeModel, encode_blob, write_caffe

__all__ = ["CAFFE_OP_HANDLERS", "INPUT_BLOB", "Blob", "CaffeConverter", "CaffeExportError", "CaffeExporter",
           "CaffeModel", "UnsupportedOp", "convert_to_caffe", "encode_blob", "register_op", "write_caffe"]

"""Op handlers: one function per ATen operator (or family), registered in ``CAFFE_OP_HANDLERS``.

A handler gets the converter, the fx node and its arguments with runtime tensors as ``Blob``s and
constants as tensors/numbers; it adds Caffe layers through the converter and returns the value of
the node (a ``Blob``, a tuple of them, or a constant), or raises ``UnsupportedOp`` saying why the
node cannot be expressed. Adding an operator is adding a registered function here.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .converter import Blob, CaffeConverter, UnsupportedOp, register_op, shape_of

def _as_blob(value: Any, what: str = "input") -> Blob:
    if not isinstance(value, Blob):
        raise UnsupportedOp(f"the {what} must be a runtime tensor, got a constant")
    return value


def _numpy(tensor: Any) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().double().numpy()
    return np.asarray(tensor, dtype=np.float64)


def _channel_vector(constant: Any, blob: Blob) -> np.ndarray:
    """A constant that broadcasts per channel (or as a scalar) over ``blob``, as a length-C vector."""
    channels = blob.shape[1] if len(blob.shape) > 1 else 1
    array = _numpy(constant)
    if array.size == 1:
        return np.full(channels, float(array.reshape(-1)[0]))
    rank = len(blob.shape)
    shape = (1,) * (rank - array.ndim) + array.shape
    if len(shape) != rank or any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] != channels:
        raise UnsupportedOp(f"constant of shape {tuple(array.shape)} is not per-channel for a tensor of "
                            f"shape {blob.shape}")
    return array.reshape(-1)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = list(value)
    return (int(value[0]), int(value[0])) if len(value) == 1 else (int(value[0]), int(value[1]))


def _arg(args: list, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    """An ATen call's argument: by position ``index``, else by keyword ``name``, else ``default``."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


@register_op("aten.conv2d.default")
def _conv2d(c: CaffeConverter, node, args, kwargs):
    x, weight = _as_blob(args[0]), args[1]
    bias = _arg(args, kwargs, 2, "bias")
    stride = _pair(_arg(args, kwargs, 3, "stride", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    if isinstance(weight, Blob) or isinstance(bias, Blob):
        raise UnsupportedOp("convolution weights computed at run time")
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same" and stride == (1, 1) and all(dilation[i] * (kernel[i] - 1) % 2 == 0 for i in range(2)):
            padding = tuple(dilation[i] * (kernel[i] - 1) // 2 for i in range(2))
        else:
            raise UnsupportedOp(f"padding={padding!r} is asymmetric here")
    pad = _pair(padding)
    weights = [_numpy(weight).astype(np.float32)]
    if bias is not None:
        weights.append(_numpy(bias).astype(np.float32))
    layer = c.add_layer(node, "Convolution", [x], kind="conv", weights=weights, suffix="conv")
    p = layer.convolution_param
    p.num_output = int(weight.shape[0])
    p.bias_term = bias is not None
    p.kernel_h, p.kernel_w = kernel
    p.stride_h, p.stride_w = stride
    p.pad_h, p.pad_w = pad
    if dilation != (1, 1):
        p.dilation.extend(dilation if dilation[0] != dilation[1] else dilation[:1])
    if groups != 1:
        p.group = groups
    return c.blob_after(layer, node)


def _bn_affine(weight, bias, mean, var, eps, channels) -> tuple[np.ndarray, np.ndarray]:
    gamma = _numpy(weight) if weight is not None else np.ones(channels)
    beta = _numpy(bias) if bias is not None else np.zeros(channels)
    scale = gamma / np.sqrt(_numpy(var) + eps)
    return scale, beta - _numpy(mean) * scale


def _batch_norm_eval(c: CaffeConverter, node, x: Blob, weight, bias, mean, var, eps: float) -> Blob:
    if any(isinstance(v, Blob) for v in (weight, bias, mean, var)):
        raise UnsupportedOp("batch-norm statistics computed at run time")
    if mean is None or var is None:
        raise UnsupportedOp("batch norm without running statistics (training-mode statistics)")
    channels = x.shape[1]
    if c.can_fold_into(x) is not None:
        return c.affine(node, x, *_bn_affine(weight, bias, mean, var, eps, channels))
    # Caffe's idiom: BatchNorm (normalise with the stored statistics) + Scale (gamma, beta)
    bn = c.add_layer(node, "BatchNorm", [x], suffix="bn",
                     weights=[_numpy(mean).astype(np.float32), _numpy(var).astype(np.float32),
                              np.ones(1, dtype=np.float32)])
    bn.batch_norm_param.use_global_stats = True
    bn.batch_norm_param.eps = float(eps)
    normalised = c.blob_after(bn, node)
    gamma = _numpy(weight) if weight is not None else np.ones(channels)
    beta = _numpy(bias) if bias is not None else np.zeros(channels)
    scale = c.add_layer(node, "Scale", [normalised], kind="affine", suffix="bn_scale",
                        weights=[gamma.astype(np.float32), beta.astype(np.float32)])
    scale.scale_param.bias_term = True
    return c.blob_after(scale, node)


@register_op("aten.batch_norm.default")
def _batch_norm(c: CaffeConverter, node, args, kwargs):
    x, weight, bias, mean, var, training, _momentum, eps = args[:8]
    if training:
        raise UnsupportedOp("batch norm in training mode (export needs model.eval())")
    return _batch_norm_eval(c, node, _as_blob(x), weight, bias, mean, var, float(eps))


@register_op("aten._native_batch_norm_legit_no_training.default")
def _batch_norm_no_training(c: CaffeConverter, node, args, kwargs):
    x, weight, bias, mean, var, _momentum, eps = args[:7]
    return _batch_norm_eval(c, node, _as_blob(x), weight, bias, mean, var, float(eps)), None, None


@register_op("aten.instance_norm.default")
def _instance_norm(c: CaffeConverter, node, args, kwargs):
    x, weight, bias, mean, var, use_input_stats, _momentum, eps = args[:8]
    x = _as_blob(x)
    if not use_input_stats:  # running statistics: the same per-channel affine as batch norm
        return _batch_norm_eval(c, node, x, weight, bias, mean, var, float(eps))
    mvn = c.add_layer(node, "MVN", [x], suffix="mvn")
    mvn.mvn_param.normalize_variance = True
    mvn.mvn_param.across_channels = False
    mvn.mvn_param.eps = float(eps)
    normalised = c.blob_after(mvn, node)
    if weight is None and bias is None:
        return normalised
    channels = x.shape[1]
    gamma = _numpy(weight) if weight is not None else np.ones(channels)
    beta = _numpy(bias) if bias is not None else np.zeros(channels)
    return c.affine(node, normalised, gamma, beta)


@register_op("aten.relu.default", "aten.relu_.default")
def _relu(c: CaffeConverter, node, args, kwargs):
    layer = c.add_layer(node, "ReLU", [_as_blob(args[0])], suffix="relu")
    return c.blob_after(layer, node)


@register_op("aten.leaky_relu.default", "aten.leaky_relu_.default")
def _leaky_relu(c: CaffeConverter, node, args, kwargs):
    layer = c.add_layer(node, "ReLU", [_as_blob(args[0])], suffix="relu")
    layer.relu_param.negative_slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
    return c.blob_after(layer, node)


@register_op("aten.sigmoid.default")
def _sigmoid(c: CaffeConverter, node, args, kwargs):
    return c.blob_after(c.add_layer(node, "Sigmoid", [_as_blob(args[0])]), node)


def _caffe_pool_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size: ceil rounding, minus one when the last window starts in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _crop_to(c: CaffeConverter, node, blob: Blob, target: tuple[int, ...]) -> Blob:
    """Drop trailing rows/columns Caffe's ceil rounding added, with Slice layers (extra tops unused)."""
    for axis in (2, 3):
        if blob.shape[axis] == target[axis]:
            continue
        if blob.shape[axis] < target[axis]:
            raise UnsupportedOp(f"Caffe's pooling gives size {blob.shape[axis]} < {target[axis]} on axis {axis}")
        layer = c.add_layer(node, "Slice", [blob], tops=2, suffix=f"crop{axis}")
        layer.slice_param.axis = axis
        layer.slice_param.slice_point.append(target[axis])
        shape = tuple(target[axis] if i == axis else d for i, d in enumerate(blob.shape))
        blob = Blob(layer.top[0], shape, node)
    return blob


def _pooling(c: CaffeConverter, node, x: Blob, method: int, kernel, stride, pad, ceil_mode: bool) -> Blob:
    kernel, stride, pad = _pair(kernel), _pair(stride or kernel), _pair(pad)
    layer = c.add_layer(node, "Pooling", [x], suffix="pool")
    p = layer.pooling_param
    p.pool = method
    p.kernel_h, p.kernel_w = kernel
    p.stride_h, p.stride_w = stride
    p.pad_h, p.pad_w = pad
    caffe_shape = x.shape[:2] + tuple(_caffe_pool_size(x.shape[2 + i], kernel[i], stride[i], pad[i]) for i in range(2))
    target = shape_of(node)
    blob = Blob(layer.top[0], caffe_shape, node)
    if caffe_shape != target:
        if ceil_mode:
            raise UnsupportedOp(f"ceil-mode pooling sizes differ: Caffe {caffe_shape}, PyTorch {target}")
        blob = _crop_to(c, node, blob, target)
    return blob


def _global_pool(c: CaffeConverter, node, x: Blob, method: int, keepdim: bool = True) -> Blob:
    layer = c.add_layer(node, "Pooling", [x], suffix="gpool")
    layer.pooling_param.pool = method
    layer.pooling_param.global_pooling = True
    pooled = Blob(layer.top[0], x.shape[:2] + (1, 1), node)
    if keepdim:
        return pooled
    flat = c.add_layer(node, "Flatten", [pooled], suffix="flatten")
    return c.blob_after(flat, node)


MAX, AVE = 0, 1


def _window(args: list, kwargs: dict) -> tuple[Any, Any, Any]:
    """(kernel, stride, padding) of max/avg pooling; an empty stride means the kernel's."""
    kernel = _arg(args, kwargs, 1, "kernel_size")
    return kernel, _arg(args, kwargs, 2, "stride") or kernel, _arg(args, kwargs, 3, "padding", 0)


@register_op("aten.max_pool2d.default")
def _max_pool2d(c: CaffeConverter, node, args, kwargs):
    kernel, stride, padding = _window(args, kwargs)
    if _pair(_arg(args, kwargs, 4, "dilation", 1)) != (1, 1):
        raise UnsupportedOp("dilated max pooling")
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    return _pooling(c, node, _as_blob(args[0]), MAX, kernel, stride, padding, ceil_mode)


@register_op("aten.avg_pool2d.default")
def _avg_pool2d(c: CaffeConverter, node, args, kwargs):
    kernel, stride, padding = _window(args, kwargs)
    if _arg(args, kwargs, 6, "divisor_override") is not None:
        raise UnsupportedOp("avg pooling with divisor_override")
    if _pair(padding) != (0, 0) and not bool(_arg(args, kwargs, 5, "count_include_pad", True)):
        raise UnsupportedOp("padded avg pooling with count_include_pad=False (Caffe counts the padding)")
    ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
    return _pooling(c, node, _as_blob(args[0]), AVE, kernel, stride, padding, ceil_mode)


def _adaptive_pool(c: CaffeConverter, node, args, method: int) -> Blob:
    x = _as_blob(args[0])
    out_h, out_w = _pair(args[1])
    height, width = x.shape[2:]
    if (out_h, out_w) == (1, 1):
        return _global_pool(c, node, x, method)
    if height % out_h or width % out_w:
        raise UnsupportedOp(f"adaptive pooling from {height}x{width} to {out_h}x{out_w} has uneven windows")
    kernel = (height // out_h, width // out_w)
    return _pooling(c, node, x, method, kernel, kernel, 0, False)


@register_op("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default")
def _adaptive_avg_pool2d(c: CaffeConverter, node, args, kwargs):
    return _adaptive_pool(c, node, args, AVE)


@register_op("aten.adaptive_max_pool2d.default")
def _adaptive_max_pool2d(c: CaffeConverter, node, args, kwargs):
    return _adaptive_pool(c, node, args, MAX), None


def _spatial_reduction(c: CaffeConverter, node, args, kwargs, method: int) -> Blob:
    x = _as_blob(args[0])
    dims = _arg(args, kwargs, 1, "dim")
    keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
    rank = len(x.shape)
    if rank != 4 or dims is None or sorted(_dim(d, rank) for d in dims) != [2, 3]:
        raise UnsupportedOp(f"reduction over dims {dims} of a rank-{rank} tensor (only spatial dims (2, 3))")
    return _global_pool(c, node, x, method, keepdim)


@register_op("aten.mean.dim")
def _mean(c: CaffeConverter, node, args, kwargs):
    return _spatial_reduction(c, node, args, kwargs, AVE)


@register_op("aten.amax.default")
def _amax(c: CaffeConverter, node, args, kwargs):
    return _spatial_reduction(c, node, args, kwargs, MAX)


def _eltwise(c: CaffeConverter, node, a: Blob, b: Blob, operation: int, coeff: list[float] | None) -> Blob:
    if a.shape != b.shape:
        raise UnsupportedOp(f"broadcasting between run-time tensors of shapes {a.shape} and {b.shape}")
    layer = c.add_layer(node, "Eltwise", [a, b], suffix="eltwise")
    layer.eltwise_param.operation = operation
    if coeff is not None:
        layer.eltwise_param.coeff.extend(coeff)
    return c.blob_after(layer, node)


PROD, SUM = 0, 1


@register_op("aten.add.Tensor")
def _add(c: CaffeConverter, node, args, kwargs):
    a, b = args[0], args[1]
    alpha = float(_arg(args, kwargs, 2, "alpha", 1))
    if isinstance(a, Blob) and isinstance(b, Blob):
        return _eltwise(c, node, a, b, SUM, None if alpha == 1 else [1.0, alpha])
    blob, const = (a, b) if isinstance(a, Blob) else (b, a)
    scale_const = alpha if isinstance(a, Blob) else 1.0
    bias = _channel_vector(const, blob) * scale_const
    scale = np.full(blob.shape[1], 1.0 if isinstance(a, Blob) else alpha)
    return c.affine(node, blob, scale, bias)


@register_op("aten.sub.Tensor")
def _sub(c: CaffeConverter, node, args, kwargs):
    a, b = args[0], args[1]
    alpha = float(_arg(args, kwargs, 2, "alpha", 1))
    if isinstance(a, Blob) and isinstance(b, Blob):
        return _eltwise(c, node, a, b, SUM, [1.0, -alpha])
    if isinstance(a, Blob):
        return c.affine(node, a, np.ones(a.shape[1]), -alpha * _channel_vector(b, a))
    return c.affine(node, b, np.full(b.shape[1], -alpha), _channel_vector(a, b))


def _is_channel_gate(gate: Blob, x: Blob) -> bool:
    """``gate`` is (N, C, 1, 1) against a (N, C, H, W) ``x`` (SE / OSNet channel attention)."""
    return (len(gate.shape) == 4 and len(x.shape) == 4 and gate.shape[:2] == x.shape[:2]
            and gate.shape[2:] == (1, 1) and x.shape[2:] != (1, 1))


def _channel_gate(c: CaffeConverter, node, x: Blob, gate: Blob) -> Blob:
    """x * gate per sample and channel: Flatten the gate to (N, C), then a two-input Scale on axes 0-1."""
    flat = c.add_layer(node, "Flatten", [gate], suffix="gate_flatten")
    flat_blob = Blob(flat.top[0], gate.shape[:2], node)
    layer = c.add_layer(node, "Scale", [x, flat_blob], suffix="gate_scale")
    layer.scale_param.axis = 0
    return c.blob_after(layer, node)


@register_op("aten.mul.Tensor")
def _mul(c: CaffeConverter, node, args, kwargs):
    a, b = args[0], args[1]
    if isinstance(a, Blob) and isinstance(b, Blob):
        if _is_channel_gate(b, a):
            return _channel_gate(c, node, a, b)
        if _is_channel_gate(a, b):
            return _channel_gate(c, node, b, a)
        return _eltwise(c, node, a, b, PROD, None)
    blob, const = (a, b) if isinstance(a, Blob) else (b, a)
    return c.affine(node, blob, _channel_vector(const, blob), np.zeros(blob.shape[1]))


@register_op("aten.div.Tensor")
def _div(c: CaffeConverter, node, args, kwargs):
    a, b = args[0], args[1]
    if isinstance(b, Blob):
        raise UnsupportedOp("division by a run-time tensor")
    return c.affine(node, a, 1.0 / _channel_vector(b, a), np.zeros(a.shape[1]))


@register_op("aten.cat.default", "aten.concat.default")
def _cat(c: CaffeConverter, node, args, kwargs):
    tensors = [_as_blob(t, "concatenated tensor") for t in args[0]]
    axis = _dim(int(_arg(args, kwargs, 1, "dim", 0)), len(tensors[0].shape))
    if axis == 0:
        raise UnsupportedOp("concatenation along the batch axis")
    layer = c.add_layer(node, "Concat", tensors, suffix="concat")
    layer.concat_param.axis = axis
    return c.blob_after(layer, node)


def _slice_into(c: CaffeConverter, node, x: Blob, axis: int, sizes: list[int]) -> tuple[Blob, ...]:
    if axis == 0:
        raise UnsupportedOp("slicing along the batch axis")
    if len(sizes) == 1:
        return (x,)
    layer = c.add_layer(node, "Slice", [x], tops=len(sizes), suffix="slice")
    layer.slice_param.axis = axis
    points = np.cumsum(sizes)[:-1]
    layer.slice_param.slice_point.extend(int(p) for p in points)
    return tuple(Blob(layer.top[i], tuple(s if d == axis else x.shape[d] for d in range(len(x.shape))), node)
                 for i, s in enumerate(sizes))


def _split_sizes(node) -> list[int]:
    values = node.meta.get("val")
    return [int(v.shape[_dim(int(node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)), v.dim())])
            for v in values]


@register_op("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default")
def _split(c: CaffeConverter, node, args, kwargs):
    x = _as_blob(args[0])
    axis = _dim(int(_arg(args, kwargs, 2, "dim", 0)), len(x.shape))
    return _slice_into(c, node, x, axis, _split_sizes(node))


@register_op("aten.slice.Tensor")
def _slice(c: CaffeConverter, node, args, kwargs):
    x = _as_blob(args[0])
    axis = _dim(int(_arg(args, kwargs, 1, "dim", 0)), len(x.shape))
    size = x.shape[axis]
    start = _arg(args, kwargs, 2, "start")
    end = _arg(args, kwargs, 3, "end")
    start, end = 0 if start is None else start, size if end is None else end
    step = _arg(args, kwargs, 4, "step", 1)
    if step != 1:
        raise UnsupportedOp(f"strided slicing (step {step})")
    start = max(0, min(size, start + size if start < 0 else start))
    end = max(start, min(size, end + size if end < 0 else end))
    if (start, end) == (0, size):
        return x
    sizes = [s for s in (start, end - start, size - end) if s > 0]
    pieces = _slice_into(c, node, x, axis, sizes)
    return pieces[1] if start > 0 else pieces[0]


def _reshape_like(c: CaffeConverter, node, x: Blob) -> Blob:
    target = shape_of(node)
    if target == x.shape:
        return x
    if not target or target[0] != x.shape[0]:
        raise UnsupportedOp(f"reshape {x.shape} -> {target} changes the batch axis")
    if len(target) == 2:
        layer = c.add_layer(node, "Flatten", [x], suffix="flatten")
        return c.blob_after(layer, node)
    layer = c.add_layer(node, "Reshape", [x], suffix="reshape")
    layer.reshape_param.shape.dim.extend([0] + list(target[1:]))
    return c.blob_after(layer, node)


@register_op("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.squeeze.dims",
           "aten.squeeze.dim", "aten.squeeze.default", "aten.unsqueeze.default", "aten.flatten.using_ints")
def _reshape(c: CaffeConverter, node, args, kwargs):
    return _reshape_like(c, node, _as_blob(args[0]))


@register_op("aten.select.int")
def _select(c: CaffeConverter, node, args, kwargs):
    x = _as_blob(args[0])
    axis = _dim(int(args[1]), len(x.shape))
    size = x.shape[axis]
    index = int(args[2]) + (size if int(args[2]) < 0 else 0)
    if size > 1:
        sizes = [s for s in (index, 1, size - index - 1) if s > 0]
        x = _slice_into(c, node, x, axis, sizes)[1 if index > 0 else 0]
    return _reshape_like(c, node, x)


@register_op("aten.linear.default")
def _linear(c: CaffeConverter, node, args, kwargs):
    x, weight = _as_blob(args[0]), args[1]
    bias = _arg(args, kwargs, 2, "bias")
    if len(x.shape) != 2:
        raise UnsupportedOp(f"linear layer on a rank-{len(x.shape)} tensor (Caffe's InnerProduct needs (N, C))")
    weights = [_numpy(weight).astype(np.float32)]
    if bias is not None:
        weights.append(_numpy(bias).astype(np.float32))
    layer = c.add_layer(node, "InnerProduct", [x], kind="ip", weights=weights, suffix="fc")
    layer.inner_product_param.num_output = int(weight.shape[0])
    layer.inner_product_param.bias_term = bias is not None
    return c.blob_after(layer, node)


def _power(c: CaffeConverter, node, x: Blob, power: float = 1.0, scale: float = 1.0, shift: float = 0.0,
           suffix: str = "power") -> Blob:
    layer = c.add_layer(node, "Power", [x], suffix=suffix)
    layer.power_param.power = float(power)
    layer.power_param.scale = float(scale)
    layer.power_param.shift = float(shift)
    return Blob(layer.top[0], x.shape, node)


@register_op("aten.clamp.default", "aten.clamp_min.default")
def _clamp(c: CaffeConverter, node, args, kwargs):
    x = _as_blob(args[0])
    low = _arg(args, kwargs, 1, "min")
    high = _arg(args, kwargs, 2, "max")
    if high is not None or low is None or isinstance(low, Blob):
        raise UnsupportedOp("clamp with an upper bound (Caffe has only max(x, 0))")
    low = float(_numpy(low).reshape(-1)[0])
    if low == 0.0:
        return _relu(c, node, [x], {})
    # max(x, m) = relu(x - m) + m
    shifted = _power(c, node, x, shift=-low, suffix="clamp_shift")
    relu = c.add_layer(node, "ReLU", [shifted], suffix="clamp_relu")
    return _power(c, node, Blob(relu.top[0], x.shape, node), shift=low, suffix="clamp_unshift")


@register_op("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor")
def _pow(c: CaffeConverter, node, args, kwargs):
    x, exponent = _as_blob(args[0]), args[1]
    if isinstance(exponent, Blob) or _numpy(exponent).size != 1:
        raise UnsupportedOp("power with a per-element exponent")
    return _power(c, node, x, power=float(_numpy(exponent).reshape(-1)[0]))


def _identity(c: CaffeConverter, node, args, kwargs):
    return args[0]


for _name in ("aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
              "aten.lift_fresh_copy.default"):
    register_op(_name)(_identity)


@register_op("aten.dropout.default", "aten.feature_dropout.default")
def _dropout(c: CaffeConverter, node, args, kwargs):
    if bool(_arg(args, kwargs, 2, "train", False)):
        raise UnsupportedOp("dropout in training mode")
    return args[0]


@register_op("aten.to.dtype", "aten.to.device", "aten._to_copy.default", "aten.to.dtype_layout", "aten.type_as.default")
def _to(c: CaffeConverter, node, args, kwargs):
    value = node.meta.get("val")
    if isinstance(value, torch.Tensor) and value.dtype != torch.float32:
        raise UnsupportedOp(f"cast to {value.dtype} (Caffe computes in float32)")
    return args[0]


@register_op("aten._assert_tensor_metadata.default")
def _assert_metadata(c: CaffeConverter, node, args, kwargs):
    return None

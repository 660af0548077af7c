"""Execution options that change speed, not results: channels_last, torch.compile, mixed precision.

``accelerate(cfg, model, device)`` applies ``MODEL.CHANNELS_LAST`` and ``MODEL.COMPILE`` in place, once,
to a model already on its device. Both keep parameter names and values, so checkpoints, exact
resume and export (which builds its own eager, contiguous copy) are unaffected.
``mixed_precision(device_type, dtype)`` is the autocast context the trainer runs its steps in.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from omnireid.config import CfgNode, ConfigError

logger = logging.getLogger(__name__)

_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


def _is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, _CONV_TYPES) for m in model.modules())


def channels_last_enabled(cfg: CfgNode, model: nn.Module, device: torch.device) -> bool:
    """``MODEL.CHANNELS_LAST``: ``auto`` = on for convolutional models on CPU (oneDNN prefers NHWC),
    and on CUDA with AMP (tensor cores; PyTorch's guidance for fp32 on CUDA is mixed), else off."""
    choice = str(cfg.MODEL.CHANNELS_LAST).lower()
    if choice in ("true", "false"):
        return choice == "true"
    if choice != "auto":
        raise ConfigError(f"MODEL.CHANNELS_LAST must be auto, true or false; got {cfg.MODEL.CHANNELS_LAST!r}")
    if not _is_convolutional(model):
        return False
    return device.type == "cpu" or (device.type == "cuda" and bool(cfg.SOLVER.AMP.ENABLED))


def _input_to_channels_last(module: nn.Module, args: tuple) -> tuple:
    images, *rest = args
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return (images, *rest)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-d weights as NHWC and hand the backbone NHWC images (in place)."""
    model.to(memory_format=torch.channels_last)
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and not getattr(backbone, "_channels_last_input", False):
        backbone.register_forward_pre_hook(_input_to_channels_last)
        backbone._channels_last_input = True
    return model


def compile_backend_problem(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot compile for ``device`` here, or None when it can."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        return f"torch.compile backend {backend!r} is not available"
    if backend == "inductor":
        if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
            return "the inductor backend needs a C++ compiler on CPU"
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return "the inductor backend needs triton on CUDA"
    return None


def compile_model(cfg: CfgNode, model: nn.Module, device: torch.device) -> bool:
    """``MODEL.COMPILE``: ``nn.Module.compile`` in place (state-dict keys unchanged); False with a
    one-line warning when the backend is unavailable."""
    opts = cfg.MODEL.COMPILE
    if not opts.ENABLED:
        return False
    problem = compile_backend_problem(opts.BACKEND, device)
    if problem:
        logger.warning("MODEL.COMPILE: %s; running the model eagerly", problem)
        return False
    dynamic = {"auto": None, "true": True, "false": False}.get(str(opts.DYNAMIC).lower(), "bad")
    if dynamic == "bad":
        raise ConfigError(f"MODEL.COMPILE.DYNAMIC must be auto, true or false; got {opts.DYNAMIC!r}")
    kwargs = {"backend": opts.BACKEND, "dynamic": dynamic}
    if opts.MODE and opts.MODE != "default":
        kwargs["mode"] = opts.MODE
    model.compile(**kwargs)
    return True


def accelerate(cfg: CfgNode, model: nn.Module, device: torch.device) -> nn.Module:
    """Apply ``MODEL.CHANNELS_LAST`` and ``MODEL.COMPILE`` to ``model`` (on ``device``) in place."""
    if channels_last_enabled(cfg, model, device):
        to_channels_last(model)
    compile_model(cfg, model, device)
    return model


_CONV2D_PARAMETERS = {"input": None, "weight": None, "bias": None, "stride": 1, "padding": 0, "dilation": 1,
                      "groups": 1}


def _last(value: int | tuple[int, ...]) -> int:
    """The width component of an int-or-(h, w) convolution argument."""
    return value if isinstance(value, int) else value[-1]


def _conv2d_output_width(call: dict[str, Any]) -> int | None:
    """Output width of a ``torch.conv2d`` call (its arguments by name); None for ``padding="same"``."""
    padding = call["padding"]
    if isinstance(padding, str):
        if padding != "valid":
            return None
        padding = 0
    width, kernel = call["input"].shape[-1], call["weight"].shape[-1]
    return (width + 2 * _last(padding) - _last(call["dilation"]) * (kernel - 1) - 1) // _last(call["stride"]) + 1


def _hits_onednn_bf16_bug(call: dict[str, Any]) -> bool:
    """Whether a ``torch.conv2d`` call (arguments by name) is a CPU bf16 strided one-column convolution."""
    image = call["input"]
    bf16 = image.dtype is torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16)
    return image.device.type == "cpu" and bf16 and _last(call["stride"]) > 1 and _conv2d_output_width(call) == 1


class OneDnnBf16ConvGuard(TorchFunctionMode):
    """Runs in fp32 the CPU bf16 convolutions that oneDNN computes wrongly: strided, one output column.

    oneDNN 3.12's AMX convolution (``brg_conv_fwd:avx10_1_512_amx``, PyTorch 2.14) returns NaN or
    garbage forward outputs and weight gradients for a bf16 ``conv2d`` whose stride along the width is
    above 1 and whose output is one column wide (a ResNet's stride-2 3x3 conv on a feature map 1-2
    columns wide, i.e. images 16-32 pixels wide). Which runs failed depended on leftover memory, so
    training went non-finite at random. Such layers are tiny, so running them in fp32 costs nothing.
    """

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            call = {**_CONV2D_PARAMETERS, **dict(zip(_CONV2D_PARAMETERS, args)), **kwargs}
            if _hits_onednn_bf16_bug(call):
                bias = call["bias"]
                with torch.autocast("cpu", enabled=False):
                    out = func(call["input"].float(), call["weight"].float(), None if bias is None else bias.float(),
                               call["stride"], call["padding"], call["dilation"], call["groups"])
                return out.to(torch.bfloat16)
        return func(*args, **kwargs)


def mixed_precision(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast context for ``dtype`` on ``device_type`` (a no-op for None). CPU bf16 also routes
    the convolutions oneDNN gets wrong to fp32 (:class:`OneDnnBf16ConvGuard`)."""
    if dtype is None:
        return contextlib.nullcontext()
    return _autocast(device_type, dtype)


@contextlib.contextmanager
def _autocast(device_type: str, dtype: torch.dtype) -> Iterator[None]:
    guard = OneDnnBf16ConvGuard() if device_type == "cpu" and dtype is torch.bfloat16 else contextlib.nullcontext()
    with torch.autocast(device_type, dtype=dtype), guard:
        yield

"""Execution options that change speed, not results: channels_last memory format and torch.compile.

``accelerate(cfg, model, device)`` applies ``MODEL.CHANNELS_LAST`` and ``MODEL.COMPILE`` in place, once,
to a model already on its device. Both keep parameter names and values, so checkpoints, exact
resume and export (which builds its own eager, contiguous copy) are unaffected.
"""
from __future__ import annotations

import logging
import shutil

import torch
from torch import nn

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

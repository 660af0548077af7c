"""Global poolings for the embedding head, registered under FastReID's names.

Every pooling maps ``(N, C, H, W)`` to ``(N, C, 1, 1)`` and is built without arguments from
``MODEL.HEADS.POOL_LAYER``. FastReID V1.0 spellings (``avgpool``, ``gempoolP``, ...) are aliases.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.utils.errors import UnknownNameError
from omnireid.utils.registry import Registry

POOLING_REGISTRY = Registry("pooling layer")


@POOLING_REGISTRY.register("Identity", aliases=("identity",))
class IdentityPool(nn.Module):
    """No pooling, for backbones that already return a ``(N, C, 1, 1)`` vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@POOLING_REGISTRY.register("Flatten", aliases=("flatten",))
class FlattenPool(nn.Module):
    """Flattens the whole map into channels: ``(N, C*H*W, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, 1, 1)


@POOLING_REGISTRY.register(aliases=("FastGlobalAvgPool", "avgpool", "fastavgpool"))
class GlobalAvgPool(nn.Module):
    """Mean over all spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


@POOLING_REGISTRY.register(aliases=("maxpool",))
class GlobalMaxPool(nn.Module):
    """Maximum over all spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


@POOLING_REGISTRY.register(aliases=("gempool",))
class GeneralizedMeanPooling(nn.Module):
    """GeM (Radenovic et al.): ``(mean(clamp(x, eps)^p))^(1/p)``; p=1 is average, p→∞ is max pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM pooling needs p > 0, got {p}")
        self.eps = eps
        self._set_exponent(float(p))

    def _set_exponent(self, p: float) -> None:
        self.p: float | torch.Tensor = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3), keepdim=True).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4g}, eps={self.eps}"


@POOLING_REGISTRY.register(aliases=("gempoolP",))
class GeneralizedMeanPoolingP(GeneralizedMeanPooling):
    """GeM with a learnable exponent ``p`` (initialised at 3)."""

    def _set_exponent(self, p: float) -> None:
        self.p = nn.Parameter(torch.full((1,), p))


@POOLING_REGISTRY.register(aliases=("avgmaxpool",))
class AdaptiveAvgMaxPool(nn.Module):
    """Sum of global average and global max pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True)


@POOLING_REGISTRY.register(aliases=("clipavgpool",))
class ClipGlobalAvgPool(nn.Module):
    """Global average pooling clipped to [0, 1] (for bounded, e.g. binarisable, features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x.mean(dim=(2, 3), keepdim=True), min_val=0.0, max_val=1.0)


def build_pooling(name: str) -> nn.Module:
    """The pooling registered as ``name`` (``MODEL.HEADS.POOL_LAYER``)."""
    try:
        return POOLING_REGISTRY.get(name)()
    except KeyError as exc:
        raise UnknownNameError(f"MODEL.HEADS.POOL_LAYER: {exc.args[0]}") from None

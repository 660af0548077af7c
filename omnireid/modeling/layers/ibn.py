"""Instance-Batch Normalisation, IBN-a variant (Pan et al., "Two at Once", ECCV 2018)."""
from __future__ import annotations

import torch
from torch import nn

from .norm import get_norm


class IBN(nn.Module):
    """InstanceNorm (affine) on the first ``planes // 2`` channels, the chosen norm on the rest.

    Instance normalisation removes appearance (colour/illumination) variation that hurts cross-domain
    reID while batch normalisation keeps content discrimination. The attribute names ``IN`` and
    ``BN`` match the published IBN-Net checkpoints, so their weights load without renaming.
    """

    def __init__(self, planes: int, norm: str = "BN") -> None:
        super().__init__()
        if planes < 2:
            raise ValueError(f"IBN needs at least 2 channels, got {planes}")
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = get_norm(norm, planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)

"""Squeeze-and-Excitation channel attention (Hu et al., CVPR 2018)."""
from __future__ import annotations

import torch
from torch import nn


class SELayer(nn.Module):
    """Rescales each channel by a gate computed from the globally pooled feature map.

    ``fc`` is ``Linear(C, C/r) -> ReLU -> Linear(C/r, C) -> Sigmoid`` without biases (the layout of
    the SE-ResNet checkpoints used by FastReID).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]

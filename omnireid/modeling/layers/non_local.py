"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), embedded-Gaussian form."""
from __future__ import annotations

import torch
from torch import nn

from .norm import get_norm


class NonLocal(nn.Module):
    """``z = x + W(softmax(theta(x)^T phi(x)) g(x))`` over all spatial positions.

    ``theta``, ``phi``, ``g`` are 1x1 convolutions to ``in_channels // reduction`` channels; ``W`` is a
    1x1 convolution back to ``in_channels`` followed by a norm whose weight and bias start at zero,
    so a freshly inserted block is the identity and does not disturb pretrained weights.
    With ``embedded_gaussian=False`` the affinity is the dot product divided by the number of
    positions (the form FastReID's AGW code computes); both are identical at initialisation.
    """

    def __init__(self, in_channels: int, norm: str = "BN", reduction: int = 2,
                 embedded_gaussian: bool = True) -> None:
        super().__init__()
        self.inter_channels = max(in_channels // reduction, 1)
        self.embedded_gaussian = embedded_gaussian
        self.g = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.W = nn.Sequential(
            nn.Conv2d(self.inter_channels, in_channels, kernel_size=1),
            get_norm(norm, in_channels, weight_init=0.0, bias_init=0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        phi_x = self.phi(x).flatten(2)  # (N, C', HW)
        affinity = torch.bmm(theta_x, phi_x)  # (N, HW, HW)
        if self.embedded_gaussian:
            affinity = affinity.softmax(dim=-1)
        else:
            affinity = affinity / affinity.shape[-1]
        y = torch.bmm(affinity, g_x).transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return x + self.W(y)


# FastReID's class name, for users porting code.
Non_local = NonLocal

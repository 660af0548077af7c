"""Exponential moving average of a model's weights (the self-teacher of ``KD.EMA``)."""
from __future__ import annotations

import torch
from torch import nn

from omnireid.utils.errors import ConfigError


@torch.no_grad()
def ema_update_(average: nn.Module, model: nn.Module, momentum: float) -> None:
    """``average <- momentum * average + (1 - momentum) * model`` for parameters and float buffers.

    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied. ``average`` is updated in
    place (it is the EMA's own storage, never a caller's input); ``model`` is only read.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"KD.EMA.MOMENTUM must be in [0, 1], got {momentum}")
    avg_state = average.state_dict(keep_vars=True)
    for name, value in model.state_dict(keep_vars=True).items():
        if name not in avg_state:
            raise KeyError(f"EMA model has no entry {name!r}: it must be a copy of the trained model")
        target = avg_state[name]
        source = value.detach()
        if target.dtype.is_floating_point:
            target.mul_(momentum).add_(source.to(target.dtype), alpha=1.0 - momentum)
        else:
            target.copy_(source)

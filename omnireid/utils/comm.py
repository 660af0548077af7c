"""Distributed helpers that degrade gracefully to a single process."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from omnireid.utils.errors import ConfigError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def default_device() -> torch.device:
    """The device this process should use: its local CUDA device when CUDA exists, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", get_local_rank())
    return torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; ``"cuda"`` on a machine without CUDA is an error."""
    if name == "auto":
        return default_device()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {name!r} but CUDA is not available on this machine; set MODEL.DEVICE "
                          "auto (CUDA when available, else CPU) or cpu")
    if name == "cuda":
        return torch.device("cuda", get_local_rank())
    return torch.device(name)


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank (a one-element list without distributed)."""
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank in rank order, without gradient (same shape on every rank)."""
    if not is_dist() or get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank in rank order; gradients flow back to each rank's part."""
    if not is_dist() or get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (returns a new tensor; the input is untouched)."""
    if not is_dist() or get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shared_random_seed() -> int:
    """A random seed drawn on rank 0 and shared by every rank."""
    import numpy as np

    return int(broadcast_object(int(np.random.randint(2**31))))

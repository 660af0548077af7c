"""Model-parallel parameters: a tensor split along dim 0 across ranks (e.g. Partial FC's class centres).

A module marks such a parameter with :func:`mark_sharded`, giving the full dim-0 size; rank ``r`` of
``w`` holds rows :func:`shard_range`\\ ``(total, r, w)``. Checkpoints hold the *full* tensors: the
checkpointer calls :func:`full_state_dicts` on every rank (a collective: shards are gathered, for
the parameter and for every optimizer state entry of the parameter's shape, such as SGD momentum)
and :func:`local_model_state` / :func:`local_optimizer_state` when restoring (each rank keeps its
rows), so a run resumes exactly and may resume on another number of processes. DistributedDataParallel
must not average or broadcast these parameters: :func:`exclude_sharded_from_ddp` says so.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from . import comm

_TOTAL_ATTR = "_omnireid_sharded_total"


def shard_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of rank ``rank``: contiguous, the first ``total % world`` ranks one row more."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} out of range for {world} processes")
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def mark_sharded(param: nn.Parameter, total: int) -> nn.Parameter:
    """Declare ``param`` as this rank's dim-0 shard of a ``total``-row tensor."""
    setattr(param, _TOTAL_ATTR, int(total))
    return param


def sharded_total(tensor: torch.Tensor) -> int | None:
    """The full dim-0 size of a sharded parameter, else None."""
    return getattr(tensor, _TOTAL_ATTR, None)


def sharded_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of every sharded parameter of ``model``."""
    return {name: p for name, p in model.named_parameters() if sharded_total(p) is not None}


def gather_rows(shard: torch.Tensor, total: int) -> torch.Tensor:
    """The full tensor from every rank's rows (a collective; every rank gets the result)."""
    world = comm.get_world_size()
    if world == 1:
        return shard
    sizes = [shard_range(total, r, world) for r in range(world)]
    longest = max(end - start for start, end in sizes)
    padded = shard.new_zeros((longest, *shard.shape[1:]))
    padded[: shard.shape[0]] = shard
    parts = comm.all_gather_tensor(padded.contiguous()).split(longest)
    return torch.cat([part[: end - start] for part, (start, end) in zip(parts, sizes)])


def local_rows(full: torch.Tensor, total: int) -> torch.Tensor:
    """This rank's rows of a full tensor (a copy, so the full one can be freed)."""
    start, end = shard_range(total, comm.get_rank(), comm.get_world_size())
    return full[start:end].clone()


def _optimizer_param_order(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Parameters in the order ``Optimizer.state_dict()`` numbers them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def full_state_dicts(model: nn.Module, checkpointables: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model": ..., key: obj.state_dict()}`` with every sharded tensor gathered in full.

    Call it on every rank (it runs collectives when the model has sharded parameters).
    """
    model_state = model.state_dict()
    sharded = sharded_parameters(model)
    for name, param in sharded.items():
        model_state[name] = gather_rows(model_state[name], sharded_total(param))
    states: dict[str, Any] = {"model": model_state}
    for key, obj in checkpointables.items():
        state = obj.state_dict()
        if isinstance(obj, torch.optim.Optimizer) and sharded:
            state = _map_optimizer_state(obj, state, lambda t, total: gather_rows(t, total), local=True)
        states[key] = state
    return states


def local_model_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full-tensor state dict cut to this rank's shards (entries already of shard size are kept)."""
    state = dict(state)
    for name, param in sharded_parameters(model).items():
        total = sharded_total(param)
        if name in state and state[name].shape[0] == total and param.shape[0] != total:
            state[name] = local_rows(state[name], total)
    return state


def local_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict whose sharded entries hold full tensors, cut to this rank's shards."""
    return _map_optimizer_state(optimizer, state, local_rows, local=False)


def _map_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], fn, local: bool) -> dict[str, Any]:
    """Apply ``fn(tensor, total)`` to the per-parameter state tensors shaped like a sharded parameter
    (shard-shaped when ``local``, full-shaped otherwise)."""
    entries = dict(state["state"])
    for index, param in enumerate(_optimizer_param_order(optimizer)):
        total = sharded_total(param)
        if total is None or index not in entries:
            continue
        rows = param.shape[0] if local else total
        entries[index] = {k: fn(v, total) if isinstance(v, torch.Tensor) and v.dim() == param.dim()
                          and v.shape[0] == rows and v.shape[1:] == param.shape[1:] else v
                          for k, v in entries[index].items()}
    return {**state, "state": entries}


def exclude_sharded_from_ddp(model: nn.Module) -> list[str]:
    """Tell DistributedDataParallel (before wrapping ``model``) to leave sharded parameters alone:
    their shapes differ across ranks and their gradients are already exact per rank."""
    names = list(sharded_parameters(model))
    if names:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return names

"""Checkpoints: atomic writes, ``weights_only`` loads, and exact resume of every piece of state."""
from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from omnireid.utils import comm
from omnireid.utils.errors import CheckpointError
from omnireid.utils.file_io import atomic_torch_save, atomic_write_text
from omnireid.utils.sharding import full_state_dicts, local_model_state, local_optimizer_state

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain tensors/lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_version, py_keys, py_gauss = random.getstate()
    state = {
        "python_version": py_version,
        "python_keys": list(py_keys),
        "python_gauss": py_gauss,
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python_keys"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves ``{"model", "optimizer", "scheduler", "scaler", "iteration", "rng", ...}`` atomically.

    Call ``save`` on every rank (each rank's RNG state is gathered); only the main process writes. ``last_checkpoint`` (a text file naming the newest file) is
    updated after the checkpoint itself is complete, so an interrupted save leaves the previous
    state usable.
    """

    def __init__(self, model: nn.Module, save_dir: str, **checkpointables: Any) -> None:
        self.model = model
        self.save_dir = save_dir
        self.checkpointables = {k: v for k, v in checkpointables.items() if v is not None}

    def save(self, name: str, **extra: Any) -> str:
        path = os.path.join(self.save_dir, f"{name}.pth")
        rng_states = comm.all_gather_object(capture_rng_state())
        # on every rank: model-parallel (sharded) tensors are gathered in full
        data: dict[str, Any] = full_state_dicts(unwrap(self.model), self.checkpointables)
        if not comm.is_main_process():
            return path
        data["rng"] = rng_states
        data.update(extra)
        atomic_torch_save(data, path)
        atomic_write_text(os.path.join(self.save_dir, LAST_CHECKPOINT), os.path.basename(path))
        logger.info("Saved checkpoint %s", path)
        return path

    def last_checkpoint(self) -> str | None:
        marker = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not os.path.isfile(marker):
            return None
        with open(marker, encoding="utf-8") as f:
            path = os.path.join(self.save_dir, f.read().strip())
        return path if os.path.isfile(path) else None

    def restore(self, data: dict[str, Any], source: str = "<checkpoint>") -> dict[str, Any]:
        """Restore everything in a loaded checkpoint; returns the other entries (``iteration``...)."""
        data = dict(data)
        model = unwrap(self.model)
        model.load_state_dict(local_model_state(model, data.pop("model")))  # each rank keeps its shards
        for key, obj in self.checkpointables.items():
            if key not in data:
                raise CheckpointError(f"{source} has no {key!r} state; cannot resume exactly")
            state = data.pop(key)
            obj.load_state_dict(local_optimizer_state(obj, state) if isinstance(obj, torch.optim.Optimizer) else state)
        rng_states = data.pop("rng", None)
        if rng_states is not None:
            if len(rng_states) == comm.get_world_size():
                restore_rng_state(rng_states[comm.get_rank()])
            else:
                logger.warning("%s was saved by %d processes, resuming with %d: RNG streams not restored",
                               source, len(rng_states), comm.get_world_size())
        logger.info("Resumed from %s at iteration %s", source, data.get("iteration"))
        return data

"""Process-group setup for torchrun (single- or multi-node) and a clean teardown."""
from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from typing import Iterator

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


@contextlib.contextmanager
def distributed_context(timeout_minutes: int = 30) -> Iterator[None]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), and leave it cleanly.

    A no-op in a single process. Teardown: the caller releases DDP models/optimizers inside the
    block; here we collect garbage, barrier, then destroy the group (gloo can abort at exit otherwise).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    logger.info("Joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    try:
        yield
    finally:
        gc.collect()
        with contextlib.suppress(Exception):
            dist.barrier()
        dist.destroy_process_group()

"""Shared start-up for command-line entry points: config, output folder, logging, seeds."""
from __future__ import annotations

import json
import logging
import os
import random
import sys

import numpy as np
import torch

from omnireid.config import CfgNode, setup_cfg  # noqa: F401  (setup_cfg: re-exported for entry points)
from omnireid.utils import comm
from omnireid.utils.file_io import atomic_write_text, ensure_writable_dir

logger = logging.getLogger("omnireid")

METADATA_FILE = "metadata.json"


def setup_logging(output_dir: str | None = None, name: str = "omnireid") -> logging.Logger:
    """Console on the main process; ``log.txt`` (``log.txt.rankN`` for other ranks) in ``output_dir``."""
    root = logging.getLogger(name)
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    rank = comm.get_rank()
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        handler = logging.FileHandler(os.path.join(output_dir, filename))
        handler.setFormatter(fmt)
        root.addHandler(handler)
    return root


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch; a negative seed draws one (shared by all ranks) and logs it."""
    if seed < 0:
        seed = comm.shared_random_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def default_setup(cfg: CfgNode) -> CfgNode:
    """Create OUTPUT_DIR, set up logging, seed, and write the merged ``config.yaml``."""
    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process():
        ensure_writable_dir(output_dir, "OUTPUT_DIR")
    comm.synchronize()
    setup_logging(output_dir)
    seed = seed_everything(cfg.SEED)
    logger.info("omnireid on %s, torch %s, %d process(es), seed %d", comm.resolve_device(cfg.MODEL.DEVICE),
                torch.__version__, comm.get_world_size(), seed)
    if cfg.CUDNN_BENCHMARK:
        torch.backends.cudnn.benchmark = True
    return cfg


def save_metadata(metadata: dict, output_dir: str) -> str:
    """``metadata.json``: what the training labels mean (``class_names``, ``attribute_names``...), for
    predictors and exporters. Must be JSON-serialisable (checkpoints hold it too, loaded weights-only)."""
    path = os.path.join(output_dir, METADATA_FILE)
    if comm.is_main_process():
        try:
            text = json.dumps(metadata, indent=1)
        except TypeError as exc:
            raise TypeError(f"training-set metadata must be JSON-serialisable (plain lists, numbers, strings): {exc}") from None
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_text(path, text + "\n")
    return path


def save_config(cfg: CfgNode, output_dir: str) -> str:
    path = os.path.join(output_dir, "config.yaml")
    if comm.is_main_process():
        atomic_write_text(path, cfg.dump())
    return path

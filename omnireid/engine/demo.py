"""Demos: one generic runner, one registered :class:`DemoSpec` per task (``omnireid demo --task NAME``).

The runner: prepare the synthetic data -> evaluate the untrained model (the floor: what random
weights score) -> train the recipe -> evaluate -> print both rows as a table and save them as
``OUTPUT_DIR/demo_results.json``. A task registers a spec (its config file, a function writing its
synthetic data, overrides) and writes no loop of its own::

    DEMO_REGISTRY.register("classification")(DemoSpec(
        config_file=CONFIGS_DIR / "Demo" / "synthetic_classification_R18.yml",
        prepare_data=synthetic_data("synthetic_colours", write_synthetic_classification), description="..."))
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from omnireid.config import setup_cfg
from omnireid.data.synthetic import write_synthetic_reid
from omnireid.utils.errors import ConfigError, MissingFileError
from omnireid.utils.file_io import atomic_write_text
from omnireid.utils.registry import Registry

from .inference import format_results_table
from .setup import default_setup
from .trainer import trainer_class

logger = logging.getLogger(__name__)

DEMO_REGISTRY = Registry("demo")
RESULTS_FILE = "demo_results.json"
# Recipes live in the repository's configs/ folder (a clone, as `make demo` runs from).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class DemoSpec:
    """A task's demo: ``prepare_data(root, seed)`` writes (idempotently) the synthetic data the
    ``config_file`` recipe reads from ``DATASETS.ROOT = root``; ``overrides`` are ``KEY VALUE`` pairs
    applied after the file (and before the user's own)."""

    config_file: str | os.PathLike
    prepare_data: Callable[[str, int], object]
    overrides: Sequence[str] = field(default_factory=tuple)
    description: str = ""


def write_once(target: str, write: Callable[[str], object]) -> str:
    """Run ``write(folder)`` into ``target + ".partial"`` and rename it to ``target`` unless ``target``
    already exists: an interrupted write never leaves a half dataset that looks complete."""
    if os.path.isdir(target):
        logger.info("Using the synthetic dataset in %s", target)
        return target
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    os.replace(partial, target)
    return target


def synthetic_data(folder: str | os.PathLike, write: Callable[..., object], **options: Any) -> Callable[[str, int], str]:
    """The ``prepare_data`` of a demo whose data is ``write(target, seed=seed, **options)`` in ``<root>/folder``
    (written once, see :func:`write_once`)."""
    def prepare(root: str, seed: int) -> str:
        return write_once(os.path.join(root, folder), lambda target: write(target, seed=seed, **options))

    return prepare


def run_demo(task: str, data_dir: str, data_seed: int = 0, config_file: str = "",
             opts: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """Run the demo of ``task``; returns (and prints) ``{row name: metrics}``."""

    spec: DemoSpec = DEMO_REGISTRY.get(task)
    config_file = config_file or str(spec.config_file)
    if not os.path.isfile(config_file):
        raise MissingFileError(f"demo config not found: {config_file} (run from a clone of the omnireid repository "
                                "or pass --config-file)")
    cfg = setup_cfg(config_file, [*spec.overrides, "DATASETS.ROOT", data_dir, *opts])
    default_setup(cfg)
    spec.prepare_data(cfg.DATASETS.ROOT, data_seed)

    trainer = trainer_class(cfg)(cfg)  # fills the class count in its own copy of the config
    untrained = trainer.test(trainer.cfg, trainer.build_model(trainer.cfg))  # on its device, channels_last as trained
    trainer.train()
    trained, max_iter = trainer.latest_results, trainer.max_iter
    trainer.release()
    if not trained:
        raise ConfigError("the demo recipe must evaluate at the end of training (TEST.EVAL_PERIOD > 0)")

    rows = {}
    for name, metrics in trained.items():
        rows[f"{name} untrained"] = untrained[name]
        rows[f"{name} trained ({max_iter} it)"] = metrics
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE), json.dumps(rows, indent=2))
    print(f"\nomnireid demo results ({task}, synthetic test split, metrics in %):\n" + format_results_table(rows),
          flush=True)
    return rows


DEMO_REGISTRY.register("reid")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_R18.yml", prepare_data=synthetic_data("Market-1501-v15.09.15", write_synthetic_reid),
    description="person reID (BoT ResNet-18) on synthetic people in the Market-1501 layout"))

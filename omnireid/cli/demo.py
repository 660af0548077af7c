"""``omnireid demo``: the main job on built-in data, end to end on a laptop-class CPU.

1. writes the synthetic reID dataset (Market-1501 layout) unless it is already there;
2. evaluates the untrained model (the floor: what random features score);
3. trains the demo recipe and evaluates it;
4. prints both rows side by side and saves them as ``demo_results.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.cli.train import add_config_arguments

logger = logging.getLogger("omnireid")

SYNTHETIC_DIR = "Market-1501-v15.09.15"  # read by the real Market-1501 loader
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "Demo" / "synthetic_R18.yml"


def ensure_demo_data(root: str, seed: int) -> str:
    """Write the synthetic dataset under ``root`` unless a complete one is there (written, then renamed)."""
    import shutil

    from omnireid.data.synthetic import write_synthetic_reid

    target = os.path.join(root, SYNTHETIC_DIR)
    if os.path.isdir(target):
        logger.info("Using the synthetic dataset in %s", target)
        return target
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    logger.info("Writing the synthetic dataset (seed %d) to %s", seed, target)
    write_synthetic_reid(partial, seed=seed)
    os.replace(partial, target)
    return target


def run_demo(args: argparse.Namespace) -> int:
    from omnireid.engine import Trainer, default_setup, evaluate, format_results_table, setup_cfg
    from omnireid.engine.events import read_metrics
    from omnireid.modeling import build_model
    from omnireid.utils.file_io import atomic_write_text

    config_file = args.config_file or str(DEMO_CONFIG)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"demo config not found: {config_file} (run from a clone of the omnireid repository "
                                "or pass --config-file)")
    cfg = setup_cfg(config_file, ["DATASETS.ROOT", args.data_dir, *args.opts])
    default_setup(cfg)
    ensure_demo_data(cfg.DATASETS.ROOT, seed=args.data_seed)

    trainer = Trainer(cfg)  # fills the class count in its own copy of the config
    untrained = evaluate(trainer.cfg, build_model(trainer.cfg))
    trainer.train()
    trained_records = [r for r in read_metrics(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))
                       if r["iteration"] == trainer.max_iter]
    trainer.release()

    rows = {}
    for record in trained_records:
        name = record["dataset"]
        rows[f"{name} untrained"] = untrained[name]
        rows[f"{name} trained ({trainer.max_iter} it)"] = {k: v for k, v in record.items()
                                                           if k not in ("iteration", "epoch", "dataset")}
    table = format_results_table(rows)
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "demo_results.json"), json.dumps(rows, indent=2))
    print("\nomnireid demo results (synthetic test split, metrics in %):\n" + table, flush=True)
    return 0


@COMMAND_REGISTRY.register("demo")
def add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train and evaluate on the built-in synthetic data",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="datasets", help="where the synthetic dataset is (or will be) written")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    add_config_arguments(parser)
    parser.set_defaults(func=run_demo)

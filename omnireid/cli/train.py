"""``omnireid train``: train (or evaluate) a model described by a config file.

Runs in one process or under torchrun::

    omnireid train --config-file configs/Market1501/bagtricks_R50.yml SOLVER.MAX_EPOCH 10
    torchrun --nproc_per_node 2 -m omnireid train --config-file ... OUTPUT_DIR logs/x
"""
from __future__ import annotations

import argparse
import logging

from omnireid.cli.main import COMMAND_REGISTRY

logger = logging.getLogger("omnireid")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config-file F`` and trailing ``KEY VALUE`` overrides, shared by every config-driven command."""
    parser.add_argument("--config-file", metavar="FILE", default="", help="YAML config (may use _BASE_)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.MAX_EPOCH 10 MODEL.BACKBONE.DEPTH 50x")


def run_train(args: argparse.Namespace) -> int:
    from omnireid.config import setup_cfg
    from omnireid.engine import default_setup, distributed_context
    from omnireid.engine.setup import save_config
    from omnireid.engine.trainer import trainer_class
    from omnireid.modeling import build_deployable_model, build_model
    from omnireid.utils import comm

    cfg = setup_cfg(args.config_file, args.opts)
    trainer_cls = trainer_class(cfg)
    with distributed_context():
        default_setup(cfg)
        if args.eval_only:
            save_config(cfg, cfg.OUTPUT_DIR)
            if cfg.MODEL.WEIGHTS:  # the deployable model, every weight from the file (a distiller: its student)
                model = build_deployable_model(cfg, cfg.MODEL.WEIGHTS)
            else:
                logger.warning("--eval-only without MODEL.WEIGHTS: evaluating an untrained model")
                model = build_model(cfg, deploy=True)
            model.to(comm.resolve_device(cfg.MODEL.DEVICE))
            results = trainer_cls.test(cfg, model)
            write_eval_only_metrics(cfg, results)
            del model
            return 0
        trainer = trainer_cls(cfg, resume=args.resume)
        trainer.train()
        trainer.release()
    return 0


def write_eval_only_metrics(cfg, results: dict[str, dict[str, float]]) -> None:
    """``OUTPUT_DIR/metrics.json`` of an ``--eval-only`` run: one line per test set, like a training
    run's evaluations, with the evaluated weights (and the iteration they were saved at, when known)."""
    import os

    from omnireid.engine.events import EvalResultWriter
    from omnireid.utils import comm

    if not comm.is_main_process():
        return
    iteration = 0
    if cfg.MODEL.WEIGHTS:
        from omnireid.utils.file_io import load_checkpoint_file

        iteration = int(load_checkpoint_file(cfg.MODEL.WEIGHTS).get("iteration", 0))
    writer = EvalResultWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))
    for name, metrics in results.items():
        writer.write_result({"iteration": iteration, "eval_only": True, "weights": cfg.MODEL.WEIGHTS,
                             "dataset": name, **metrics})


@COMMAND_REGISTRY.register("train")
def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train or evaluate a model from a config",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    add_config_arguments(parser)
    parser.set_defaults(func=run_train)

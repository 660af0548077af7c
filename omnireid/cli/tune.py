"""``omnireid tune``: hyperparameter search on Ray Tune; every trial is an ordinary training run.

    omnireid tune --config-file configs/Tune/demo_R18.yml --search-space configs/Tune/demo_space.yml \\
        --num-trials 4 --search-alg bohb --scheduler hyperband
    # continue a killed experiment (same command plus --resume)
    omnireid tune ... --resume
    # each trial trains with 2 DDP processes; on an existing Ray cluster
    omnireid tune ... --workers-per-trial 2 --resources-per-trial cpu=8,gpu=2 --address auto

The objective (``score``) is each test protocol's headline metric, (Rank-1 + mAP) / 2 for reID;
``--metric`` picks any reported key (``mAP``, ``Rank-1``, ``<test set>/mAP``...). Results go to
OUTPUT_DIR/tune/: a table, results.csv, best_config.yaml (``omnireid train --config-file
best_config.yaml`` retrains the best trial) and metric_over_time.png.
"""
from __future__ import annotations

import argparse
import os

from omnireid.cli.main import COMMAND_REGISTRY, plugin_modules
from omnireid.cli.train import add_config_arguments
from omnireid.utils.errors import MissingFileError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run_tune(args: argparse.Namespace) -> int:
    # Ray is imported here, by the tune command only.
    from omnireid.cli.export import split_trailing_flags
    from omnireid.config import ConfigError
    from omnireid.tune.runner import TuneSettings, parse_resources, run_experiment

    args = split_trailing_flags(args, _add_tune_flags)
    if not args.config_file:
        raise ConfigError("--config-file is required: the config every trial starts from")
    if not args.search_space:
        raise ConfigError("--search-space is required: a YAML file of config keys and distributions")
    if not os.path.isfile(args.search_space):
        raise MissingFileError(f"search space file not found: {args.search_space}")
    if args.reduction_factor <= 1:
        raise ConfigError(f"--reduction-factor must be > 1 (each rung keeps 1 in that many trials), got "
                          f"{args.reduction_factor:g}")
    with open(args.search_space, encoding="utf-8") as f:
        space_text = f.read()
    settings = TuneSettings(
        config_file=os.path.abspath(args.config_file), opts=tuple(args.opts),
        search_space=os.path.abspath(args.search_space), search_space_text=space_text,
        num_trials=args.num_trials, search_alg=args.search_alg, scheduler=args.scheduler, metric=args.metric,
        mode=args.mode, workers_per_trial=args.workers_per_trial,
        resources=parse_resources(args.resources_per_trial, args.workers_per_trial), seed=args.seed,
        reduction_factor=args.reduction_factor, max_t=args.max_t or 0, max_concurrent=args.max_concurrent or 0)
    # Trial processes import what this command imported: the built-in tasks and the plugins.
    plugins = ("omnireid.tasks", *plugin_modules([a for m in getattr(args, "plugin", []) for a in ("--plugin", m)]))
    return run_experiment(settings, address=args.address, resume=args.resume, plugins=plugins)


def _add_tune_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The tune options; ``suppress`` leaves unset flags out (used to re-parse trailing overrides)."""
    from omnireid.tune.algorithms import SCHEDULERS, SEARCH_ALGORITHMS

    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--search-space", metavar="YAML", default=default(None),
                        help="config keys -> choice / uniform / loguniform / randint / quniform / qloguniform "
                             "or a fixed value (see configs/Tune/)")
    parser.add_argument("--num-trials", type=_positive_int, default=default(8), help="trials to run (default 8)")
    parser.add_argument("--search-alg", default=default("bohb"), choices=sorted(SEARCH_ALGORITHMS.names()),
                        help="how trials' values are chosen (default bohb)")
    parser.add_argument("--scheduler", default=default("hyperband"), choices=sorted(SCHEDULERS.names()),
                        help="when trials are paused or stopped early (default hyperband)")
    parser.add_argument("--metric", default=default("score"),
                        help="reported key to optimise (default score: the test protocol's headline metric, "
                             "(Rank-1 + mAP) / 2 for reID)")
    parser.add_argument("--mode", default=default("max"), choices=("max", "min"),
                        help="maximise or minimise --metric")
    parser.add_argument("--resources-per-trial", metavar="cpu=C,gpu=G", default=default(None),
                        help="what one trial reserves (default one CPU, and one GPU when CUDA is visible, per worker)")
    parser.add_argument("--workers-per-trial", type=_positive_int, default=default(1), metavar="W",
                        help="DDP processes per trial (gloo on CPU, NCCL on GPU; default 1)")
    parser.add_argument("--max-concurrent", type=_positive_int, metavar="N", default=default(None),
                        help="at most N trials at once (default: as many as the resources allow)")
    parser.add_argument("--reduction-factor", type=float, default=default(3.0),
                        help="HyperBand / ASHA: keep 1 of this many trials at each rung (default 3)")
    parser.add_argument("--max-t", type=_positive_int, metavar="EVALS", default=default(None),
                        help="evaluations in a full trial (default SOLVER.MAX_EPOCH / TEST.EVAL_PERIOD)")
    parser.add_argument("--seed", type=int, default=default(0), help="seed of the search algorithm (default 0)")
    parser.add_argument("--address", metavar="RAY_ADDRESS", default=default(None),
                        help="an existing Ray cluster (auto, host:6379, ray://host:10001); default: start "
                             "a local one")
    parser.add_argument("--resume", action="store_true", default=default(False),
                        help="continue the experiment in OUTPUT_DIR/tune (finished trials are not re-run)")


@COMMAND_REGISTRY.register("tune")
def add_tune_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tune", help="hyperparameter search (Ray Tune: BOHB, Optuna, HyperOpt, random)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_tune_flags(parser)
    add_config_arguments(parser)
    parser.set_defaults(func=run_tune)

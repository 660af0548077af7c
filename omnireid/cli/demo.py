"""``omnireid demo``: a task end to end on built-in synthetic data, on a laptop-class CPU.

1. writes the task's synthetic dataset unless it is already there;
2. evaluates the untrained model (the floor: what random features score);
3. trains the task's demo recipe and evaluates it;
4. prints both rows side by side and saves them as ``demo_results.json``.

Tasks register their demo in ``omnireid.engine.demo.DEMO_REGISTRY``; ``--task reid`` is the default.
"""
from __future__ import annotations

import argparse

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.cli.train import add_config_arguments


def run_demo_command(args: argparse.Namespace) -> int:
    from omnireid.config import ConfigError
    from omnireid.engine.demo import DEMO_REGISTRY, run_demo

    if args.task not in DEMO_REGISTRY:
        raise ConfigError(f"--task {args.task!r}: no such demo; available: {', '.join(sorted(DEMO_REGISTRY.names()))}")
    run_demo(args.task, args.data_dir, data_seed=args.data_seed, config_file=args.config_file, opts=args.opts)
    return 0


@COMMAND_REGISTRY.register("demo")
def add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train and evaluate a task on built-in synthetic data",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reid",
                        help="which task's demo to run (a DEMO_REGISTRY name: reid, or one a task registers)")
    parser.add_argument("--data-dir", default="datasets", help="where the synthetic dataset is (or will be) written")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    add_config_arguments(parser)
    parser.set_defaults(func=run_demo_command)

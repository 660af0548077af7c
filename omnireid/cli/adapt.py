"""``omnireid adapt``: unsupervised domain adaptation of a source model to unlabelled target images.

    omnireid adapt --config-file configs/Adapt/synthetic_R18.yml MODEL.WEIGHTS source/model_final.pth \\
        OUTPUT_DIR logs/adapt/target

Each round clusters the target's training images (k-reciprocal Jaccard distance + DBSCAN, keys
``ADAPT.*``) and fine-tunes on the clusters as identities with the normal trainer; the per-round
table (clusters, outliers, NMI/ARI and the ``DATASETS.TESTS`` metrics when the target has labels) is
printed and saved as ``OUTPUT_DIR/adapt_rounds.json``; round r's model is ``OUTPUT_DIR/round_<r>/model_final.pth``.
"""
from __future__ import annotations

import argparse

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.cli.train import add_config_arguments


def run_adapt(args: argparse.Namespace) -> int:
    from omnireid.config import setup_cfg
    from omnireid.engine import default_setup
    from omnireid.tasks.adaptation.adapt import format_rounds_table, run_adaptation

    cfg = setup_cfg(args.config_file, args.opts)
    default_setup(cfg)
    rows = run_adaptation(cfg)
    print(f"\nomnireid adapt: {cfg.MODEL.WEIGHTS} -> {cfg.ADAPT.TARGET} (round 0: the source model; metrics in %)\n"
          + format_rounds_table(rows), flush=True)
    return 0


@COMMAND_REGISTRY.register("adapt")
def add_adapt_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("adapt", help="adapt a model to unlabelled target images with pseudo-labels",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.set_defaults(func=run_adapt)

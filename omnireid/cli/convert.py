"""``omnireid convert-fastreid``: a FastReID config (+ checkpoint) -> an omnireid config (+ weights).

    omnireid convert-fastreid --config-file fastreid/configs/Market1501/sbs_R50.yml \\
        --weights market_sbs_R50.pth --output converted/market_sbs_R50
    omnireid train --eval-only --config-file converted/market_sbs_R50/config.yaml \\
        MODEL.WEIGHTS converted/market_sbs_R50/model_final.pth

Writes ``config.yaml``, ``model_final.pth`` and ``conversion_report.txt`` (every translated key and
renamed parameter). See docs/fastreid_compat.md.
"""
from __future__ import annotations

import argparse
import logging

from omnireid.cli.main import COMMAND_REGISTRY

logger = logging.getLogger("omnireid")


def run_convert(args: argparse.Namespace) -> int:
    from omnireid.compat import convert_fastreid
    from omnireid.engine.setup import setup_logging

    setup_logging(None)
    result = convert_fastreid(args.config_file, args.weights or None, args.output,
                              generation=args.fastreid_version, schedule_unit=args.schedule_unit,
                              iters_per_epoch=args.iters_per_epoch, allow_numpy_scalars=args.allow_numpy_scalars,
                              opts=args.opts)
    logger.info("Wrote %s%s and %s", result.config_path, f", {result.weights_path}" if result.weights_path else "",
                result.report_path)
    return 0


@COMMAND_REGISTRY.register("convert-fastreid")
def add_convert_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert-fastreid", help="convert a FastReID config and checkpoint",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="FastReID YAML config (may use _BASE_)")
    parser.add_argument("--weights", default="", metavar="FILE", help="FastReID checkpoint ({'model': state_dict})")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for config.yaml / model_final.pth")
    parser.add_argument("--fastreid-version", choices=("1.x", "1.0", "0.x"), default=None,
                        help="FastReID generation the config was written for (default: detected from its keys)")
    parser.add_argument("--schedule-unit", choices=("epochs", "iterations"), default=None,
                        help="unit of a pre-V1.0 schedule (SOLVER.MAX_ITER, DELAY_ITERS, STEPS, ...)")
    parser.add_argument("--iters-per-epoch", type=int, default=None,
                        help="len(train set) // IMS_PER_BATCH, to change the unit of pre-V1.0 schedule keys")
    parser.add_argument("--allow-numpy-scalars", action="store_true",
                        help="allow pickled NumPy scalars in the checkpoint (restricted unpickler, NumPy globals only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="omnireid config overrides applied after the translation")
    parser.set_defaults(func=run_convert)

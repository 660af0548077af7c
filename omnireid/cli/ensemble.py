"""``omnireid ensemble`` and ``omnireid submit``: several models as one, evaluated or ranked for a submission.

    omnireid ensemble --models a.yml:a/model_final.pth b.yml:b/model_final.pth --weights 1 0.5 --fusion distance
    omnireid submit --models a.yml:a.pth b.onnx --config-file naic_test.yml --output submission.json \\
        --distmat distmat.npy TEST.RERANK.ENABLED True

Each model reads the test images at its own input size. ``--fusion concat``: the models' L2-normalised
features, weighted, concatenated; ``--fusion distance``: the weighted mean of the models' distances.
The datasets and TEST settings (metric, flip, AQE, re-ranking, memory budget) come from
``--config-file``, else from the first model's config, plus trailing ``KEY VALUE`` overrides (given
after the other options). Logs and ``ensemble_results.json`` go to ``OUTPUT_DIR`` when it is given
as an override, else to ``<OUTPUT_DIR of that config>/ensemble``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.utils.errors import ConfigError, DatasetError

logger = logging.getLogger("omnireid")

_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _add_model_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--models", nargs="*", metavar="SPEC", default=default([]),
                        help="CONFIG.yaml:WEIGHTS.pth, CONFIG.yaml (with MODEL.WEIGHTS), a checkpoint with config.yaml "
                             "beside it, or an exported artifact (.onnx, .ts, ...)")
    parser.add_argument("--weights", nargs="+", type=float, metavar="W", default=default(None),
                        help="one weight > 0 per model (default: all 1)")
    parser.add_argument("--fusion", default=default("concat"), metavar="NAME",
                        help="concat (weighted L2-normalised features) or distance (weighted mean of the distances)")
    parser.add_argument("--flip", dest="flip", action="store_true", default=default(None),
                        help="flip test-time augmentation (default: TEST.FLIP.ENABLED)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", default=default(None))


def _add_ensemble_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    _add_model_flags(parser, suppress)
    parser.add_argument("--no-members", dest="members", action="store_false",
                        default=argparse.SUPPRESS if suppress else True,
                        help="evaluate the ensemble only (not each model alone)")


def _add_submit_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    _add_model_flags(parser, suppress)
    parser.add_argument("--dataset", metavar="NAME", default=default(None),
                        help="the registered dataset whose query/gallery test set is ranked (default DATASETS.TESTS[0])")
    parser.add_argument("--topk", type=int, default=default(200), help="gallery images per query (default 200)")
    parser.add_argument("--output", metavar="FILE.json", default=default(None),
                        help="ranked lists: {query image name: [gallery image names]}")
    parser.add_argument("--distmat", metavar="FILE.npy", default=default(None),
                        help="also write the query x gallery distance matrix (float16)")


def _parse(args: argparse.Namespace, add_flags) -> argparse.Namespace:
    from omnireid.cli.export import split_trailing_flags
    from omnireid.evaluation import FUSION_REGISTRY

    args = split_trailing_flags(args, add_flags)
    # `--models a b KEY VALUE`: nargs="+" swallows the overrides; they start at the first config key
    for i, text in enumerate(args.models):
        if _CONFIG_KEY.match(text) and not os.path.exists(text):
            args.opts = list(args.models[i:]) + list(args.opts)
            args.models = args.models[:i]
            break
    if not args.models:
        raise ConfigError("--models: give at least one model (CONFIG.yaml:WEIGHTS.pth or an exported artifact)")
    if args.fusion not in FUSION_REGISTRY:
        raise ConfigError(f"--fusion {args.fusion!r}: expected one of {', '.join(sorted(FUSION_REGISTRY.names()))}")
    from omnireid.evaluation.fusion import check_weights

    args.weights = check_weights(args.weights if args.weights is not None else [1.0] * len(args.models),
                                 len(args.models))
    return args


def _setup(args: argparse.Namespace):
    from omnireid.engine.setup import setup_logging
    from omnireid.ensemble.members import load_members, main_config, parse_model_spec

    for text in args.models:  # every spec checked before anything is loaded
        parse_model_spec(text)
    setup_logging()
    cfg = main_config(args.models, args.config_file or None, args.opts)
    if "OUTPUT_DIR" not in args.opts[::2]:  # never write into a member's training folder itself
        cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "ensemble")
    members = load_members(args.models, cfg, args.opts)
    flip = bool(cfg.TEST.FLIP.ENABLED) if args.flip is None else args.flip
    return cfg, members, flip


def results_table(result) -> str:
    """Rows = each model, then the ensemble; metrics of the protocol evaluator plus the evaluation's peak memory."""
    from omnireid.engine.inference import format_results_table

    rows = {}
    test_names = list(dict.fromkeys(t for per_row in result.metrics.values() for t in per_row))
    for row, per_test in result.metrics.items():
        for test_name, metrics in per_test.items():
            label = row if len(test_names) == 1 else f"{row} @ {test_name}"
            peak = result.peak_mb[row][test_name]
            rows[label] = {**metrics, **({"eval peak MB": peak} if peak is not None else {})}
    return format_results_table(rows)


def run_ensemble(args: argparse.Namespace) -> int:
    from omnireid.engine.setup import default_setup
    from omnireid.ensemble import evaluate_ensemble
    from omnireid.utils.file_io import atomic_write_text

    args = _parse(args, _add_ensemble_flags)
    cfg, members, flip = _setup(args)
    default_setup(cfg)
    result = evaluate_ensemble(cfg, members, args.weights, args.fusion, flip, with_members=args.members)
    table = results_table(result)
    print(f"Ensemble of {len(members)} models, {args.fusion} fusion, weights {args.weights}, flip {flip}:\n{table}",
          flush=True)
    summary = {"models": list(args.models), "weights": args.weights, "fusion": args.fusion, "flip": flip,
               "metrics": result.metrics, "eval_peak_mb": result.peak_mb}
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "ensemble_results.json"), json.dumps(summary, indent=2))
    return 0


def _names(items: list[dict], what: str) -> list[str]:
    names = [os.path.basename(item["img_path"]) for item in items]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"two {what} images are named {name!r}: the ranked lists name images by file name")
        seen.add(name)
    return names


def run_submit(args: argparse.Namespace) -> int:
    from omnireid.ensemble import collect_features
    from omnireid.evaluation import ReidEvaluator, top_k_from_blocks
    from omnireid.engine.trainer import trainer_class
    from omnireid.utils.file_io import atomic_write_stream, atomic_write_text

    args = _parse(args, _add_submit_flags)
    if not args.output:
        raise ConfigError("--output FILE.json is required")
    if args.topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {args.topk}")
    cfg, members, flip = _setup(args)
    dataset = args.dataset or (cfg.DATASETS.TESTS[0] if cfg.DATASETS.TESTS else None)
    if not dataset:
        raise ConfigError("give --dataset NAME (or DATASETS.TESTS)")
    test_sets = [t for t in trainer_class(cfg).build_test_sets(cfg, dataset) if "num_query" in t.meta]
    if len(test_sets) != 1:
        raise ConfigError(f"--dataset {dataset}: expected one query/gallery test set, found {len(test_sets)}")
    test_set = test_sets[0]
    num_query = int(test_set.meta["num_query"])
    query_names = _names(test_set.items[:num_query], "query")
    gallery_names = _names(test_set.items[num_query:], "gallery")
    features = collect_features(cfg, members, args.weights, args.fusion, flip, test_set)
    source = ReidEvaluator.from_config(cfg, test_set).distances(features)
    budget = float(cfg.TEST.MEMORY_BUDGET_MB)
    found: dict = {}
    if args.distmat:
        atomic_write_stream(args.distmat, lambda f: found.update(
            lists=top_k_from_blocks(source, args.topk, budget, distmat_file=f)))
    else:
        found["lists"] = top_k_from_blocks(source, args.topk, budget)
    indices, _ = found["lists"]
    ranked = {q: [gallery_names[j] for j in row] for q, row in zip(query_names, indices.tolist())}
    atomic_write_text(args.output, json.dumps(ranked))
    logger.info("Wrote the top-%d gallery images of %d queries to %s%s", indices.shape[1], len(ranked), args.output,
                f" and the {len(query_names)}x{len(gallery_names)} float16 distances to {args.distmat}"
                if args.distmat else "")
    return 0


def _add_command(subparsers, name: str, help_text: str, add_flags, func) -> None:
    from omnireid.cli.train import add_config_arguments

    parser = subparsers.add_parser(name, help=help_text, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser)
    add_config_arguments(parser)
    parser.set_defaults(func=func)


@COMMAND_REGISTRY.register("ensemble")
def add_ensemble_command(subparsers: argparse._SubParsersAction) -> None:
    _add_command(subparsers, "ensemble", "evaluate several models as one (feature or distance fusion)",
                 _add_ensemble_flags, run_ensemble)


@COMMAND_REGISTRY.register("submit")
def add_submit_command(subparsers: argparse._SubParsersAction) -> None:
    _add_command(subparsers, "submit", "write each query's top-K gallery images (JSON) from one model or an ensemble",
                 _add_submit_flags, run_submit)

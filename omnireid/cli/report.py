"""``omnireid report``: one self-contained HTML evaluation report (open it with any browser, offline).

    omnireid report --config-file logs/demo/config.yaml MODEL.WEIGHTS logs/demo/model_final.pth --output report/
    omnireid report --features report/features_Market1501.npz --output report/

From a config and weights it evaluates every test set of ``DATASETS.TESTS`` (or ``--dataset``),
saves their features as ``features_<name>.npz`` beside the page, and writes ``index.html``;
``--features`` rebuilds the page from saved features without the model. The page shows the
metrics, CMC and ROC curves, positive/negative distance distributions, per-camera results, the
worst queries by AP and rank lists (filterable by camera and outcome).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys

import numpy as np
import torch

from omnireid.cli.main import COMMAND_REGISTRY

logger = logging.getLogger("omnireid")


class FeatureCollector:
    """An evaluator that keeps each sample's features (and the other model outputs named in ``keep``,
    e.g. ``attributes``), in test-set order (by the batches' ``indices``)."""

    def __init__(self, keep: tuple[str, ...] = ()) -> None:
        self.keep = tuple(keep)

    def reset(self) -> None:
        self._outputs: dict[str, list[torch.Tensor]] = {name: [] for name in ("features", *self.keep)}
        self._indices: list[torch.Tensor] = []

    def process(self, batch: dict, outputs) -> None:
        outputs = outputs if isinstance(outputs, dict) else {"features": outputs}
        for name, kept in self._outputs.items():
            if name not in outputs:
                raise ValueError(f"the model produced no {name!r} output (it gives {sorted(outputs)}), which the "
                                 "report of this test set needs")
            kept.append(outputs[name].detach().float().cpu())
        self._indices.append(torch.as_tensor(batch["indices"]).reshape(-1).cpu())

    def evaluate(self) -> dict[str, float]:
        return {}

    def _ordered(self, name: str) -> np.ndarray:
        values, indices = torch.cat(self._outputs[name]), torch.cat(self._indices)
        return values[torch.argsort(indices)].numpy()

    @property
    def features(self) -> np.ndarray:
        return self._ordered("features")

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        return {name: self._ordered(name) for name in self.keep}


def _test_sets(cfg, name: str):
    """``(loader, name, protocol, items, meta)`` of every test set of dataset ``name``.

    Transitional: uses the ``TestSet`` API of issue 9 when the data layer has it, else the reID
    loader of query + gallery ``(path, pid, camid)`` items.
    """
    import omnireid.data as data

    if hasattr(data, "build_test_sets"):
        for test_set in data.build_test_sets(cfg, name):
            yield (data.build_test_loader(cfg, test_set), test_set.name, test_set.protocol, list(test_set.items),
                   dict(test_set.meta))
        return
    loader, num_query = data.build_test_loader(cfg, name)
    items = [{"img_path": path, "targets": int(pid), "camids": int(camid)} for path, pid, camid in loader.dataset.items]
    yield loader, name, "reid", items, {"num_query": num_query}


def evaluate_to_inputs(args: argparse.Namespace, output: str) -> list:
    """Features of every requested test set, computed by the model of the config (and saved)."""
    from omnireid.engine import inference_on_dataset, setup_cfg
    from omnireid.inference import build_model_from_config
    from omnireid.report import ReportInput, ReportInputError, report_outputs, save_features
    from omnireid.utils.comm import resolve_device

    cfg = setup_cfg(args.config_file, args.opts)
    device = resolve_device(cfg.MODEL.DEVICE)
    try:
        model, cfg = build_model_from_config(args.config_file, args.opts, device=str(device))
    except RuntimeError as exc:  # a checkpoint that does not fit the config
        raise ReportInputError(str(exc).splitlines()[0]) from None
    inputs = []
    for dataset_name in args.dataset or list(cfg.DATASETS.TESTS):
        for loader, name, protocol, items, meta in _test_sets(cfg, dataset_name):
            collector = FeatureCollector(keep=report_outputs(protocol))
            inference_on_dataset(model, loader, collector, device, flip=bool(cfg.TEST.FLIP.ENABLED))
            data = ReportInput(name=name, protocol=protocol, features=collector.features, items=items, meta=meta,
                               metric=cfg.TEST.METRIC, outputs=collector.outputs)
            path = os.path.join(output, f"features_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.npz")
            save_features(data, path)
            logger.info("Saved the features of %s to %s", name, path)
            inputs.append(data)
    return inputs


def run_report(args: argparse.Namespace) -> int:
    from omnireid.cli.export import split_trailing_flags
    from omnireid.engine.setup import setup_logging
    from omnireid.utils.errors import MissingDependencyError

    args = split_trailing_flags(args, _add_report_flags)

    try:
        from omnireid.report import ReportInputError, ReportOptions, build_report, load_features
    except ImportError as exc:
        raise MissingDependencyError(f"the report needs matplotlib: pip install 'omnireid[report]' ({exc})") from exc
    from omnireid.utils.file_io import atomic_write_text

    setup_logging()
    if bool(args.features) == bool(args.config_file):
        raise ReportInputError("give either --config-file (with MODEL.WEIGHTS) or --features FILE.npz")
    if args.features and args.opts:
        raise ReportInputError(f"config overrides {args.opts} need --config-file")
    options = ReportOptions(top_k=args.top_k, max_queries=args.max_queries, worst=args.worst,
                            thumb_height=args.thumb_height)
    os.makedirs(args.output, exist_ok=True)
    inputs = [load_features(p) for p in args.features] if args.features else evaluate_to_inputs(args, args.output)
    page = build_report(inputs, options, title=args.title)
    path = os.path.join(args.output, "index.html")
    atomic_write_text(path, page)
    logger.info("Wrote the report (%.1f MB) to %s", len(page) / 2**20, path)
    return 0


def _add_report_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--features", nargs="+", metavar="FILE", default=default(None),
                        help="saved features_<name>.npz file(s)")
    parser.add_argument("--dataset", nargs="+", metavar="NAME", default=default(None),
                        help="test sets (default DATASETS.TESTS)")
    parser.add_argument("--output", default=default("report"), metavar="DIR",
                        help="folder of index.html (default report/)")
    parser.add_argument("--title", default=default("omnireid evaluation report"))
    parser.add_argument("--top-k", type=int, default=default(10), help="gallery images per rank list")
    parser.add_argument("--max-queries", type=int, default=default(100), help="rank lists in the page")
    parser.add_argument("--worst", type=int, default=default(20), help="rows of the worst-queries table")
    parser.add_argument("--thumb-height", type=int, default=default(96), help="thumbnail height in pixels")


@COMMAND_REGISTRY.register("report")
def add_report_command(subparsers: argparse._SubParsersAction) -> None:
    from omnireid.cli.train import add_config_arguments

    parser = subparsers.add_parser("report", help="write a self-contained HTML evaluation report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_report_flags(parser)
    add_config_arguments(parser)
    parser.set_defaults(func=run_report)

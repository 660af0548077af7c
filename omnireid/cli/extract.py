"""``omnireid extract``: features of a folder of images or a dataset split, with any deployed artifact.

    omnireid extract --artifact deploy/onnx/model.onnx --images photos/ --output features.npz
    omnireid extract --config-file F MODEL.WEIGHTS model_final.pth --dataset Market1501:query --output q.npz

The ``.npz`` holds ``features`` (N, D) float32 and ``paths``; dataset splits add their integer
label fields (reID: ``pids`` for ``targets``, and ``camids``). SPLIT is ``train``, ``test`` (every
test set, in order), a test set's name, or ``query`` / ``gallery`` of a reID dataset. Images go through
the config's test transform, resized to the artifact's input size.
"""
from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.utils.errors import ConfigError, DatasetError, MissingFileError

logger = logging.getLogger("omnireid")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test", "<test set name>", "query", "gallery")
# npz names of item fields (targets are reID identities: "pids", as before)
ARRAY_NAMES = {"targets": "pids"}


def _add_extract_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--artifact", metavar="FILE", default=default(None),
                        help=".pth/.pt (with its config), .ts, .onnx, .xml, .engine/.plan or .prototxt/.caffemodel")
    parser.add_argument("--images", metavar="DIR", default=default(None),
                        help="folder of images (searched recursively)")
    parser.add_argument("--dataset", metavar="NAME:SPLIT", default=default(None),
                        help=f"a registered dataset and one of {', '.join(SPLITS)} (root from DATASETS.ROOT)")
    parser.add_argument("--output", metavar="FILE", default=default(None), help="features file (.npz)")
    parser.add_argument("--batch-size", type=int, default=default(32), help="images per forward pass")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=default(None),
                        help="input size when the artifact declares none (default INPUT.SIZE_TEST)")


def list_images(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise MissingFileError(f"--images: not a folder: {folder}")
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
             if name.lower().endswith(IMAGE_SUFFIXES)]
    if not paths:
        raise MissingFileError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return sorted(paths)


def dataset_split(cfg, spec: str) -> list[dict]:
    from omnireid.data.datasets import build_dataset

    name, _, split = spec.partition(":")
    dataset = build_dataset(cfg, name)
    test_sets = dataset.test_sets()
    splits = {"train": dataset.train, "test": [item for test in test_sets for item in test.items],
              **{test.name: test.items for test in test_sets},
              **{key: getattr(dataset, key) for key in ("query", "gallery") if hasattr(dataset, key)}}
    if split not in splits:
        raise ConfigError(f"--dataset {spec!r}: expected NAME:SPLIT with SPLIT one of {', '.join(splits)}")
    if not splits[split]:
        raise DatasetError(f"--dataset {spec}: the split is empty")
    return list(splits[split])


def label_arrays(items: list[dict]) -> dict[str, np.ndarray]:
    """Every integer label field all items carry, as int64 arrays (``targets`` saved as ``pids``)."""
    fields = [key for key, value in items[0].items()
              if isinstance(value, (int, np.integer)) and not isinstance(value, bool)
              and all(isinstance(item.get(key), (int, np.integer)) for item in items)]
    return {ARRAY_NAMES.get(key, key): np.array([item[key] for item in items], dtype=np.int64) for key in fields}


def extract_features(predictor, paths: list[str], transform, batch_size: int) -> np.ndarray:
    """Features of ``paths`` in order, loading ``batch_size`` images at a time."""
    from omnireid.export.parity import load_images

    chunks = []
    for start in range(0, len(paths), batch_size):
        chunks.append(predictor(load_images(paths[start:start + batch_size], transform)))
        logger.info("Extracted %d / %d", min(start + batch_size, len(paths)), len(paths))
    return np.concatenate(chunks).astype(np.float32)


def run_extract(args: argparse.Namespace) -> int:
    from omnireid.cli.export import split_trailing_flags
    from omnireid.config import setup_cfg
    from omnireid.data.transforms import inference_transform
    from omnireid.engine.setup import setup_logging
    from omnireid.inference import Predictor

    args = split_trailing_flags(args, _add_extract_flags)
    if not args.output:
        raise ConfigError("--output is required")
    if (args.images is None) == (args.dataset is None):
        raise ConfigError("give exactly one of --images DIR and --dataset NAME:SPLIT")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    setup_logging()
    cfg = setup_cfg(args.config_file or None, args.opts)
    artifact = args.artifact or cfg.MODEL.WEIGHTS
    if not artifact:
        raise ConfigError("give --artifact, or --config-file with MODEL.WEIGHTS")
    kwargs = {}
    if os.path.splitext(artifact)[1].lower() in (".pth", ".pt"):
        sibling_config = os.path.join(os.path.dirname(os.path.abspath(artifact)), "config.yaml")
        if not args.config_file and not os.path.isfile(sibling_config):
            raise ConfigError("a PyTorch checkpoint needs --config-file (or a config.yaml next to it)")
        kwargs = {"config_file": args.config_file or None, "opts": args.opts}
    predictor = Predictor.from_artifact(artifact, **kwargs)
    size = predictor.input_size or (tuple(args.size) if args.size else None)
    if size is None:
        logger.info("The artifact declares no input size; using INPUT.SIZE_TEST %s", list(cfg.INPUT.SIZE_TEST))
    transform = inference_transform(cfg, size)
    if args.images is not None:
        paths, labels = list_images(args.images), {}
    else:
        items = dataset_split(cfg, args.dataset)
        paths, labels = [item["img_path"] for item in items], label_arrays(items)
    features = extract_features(predictor, paths, transform, args.batch_size)
    arrays = {"features": features, "paths": np.array(paths), **labels}
    folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(folder, exist_ok=True)
    np.savez(args.output, **arrays)
    logger.info("Wrote %d features of dimension %d (%s backend) to %s", len(features), features.shape[1],
                predictor.backend_name, args.output)
    return 0


@COMMAND_REGISTRY.register("extract")
def add_extract_command(subparsers: argparse._SubParsersAction) -> None:
    from omnireid.cli.train import add_config_arguments

    parser = subparsers.add_parser("extract", help="write the features of images or a dataset split to a file",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_extract_flags(parser)
    add_config_arguments(parser)
    parser.set_defaults(func=run_extract)

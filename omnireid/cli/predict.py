"""``omnireid predict``: images in, readable predictions out (CSV or JSON).

    omnireid predict photos/ --weights logs/run/model_final.pth --output predictions.csv --topk 3

The model comes from a checkpoint and its config (``--config-file``, or the ``config.yaml`` that
training wrote beside it); what its labels mean from the training-set metadata (``metadata.json``
beside the checkpoint, else the checkpoint's own copy). Every named output the model gives and a
decoder exists for (``omnireid.inference.decoders.OUTPUT_DECODERS``: ``logits`` -> class name and
probability; tasks add more, e.g. ``attributes``) is decoded, or those named by ``--outputs``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
from typing import Any, Sequence

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.utils.errors import MissingFileError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_images(inputs: Sequence[str]) -> list[str]:
    """Image files named by ``inputs`` (files, or folders searched recursively, in sorted order)."""
    found: list[str] = []
    for entry in inputs:
        if os.path.isdir(entry):
            for current, dirs, files in os.walk(entry):
                dirs.sort()
                found += [os.path.join(current, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(entry):
            found.append(entry)
        else:
            raise MissingFileError(f"input not found: {entry}")
    if not found:
        raise MissingFileError(f"no image ({', '.join(IMAGE_EXTENSIONS)}) under {list(inputs)}")
    return found


def load_metadata(weights: str) -> dict[str, Any]:
    """``metadata.json`` beside the checkpoint, else the checkpoint's ``metadata`` entry, else ``{}``."""
    sibling = os.path.join(os.path.dirname(os.path.abspath(weights)), "metadata.json")
    if os.path.isfile(sibling):
        with open(sibling, encoding="utf-8") as f:
            return json.load(f)
    from omnireid.utils.file_io import load_checkpoint_file

    checkpoint = load_checkpoint_file(weights)
    return dict(checkpoint.get("metadata") or {})


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested dicts/lists as ``prefix.key`` / ``prefix.0.key`` CSV columns."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    if isinstance(value, list):
        out = {}
        for i, inner in enumerate(value):
            out.update(flatten(f"{prefix}.{i}", inner))
        return out
    return {prefix: value}


def predict(images: Sequence[str], weights: str, config_file: str | None = None, opts: Sequence[str] = (),
            outputs: Sequence[str] = (), topk: int = 1, batch_size: int = 32, device: str = "auto") -> list[dict]:
    """One ``{"path": ..., <output>: decoded}`` record per image."""
    import torch

    from omnireid.config import ConfigError
    from omnireid.data.common import read_image
    from omnireid.data.transforms import build_transforms
    from omnireid.inference.decoders import OUTPUT_DECODERS
    from omnireid.inference.predictor import build_model_from_config
    from omnireid.utils.comm import resolve_device

    if not os.path.isfile(weights):
        raise MissingFileError(f"--weights: checkpoint not found: {weights}")
    if config_file is None:
        config_file = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
        if not os.path.isfile(config_file):
            raise MissingFileError(f"{weights}: pass --config-file, or keep the config.yaml training wrote beside it")
    for name in outputs:
        if name not in OUTPUT_DECODERS:
            raise ConfigError(f"--outputs: no decoder for {name!r}; known: {', '.join(sorted(OUTPUT_DECODERS.names()))}")
    dev = resolve_device(device)
    model, cfg = build_model_from_config(config_file, opts, weights=weights, device=str(dev))
    metadata = load_metadata(weights)
    transform = build_transforms(cfg, is_train=False)
    records: list[dict] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            paths = images[start : start + batch_size]
            batch = torch.stack([torch.as_tensor(transform(read_image(p))) for p in paths]).to(dev)
            produced = model(batch)
            if isinstance(produced, torch.Tensor):
                produced = {"features": produced}
            names = list(outputs) or [n for n in produced if n in OUTPUT_DECODERS]
            if not names:
                raise ConfigError(f"the model's outputs {sorted(produced)} have no decoder (known: "
                                  f"{', '.join(sorted(OUTPUT_DECODERS.names()))}); is it a classifier?")
            missing = [n for n in names if n not in produced]
            if missing:
                raise ConfigError(f"--outputs {missing}: the model only gives {sorted(produced)}")
            decoded = {n: OUTPUT_DECODERS.get(n)(produced[n].float().cpu(), metadata, topk) for n in names}
            for i, path in enumerate(paths):
                records.append({"path": path, **{n: decoded[n][i] for n in names}})
    return records


def to_csv(records: list[dict]) -> str:
    rows = [flatten("", r) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run_predict(args: argparse.Namespace) -> int:
    from omnireid.utils.file_io import atomic_write_text

    records = predict(list_images(args.inputs), args.weights, args.config_file or None, args.opts,
                      [o for o in args.outputs.split(",") if o], args.topk, args.batch_size, args.device)
    fmt = args.format or ("json" if args.output.lower().endswith(".json") else "csv")
    text = json.dumps(records, indent=1) + "\n" if fmt == "json" else to_csv(records)
    if args.output:
        atomic_write_text(args.output, text)
        print(f"{len(records)} predictions written to {args.output}")
    else:
        print(text, end="")
    return 0


@COMMAND_REGISTRY.register("predict")
def add_predict_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="decode a trained model's outputs for images (CSV/JSON)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) of a trained model")
    parser.add_argument("--config-file", default="", help="its config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--outputs", default="", help="comma-separated outputs to decode (default: all decodable)")
    parser.add_argument("--topk", type=int, default=1, help="also list the k best classes (logits)")
    parser.add_argument("--output", default="", help="write to this file (.csv or .json); default: print CSV")
    parser.add_argument("--format", choices=("csv", "json"), default="", help="default: from --output's suffix")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides")
    parser.set_defaults(func=run_predict)

"""``omnireid predict``: images in, readable predictions out (CSV or JSON).

    omnireid predict photos/ --weights logs/run/model_final.pth --output predictions.csv --topk 3
    omnireid predict --artifact deploy/onnx/model.onnx --images photos/ --output predictions.csv

The model is a checkpoint with its config (``--config-file``, or the ``config.yaml`` that training
wrote beside it) or an exported artifact (ONNX, TorchScript, OpenVINO, TensorRT, Caffe). What its
outputs mean comes from the metadata: for a checkpoint, the training-set ``metadata.json`` beside
it (else the checkpoint's own copy) plus its config; for an artifact, the ``metadata.json`` the
export wrote beside it (required: class / attribute names, input size, threshold). Both paths resize
the images the same way (the metadata's ``input``) and decode the same way: every named output the
model gives and a decoder exists for (``omnireid.inference.decoders.OUTPUT_DECODERS``: ``logits`` ->
class name and probability; tasks add more, e.g. ``attributes``), or those named by ``--outputs``.
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


TORCH_SUFFIXES = (".pth", ".pt")


def load_predictor(model: str, config_file: str | None = None, opts: Sequence[str] = (),
                   outputs: Sequence[str] = (), device: str = "auto"):
    """A ``Predictor`` for a checkpoint (with its config) or an exported artifact, with the metadata
    predictions are decoded with; an artifact without a usable ``metadata.json`` is an error."""
    from omnireid.inference import Predictor
    from omnireid.inference.metadata import MetadataError, beside, read_metadata

    if not os.path.isfile(model):
        raise MissingFileError(f"model file not found: {model}")
    if os.path.splitext(model)[1].lower() in TORCH_SUFFIXES:
        if config_file is None:
            config_file = os.path.join(os.path.dirname(os.path.abspath(model)), "config.yaml")
            if not os.path.isfile(config_file):
                raise MissingFileError(f"{model}: pass --config-file, or keep the config.yaml training wrote beside it")
        return Predictor.from_artifact(model, config_file=config_file, opts=opts, device=device,
                                       outputs=list(outputs) or None)
    if not os.path.isfile(beside(model)):
        raise MetadataError(f"{beside(model)}: metadata file not found; `omnireid export` writes it beside the "
                            "artifact (class/attribute names, input size): keep it with the artifact or re-export")
    read_metadata(beside(model))  # a broken file is reported as itself before the runtime loads
    return Predictor.from_artifact(model)


def predict(images: Sequence[str], model: str, config_file: str | None = None, opts: Sequence[str] = (),
            outputs: Sequence[str] = (), topk: int = 1, batch_size: int = 32, device: str = "auto") -> list[dict]:
    """One ``{"path": ..., <output>: decoded}`` record per image; ``model`` is a checkpoint or an artifact."""
    import torch

    from omnireid.config import ConfigError
    from omnireid.data.common import read_image
    from omnireid.inference.decoders import OUTPUT_DECODERS
    from omnireid.inference.metadata import beside, metadata_transform

    for name in outputs:
        if name not in OUTPUT_DECODERS:
            raise ConfigError(f"--outputs: no decoder for {name!r}; known: {', '.join(sorted(OUTPUT_DECODERS.names()))}")
    predictor = load_predictor(model, config_file, opts, outputs, device)
    given = predictor.output_names
    missing = [n for n in outputs if n not in given]
    if missing:
        raise ConfigError(f"--outputs {missing}: {model} only gives {given}")
    names = list(outputs) or [n for n in given if n in OUTPUT_DECODERS]
    if not names:
        raise ConfigError(f"the model's outputs {given} have no decoder (known: "
                          f"{', '.join(sorted(OUTPUT_DECODERS.names()))}); is it a classifier?")
    metadata = predictor.metadata
    transform = metadata_transform(metadata, source=model if model.lower().endswith(TORCH_SUFFIXES) else beside(model))
    records: list[dict] = []
    for start in range(0, len(images), batch_size):
        paths = images[start : start + batch_size]
        batch = torch.stack([torch.as_tensor(transform(read_image(p))) for p in paths])
        produced = predictor.run(batch)
        try:
            decoded = {n: OUTPUT_DECODERS.get(n)(torch.from_numpy(produced[n]), metadata, topk) for n in names}
        except (KeyError, ValueError) as exc:  # metadata that does not describe these outputs
            raise ConfigError(f"{model}: its metadata does not fit its outputs: {exc}") from None
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
    from omnireid.config import ConfigError
    from omnireid.utils.file_io import atomic_write_text

    if bool(args.weights) == bool(args.artifact):
        raise ConfigError("give exactly one of --weights CHECKPOINT and --artifact FILE")
    inputs = list(args.inputs) + list(args.images)
    if not inputs:
        raise ConfigError("no images: give image files / folders, or --images DIR")
    records = predict(list_images(inputs), args.weights or args.artifact, args.config_file or None, args.opts,
                      [o.strip() for o in args.outputs.split(",") if o.strip()], args.topk, args.batch_size,
                      args.device)
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
    parser.add_argument("inputs", nargs="*", help="image files and/or folders (searched recursively)")
    parser.add_argument("--images", action="append", default=[], metavar="DIR", help="more image files / folders")
    parser.add_argument("--weights", default="", help="checkpoint (.pth) of a trained model")
    parser.add_argument("--artifact", default="",
                        help="an exported model (.onnx, .ts, .xml, .engine, .prototxt) with its metadata.json")
    parser.add_argument("--config-file", default="", help="its config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--outputs", default="", help="comma-separated outputs to decode (default: all decodable)")
    parser.add_argument("--topk", type=int, default=1, help="also list the k best classes (logits)")
    parser.add_argument("--output", default="", help="write to this file (.csv or .json); default: print CSV")
    parser.add_argument("--format", choices=("csv", "json"), default="", help="default: from --output's suffix")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides")
    parser.set_defaults(func=run_predict)

"""``omnireid export``: turn a trained model into a deployable artifact and prove it computes the same features.

    omnireid export --config-file configs/Market1501/bagtricks_R50.yml MODEL.WEIGHTS model_final.pth \\
        --format onnx --output deploy/onnx
    omnireid export --config-file F MODEL.WEIGHTS W --format tensorrt --output deploy/trt --fp16 \\
        --min-batch 1 --opt-batch 16 --max-batch 64

    omnireid export --config-file logs/cls/config.yaml MODEL.WEIGHTS logs/cls/model_final.pth \\
        --format onnx --output deploy/cls --outputs logits,features

The artifact's graph outputs are the model's named outputs given by ``--outputs`` (default: what the
model declares for deployment: ``logits`` for a classifier, ``attributes`` for an attribute model,
``features`` for reID / face / retrieval). Writes the artifact, ``metadata.json`` (the run's class /
attribute names, input size, normalisation, output names, attribute threshold) and
``export_report.json`` (format, input shape, opset/version, output names and shapes, per output
max |diff| and minimum cosine against PyTorch on real test images and the pass rule, latency).
Formats: onnx, torchscript, openvino, caffe, tensorrt. ``KEY VALUE`` config overrides may come
before or after the options.
"""
from __future__ import annotations

import argparse
import json
import logging

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.utils.errors import ConfigError, UnknownNameError

logger = logging.getLogger("omnireid")

def _add_export_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The export options; ``suppress`` leaves unset flags out (used to re-parse trailing overrides)."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--format", default=default(None),
                        help="a registered export format: onnx, torchscript, openvino, caffe, tensorrt")
    parser.add_argument("--output", metavar="DIR", default=default(None), help="folder for the artifact and report")
    parser.add_argument("--outputs", metavar="NAMES", default=default(""),
                        help="comma-separated named outputs to export, e.g. logits,features (default: the model's "
                             "declared deploy outputs)")
    parser.add_argument("--opset", type=int, default=default(None), help="ONNX opset (default EXPORT.OPSET)")
    parser.add_argument("--onnx-exporter", choices=("auto", "dynamo", "legacy"), default=default("auto"),
                        help="torch's ONNX exporter (auto: legacy below opset 18, dynamo from 18)")
    parser.add_argument("--static-batch", action="store_true", default=default(False),
                        help="fixed batch size (--batch-size) instead of a dynamic batch")
    parser.add_argument("--batch-size", type=int, default=default(None),
                        help="static batch / tracing batch (default EXPORT.BATCH_SIZE)")
    parser.add_argument("--no-simplify", action="store_true", default=default(False), help="skip ONNX simplification")
    parser.add_argument("--fp16", action="store_true", default=default(False),
                        help="FP16 weights (OpenVINO) / FP16 kernels (TensorRT)")
    parser.add_argument("--int8", action="store_true", default=default(False),
                        help="TensorRT INT8 with entropy calibration")
    parser.add_argument("--calib-images", type=int, default=default(256),
                        help="INT8 calibration images (training set, else synthetic)")
    parser.add_argument("--calib-batch-size", type=int, default=default(8), help="INT8 calibration batch size")
    parser.add_argument("--min-batch", type=int, default=default(None), help="TensorRT profile: smallest batch")
    parser.add_argument("--opt-batch", type=int, default=default(None), help="TensorRT profile: tuned batch")
    parser.add_argument("--max-batch", type=int, default=default(None), help="TensorRT profile: largest batch")
    parser.add_argument("--workspace-mb", type=int, default=default(1024), help="TensorRT workspace memory pool")
    parser.add_argument("--parity-images", type=int, default=default(16),
                        help="test images for the parity check and latency (0: skip)")
    parser.add_argument("--latency-runs", type=int, default=default(3), help="timed runs for the latency figures")


def split_trailing_flags(args: argparse.Namespace, add_flags) -> argparse.Namespace:
    """Options written after the first ``KEY VALUE`` override end up in ``args.opts``; pull them out."""
    late = argparse.ArgumentParser(add_help=False)
    add_flags(late, suppress=True)
    found, rest = late.parse_known_args(args.opts)
    for key, value in vars(found).items():
        setattr(args, key, value)
    args.opts = rest
    return args


def run_export(args: argparse.Namespace) -> int:
    from omnireid.engine.setup import setup_logging
    from omnireid.export import ExportOptions, export_model
    from omnireid.export.parity import dataset_images
    from omnireid.inference.metadata import checkpoint_metadata, deployment_metadata
    from omnireid.inference.predictor import build_model_from_config, model_input_size
    from omnireid.modeling import default_outputs

    args = split_trailing_flags(args, _add_export_flags)
    missing = [flag for flag, value in (("--format", args.format), ("--output", args.output)) if not value]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required")
    if not args.config_file:
        raise ConfigError("--config-file is required (the model is built from it)")
    from omnireid.export.base import get_exporter

    try:
        get_exporter(args.format)
    except UnknownNameError as exc:
        raise UnknownNameError(f"--format: {exc}") from None
    setup_logging()
    model, cfg = build_model_from_config(args.config_file, args.opts, device="cpu")
    outputs = tuple(name.strip() for name in args.outputs.split(",") if name.strip()) or default_outputs(model)
    if len(set(outputs)) != len(outputs):
        raise ConfigError(f"--outputs {args.outputs!r} names an output twice")
    options = ExportOptions(
        outputs=outputs,
        input_size=model_input_size(cfg),
        batch_size=args.batch_size or cfg.EXPORT.BATCH_SIZE,
        dynamic_batch=cfg.EXPORT.DYNAMIC_BATCH and not args.static_batch,
        opset=args.opset or cfg.EXPORT.OPSET,
        onnx_exporter=args.onnx_exporter,
        simplify=not args.no_simplify,
        fp16=args.fp16,
        int8=args.int8,
        calibration_images=dataset_images(cfg, args.calib_images, split="train")[0] if args.int8 else None,
        calibration_batch_size=args.calib_batch_size,
        min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
        workspace_mb=args.workspace_mb,
    )
    images, source = (None, "")
    if args.parity_images > 0:
        images, source = dataset_images(cfg, args.parity_images, split="test")
    extra = {"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS or None,
             "meta_architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": cfg.MODEL.BACKBONE.NAME}
    run_metadata = checkpoint_metadata(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else {}
    report = export_model(model, args.format, args.output, options, images=images, images_source=source,
                          latency_runs=args.latency_runs, extra=extra,
                          metadata=deployment_metadata(cfg, run_metadata, outputs))  # ExportError: one line
    parity = report["parity"]
    if parity.get("measured"):
        for name, metrics in parity["outputs"].items():
            logger.info("Parity of %r on %d images (%s): max |diff| %.3g (max |reference| %.3g), min cosine %.7f "
                        "-> %s", name, parity["images"], parity["source"], metrics["max_abs_diff"],
                        metrics["reference_max_abs"], metrics["min_cosine"], "PASSED" if metrics["passed"] else "FAILED")
        logger.info("Parity rule: %s", parity["rule"])
    logger.info("Wrote %s, metadata.json and export_report.json to %s", report["artifact"], args.output)
    summary = {k: report[k] for k in ("format", "artifact", "input_shape", "output_names")}
    if parity.get("measured"):
        summary["parity"] = "passed" if parity["passed"] else "FAILED"
    print(json.dumps(summary))
    return 0 if not parity.get("measured") or parity["passed"] else 1


@COMMAND_REGISTRY.register("export")
def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    from omnireid.cli.train import add_config_arguments

    parser = subparsers.add_parser("export", help="export a model to ONNX/TensorRT/Caffe/OpenVINO/TorchScript",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_export_flags(parser)
    add_config_arguments(parser)
    parser.set_defaults(func=run_export)

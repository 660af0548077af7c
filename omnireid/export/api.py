"""``export_model``: deploy-form copy -> artifact + ``metadata.json`` -> parity check of every named
output against PyTorch -> ``export_report.json``."""
from __future__ import annotations

import copy
import json
import logging
import os
import platform
from typing import Any

import numpy as np
import torch
from torch import nn

from omnireid.utils.file_io import atomic_write_text

from .base import ExportOptions, check_outputs, deploy_copy, ensure_output_dir, get_exporter
from .parity import compare_outputs, measure_latency, parity_passed, parity_rule

logger = logging.getLogger(__name__)

REPORT_NAME = "export_report.json"


def export_model(model: nn.Module, format_name: str, output_dir: str, options: ExportOptions,
                 images: torch.Tensor | None = None, images_source: str = "", latency_runs: int = 3,
                 extra: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``model``'s named outputs ``options.outputs``; write the artifact, ``metadata.json``
    (``metadata``, e.g. the run's class names, plus ``output_names`` and ``input_size``) and
    ``output_dir/export_report.json``; returns the report.

    ``images`` (uint8 ``(N, 3, H, W)``) are run through the eager model and the loaded artifact to
    measure parity of every output and latency; without them the report says parity was not measured.
    """
    from omnireid.inference.metadata import METADATA_FILE, write_metadata

    exporter = get_exporter(format_name)
    ensure_output_dir(output_dir)
    deployed, switched = deploy_copy(model, options.outputs)
    output_dims = check_outputs(deployed, options)
    logger.info("Exporting %s (outputs %s) to %s in %s", type(model).__name__, ", ".join(options.outputs),
                format_name, output_dir)
    artifact = exporter.export(deployed, options, output_dir)
    # written before the parity check: the Predictor that checks it reads it like any user's would
    metadata_path = write_metadata(output_dir, {**(metadata or {}), "input_size": list(options.input_size),
                                                "output_names": list(artifact.output_names)})
    report: dict[str, Any] = {
        "format": artifact.format,
        "artifact": os.path.relpath(artifact.path, output_dir),
        "files": [os.path.relpath(f, output_dir) for f in (*artifact.files, metadata_path)],
        "metadata": METADATA_FILE,
        "input_name": artifact.input_name,
        "input_shape": artifact.input_shape,
        "input_dtype": "float32, RGB, 0-255 (pixel normalisation is inside the graph)",
        "output_names": list(artifact.output_names),
        "output_shapes": {name: [artifact.input_shape[0], dim] for name, dim in output_dims.items()},
        "opset": artifact.info.get("opset"),
        "version": artifact.info,
        "deploy_switched_modules": switched,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads()},
    }
    if extra:
        report.update(extra)
    if images is not None:
        report.update(_parity_and_latency(model, options.outputs, artifact.path, exporter.predictor_kwargs(options),
                                          images, images_source, latency_runs, exporter.parity_tolerance(options)))
    else:
        report["parity"] = {"measured": False, "reason": "no images given"}
    atomic_write_text(os.path.join(output_dir, REPORT_NAME), json.dumps(report, indent=2, sort_keys=False) + "\n")
    return report


def _parity_and_latency(model: nn.Module, outputs: tuple[str, ...], artifact_path: str,
                        predictor_kwargs: dict[str, Any], images: torch.Tensor, images_source: str,
                        latency_runs: int, tolerance: dict[str, float | None]) -> dict[str, Any]:
    from omnireid.inference import Predictor

    predictor = Predictor.from_artifact(artifact_path, **predictor_kwargs)
    parity = measure_parity(model, outputs, predictor, images, tolerance)
    parity["source"] = images_source
    reference_model = _reference_model(model, outputs)
    latency = {"batch_size": int(images.shape[0]), "runs": latency_runs,
               "pytorch_eager_ms": measure_latency(lambda: _run_reference(reference_model, outputs, images),
                                                   runs=latency_runs),
               f"{predictor.backend_name}_ms": measure_latency(lambda: predictor.run(images), runs=latency_runs)}
    return {"parity": parity, "latency_ms": latency}


def _reference_model(model: nn.Module, outputs: tuple[str, ...]) -> nn.Module:
    from omnireid.modeling.outputs import NamedOutputs

    return NamedOutputs(copy.deepcopy(model), outputs).cpu().float().eval()  # the caller's model keeps its mode/device


def _run_reference(reference_model: nn.Module, outputs: tuple[str, ...], images: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        produced = reference_model(images.float())
    produced = (produced,) if isinstance(produced, torch.Tensor) else produced
    return {name: value.numpy() for name, value in zip(outputs, produced)}


def measure_parity(model: nn.Module, outputs: tuple[str, ...], predictor: Any, images: torch.Tensor,
                   tolerance: dict[str, float | None]) -> dict[str, Any]:
    """Every named output of ``predictor`` (a loaded artifact) against the eager ``model`` on ``images``,
    judged by :func:`~omnireid.export.parity.parity_passed`."""
    reference = _run_reference(_reference_model(model, outputs), outputs, images)
    per_output = compare_outputs(reference, predictor.run(images))
    for metrics in per_output.values():
        metrics["passed"] = parity_passed(metrics, tolerance)
    parity = {"measured": True, "images": int(images.shape[0]), "runtime": predictor.backend_name,
              "rule": parity_rule(tolerance), "tolerance": tolerance, "outputs": per_output,
              "passed": all(metrics["passed"] for metrics in per_output.values())}
    for name, metrics in per_output.items():
        if not metrics["passed"]:
            logger.warning("Parity check FAILED for %s output %r: max |diff| %.3g (reference max |value| %.3g), "
                           "min cosine %.6f; rule: %s", predictor.source, name, metrics["max_abs_diff"],
                           metrics["reference_max_abs"], metrics["min_cosine"], parity["rule"])
    return parity

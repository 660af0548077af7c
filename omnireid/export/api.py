"""``export_model``: deploy-form copy -> artifact -> parity check against PyTorch -> ``export_report.json``."""
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

from .base import ExportOptions, check_feature_model, deploy_copy, ensure_output_dir, get_exporter
from .parity import compare_features, measure_latency

logger = logging.getLogger(__name__)

REPORT_NAME = "export_report.json"


def export_model(model: nn.Module, format_name: str, output_dir: str, options: ExportOptions,
                 images: torch.Tensor | None = None, images_source: str = "", latency_runs: int = 3,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export ``model`` and write ``output_dir/export_report.json``; returns the report.

    ``images`` (uint8 ``(N, 3, H, W)``) are run through the eager model and the loaded artifact to
    measure parity and latency; without them the report says parity was not measured.
    """
    exporter = get_exporter(format_name)
    ensure_output_dir(output_dir)
    deployed, switched = deploy_copy(model)
    feature_dim = check_feature_model(deployed, options)
    logger.info("Exporting %s to %s in %s", type(model).__name__, format_name, output_dir)
    artifact = exporter.export(deployed, options, output_dir)
    report: dict[str, Any] = {
        "format": artifact.format,
        "artifact": os.path.relpath(artifact.path, output_dir),
        "files": [os.path.relpath(f, output_dir) for f in artifact.files],
        "input_name": artifact.input_name,
        "input_shape": artifact.input_shape,
        "input_dtype": "float32, RGB, 0-255 (pixel normalisation is inside the graph)",
        "output_name": artifact.output_name,
        "output_shape": [artifact.input_shape[0], feature_dim],
        "opset": artifact.info.get("opset"),
        "version": artifact.info,
        "deploy_switched_modules": switched,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads()},
    }
    if extra:
        report.update(extra)
    if images is not None:
        report.update(_parity_and_latency(model, artifact.path, exporter.predictor_kwargs(options), images,
                                          images_source, latency_runs, exporter.parity_tolerance(options)))
    else:
        report["parity"] = {"measured": False, "reason": "no images given"}
    atomic_write_text(os.path.join(output_dir, REPORT_NAME), json.dumps(report, indent=2, sort_keys=False) + "\n")
    return report


def _parity_and_latency(model: nn.Module, artifact_path: str, predictor_kwargs: dict[str, Any], images: torch.Tensor,
                        images_source: str, latency_runs: int, tolerance: dict[str, float | None]) -> dict[str, Any]:
    from omnireid.inference import Predictor

    from omnireid.modeling.outputs import NamedOutputs

    # the caller's model keeps its mode/device
    reference_model = NamedOutputs(copy.deepcopy(model)).cpu().float().eval()
    batch = images.float()
    with torch.no_grad():
        reference = reference_model(batch).numpy()
    predictor = Predictor.from_artifact(artifact_path, **predictor_kwargs)
    features = predictor(images)
    metrics = compare_features(reference, features)
    passed = metrics["min_cosine"] >= tolerance["min_cosine"] and (
        tolerance["max_abs_diff"] is None or metrics["max_abs_diff"] <= tolerance["max_abs_diff"])
    parity = {"measured": True, "images": int(images.shape[0]), "source": images_source,
              "runtime": predictor.backend_name, **metrics, "tolerance": tolerance, "passed": bool(passed)}
    if not passed:
        logger.warning("Parity check FAILED for %s: max |diff| %.3g, min cosine %.6f", artifact_path,
                       metrics["max_abs_diff"], metrics["min_cosine"])

    def run_eager() -> np.ndarray:
        with torch.no_grad():
            return reference_model(batch).numpy()

    latency = {"batch_size": int(images.shape[0]), "runs": latency_runs,
               "pytorch_eager_ms": measure_latency(run_eager, runs=latency_runs),
               f"{predictor.backend_name}_ms": measure_latency(lambda: predictor(images), runs=latency_runs)}
    return {"parity": parity, "latency_ms": latency}

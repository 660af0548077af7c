"""OpenVINO IR export through OpenVINO's own converter: FP32 parity on the CPU runtime, FP16 weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

ov = pytest.importorskip("openvino")

from export_models import INPUT_SIZE, build_eval_model, parity_batch  # noqa: E402

from omnireid.export import ExportOptions, export_model  # noqa: E402
from omnireid.inference import Predictor  # noqa: E402


@pytest.mark.parametrize("recipe", ["bot_r50_ibn", "sbs_r50_ibn"])
def test_openvino_fp32_parity_dynamic_batch(recipe, tmp_path):
    model, cfg = build_eval_model(recipe)
    images, source = parity_batch(cfg, count=4)
    report = export_model(model, "openvino", str(tmp_path), ExportOptions(input_size=INPUT_SIZE),
                          images, source, latency_runs=1)
    parity = report["parity"]
    assert parity["passed"] and parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    assert report["version"]["weights"] == "FP32" and sorted(report["files"]) == ["metadata.json", "model.bin", "model.xml"]
    compiled = ov.Core().read_model(str(tmp_path / "model.xml"))
    assert compiled.inputs[0].get_partial_shape()[0].is_dynamic
    predictor = Predictor.from_artifact(str(tmp_path / "model.xml"))
    with torch.no_grad():
        reference = model(images[:3].float())["features"].numpy()
    np.testing.assert_allclose(predictor(images[:3]), reference, atol=1e-3, rtol=0)


def test_openvino_fp16_weights_static_batch(tmp_path):
    model, cfg = build_eval_model("bot_r18")
    images, source = parity_batch(cfg, count=6)
    options = ExportOptions(input_size=INPUT_SIZE, fp16=True, dynamic_batch=False, batch_size=4)
    report = export_model(model, "openvino", str(tmp_path), options, images, source, latency_runs=1)
    assert report["version"]["weights"] == "FP16" and report["input_shape"] == [4, 3, *INPUT_SIZE]
    # FP16 weights lose ~3 decimal digits: features stay aligned but not within the FP32 tolerance
    assert report["parity"]["outputs"]["features"]["min_cosine"] >= 0.999 and report["parity"]["images"] == 6
    assert report["parity"]["tolerance"] == {"relative_max_abs_diff": None, "min_cosine": 0.999} and report["parity"]["passed"]
    fp32_bytes = 4 * sum(p.numel() for p in model.state_dict().values() if p.is_floating_point())
    assert (tmp_path / "model.bin").stat().st_size < 0.6 * fp32_bytes

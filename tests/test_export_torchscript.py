"""TorchScript export (trace + freeze): parity with eager, BN folded, input shape stored."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export_models import INPUT_SIZE, build_eval_model, parity_batch

from omnireid.export import ExportOptions, export_model
from omnireid.inference import Predictor


@pytest.mark.parametrize("recipe", ["bot_r50_ibn", "sbs_r50_ibn"])
def test_torchscript_parity_and_bn_folding(recipe, tmp_path):
    model, cfg = build_eval_model(recipe)
    images, source = parity_batch(cfg, count=4)
    report = export_model(model, "torchscript", str(tmp_path), ExportOptions(input_size=INPUT_SIZE),
                          images, source, latency_runs=1)
    parity = report["parity"]
    assert parity["passed"] and parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    # freezing folds every BatchNorm that follows a convolution; left: IBN's BN halves and the BNNeck
    unfoldable = sum(type(m).__name__ == "IBN" for m in model.modules()) + 1
    assert report["version"]["batchnorm_ops_left"] == unfoldable
    predictor = Predictor.from_artifact(str(tmp_path / "model.ts"))
    assert predictor.backend_name == "torchscript" and predictor.input_size == INPUT_SIZE
    with torch.no_grad():
        reference = model(images[:3].float())["features"].numpy()
    np.testing.assert_allclose(predictor(images[:3]), reference, atol=1e-3, rtol=0)

"""MGN (three branches, eight heads, horizontal stripes) through ONNX, TorchScript and Caffe."""
from __future__ import annotations

import importlib.util

import pytest

from export_models import build_eval_model, parity_batch

from omnireid.export import ExportOptions, export_model

# 96x32 input: layer4 (stride 1) maps are 6 rows high, so b3 cuts 3 stripes of 2 rows
MGN_SIZE = (96, 32)
_FORMATS = ["onnx", "torchscript"]
_cv2 = importlib.util.find_spec("cv2")
if _cv2 and hasattr(__import__("cv2").dnn, "readNetFromCaffe"):
    _FORMATS.append("caffe")


@pytest.fixture(scope="module")
def mgn():
    model, cfg = build_eval_model("bot_r18", "MODEL.META_ARCHITECTURE", "MGN", "MODEL.BACKBONE.WITH_IBN", "True",
                                  "INPUT.SIZE_TEST", str(list(MGN_SIZE)))
    images, source = parity_batch(cfg, count=4)
    return model, images, source


@pytest.mark.parametrize("format_name", _FORMATS)
def test_mgn_export_parity(format_name, mgn, tmp_path):
    model, images, source = mgn
    report = export_model(model, format_name, str(tmp_path), ExportOptions(input_size=MGN_SIZE), images, source,
                          latency_runs=1)
    parity = report["parity"]
    assert parity["passed"] and parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    assert report["output_shapes"]["features"][1] == 8 * 512  # eight concatenated head features

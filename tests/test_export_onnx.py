"""ONNX export: dynamic/static batch, opset selection, simplification, parity with onnxruntime."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export_models import INPUT_SIZE, build_eval_model, parity_batch  # noqa: E402

from omnireid.export import ExportOptions, export_model  # noqa: E402


def _eager(model, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(images.float())["features"].numpy()


@pytest.mark.parametrize("recipe", ["bot_r50_ibn", "sbs_r50_ibn"])
def test_onnx_dynamic_batch_parity(recipe, tmp_path):
    model, cfg = build_eval_model(recipe)
    images, source = parity_batch(cfg, count=4)
    report = export_model(model, "onnx", str(tmp_path), ExportOptions(input_size=INPUT_SIZE),
                          images, source, latency_runs=1)
    parity = report["parity"]
    assert parity["passed"] and parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    assert parity["runtime"] == "onnxruntime" and "synthetic" in parity["source"]
    assert report["input_shape"] == ["batch", 3, *INPUT_SIZE] and report["opset"] == 17
    assert report["version"]["simplifier"].startswith("onnxslim")
    on_disk = json.loads((tmp_path / "export_report.json").read_text())
    assert on_disk["parity"]["outputs"]["features"]["max_abs_diff"] == parity["outputs"]["features"]["max_abs_diff"]

    proto = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"] and [o.name for o in proto.graph.output] == ["features"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # batch sizes never seen while tracing
        x = images[:batch]
        out = session.run(None, {"images": x.float().numpy()})[0]
        np.testing.assert_allclose(out, _eager(model, x), atol=1e-3, rtol=0)


def test_onnx_static_batch_and_dynamo_opset(tmp_path):
    model, cfg = build_eval_model("bot_r18")
    images, source = parity_batch(cfg, count=5)
    options = ExportOptions(input_size=INPUT_SIZE, dynamic_batch=False, batch_size=2, opset=18)
    report = export_model(model, "onnx", str(tmp_path), options, images, source, latency_runs=1)
    assert report["opset"] == 18 and "dynamo" in report["version"]["exporter"]
    assert report["input_shape"] == [2, 3, *INPUT_SIZE]
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, *INPUT_SIZE]
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    # 5 images through a batch-2 graph: the predictor pads the last chunk and drops the padding
    assert report["parity"]["passed"] and report["parity"]["images"] == 5


def test_onnx_rejects_dynamo_below_opset_18(tmp_path):
    from omnireid.export import ExportError

    model, _ = build_eval_model("bot_r18")
    with pytest.raises(ExportError, match="opset >= 18"):
        options = ExportOptions(input_size=INPUT_SIZE, opset=16, onnx_exporter="dynamo")
        export_model(model, "onnx", str(tmp_path), options)


def test_export_leaves_callers_model_untouched(tmp_path):
    model, _ = build_eval_model("bot_r18")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, "onnx", str(tmp_path), ExportOptions(input_size=INPUT_SIZE))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not os.path.exists(tmp_path / "model.onnx.data")  # one self-contained file


def test_reparameterisable_backbone_is_exported_in_deploy_form(tmp_path):
    model, cfg = build_eval_model("bot_r18", "MODEL.BACKBONE.NAME", "build_repvgg_backbone",
                                  "MODEL.BACKBONE.DEPTH", "A0", "MODEL.BACKBONE.FEAT_DIM", "1280")
    images, source = parity_batch(cfg, count=4)
    report = export_model(model, "onnx", str(tmp_path), ExportOptions(input_size=INPUT_SIZE), images, source,
                          latency_runs=1)
    switched = report["deploy_switched_modules"]
    assert "backbone" in switched and any(name.startswith("backbone.stage1.") for name in switched)
    assert report["parity"]["passed"]  # the fused graph computes the training-form model's features
    proto = onnx.load(str(tmp_path / "model.onnx"))
    blocks = sum(type(m).__name__ == "RepVGGBlock" for m in model.modules())
    assert sum(node.op_type == "Conv" for node in proto.graph.node) == blocks  # one 3x3 conv per block
    assert hasattr(model.backbone.stage1[0], "rbr_dense")  # the caller's model keeps its training form

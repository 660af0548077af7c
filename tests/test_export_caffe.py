"""Caffe export: files written from our caffe.proto subset, read back by an independent reader
(OpenCV's dnn module, which compiles its own copy of caffe.proto), parity, unsupported-op errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip(f"OpenCV {cv2.__version__} has no Caffe reader (needs opencv-python-headless<5)",
                allow_module_level=True)

from export_models import INPUT_SIZE, build_eval_model, parity_batch  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from omnireid.export import CaffeExportError, ExportOptions, convert_to_caffe, export_model  # noqa: E402
from omnireid.export.caffe import encode_blob  # noqa: E402
from omnireid.export.caffe.ops import _caffe_pool_size  # noqa: E402
from omnireid.inference import caffe_proto  # noqa: E402


def _layers(path) -> list:
    return list(text_format.Parse(open(path, encoding="utf-8").read(), caffe_proto.NetParameter()).layer)


@pytest.mark.parametrize("recipe", ["bot_r50_ibn", "sbs_r50_ibn_no_nl"])
def test_caffe_parity_through_opencv(recipe, tmp_path):
    model, cfg = build_eval_model(recipe)
    images, source = parity_batch(cfg, count=4)
    report = export_model(model, "caffe", str(tmp_path), ExportOptions(input_size=INPUT_SIZE),
                          images, source, latency_runs=1)
    parity = report["parity"]
    assert parity["runtime"] == "opencv-caffe"
    assert parity["passed"] and parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    layers = _layers(tmp_path / "model.prototxt")
    types = [layer.type for layer in layers]
    assert types[0] == "Input" and types[1] == "Scale"  # pixel normalisation is the first layer
    assert {"Convolution", "MVN", "Slice", "Concat", "BatchNorm", "Eltwise", "Pooling"} <= set(types)
    producer = {top: layer for layer in layers for top in layer.top}
    for layer in layers:  # BN folding: no BatchNorm consumes a convolution output
        if layer.type == "BatchNorm":
            assert producer[layer.bottom[0]].type != "Convolution", layer.name
    assert layers[-1].name == "features" and layers[-1].top == ["features"]
    if recipe.startswith("sbs"):
        assert "Power" in types  # GeM: clamp / pow / pow as Power + ReLU layers


def test_caffe_unsupported_ops_list_every_module(tmp_path):
    model, _ = build_eval_model("sbs_r50_ibn")  # SBS has non-local blocks in stages 2 and 3
    expected = [name for name, module in model.named_modules() if type(module).__name__ == "NonLocal"]
    assert len(expected) >= 2
    with pytest.raises(CaffeExportError) as info:
        export_model(model, "caffe", str(tmp_path), ExportOptions(input_size=INPUT_SIZE))
    message = str(info.value)
    for name in expected:
        assert f"{name} (omnireid.modeling.layers.non_local.NonLocal)" in message
    assert "aten.bmm" in message and not (tmp_path / "model.caffemodel").exists()


def test_caffe_unsupported_clamp_upper_bound_is_named():
    class Clipped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.Hardtanh(0.0, 6.0)

        def forward(self, x):
            return self.act(self.conv(x)).mean(dim=(2, 3))

    with pytest.raises(CaffeExportError, match=r"act \(torch\.nn\.modules\.activation\.Hardtanh\): aten\.hardtanh"):
        convert_to_caffe(Clipped().eval(), ExportOptions(input_size=(8, 8)))


def test_caffe_pool_size_matches_hand_computed():
    # Caffe rounds up, then drops a window that would start in the padding only
    assert _caffe_pool_size(32, 3, 2, 1) == 17  # ceil(31/2)+1; PyTorch (floor) gives 16
    assert _caffe_pool_size(16, 3, 2, 1) == 9
    assert _caffe_pool_size(7, 2, 2, 0) == 4  # ceil(5/2)+1
    assert _caffe_pool_size(6, 2, 2, 1) == 4  # ceil(6/2)+1 = 4; (4-1)*2=6 < 6+1 keeps it


@pytest.mark.parametrize("size", [(16, 8), (17, 9)])
def test_caffe_max_pool_floor_mode_is_cropped(size, tmp_path):
    class Pool(nn.Module):
        def forward(self, x):
            return nn.functional.max_pool2d(x, 3, 2, 1).flatten(1)

    options = ExportOptions(input_size=size)
    images = torch.randint(0, 256, (3, 3, *size), dtype=torch.uint8)
    report = export_model(Pool(), "caffe", str(tmp_path), options, images)
    assert report["parity"]["outputs"]["features"]["max_abs_diff"] == 0.0


def test_caffe_wire_format_uses_official_field_numbers():
    # Hand-encoded from BVLC caffe.proto: NetParameter.name = 1, NetParameter.layer = 100,
    # LayerParameter.type = 2, LayerParameter.convolution_param = 106, ConvolutionParameter.num_output = 1.
    net = caffe_proto.NetParameter(name="x")
    layer = net.layer.add(type="Convolution")
    layer.convolution_param.num_output = 4
    conv = b"\x08\x04"
    layer_bytes = b"\x12\x0bConvolution" + b"\xd2\x06" + bytes([len(conv)]) + conv
    assert net.SerializeToString() == b"\x0a\x01x" + b"\xa2\x06" + bytes([len(layer_bytes)]) + layer_bytes
    blob = caffe_proto.BlobProto()
    blob.shape.dim.extend([2])
    blob.data.extend([1.0])
    # BlobProto.data = 5 (packed float), BlobProto.shape = 7, BlobShape.dim = 1 (packed int64)
    assert blob.SerializeToString() == b"\x2a\x04\x00\x00\x80\x3f" + b"\x3a\x03\x0a\x01\x02"
    # the fast raw-bytes blob encoder parses back to the same message
    array = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    parsed = caffe_proto.BlobProto.FromString(encode_blob(array))
    assert list(parsed.shape.dim) == [2, 3] and np.array_equal(np.array(parsed.data, dtype=np.float32), array.ravel())


def test_caffe_channel_attention_osnet(tmp_path):
    # OSNet's channel gates multiply (N, C, H, W) by (N, C, 1, 1): Flatten + two-input Scale
    model, cfg = build_eval_model("bot_r18", "MODEL.BACKBONE.NAME", "build_osnet_backbone",
                                  "MODEL.BACKBONE.DEPTH", "x0_25", "MODEL.BACKBONE.FEAT_DIM", "128")
    images, source = parity_batch(cfg, count=4)
    report = export_model(model, "caffe", str(tmp_path), ExportOptions(input_size=INPUT_SIZE), images, source,
                          latency_runs=1)
    assert report["parity"]["passed"]
    layers = _layers(tmp_path / "model.prototxt")
    gates = [layer for layer in layers if layer.type == "Scale" and len(layer.bottom) == 2]
    assert gates and all(layer.scale_param.axis == 0 for layer in gates)

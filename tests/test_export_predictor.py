"""The prediction API: one interface for PyTorch, TorchScript, ONNX Runtime, OpenVINO and Caffe artifacts."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from export_models import INPUT_SIZE, build_eval_model, parity_batch, recipe_opts

from omnireid.export import ExportOptions, export_model
from omnireid.inference import PREDICTOR_BACKENDS, Predictor
from omnireid.modeling.weights import WeightsError, load_weights

_FORMATS = [("onnx", "model.onnx", "onnxruntime"), ("torchscript", "model.ts", "torchscript")]
if importlib.util.find_spec("openvino"):
    _FORMATS.append(("openvino", "model.xml", "openvino"))
_cv2 = importlib.util.find_spec("cv2")
if _cv2 and hasattr(__import__("cv2").dnn, "readNetFromCaffe"):
    _FORMATS.append(("caffe", "model.caffemodel", "opencv-caffe"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One ResNet-18 model exported to every available format, its checkpoint and config."""
    model, cfg = build_eval_model("bot_r18")
    root = tmp_path_factory.mktemp("artifacts")
    for format_name, _, _ in _FORMATS:
        export_model(model, format_name, str(root / format_name), ExportOptions(input_size=INPUT_SIZE))
    torch.save({"model": model.state_dict(), "iteration": 3}, root / "model.pth")
    images, _ = parity_batch(cfg, count=5)
    with torch.no_grad():
        reference = model(images.float())["features"].numpy()
    return root, images, reference


@pytest.mark.parametrize("format_name, filename, backend", _FORMATS)
def test_same_interface_and_features_on_every_backend(format_name, filename, backend, exported):
    root, images, reference = exported
    predictor = Predictor.from_artifact(str(root / format_name / filename))
    assert predictor.backend_name == backend
    assert predictor.input_size == INPUT_SIZE
    for batch in (images, images.numpy(), images.float()):  # uint8 / numpy / float inputs alike
        features = predictor(batch)
        assert isinstance(features, np.ndarray) and features.dtype == np.float32 and features.shape == reference.shape
        np.testing.assert_allclose(features, reference, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="expects 64x32"):
        predictor(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_pytorch_checkpoint_backend_uses_the_config(exported):
    root, images, reference = exported
    config_file, opts = recipe_opts("bot_r18")
    predictor = Predictor.from_artifact(str(root / "model.pth"), config_file=config_file, opts=opts, device="cpu")
    assert predictor.backend_name == "pytorch" and predictor.input_size == INPUT_SIZE
    np.testing.assert_allclose(predictor(images), reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs its config"):
        Predictor.from_artifact(str(root / "model.pth"))


def test_strict_weights_reject_a_mismatching_checkpoint(exported, tmp_path):
    root, _, _ = exported
    model, _ = build_eval_model("bot_r50_ibn")
    with pytest.raises(WeightsError, match=r"model.pth does not fit the Baseline built from the config: 215 missing "
                                           r"from the file \(.*layer1.0.bn1.IN.weight.*28 with another shape \("
                                           r"backbone.layer1.0.conv1.weight: \(64, 64, 3, 3\) in the file vs "
                                           r"\(64, 64, 1, 1\) in the model"):
        load_weights(model, str(root / "model.pth"), strict=True)
    no_classifier, _ = build_eval_model("bot_r18", "MODEL.HEADS.NUM_CLASSES", "0")
    with pytest.raises(WeightsError, match=r"1 not in the model \(heads.classifier.weight\)"):
        load_weights(no_classifier, str(root / "model.pth"), strict=True)
    config_file, opts = recipe_opts("bot_r18")
    with pytest.raises(WeightsError, match=r"config.yaml that training wrote"):  # the deployment path says what to do
        Predictor.from_artifact(str(root / "model.pth"), config_file=config_file,
                                opts=[*opts, "MODEL.HEADS.NUM_CLASSES", "0"], device="cpu")
    # nothing was copied before the error: the model keeps its own weights
    fresh, _ = build_eval_model("bot_r18", "MODEL.HEADS.NUM_CLASSES", "0")
    for key, value in fresh.state_dict().items():
        assert torch.equal(no_classifier.state_dict()[key], value), key


def test_bad_inputs_and_artifacts_are_clear_errors(exported, tmp_path):
    root, images, _ = exported
    predictor = Predictor.from_artifact(str(root / "onnx" / "model.onnx"))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        predictor(images[0])
    with pytest.raises(ValueError, match="dtype"):
        predictor(images.numpy().astype(np.int32))
    unknown = tmp_path / "model.bin2"
    unknown.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown artifact type '.bin2'"):
        Predictor.from_artifact(str(unknown))
    with pytest.raises(FileNotFoundError):
        Predictor.from_artifact(str(tmp_path / "missing.onnx"))
    assert {".pth", ".pt", ".ts", ".onnx", ".xml", ".engine", ".plan", ".prototxt"} <= set(
        PREDICTOR_BACKENDS.names(include_aliases=True))


def test_compare_features_hand_computed():
    from omnireid.export.parity import compare_features

    reference = np.array([[3.0, 4.0], [1.0, 0.0]])
    candidate = np.array([[3.0, 4.5], [0.0, 1.0]])
    metrics = compare_features(reference, candidate)
    assert metrics["max_abs_diff"] == pytest.approx(1.0)
    # row 0: (9 + 18) / (5 * sqrt(9 + 20.25)); row 1: orthogonal -> 0
    assert metrics["min_cosine"] == pytest.approx(0.0)
    assert compare_features(reference[:1], candidate[:1])["min_cosine"] == pytest.approx(27 / (5 * np.sqrt(29.25)))
    with pytest.raises(ValueError, match="shapes differ"):
        compare_features(reference, candidate[:1])

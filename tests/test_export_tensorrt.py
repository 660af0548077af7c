"""TensorRT: CPU-side parts (profiles, calibration batches and cache, argument checks) everywhere;
the full engine build + parity only on a CUDA machine with TensorRT."""
from __future__ import annotations

import importlib.util
import os
import types

import pytest
import torch

from export_models import INPUT_SIZE, build_eval_model, parity_batch

from omnireid.export import ExportError, ExportOptions, export_model
from omnireid.export.tensorrt_exporter import (CalibrationBatches, CalibrationCache, make_entropy_calibrator,
                                               profile_shapes, validate_tensorrt_options)


def test_profile_shapes_defaults_and_custom():
    options = ExportOptions(input_size=(256, 128), batch_size=8)
    assert profile_shapes(options) == ((1, 3, 256, 128), (8, 3, 256, 128), (32, 3, 256, 128))
    custom = options.replace(min_batch=2, opt_batch=16, max_batch=64)
    assert profile_shapes(custom) == ((2, 3, 256, 128), (16, 3, 256, 128), (64, 3, 256, 128))
    big_opt = options.replace(opt_batch=48)  # max defaults to at least opt
    assert profile_shapes(big_opt)[2] == (48, 3, 256, 128)
    static = options.replace(dynamic_batch=False, batch_size=4)
    assert profile_shapes(static) == ((4, 3, 256, 128),) * 3


@pytest.mark.parametrize("changes, message", [
    ({"min_batch": 4, "opt_batch": 2}, "min_batch <= opt_batch"),
    ({"opt_batch": 8, "max_batch": 4}, "opt_batch <= max_batch"),
    ({"min_batch": 0}, "1 <= min_batch"),
    ({"dynamic_batch": False, "batch_size": 4, "max_batch": 8}, "contradict"),
])
def test_profile_shapes_reject_inconsistent_batches(changes, message):
    with pytest.raises(ValueError, match=message):
        profile_shapes(ExportOptions(input_size=(64, 32)).replace(**changes))


def test_validate_int8_needs_matching_calibration_images():
    base = ExportOptions(input_size=(64, 32), int8=True, calibration_batch_size=4)
    with pytest.raises(ValueError, match="calibration images"):
        validate_tensorrt_options(base)
    with pytest.raises(ValueError, match="uint8"):
        validate_tensorrt_options(base.replace(calibration_images=torch.zeros(8, 3, 64, 32)))
    with pytest.raises(ValueError, match="model input"):
        validate_tensorrt_options(base.replace(calibration_images=torch.zeros(8, 3, 32, 32, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="fewer than one calibration batch"):
        validate_tensorrt_options(base.replace(calibration_images=torch.zeros(3, 3, 64, 32, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="workspace"):
        validate_tensorrt_options(ExportOptions(input_size=(64, 32), workspace_mb=0))
    validate_tensorrt_options(base.replace(calibration_images=torch.zeros(8, 3, 64, 32, dtype=torch.uint8)))


def test_calibration_batches_are_full_float_batches_in_order():
    images = torch.arange(10 * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).view(10, 3, 2, 2)
    batches = list(CalibrationBatches(images, batch_size=4))
    assert len(batches) == 2  # the last 2 images do not fill a batch
    for index, batch in enumerate(batches):
        assert batch.dtype == torch.float32 and batch.is_contiguous() and batch.shape == (4, 3, 2, 2)
        assert torch.equal(batch, images[index * 4:(index + 1) * 4].float())
    with pytest.raises(ValueError, match="fewer than one batch"):
        CalibrationBatches(images[:3], batch_size=4)


def test_calibration_cache_round_trip(tmp_path):
    cache = CalibrationCache(str(tmp_path / "calibration.cache"))
    assert cache.read() is None
    cache.write(b"TRT-calibration-table")
    assert cache.read() == b"TRT-calibration-table"
    assert CalibrationCache(None).read() is None


def test_entropy_calibrator_protocol_with_a_stand_in_base_class(tmp_path):
    class FakeBase:  # stands in for tensorrt.IInt8EntropyCalibrator2, whose methods TensorRT calls
        def __init__(self) -> None:
            pass

    fake_trt = types.SimpleNamespace(IInt8EntropyCalibrator2=FakeBase, __version__="10.0")
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    cache = CalibrationCache(str(tmp_path / "cache"))
    calibrator = make_entropy_calibrator(fake_trt, CalibrationBatches(images, 3), cache, device="cpu")
    assert isinstance(calibrator, FakeBase) and calibrator.get_batch_size() == 3
    pointers = [calibrator.get_batch(["images"]) for _ in range(3)]
    assert pointers[0] is not None and pointers[1] is not None and pointers[2] is None
    assert calibrator.batches_served == 2
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(memoryview(b"table"))
    assert calibrator.read_calibration_cache() == b"table"
    with pytest.raises(ExportError, match="IInt8EntropyCalibrator2"):
        make_entropy_calibrator(types.SimpleNamespace(__version__="11.0"), CalibrationBatches(images, 3), cache)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_tensorrt_export_without_cuda_is_a_clear_error(tmp_path):
    model, _ = build_eval_model("bot_r18")
    with pytest.raises(ExportError, match="CUDA GPU"):
        export_model(model, "tensorrt", str(tmp_path), ExportOptions(input_size=INPUT_SIZE))


_HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
# `make test-gpu` sets it: there a missing GPU or TensorRT is a failure, not a skip.
_GPU_REQUIRED = os.environ.get("OMNIREID_REQUIRE_GPU") == "1"


@pytest.mark.cuda
@pytest.mark.skipif(not _HAS_TENSORRT and not _GPU_REQUIRED, reason="the tensorrt package (TensorRT 10+) is not installed")
@pytest.mark.skipif(not torch.cuda.is_available() and not _GPU_REQUIRED, reason="TensorRT engines need a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_build_and_parity(precision, tmp_path):
    model, cfg = build_eval_model("bot_r50_ibn")
    images, source = parity_batch(cfg, count=8)
    options = ExportOptions(input_size=INPUT_SIZE, min_batch=1, opt_batch=4, max_batch=8, fp16=precision == "fp16",
                            int8=precision == "int8", calibration_images=images if precision == "int8" else None,
                            calibration_batch_size=4)
    report = export_model(model, "tensorrt", str(tmp_path), options, images, source, latency_runs=1)
    assert report["version"]["profile"] == {"min": [1, 3, *INPUT_SIZE], "opt": [4, 3, *INPUT_SIZE],
                                            "max": [8, 3, *INPUT_SIZE]}
    parity = report["parity"]
    assert parity["passed"]
    if precision == "fp32":  # the FP32 build clears TF32, so the FP32 tolerance applies
        assert parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    else:  # reduced precision: aligned features, not bit-level parity
        assert parity["outputs"]["features"]["min_cosine"] >= (0.999 if precision == "fp16" else 0.98)
    if precision == "int8":
        assert (tmp_path / "calibration.cache").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not _HAS_TENSORRT and not _GPU_REQUIRED, reason="the tensorrt package (TensorRT 10+) is not installed")
@pytest.mark.skipif(not torch.cuda.is_available() and not _GPU_REQUIRED, reason="TensorRT engines need a CUDA GPU")
def test_tensorrt_engine_named_outputs(tmp_path):
    from omnireid.inference import Predictor

    model, cfg = build_eval_model("bot_r18")
    images, source = parity_batch(cfg, count=4)
    options = ExportOptions(input_size=INPUT_SIZE, outputs=("logits", "features"), max_batch=4)
    report = export_model(model, "tensorrt", str(tmp_path), options, images, source, latency_runs=1)
    assert report["output_names"] == ["logits", "features"] and report["parity"]["passed"]
    assert set(report["parity"]["outputs"]) == {"logits", "features"}
    assert Predictor.from_artifact(str(tmp_path / "model.engine")).output_names == ["logits", "features"]

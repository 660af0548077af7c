"""TensorRT 10+: an engine built from the exported ONNX file, FP32 / FP16 / INT8, dynamic-batch profile.

Written against TensorRT's Python API (``tensorrt.Builder``, ``OnnxParser``, builder config with a
workspace memory-pool limit, precision flags, one optimisation profile, ``IInt8EntropyCalibrator2``
fed with image batches). TensorRT needs a CUDA GPU; it is imported only when used. The CPU-side
parts (profile shapes, calibration batches and cache, argument checks) are plain Python.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator

import torch
from torch import nn

from omnireid.inference.predictor import import_tensorrt as inference_tensorrt

from .base import (EXPORTER_REGISTRY, FP16_MIN_COSINE, INPUT_NAME, INT8_MIN_COSINE, ExportedArtifact, ExportError,
                   Exporter, ExportOptions, input_shape)
from .onnx_exporter import export_onnx

logger = logging.getLogger(__name__)

Shape = tuple[int, int, int, int]


def import_tensorrt():
    """The ``tensorrt`` module, or an ExportError saying what to install (the check lives with the runtime)."""
    try:
        return inference_tensorrt()
    except ImportError as exc:
        raise ExportError(f"{exc} (needed for TensorRT export)") from exc


def profile_shapes(options: ExportOptions) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) input shapes of the optimisation profile.

    Static batch: all three are ``batch_size``. Dynamic: ``min_batch`` (default 1) <= ``opt_batch``
    (default ``batch_size``) <= ``max_batch`` (default max(opt, 32)).
    """
    height, width = options.input_size
    if not options.dynamic_batch:
        given = {b for b in (options.min_batch, options.opt_batch, options.max_batch) if b is not None}
        if given - {options.batch_size}:
            raise ValueError(f"--static-batch fixes the batch at {options.batch_size}; "
                             f"--min/opt/max-batch {sorted(given)} contradict it")
        shape = (options.batch_size, 3, height, width)
        return shape, shape, shape
    low = options.min_batch if options.min_batch is not None else 1
    opt = options.opt_batch if options.opt_batch is not None else max(low, options.batch_size)
    high = options.max_batch if options.max_batch is not None else max(opt, 32)
    if not 1 <= low <= opt <= high:
        raise ValueError(f"the optimisation profile needs 1 <= min_batch <= opt_batch <= max_batch, "
                         f"got min={low}, opt={opt}, max={high}")
    return (low, 3, height, width), (opt, 3, height, width), (high, 3, height, width)


def validate_tensorrt_options(options: ExportOptions) -> None:
    """Argument checks that need no GPU."""
    profile_shapes(options)
    if options.workspace_mb < 1:
        raise ValueError(f"workspace_mb must be positive, got {options.workspace_mb}")
    if options.int8:
        images = options.calibration_images
        if images is None or len(images) == 0:
            raise ValueError("--int8 needs calibration images (--calib-images N > 0)")
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"calibration images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if tuple(images.shape[2:]) != tuple(options.input_size):
            raise ValueError(f"calibration images are {tuple(images.shape[2:])}, "
                             f"the model input is {options.input_size}")
        if len(images) < options.calibration_batch_size:
            raise ValueError(f"{len(images)} calibration images are fewer than one calibration batch "
                             f"({options.calibration_batch_size})")


class CalibrationBatches:
    """Full float32 batches of calibration images, in order; an incomplete last batch is dropped
    (a calibrator must always return exactly ``batch_size`` images)."""

    def __init__(self, images: torch.Tensor, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
        if len(images) < batch_size:
            raise ValueError(f"{len(images)} calibration images are fewer than one batch of {batch_size}")
        self.images = images
        self.batch_size = batch_size
        dropped = len(images) % batch_size
        if dropped:
            logger.warning("INT8 calibration: dropping the last %d image(s) (not a full batch of %d)",
                           dropped, batch_size)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in range(len(self)):
            chunk = self.images[index * self.batch_size:(index + 1) * self.batch_size]
            yield chunk.to(torch.float32).contiguous()


class CalibrationCache:
    """The calibration table file: reused when present so a rebuild skips calibration."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def read(self) -> bytes | None:
        if self.path and os.path.isfile(self.path):
            with open(self.path, "rb") as f:
                return f.read()
        return None

    def write(self, data: bytes) -> None:
        if self.path:
            from omnireid.utils.file_io import atomic_write_bytes

            atomic_write_bytes(self.path, bytes(data))


def make_entropy_calibrator(trt: Any, batches: CalibrationBatches, cache: CalibrationCache,
                            device: torch.device | str = "cuda") -> Any:
    """An ``IInt8EntropyCalibrator2`` that feeds ``batches`` from torch-owned device memory."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ExportError(f"TensorRT {getattr(trt, '__version__', '?')} has no IInt8EntropyCalibrator2 (implicit INT8 "
                          "calibration was removed); use TensorRT 10.x for --int8")

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._iterator = iter(batches)
            self._current: torch.Tensor | None = None  # keeps the device buffer alive while TensorRT reads it
            self.batches_served = 0

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = next(self._iterator)
            except StopIteration:
                return None
            self._current = batch.to(device)
            self.batches_served += 1
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

    return EntropyCalibrator()


def build_engine(onnx_path: str, engine_path: str, options: ExportOptions,
                 cache_path: str | None = None) -> dict[str, Any]:
    """Parse ``onnx_path``, build and serialize the engine to ``engine_path``; returns report facts."""
    trt = import_tensorrt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, trt_logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    precision = "FP32"
    if not options.fp16 and not options.int8 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 (on by default) would break FP32 parity on Ampere+
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "FP16"
    min_shape, opt_shape, max_shape = profile_shapes(options)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, min_shape, opt_shape, max_shape)
    config.add_optimization_profile(profile)
    calibrator = None
    if options.int8:
        if not hasattr(trt.BuilderFlag, "INT8"):
            raise ExportError(f"TensorRT {trt.__version__} has no implicit INT8 mode; use TensorRT 10.x for --int8")
        config.set_flag(trt.BuilderFlag.INT8)
        batches = CalibrationBatches(options.calibration_images, options.calibration_batch_size)
        calibrator = make_entropy_calibrator(trt, batches, CalibrationCache(cache_path))
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
        precision = "INT8" + ("+FP16" if options.fp16 else "")
    names = [network.get_output(i).name for i in range(network.num_outputs)]
    if names != list(options.outputs):
        raise ExportError(f"{onnx_path}: TensorRT sees the outputs {names}, expected {list(options.outputs)}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see the TensorRT log above)")
    from omnireid.utils.file_io import atomic_write_bytes

    atomic_write_bytes(engine_path, bytes(serialized))
    return {"tensorrt": trt.__version__, "precision": precision, "workspace_mb": options.workspace_mb,
            "profile": {"min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape)},
            "calibration_batches": getattr(calibrator, "batches_served", None)}


@EXPORTER_REGISTRY.register("tensorrt")
class TensorRtExporter(Exporter):
    name = "tensorrt"

    def export(self, model: nn.Module, options: ExportOptions, output_dir: str) -> ExportedArtifact:
        validate_tensorrt_options(options)
        if not torch.cuda.is_available():
            raise ExportError("TensorRT export needs a CUDA GPU; none is available on this machine "
                              "(export ONNX here and build the engine on the GPU machine)")
        import_tensorrt()
        onnx_path = os.path.join(output_dir, "model.onnx")
        onnx_info = export_onnx(model, onnx_path, options)
        engine_path = os.path.join(output_dir, "model.engine")
        cache_path = os.path.join(output_dir, "calibration.cache") if options.int8 else None
        info = build_engine(onnx_path, engine_path, options, cache_path)
        info["onnx"] = {"opset": onnx_info["opset"], "exporter": onnx_info["exporter"]}
        files = [engine_path, onnx_path] + ([cache_path] if cache_path and os.path.isfile(cache_path) else [])
        return ExportedArtifact(format=self.name, path=engine_path, files=files, input_shape=input_shape(options),
                                output_names=list(options.outputs), info=info)

    def parity_tolerance(self, options: ExportOptions) -> dict[str, float | None]:
        if options.int8:
            return {"relative_max_abs_diff": None, "min_cosine": INT8_MIN_COSINE}
        if options.fp16:
            return {"relative_max_abs_diff": None, "min_cosine": FP16_MIN_COSINE}
        return super().parity_tolerance(options)

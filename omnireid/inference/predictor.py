"""One prediction interface for every deployment backend, chosen from the artifact's file type.

``Predictor.from_artifact(path)`` loads a PyTorch checkpoint (``.pth``/``.pt``, with its config), a
TorchScript archive (``.ts``/``.torchscript``), an ONNX model (``.onnx``, ONNX Runtime), an OpenVINO
IR (``.xml``), a TensorRT engine (``.engine``/``.plan``) or a Caffe model (``.prototxt``/``.caffemodel``,
run by OpenCV's dnn module). ``predictor.run(images)`` maps uint8 (or float 0-255) ``(N, 3, H, W)``
RGB images to the artifact's named outputs (``{"features": (N, D), "logits": (N, C), ...}``, float32);
``predictor(images)`` is the ``features`` embedding alone. ``predictor.metadata`` is what travels with
the model (``metadata.json``: class names, attribute names, input size, ...; see :mod:`.metadata`).
Backends with a fixed batch get padded chunks transparently.
"""
from __future__ import annotations

import abc
import json
import logging
import os
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from omnireid.utils.errors import CheckpointError, ConfigError, MissingDependencyError, MissingFileError
from omnireid.utils.registry import Registry

logger = logging.getLogger(__name__)

# file suffix (".onnx", ...) -> Backend subclass
PREDICTOR_BACKENDS = Registry("predictor backend")

INPUT_NAME = "images"
OUTPUT_NAME = "features"


def register_backend(*suffixes: str):
    """Register a backend class under its file suffixes (the first is the name, others aliases)."""

    def deco(cls):
        return PREDICTOR_BACKENDS.register(suffixes[0], aliases=tuple(suffixes[1:]))(cls)

    return deco


class Backend(abc.ABC):
    """A loaded artifact. ``run`` takes a contiguous float32 batch the backend accepts."""

    name: ClassVar[str]
    input_shape: list[int | str | None]  # (batch, 3, H, W); a non-int batch is dynamic
    output_names: list[str]  # the named outputs ``run`` returns, in the artifact's order
    max_batch: int | None = None  # largest batch a dynamic backend accepts (TensorRT profile)
    metadata: dict[str, Any] | None = None  # set by backends that know it without metadata.json

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The named outputs of a float32 ``(n, 3, H, W)`` batch, each ``(n, ...)``."""

    @property
    def fixed_batch(self) -> int | None:
        batch = self.input_shape[0] if self.input_shape else None
        return batch if isinstance(batch, int) and batch > 0 else None


class Predictor:
    """``predictor.run(images) -> {name: array}``, ``predictor(images) -> features`` on any backend;
    see the module docstring."""

    def __init__(self, backend: Backend, source: str = "", metadata: dict[str, Any] | None = None) -> None:
        self.backend = backend
        self.source = source
        self.metadata: dict[str, Any] = dict(metadata or {})

    @classmethod
    def from_artifact(cls, path: str, **kwargs: Any) -> "Predictor":
        """Load ``path`` with the backend registered for its suffix; ``kwargs`` go to that backend.

        ``metadata`` comes from the backend (a checkpoint: its run's metadata plus its config's), else
        from ``metadata.json`` beside the artifact (``{}`` when there is none; a broken one is an error).
        """
        from .metadata import beside, read_metadata

        if not os.path.exists(path):
            raise MissingFileError(f"artifact not found: {path}")
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in PREDICTOR_BACKENDS:
            known = ", ".join(sorted(PREDICTOR_BACKENDS.names(include_aliases=True)))
            raise ConfigError(f"{path}: unknown artifact type {suffix!r}; known: {known}")
        backend = PREDICTOR_BACKENDS.get(suffix)(path, **kwargs)
        metadata = backend.metadata
        if metadata is None:
            sibling = beside(path)
            metadata = read_metadata(sibling) if os.path.isfile(sibling) else {}
        return cls(backend, source=path, metadata=metadata)

    @property
    def output_names(self) -> list[str]:
        return list(self.backend.output_names)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) the artifact expects, when it declares one."""
        shape = self.backend.input_shape
        if shape and isinstance(shape[2], int) and isinstance(shape[3], int):
            return int(shape[2]), int(shape[3])
        return None

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """The ``features`` embedding of ``images``, float32 ``(N, D)``."""
        if OUTPUT_NAME not in self.backend.output_names:
            raise ConfigError(f"{self.source}: the artifact has no {OUTPUT_NAME!r} output (it gives "
                              f"{self.backend.output_names}); export it with --outputs including {OUTPUT_NAME}")
        return self.run(images)[OUTPUT_NAME]

    def run(self, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Every named output of the artifact for ``images``, float32, in the artifact's order."""
        batch = _as_float_batch(images)
        expected = self.input_size
        if expected is not None and tuple(batch.shape[2:]) != expected:
            raise ValueError(f"{self.source}: images are {batch.shape[2]}x{batch.shape[3]} but the artifact "
                             f"expects {expected[0]}x{expected[1]} (resize them first)")
        if batch.shape[0] == 0:
            raise ValueError("no images to predict")
        chunk = self.backend.fixed_batch or self.backend.max_batch
        if chunk is None:
            return self._checked(self.backend.run(batch))
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, batch.shape[0], chunk):
            part = batch[start:start + chunk]
            count = part.shape[0]
            if self.backend.fixed_batch and count < chunk:  # pad a static batch with copies of the last image
                part = np.concatenate([part, np.repeat(part[-1:], chunk - count, axis=0)])
            parts.append({name: value[:count] for name, value in self.backend.run(np.ascontiguousarray(part)).items()})
        return self._checked({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})

    def _checked(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if list(outputs) != list(self.backend.output_names):
            raise RuntimeError(f"{self.source}: the backend returned {list(outputs)}, "
                               f"declared {self.backend.output_names}")
        return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in outputs.items()}


def _as_float_batch(images: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {images.shape}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"expected uint8 or float images (0-255), got dtype {images.dtype}")
    return np.ascontiguousarray(images, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# PyTorch checkpoint
# ------------------------------------------------------------------------------------------------
def model_input_size(cfg: Any) -> tuple[int, int]:
    """(H, W) the model sees at test time: ``INPUT.CROP.SIZE`` when cropping, else ``INPUT.SIZE_TEST``."""
    size = cfg.INPUT.CROP.SIZE if cfg.INPUT.CROP.ENABLED else cfg.INPUT.SIZE_TEST
    size = [int(s) for s in size]
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def build_model_from_config(config_file: str | None, opts: Sequence[str] = (), weights: str | None = None,
                            device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """Config -> the deployable model in eval mode, with ``weights`` (or ``MODEL.WEIGHTS``) loaded strictly.

    A distiller (or MoCo) checkpoint gives its student alone: teacher files are not needed.
    """
    from omnireid.config import setup_cfg
    from omnireid.modeling import build_deployable_model, build_model

    cfg = setup_cfg(config_file, list(opts))
    cfg.defrost()
    if weights:
        cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = device
    if cfg.MODEL.WEIGHTS:
        cfg.MODEL.BACKBONE.PRETRAIN = False  # every weight comes from MODEL.WEIGHTS: no pretrained file needed
        model = build_deployable_model(cfg, cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the model has its initial (untrained) weights")
        model = build_model(cfg, deploy=True)
    return model.to(device).eval(), cfg


@register_backend(".pth", ".pt")
class TorchBackend(Backend):
    """A checkpoint plus its config (``config_file``, or ``config.yaml`` next to the checkpoint)."""

    name = "pytorch"

    def __init__(self, path: str, config_file: str | None = None, opts: Sequence[str] = (),
                 device: str = "auto", outputs: Sequence[str] | None = None) -> None:
        """``outputs``: the named outputs to give (default: every output of the model's eval forward)."""
        from omnireid.utils.comm import resolve_device

        from .metadata import checkpoint_metadata, deployment_metadata

        self.device = resolve_device(device)
        if config_file is None:
            sibling = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
            if not os.path.isfile(sibling):
                raise ConfigError(f"{path}: a PyTorch checkpoint needs its config; pass config_file "
                                  f"(--config-file) or put config.yaml next to it")
            config_file = sibling
        self.model, cfg = build_model_from_config(config_file, opts, weights=path, device=str(self.device))
        self.input_shape = ["batch", 3, *model_input_size(cfg)]
        produced = self._outputs(torch.zeros(1, 3, *model_input_size(cfg), device=self.device))
        missing = [name for name in outputs or () if name not in produced]
        if missing:
            raise ConfigError(f"{path}: the model has no output {missing}; it gives {sorted(produced)}")
        self.output_names = list(outputs or produced)
        self.metadata = deployment_metadata(cfg, checkpoint_metadata(path), self.output_names)

    @torch.no_grad()
    def _outputs(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        produced = self.model(batch)
        return {OUTPUT_NAME: produced} if isinstance(produced, torch.Tensor) else produced

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        produced = self._outputs(torch.from_numpy(images).to(self.device))
        return {name: produced[name].float().cpu().numpy() for name in self.output_names}


# ------------------------------------------------------------------------------------------------
# TorchScript
# ------------------------------------------------------------------------------------------------
@register_backend(".ts", ".torchscript")
class TorchScriptBackend(Backend):
    name = "torchscript"

    def __init__(self, path: str, device: str = "cpu") -> None:
        import warnings

        from omnireid.utils.comm import resolve_device

        self.device = resolve_device(device)
        extra = {"omnireid.json": ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            self.module = torch.jit.load(path, map_location=self.device, _extra_files=extra)
        meta = json.loads(extra["omnireid.json"]) if extra["omnireid.json"] else {}
        self.input_shape = meta.get("input_shape", ["batch", 3, None, None])
        self.output_names = list(meta.get("output_names") or [meta.get("output_name", OUTPUT_NAME)])

    @torch.no_grad()
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        produced = self.module(torch.from_numpy(images).to(self.device))
        produced = (produced,) if isinstance(produced, torch.Tensor) else tuple(produced)
        return {name: value.float().cpu().numpy() for name, value in zip(self.output_names, produced)}


# ------------------------------------------------------------------------------------------------
# ONNX Runtime
# ------------------------------------------------------------------------------------------------
@register_backend(".onnx")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str, providers: Sequence[str] | None = None, intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        available = ort.get_available_providers()
        chosen = list(providers) if providers else [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                                    if p in available]
        self.session = ort.InferenceSession(path, sess_options=options, providers=chosen)
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        self.input_shape = [d if isinstance(d, int) else "batch" for d in meta.shape]
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: images})))


# ------------------------------------------------------------------------------------------------
# OpenVINO
# ------------------------------------------------------------------------------------------------
@register_backend(".xml")
class OpenVinoBackend(Backend):
    """OpenVINO runtime; ``inference_precision`` "f32" keeps full precision, None is the device default
    (bf16 on CPUs with AMX/AVX512-BF16: faster, less exact)."""

    name = "openvino"

    def __init__(self, path: str, device_name: str = "CPU", inference_precision: str | None = "f32",
                 num_threads: int = 0) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {}
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = core.compile_model(path, device_name, config)
        shape = self.compiled.inputs[0].get_partial_shape()
        self.input_shape = [d.get_length() if d.is_static else "batch" for d in shape]
        self.output_names = [output.get_any_name() for output in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        result = self.request.infer({0: images})
        return {name: np.array(result[output]) for name, output in zip(self.output_names, self.compiled.outputs)}


# ------------------------------------------------------------------------------------------------
# Caffe (read by OpenCV's dnn module)
# ------------------------------------------------------------------------------------------------
@register_backend(".prototxt", ".caffemodel")
class OpenCvCaffeBackend(Backend):
    """A ``.prototxt`` + ``.caffemodel`` pair with the same stem, run by ``cv2.dnn``.

    Caffe nets name no outputs: ``output_names`` (the blobs to read) default to the exporter's
    ``metadata.json`` beside the files, else ``["features"]``."""

    name = "opencv-caffe"

    def __init__(self, path: str, output_names: Sequence[str] | None = None) -> None:
        from .metadata import beside, read_metadata

        try:
            import cv2
        except ImportError as exc:
            raise MissingDependencyError("running Caffe models needs opencv-python-headless<5: "
                                         "pip install 'omnireid[export]'") from exc
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise MissingDependencyError(f"OpenCV {cv2.__version__} has no Caffe reader (removed in OpenCV 5); "
                                         "install opencv-python-headless<5")
        stem = os.path.splitext(path)[0]
        prototxt, caffemodel = stem + ".prototxt", stem + ".caffemodel"
        for file in (prototxt, caffemodel):
            if not os.path.isfile(file):
                raise MissingFileError(f"Caffe model file missing: {file}")
        self.net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
        if not output_names:
            sibling = beside(path)
            output_names = read_metadata(sibling).get("output_names") if os.path.isfile(sibling) else None
        self.output_names = list(output_names or [OUTPUT_NAME])
        self.input_shape = _caffe_input_shape(prototxt)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.net.setInput(images)
        produced = self.net.forward(self.output_names)
        return {name: out.reshape(out.shape[0], -1) for name, out in zip(self.output_names, produced)}


def _caffe_input_shape(prototxt: str) -> list[int | str | None]:
    from google.protobuf import text_format

    from .caffe_proto import NetParameter

    with open(prototxt, encoding="utf-8") as f:
        net = text_format.Parse(f.read(), NetParameter())
    for layer in net.layer:
        if layer.type == "Input" and layer.input_param.shape:
            dims = list(layer.input_param.shape[0].dim)
            return ["batch", *dims[1:]]  # OpenCV reshapes the net for any batch
    return ["batch", 3, None, None]


# ------------------------------------------------------------------------------------------------
# TensorRT
# ------------------------------------------------------------------------------------------------
def import_tensorrt():
    """The ``tensorrt`` module (TensorRT 10+), or an ImportError saying what to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError("TensorRT needs the tensorrt package (TensorRT 10+, CUDA GPU): "
                          "pip install 'omnireid[tensorrt]'") from exc
    major = int(tensorrt.__version__.split(".")[0])
    if major < 10:
        raise ImportError(f"TensorRT {tensorrt.__version__} is too old: omnireid uses the TensorRT 10 API")
    return tensorrt


@register_backend(".engine", ".plan")
class TensorRtBackend(Backend):
    """A serialized TensorRT 10+ engine, run on the current CUDA device with torch-owned buffers."""

    name = "tensorrt"

    def __init__(self, path: str, device: str = "cuda") -> None:
        if not torch.cuda.is_available():
            raise ConfigError(f"{path}: running a TensorRT engine needs a CUDA device; none is available")
        trt = import_tensorrt()
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise CheckpointError(f"{path}: TensorRT could not deserialize the engine (built by another version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise RuntimeError(f"{path}: expected one input and at least one output tensor, got {inputs} -> {outputs}")
        self.input_name, self.output_names = inputs[0], outputs
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self.output_dtypes = {}
        for name in outputs:
            output_type = self.engine.get_tensor_dtype(name)
            if output_type not in dtypes:
                raise RuntimeError(f"{path}: output {name!r} has unsupported type {output_type} (expected FLOAT or HALF)")
            self.output_dtypes[name] = dtypes[output_type]
        shape = list(self.engine.get_tensor_shape(self.input_name))
        self.input_shape = ["batch" if d < 0 else int(d) for d in shape]
        if shape[0] < 0:
            _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.max_batch = int(max_shape[0])

    @torch.no_grad()
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.from_numpy(images).to(self.device)
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        self.context.set_tensor_address(self.input_name, batch.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.output_dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: output.float().cpu().numpy() for name, output in outputs.items()}

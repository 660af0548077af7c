"""What every export format shares: options, the deploy-form copy of a model, the exporter registry.

An exporter turns an eval-mode model that maps float ``(N, 3, H, W)`` 0-255 images to its named
outputs (``features`` (N, D), ``logits`` (N, C), ``attributes`` (N, A), ... chosen by
``ExportOptions.outputs``) into a deployable artifact whose graph outputs carry those names. Pixel
normalisation lives inside the model, so it is inside every exported graph; callers feed raw pixels.
"""
from __future__ import annotations

import abc
import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from omnireid.utils.errors import UserError
from omnireid.utils.registry import Registry

# format name ("onnx", "torchscript", ...) -> Exporter subclass
EXPORTER_REGISTRY = Registry("export format")

INPUT_NAME = "images"
OUTPUT_NAME = "features"
FP32_RELATIVE_MAX_DIFF = 1e-3  # max |diff| <= this * max(1, max |reference|), per output
FP32_MIN_COSINE = 0.9999
FP16_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.98


class ExportError(UserError, RuntimeError):
    """The model cannot be exported to the requested format; the message says what and why."""


@dataclass(frozen=True)
class ExportOptions:
    """Format-independent export settings (each exporter reads the ones it understands).

    ``batch_size`` is the batch of a static-batch artifact and of the tracing example;
    ``min_batch``/``opt_batch``/``max_batch`` are TensorRT's optimisation profile.
    """

    input_size: tuple[int, int]  # (H, W)
    batch_size: int = 1
    dynamic_batch: bool = True
    opset: int = 17
    onnx_exporter: str = "auto"  # "auto" (legacy below opset 18, dynamo from 18), "dynamo", "legacy"
    simplify: bool = True
    fp16: bool = False
    int8: bool = False
    calibration_images: torch.Tensor | None = field(default=None, repr=False)  # uint8 (N, 3, H, W)
    calibration_batch_size: int = 8
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mb: int = 1024
    outputs: tuple[str, ...] = (OUTPUT_NAME,)  # the model's named outputs the artifact gives, in order

    def __post_init__(self) -> None:
        if not self.outputs or len(set(self.outputs)) != len(self.outputs) or not all(self.outputs):
            raise ValueError(f"outputs must be distinct non-empty names, got {list(self.outputs)}")
        height, width = self.input_size
        if height <= 0 or width <= 0:
            raise ValueError(f"input_size must be positive (H, W), got {self.input_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.onnx_exporter not in ("auto", "dynamo", "legacy"):
            raise ValueError(f"onnx_exporter must be auto, dynamo or legacy, got {self.onnx_exporter!r}")
        if self.opset < 7:
            raise ValueError(f"opset must be >= 7, got {self.opset}")

    def replace(self, **changes: Any) -> "ExportOptions":
        return dataclasses.replace(self, **changes)

    def example_input(self, batch: int | None = None) -> torch.Tensor:
        """A float 0-255 batch used to trace the model (values matter only for sanity checks)."""
        generator = torch.Generator().manual_seed(0)
        height, width = self.input_size
        size = (batch or self.batch_size, 3, height, width)
        return torch.randint(0, 256, size, generator=generator).float()


@dataclass
class ExportedArtifact:
    """The files an exporter wrote and the facts the report needs."""

    format: str
    path: str  # the file a Predictor loads
    files: list[str]
    input_shape: list[int | str]  # "batch" for a dynamic dimension
    output_names: list[str] = field(default_factory=lambda: [OUTPUT_NAME])
    input_name: str = INPUT_NAME
    info: dict[str, Any] = field(default_factory=dict)  # versions, opset, precision, ...


class Exporter(abc.ABC):
    """One export format. Subclasses register with ``@EXPORTER_REGISTRY.register("name")``."""

    name: ClassVar[str]

    @abc.abstractmethod
    def export(self, model: nn.Module, options: ExportOptions, output_dir: str) -> ExportedArtifact:
        """Write the artifact of ``model`` (eval mode, deploy form, CPU, float32) into ``output_dir``."""

    def predictor_kwargs(self, options: ExportOptions) -> dict[str, Any]:
        """Extra arguments to load the artifact for the parity check (e.g. compute precision)."""
        return {}

    def parity_tolerance(self, options: ExportOptions) -> dict[str, float | None]:
        """Pass criteria, per output: FP32 artifacts must match to max |diff| <= 1e-3 * max(1, max
        |reference|) (relative to the output's magnitude: a large un-normalised embedding accumulates
        proportionally larger float32 rounding) and cosine >= 0.9999; formats that reduce precision
        override this (only the scale-free cosine is meaningful for them)."""
        return {"relative_max_abs_diff": FP32_RELATIVE_MAX_DIFF, "min_cosine": FP32_MIN_COSINE}


def switch_to_deploy(model: nn.Module) -> list[str]:
    """Call ``switch_to_deploy()`` on every submodule that has it; returns their paths.

    Re-parameterisable blocks (RepVGG, ...) fuse their training-time branches into single
    convolutions there. Collected first, because a switch may replace children.
    """
    targets = [(name, module) for name, module in model.named_modules()
               if callable(getattr(module, "switch_to_deploy", None))]
    for _, module in targets:
        module.switch_to_deploy()
    return [name or "<root>" for name, _ in targets]


def deploy_copy(model: nn.Module, outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> tuple[nn.Module, list[str]]:
    """A CPU float32 eval-mode deep copy in deploy form that returns the named ``outputs`` as a tensor
    (one name) or a tuple; the caller's model is untouched."""
    from omnireid.modeling.outputs import NamedOutputs

    clone = NamedOutputs(copy.deepcopy(model), outputs).cpu().float().eval()
    switched = switch_to_deploy(clone.model)  # module paths as the caller's model names them
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone, switched


def check_outputs(model: nn.Module, options: ExportOptions) -> dict[str, int]:
    """Run the deploy copy once on the example input; each named output must be ``(N, D)``.
    Returns ``{name: D}``."""
    example = options.example_input(2)
    try:
        with torch.no_grad():
            out = model(example)
    except KeyError as exc:  # NamedOutputs: a requested output the model does not give
        raise ExportError(f"--outputs: {exc.args[0]}") from None
    values = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    shapes = {}
    for name, value in zip(options.outputs, values):
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.shape[0] != example.shape[0]:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ExportError(f"export needs outputs of shape (N, D); {type(model).__name__}'s {name!r} is {shape} "
                              f"for input {tuple(example.shape)}")
        shapes[name] = int(value.shape[1])
    return shapes


def input_shape(options: ExportOptions) -> list[int | str]:
    height, width = options.input_size
    return ["batch" if options.dynamic_batch else options.batch_size, 3, height, width]


def ensure_output_dir(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ExportError(f"--output {path} exists and is not a folder")
    os.makedirs(path, exist_ok=True)
    return path


def get_exporter(name: str) -> Exporter:
    return EXPORTER_REGISTRY.get(name)()  # an unknown name: UnknownNameError listing the formats


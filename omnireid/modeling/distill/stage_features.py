"""Pre-ReLU stage outputs of ResNet-style backbones, read through forward hooks (no forked backbone).

Contract a backbone must meet (the built-in ResNets do): ``backbone.stages()`` returns its stages in
order; the last block of each stage applies its final activation through a separate, not in-place
module ``out_relu`` (a forward pre-hook on it sees the pre-activation sum) and exposes
``output_norm``, the norm whose output enters that sum (its affine parameters give the overhaul
margins).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _last_blocks(backbone: nn.Module) -> list[nn.Module]:
    stages = getattr(backbone, "stages", None)
    if not callable(stages):
        raise TypeError(f"{type(backbone).__name__} has no stages(): overhaul distillation needs a ResNet-style "
                        "backbone (MODEL.BACKBONE.NAME build_resnet_backbone) on both student and teachers")
    blocks = []
    for index, stage in enumerate(stages(), start=1):
        children = list(stage.children()) if isinstance(stage, nn.Sequential) else [stage]
        block = children[-1]
        relu = getattr(block, "out_relu", None)
        if not isinstance(relu, nn.Module) or getattr(relu, "inplace", False):
            raise TypeError(f"stage {index} of {type(backbone).__name__} ends with {type(block).__name__}, which has "
                            "no separate, not in-place 'out_relu' module: its pre-ReLU output cannot be read")
        blocks.append(block)
    if not blocks:
        raise TypeError(f"{type(backbone).__name__}.stages() returned no stage")
    return blocks


def stage_channels(backbone: nn.Module) -> list[int]:
    """Channel count of each stage's output (from the norm feeding its final sum)."""
    return [int(norm.num_features) for norm in stage_output_norms(backbone)]


def stage_output_norms(backbone: nn.Module) -> list[nn.Module]:
    """The norm before the final ReLU of each stage's last block (affine BatchNorm-like)."""
    norms = []
    for index, block in enumerate(_last_blocks(backbone), start=1):
        norm = getattr(block, "output_norm", None)
        if norm is None or getattr(norm, "weight", None) is None or getattr(norm, "bias", None) is None:
            raise TypeError(f"stage {index} of {type(backbone).__name__}: {type(block).__name__} has no affine "
                            "'output_norm', so overhaul margins cannot be derived")
        norms.append(norm)
    return norms


class StageFeatureCapture:
    """Context manager recording the pre-ReLU output of every stage during the forwards it wraps::

        with StageFeatureCapture(model.backbone) as capture:
            outputs = model.forward_outputs(images, targets)
        features = capture.features  # one (N, C_i, H_i, W_i) tensor per stage

    Hooks exist only inside the ``with`` block, so inference and export never see them. The
    captured tensors keep their autograd history (student side) or none (teacher under no_grad).
    """

    def __init__(self, backbone: nn.Module) -> None:
        self._relus = [block.out_relu for block in _last_blocks(backbone)]
        self._handles: list[Any] = []
        self._captured: dict[int, torch.Tensor] = {}

    def __enter__(self) -> "StageFeatureCapture":
        self._captured = {}
        for index, relu in enumerate(self._relus):
            self._handles.append(relu.register_forward_pre_hook(self._make_hook(index)))
        return self

    def _make_hook(self, index: int):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._captured[index] = inputs[0]
        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def features(self) -> list[torch.Tensor]:
        missing = [i + 1 for i in range(len(self._relus)) if i not in self._captured]
        if missing:
            raise RuntimeError(f"stages {missing} produced no output during the captured forward")
        return [self._captured[i] for i in range(len(self._relus))]

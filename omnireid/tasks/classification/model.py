"""The image classifier: FastReID's ``Baseline`` (any registered backbone or timm model, a pooling
layer, a linear or margin classifier, label-smoothed cross-entropy) plus MixUp / CutMix.

MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) come from ``torchvision.transforms.v2``; they
mix each training batch on the model's device and turn the labels into class distributions, which
:func:`~omnireid.modeling.losses.cross_entropy.cross_entropy_loss` accepts (label smoothing applies to
each mixed label). Eval mode is the ``Baseline``'s: ``{"features", "logits"}``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torchvision.transforms import v2

from omnireid.config import ConfigError
from omnireid.modeling.meta_arch.baseline import Baseline, Batch
from omnireid.modeling.meta_arch.registry import META_ARCH_REGISTRY

if TYPE_CHECKING:
    from omnireid.config import CfgNode

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BatchMixer:
    """With probability ``prob``, MixUp or CutMix (one drawn at random when both are on) a batch;
    returns ``(images, soft labels (N, C))``. An unmixed batch gets one-hot labels."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0) -> None:
        if num_classes < 2:
            raise ConfigError(f"MixUp/CutMix need at least 2 classes, got MODEL.HEADS.NUM_CLASSES={num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1:
            raise ConfigError(f"CLASSIFICATION.MIXUP: ALPHA ({mixup_alpha}) and CUTMIX_ALPHA ({cutmix_alpha}) must be "
                              f">= 0 and PROB ({prob}) in [0, 1]")
        choices = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
                  ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
        if not choices:
            raise ConfigError("BatchMixer needs CLASSIFICATION.MIXUP.ALPHA or CUTMIX_ALPHA > 0")
        self.num_classes = num_classes
        self.prob = prob
        self.transform = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prob < 1 and float(torch.rand(())) >= self.prob:
            return images, torch.nn.functional.one_hot(targets, self.num_classes).to(images.dtype)
        return self.transform(images, targets)


@META_ARCH_REGISTRY.register()
class ImageClassifier(Baseline):
    """``Baseline`` whose training batches may be mixed (``CLASSIFICATION.MIXUP``).

    Deployed, it gives its margin-free ``logits`` (``omnireid export --outputs logits,features`` adds
    the embedding)."""

    deploy_outputs = ("logits",)

    def __init__(self, *, mixer: Mixer | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mixer = mixer

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "ImageClassifier":
        base = Baseline.from_config(cfg)
        mix = cfg.CLASSIFICATION.MIXUP
        mixer = None
        if mix.ALPHA > 0 or mix.CUTMIX_ALPHA > 0:
            if cfg.MODEL.HEADS.CLS_LAYER.lower() != "linear":
                raise ConfigError(f"CLASSIFICATION.MIXUP needs MODEL.HEADS.CLS_LAYER Linear: a margin classifier "
                                  f"({cfg.MODEL.HEADS.CLS_LAYER}) adds its margin to one true class per image")
            others = [name for name in cfg.MODEL.LOSSES.NAME if name != "CrossEntropyLoss"]
            if others:
                raise ConfigError(f"CLASSIFICATION.MIXUP trains with CrossEntropyLoss only (mixed images have mixed "
                                  f"labels); MODEL.LOSSES.NAME also has {others}")
            mixer = BatchMixer(int(cfg.MODEL.HEADS.NUM_CLASSES), float(mix.ALPHA), float(mix.CUTMIX_ALPHA),
                               float(mix.PROB))
        return cls(mixer=mixer, backbone=base.backbone, heads=base.heads, losses=list(base.loss_modules),
                   pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)

    def forward(self, batch: Batch | torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.training or self.mixer is None:
            return super().forward(batch)
        images = self.preprocess_image(batch)
        targets = self.prepare_targets(batch)
        images, soft_targets = self.mixer(images, targets)
        return self.losses(self.forward_outputs(images, targets, self.prepare_camids(batch)), soft_targets, batch)

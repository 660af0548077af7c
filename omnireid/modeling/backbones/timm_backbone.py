"""Any timm model as a backbone: ``MODEL.BACKBONE.NAME timm`` + ``MODEL.BACKBONE.VARIANT <timm model name>``.

Convolutional models are built with ``features_only`` and return their last feature map. Models
without a spatial map (vision transformers, MLP mixers, ...) return their pre-logits feature as an
``(N, C, 1, 1)`` map, so every head works. timm is an optional extra, imported only here, lazily.
``MODEL.BACKBONE.PRETRAIN`` loads a local file (``PRETRAIN_PATH``) through timm's own adapter
(which handles e.g. resized position embeddings); nothing is downloaded.
"""
from __future__ import annotations

import torch
from torch import nn

from omnireid.config.config import ConfigError

from ..weights import resolve_pretrained_path
from .backbone_utils import require_timm
from .registry import BACKBONE_REGISTRY


class TimmBackbone(nn.Module):
    """A timm model used up to its last feature map (or pre-logits feature for token models)."""

    def __init__(self, variant: str, pretrained_file: str = "", img_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        timm = require_timm()
        if not variant:
            raise ConfigError("MODEL.BACKBONE.VARIANT must name a timm model (e.g. 'resnet18', 'convnext_tiny') "
                              "when MODEL.BACKBONE.NAME is 'timm'")
        if not timm.is_model(variant):
            close = timm.list_models(f"*{variant.split('_')[0]}*")[:10]
            raise ConfigError(f"MODEL.BACKBONE.VARIANT={variant!r} is not a timm model; similar names: {close}")
        kwargs: dict = {"pretrained": bool(pretrained_file)}
        if pretrained_file:
            kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
        self.variant = variant
        try:
            self.model = _create(timm, variant, img_size, features_only=True, out_indices=(-1,), **kwargs)
            self.spatial = True
            self.out_channels = int(self.model.feature_info.channels()[-1])
        except (RuntimeError, AssertionError, TypeError, ValueError):
            # no feature-map support: use the trunk without a classifier and take pre-logits features
            self.model = _create(timm, variant, img_size, num_classes=0, **kwargs)
            self.spatial = False
            self.out_channels = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            return self.model(x)[-1]
        feature = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return feature.reshape(feature.shape[0], -1, 1, 1)


def _create(timm, variant: str, img_size: tuple[int, int] | None, **kwargs) -> nn.Module:
    """Token models fix their grid at build time: give them the input size (and let them adapt to
    other sizes when they can); convolutional models reject these arguments."""
    attempts = ([{"img_size": img_size, "dynamic_img_size": True}, {"img_size": img_size}] if img_size else []) + [{}]
    for extra in attempts[:-1]:
        try:
            return timm.create_model(variant, **kwargs, **extra)
        except TypeError:
            continue
    return timm.create_model(variant, **kwargs)


@BACKBONE_REGISTRY.register("build_timm_backbone", aliases=("timm",))
def build_timm_backbone(cfg) -> TimmBackbone:
    """``MODEL.BACKBONE.VARIANT``: the timm model name; ``PRETRAIN``/``PRETRAIN_PATH`` for local weights."""
    bb = cfg.MODEL.BACKBONE
    path = resolve_pretrained_path(bb.PRETRAIN_PATH, f"timm_{bb.VARIANT}") if bb.PRETRAIN else ""
    return TimmBackbone(bb.VARIANT, path, img_size=tuple(cfg.INPUT.SIZE_TRAIN))

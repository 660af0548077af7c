"""FastReID's EmbeddingHead: pooling -> optional 1x1 embedding conv -> optional BNNeck -> classifier."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from omnireid.modeling.layers import build_classifier, build_pooling, get_norm
from omnireid.utils.errors import ConfigError

from .registry import HEAD_REGISTRY

if TYPE_CHECKING:
    from omnireid.config import CfgNode

logger = logging.getLogger(__name__)

NECK_FEAT_CHOICES = ("before", "after")


@HEAD_REGISTRY.register()
class EmbeddingHead(nn.Module):
    """Turns a backbone feature map into a retrieval feature and (when trained) class logits.

    - ``pool_layer``: ``(N, C, h, w) -> (N, C, 1, 1)``;
    - ``bottleneck``: 1x1 conv to ``embedding_dim`` when > 0, then the BNNeck when ``with_bnneck``
      (Luo et al., "Bag of Tricks": a BN whose bias is frozen at zero, between the metric-loss
      feature and the classifier);
    - ``classifier``: a ``CLASSIFIER_REGISTRY`` layer on the neck feature (absent when
      ``num_classes`` is 0, e.g. metric-loss-only training or feature extraction).

    Eval mode returns ``{"features": neck feature (N, D)}`` (FastReID's test feature) plus, when the
    head has a classifier, ``"logits"``: the margin-free class logits ``(N, C)``. Training mode returns
    ``{"cls_outputs", "pred_class_logits", "features", "neck_features"}``; ``features`` (for
    triplet/circle/cosface) is the pooled feature when ``neck_feat == "before"`` and the neck
    feature when ``"after"``, as in FastReID >= 1.0.
    """

    def __init__(self, *, in_channels: int, num_classes: int, embedding_dim: int = 0, with_bnneck: bool = False,
                 neck_feat: str = "before", pool_layer: str = "GlobalAvgPool", cls_layer: str = "Linear",
                 scale: float = 1.0, margin: float = 0.0, norm: str = "BN") -> None:
        super().__init__()
        if neck_feat not in NECK_FEAT_CHOICES:
            raise ConfigError(f"MODEL.HEADS.NECK_FEAT must be one of {NECK_FEAT_CHOICES}, got {neck_feat!r}")
        if embedding_dim < 0 or num_classes < 0:
            raise ConfigError(f"MODEL.HEADS.EMBEDDING_DIM ({embedding_dim}) and NUM_CLASSES ({num_classes}) "
                              "must be >= 0")
        self.in_channels = in_channels
        self.neck_feat = neck_feat
        self.pool_layer = build_pooling(pool_layer)
        neck: list[nn.Module] = []
        feat_dim = in_channels
        if embedding_dim > 0:
            conv = nn.Conv2d(in_channels, embedding_dim, kernel_size=1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            neck.append(conv)
            feat_dim = embedding_dim
        if with_bnneck:
            neck.append(get_norm(norm, feat_dim, bias_freeze=True))
        self.bottleneck = nn.Sequential(*neck)
        self.feat_dim = feat_dim
        self.classifier = (build_classifier(cls_layer, feat_dim, num_classes, scale=scale, margin=margin)
                           if num_classes > 0 else None)
        self.eval_logits = self.classifier is not None  # see restrict_outputs

    @classmethod
    def from_config(cls, cfg: "CfgNode", in_channels: int | None = None) -> "EmbeddingHead":
        return cls(**cls.config_arguments(cfg, in_channels))

    @staticmethod
    def config_arguments(cfg: "CfgNode", in_channels: int | None = None) -> dict:
        """The constructor arguments ``MODEL.HEADS`` gives; heads extending this one add their own."""
        heads = cfg.MODEL.HEADS
        if in_channels is None:
            in_channels = cfg.MODEL.BACKBONE.FEAT_DIM
        elif in_channels != cfg.MODEL.BACKBONE.FEAT_DIM:
            logger.info("Backbone outputs %d channels; MODEL.BACKBONE.FEAT_DIM=%d is not used",
                        in_channels, cfg.MODEL.BACKBONE.FEAT_DIM)
        return dict(in_channels=in_channels, num_classes=heads.NUM_CLASSES, embedding_dim=heads.EMBEDDING_DIM,
                    with_bnneck=heads.WITH_BNNECK, neck_feat=heads.NECK_FEAT, pool_layer=heads.POOL_LAYER,
                    cls_layer=heads.CLS_LAYER, scale=heads.SCALE, margin=heads.MARGIN, norm=heads.NORM)

    def _pool_and_neck(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool_layer(features)
        if pooled.dim() != 4 or pooled.shape[2:] != (1, 1) or pooled.shape[1] != self.in_channels:
            raise ValueError(f"{type(self.pool_layer).__name__} produced {tuple(pooled.shape)}; the head expects "
                             f"(N, {self.in_channels}, 1, 1) (MODEL.HEADS.POOL_LAYER / backbone output mismatch)")
        neck = self.bottleneck(pooled)
        return pooled.flatten(1), neck.flatten(1)

    def compute_outputs(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All head outputs regardless of train/eval mode (distillation uses it for teachers too).

        ``cls_outputs`` carries the margin only when ``targets`` are given; both logits are absent
        when the head has no classifier.
        """
        pooled, neck = self._pool_and_neck(features)
        outputs = {"features": pooled if self.neck_feat == "before" else neck, "neck_features": neck}
        if self.classifier is not None:
            base = self.classifier.base_logits(neck)
            outputs["pred_class_logits"] = base * self.classifier.scale
            outputs["cls_outputs"] = (outputs["pred_class_logits"] if targets is None
                                      else self.classifier.apply_margin(base, targets))
        return outputs

    def restrict_outputs(self, names: tuple[str, ...]) -> None:
        """Compute eval ``logits`` only when they are asked for (an exported embedding model has no
        classifier in its graph)."""
        self.eval_logits = self.classifier is not None and "logits" in names

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eval: ``{"features", "logits" (with a classifier)}``; training: :meth:`compute_outputs`."""
        if not self.training:
            neck = self._pool_and_neck(features)[1]
            outputs = {"features": neck}
            if self.eval_logits:
                outputs["logits"] = self.classifier.base_logits(neck) * self.classifier.scale
            return outputs
        return self.compute_outputs(features, targets)

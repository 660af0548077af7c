"""FastReID's ``Baseline``: backbone -> head -> configured losses, with normalisation inside."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from omnireid.modeling.backbones import build_backbone
from omnireid.modeling.heads import build_heads
from omnireid.modeling.losses import build_losses

from .image_model import Batch, ImageModel
from .registry import META_ARCH_REGISTRY

if TYPE_CHECKING:
    from omnireid.config import CfgNode

@META_ARCH_REGISTRY.register()
class Baseline(ImageModel):
    """Single-branch reID model: ``losses(heads(backbone(normalise(images))))``.

    ``forward(batch)`` follows docs/design.md: training mode returns ``{loss_name: scalar}``
    (already weighted), eval mode returns the head's named outputs: ``{"features": (N, D)}`` (the
    retrieval embedding) plus ``"logits"`` (N, C, margin-free) when the head has a classifier. ``batch`` is a loader
    dict or a bare image tensor; images are uint8 or float on the 0-255 scale and are never
    modified in place.

    The steps are public so subclasses (e.g. a Distiller) can combine several models::

        images  = model.preprocess_image(batch)           # normalised float copy, on the model device
        targets = model.prepare_targets(batch)            # int64 labels, on the model device
        outputs = model.forward_outputs(images, targets)  # head dict, in train *and* eval mode:
                  # {"cls_outputs", "pred_class_logits", "features", "neck_features"}
        losses  = model.losses(outputs, targets)          # {"loss_cls": ..., "loss_triplet": ...}

    A distiller runs ``forward_outputs`` on the student and (under ``no_grad``) on each teacher,
    then adds its own term to ``losses(student_outputs, targets)``.
    """

    def __init__(self, *, backbone: nn.Module, heads: nn.Module, losses: Sequence[nn.Module],
                 pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        super().__init__(pixel_mean, pixel_std)
        self.backbone = backbone
        self.heads = heads
        self.loss_modules = nn.ModuleList(losses)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "Baseline":
        backbone = build_backbone(cfg)
        return cls(backbone=backbone, heads=build_heads(cfg, in_channels=backbone.out_channels),
                   losses=build_losses(cfg), pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)

    def forward_outputs(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                        camids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Head outputs for already preprocessed images, whatever the train/eval mode."""
        return self.heads.compute_outputs(self.backbone_features(images, camids), targets)

    def prepare_camids(self, batch: Batch | torch.Tensor) -> torch.Tensor | None:
        """The batch's camera ids (int64, model device) when the backbone uses them, else None."""
        if not getattr(self.backbone, "accepts_camids", False) or not isinstance(batch, dict) or "camids" not in batch:
            return None
        return torch.as_tensor(batch["camids"]).to(device=self.device, dtype=torch.long)

    def backbone_features(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """Backbones declaring ``accepts_camids = True`` (ViT side-information embedding) get the camera ids."""
        if camids is not None and getattr(self.backbone, "accepts_camids", False):
            return self.backbone(images, camids=camids)
        return self.backbone(images)

    def losses(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor | None,
               batch: Batch | None = None) -> dict[str, torch.Tensor]:
        """``{loss_name: weighted scalar}`` for every configured loss, computed in float32 even under
        autocast (distances and log-sum-exps lose too much in fp16/bf16).

        A loss is called ``loss(outputs, targets)``; one that declares ``batch_fields = ("attributes",
        "attribute_mask")`` (class attribute) is called ``loss(outputs, targets, fields)`` with those
        batch fields on the model device (how a task's labels other than ``targets`` reach its loss).
        """
        with torch.autocast(device_type=self.device.type, enabled=False):
            result = {}
            for loss in self.loss_modules:
                names = tuple(getattr(loss, "batch_fields", ()))
                if names:
                    fields = {name: self.prepare_labels(batch, name) for name in names}
                    result[loss.loss_name] = loss(outputs, targets, fields)
                elif targets is None:
                    raise KeyError(f"{type(loss).__name__} needs the batch field 'targets', which the batch lacks")
                else:
                    result[loss.loss_name] = loss(outputs, targets)
            return result

    def forward(self, batch: Batch | torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.preprocess_image(batch)
        if self.training:
            # data without identities/classes (only other label fields) trains losses declaring batch_fields
            targets = self.prepare_targets(batch) if not isinstance(batch, dict) or "targets" in batch else None
            return self.losses(self.forward_outputs(images, targets, self.prepare_camids(batch)), targets, batch)
        return self.heads(self.backbone_features(images, self.prepare_camids(batch)))

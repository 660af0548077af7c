"""The attribute losses as registered pieces, and the filler that sizes attribute models from the data.

``BinaryCrossEntropyLoss`` (FastAttr's name; ``MODEL.LOSSES.BCE``) trains the binary columns of
``attribute_logits``; ``GroupCrossEntropyLoss`` (``MODEL.LOSSES.GROUP_CE``) the categorical groups.
A group's columns never reach the BCE: each loss reads only its own columns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from omnireid.config import ConfigError
from omnireid.engine import MODEL_SHAPE_REGISTRY
from omnireid.modeling import LOSS_REGISTRY

from .losses import group_cross_entropy_loss, positive_ratios, weighted_bce_loss
from .schema import AttributeSchema

if TYPE_CHECKING:
    from omnireid.config import CfgNode
    from omnireid.data import TrainData

ATTRIBUTE_LOGITS = "attribute_logits"


def _attribute_logits(outputs: dict[str, torch.Tensor], loss: nn.Module) -> torch.Tensor:
    if ATTRIBUTE_LOGITS not in outputs:
        raise KeyError(f"{type(loss).__name__} needs head output {ATTRIBUTE_LOGITS!r}; the head returned "
                       f"{sorted(outputs)} (use MODEL.HEADS.NAME AttributeHead)")
    return outputs[ATTRIBUTE_LOGITS]


def group_slices(num_binary: int, group_sizes: Sequence[int]) -> list[slice]:
    """The columns of each group in the attribute logits (after the binary ones)."""
    slices, start = [], num_binary
    for size in group_sizes:
        slices.append(slice(start, start + int(size)))
        start += int(size)
    return slices


@LOSS_REGISTRY.register()
class BinaryCrossEntropyLoss(nn.Module):
    """Weighted BCE of the binary attributes (:func:`.losses.weighted_bce_loss`), unknown labels masked."""

    loss_name = "loss_bce"
    batch_fields = ("attributes", "attribute_mask")
    required_outputs = (ATTRIBUTE_LOGITS,)

    def __init__(self, num_binary: int, pos_ratio: Sequence[float] | None = None, reduction: str = "mean",
                 scale: float = 1.0) -> None:
        super().__init__()
        if pos_ratio is not None and len(pos_ratio) != num_binary:
            raise ConfigError(f"MODEL.LOSSES.BCE.POS_RATIO has {len(pos_ratio)} values for {num_binary} binary "
                              "attributes (it is filled from the training data; clear it to recompute)")
        self.num_binary = int(num_binary)
        self.reduction = reduction
        self.scale = float(scale)
        ratio = torch.tensor(list(pos_ratio), dtype=torch.float32) if pos_ratio is not None else torch.zeros(0)
        self.weighted = pos_ratio is not None
        self.register_buffer("pos_ratio", ratio, persistent=False)  # from the config, not the checkpoint

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "BinaryCrossEntropyLoss":
        bce = cfg.MODEL.LOSSES.BCE
        num_binary = int(cfg.MODEL.HEADS.NUM_ATTRIBUTES)
        ratio = list(bce.POS_RATIO) if bce.WEIGHT_ENABLED and num_binary else None
        return cls(num_binary, ratio, bce.REDUCTION, bce.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor | None,
                fields: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = _attribute_logits(outputs, self)
        if self.num_binary == 0:
            return logits.sum() * 0.0
        loss = weighted_bce_loss(logits[:, :self.num_binary], fields["attributes"], fields["attribute_mask"],
                                 self.pos_ratio if self.weighted else None, self.reduction)
        return loss * self.scale


@LOSS_REGISTRY.register()
class GroupCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy of each categorical group (:func:`.losses.group_cross_entropy_loss`)."""

    loss_name = "loss_attr_groups"
    batch_fields = ("attribute_groups",)
    required_outputs = (ATTRIBUTE_LOGITS,)

    def __init__(self, num_binary: int, group_sizes: Sequence[int], epsilon: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.slices = group_slices(num_binary, group_sizes)
        self.epsilon = float(epsilon)
        self.scale = float(scale)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "GroupCrossEntropyLoss":
        ce = cfg.MODEL.LOSSES.GROUP_CE
        return cls(int(cfg.MODEL.HEADS.NUM_ATTRIBUTES), list(cfg.MODEL.HEADS.ATTRIBUTE_GROUPS), ce.EPSILON, ce.SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor | None,
                fields: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = _attribute_logits(outputs, self)
        if not self.slices:
            return logits.sum() * 0.0
        return group_cross_entropy_loss(logits, fields["attribute_groups"], self.slices, self.epsilon) * self.scale


@MODEL_SHAPE_REGISTRY.register("attributes")
def fill_attribute_shape(cfg: "CfgNode", data: "TrainData") -> None:
    """Attribute head width and BCE weights from training data that describes attributes.

    ``MODEL.HEADS.NUM_ATTRIBUTES`` / ``ATTRIBUTE_GROUPS`` from the schema in the metadata;
    ``MODEL.LOSSES.BCE.POS_RATIO`` = each binary attribute's positive ratio over the known training
    labels. A schema with groups needs ``GroupCrossEntropyLoss`` (and binary attributes
    ``BinaryCrossEntropyLoss``) in ``MODEL.LOSSES.NAME``: an attribute nothing trains is an error.
    """
    if "attribute_names" not in data.metadata:
        return
    schema = AttributeSchema.from_metadata(data.metadata)
    cfg.MODEL.HEADS.NUM_ATTRIBUTES = schema.num_binary
    cfg.MODEL.HEADS.ATTRIBUTE_GROUPS = [len(g.classes) for g in schema.groups]
    if schema.num_binary:
        labels = np.stack([item["attributes"] for item in data.items])
        mask = np.stack([item["attribute_mask"] for item in data.items])
        cfg.MODEL.LOSSES.BCE.POS_RATIO = [round(float(r), 6) for r in positive_ratios(labels, mask)]
    needed = [(schema.num_binary, "BinaryCrossEntropyLoss", "binary attributes " + str(list(schema.binary)[:4])),
              (schema.num_groups, "GroupCrossEntropyLoss", "categorical groups " + str([g.name for g in schema.groups]))]
    for count, loss, what in needed:
        if count and loss not in cfg.MODEL.LOSSES.NAME:
            raise ConfigError(f"the training data has {what}... but MODEL.LOSSES.NAME {list(cfg.MODEL.LOSSES.NAME)} "
                              f"has no {loss!r}: add it, or they would not be trained")

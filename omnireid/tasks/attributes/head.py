"""The attribute head: FastReID's EmbeddingHead plus an attribute classifier on the neck feature.

With ``MODEL.HEADS.NUM_CLASSES > 0`` it also keeps the identity classifier, so one model learns
identities (CE/triplet on ``cls_outputs``/``features``) and attributes together (APR-style).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from omnireid.modeling.heads import HEAD_REGISTRY, EmbeddingHead

if TYPE_CHECKING:
    from omnireid.config import CfgNode


def attribute_probabilities(logits: torch.Tensor, num_binary: int, group_sizes: Sequence[int]) -> torch.Tensor:
    """Sigmoid of the binary columns and a softmax inside each group (the layout of :mod:`.schema`)."""
    parts = [torch.sigmoid(logits[:, :num_binary])]
    start = num_binary
    for size in group_sizes:
        parts.append(torch.softmax(logits[:, start:start + size], dim=1))
        start += size
    return torch.cat(parts, dim=1)


@HEAD_REGISTRY.register()
class AttributeHead(EmbeddingHead):
    """``EmbeddingHead`` + ``Linear(feat_dim, A + sum K, bias=False)`` (+ BatchNorm1d, FastAttr's
    "bnneck" on the logits) on the neck feature.

    Training outputs add ``attribute_logits`` (N, A + sum K); eval outputs add ``attributes``: sigmoid
    probabilities of the A binary attributes, then each group's softmax.
    """

    # deployed: the attribute probabilities (``--outputs attributes,features`` adds the embedding,
    # e.g. for a joint reID + attributes model)
    deploy_outputs = ("attributes",)

    def __init__(self, *, num_attributes: int, attribute_groups: Sequence[int] = (), attribute_bn: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        groups = [int(g) for g in attribute_groups]
        if num_attributes < 0 or any(g < 2 for g in groups):
            raise ValueError(f"MODEL.HEADS.NUM_ATTRIBUTES must be >= 0 ({num_attributes}) and every "
                             f"MODEL.HEADS.ATTRIBUTE_GROUPS size >= 2 ({groups})")
        total = num_attributes + sum(groups)
        if total == 0:
            raise ValueError("AttributeHead has no attribute to predict: MODEL.HEADS.NUM_ATTRIBUTES is 0 and "
                             "MODEL.HEADS.ATTRIBUTE_GROUPS is empty (the trainer fills them from an attribute "
                             "dataset in DATASETS.NAMES)")
        self.num_attributes = int(num_attributes)
        self.attribute_groups = tuple(groups)
        self.attribute_classifier = nn.Linear(self.feat_dim, total, bias=False)
        nn.init.normal_(self.attribute_classifier.weight, std=0.01)
        self.attribute_bn = nn.BatchNorm1d(total) if attribute_bn else nn.Identity()
        self.eval_attributes = True  # see restrict_outputs

    @classmethod
    def from_config(cls, cfg: "CfgNode", in_channels: int | None = None) -> "AttributeHead":
        heads = cfg.MODEL.HEADS
        return cls(num_attributes=int(heads.NUM_ATTRIBUTES), attribute_groups=list(heads.ATTRIBUTE_GROUPS),
                   attribute_bn=bool(heads.ATTRIBUTE_BN), **EmbeddingHead.config_arguments(cfg, in_channels))

    def attribute_logits(self, neck: torch.Tensor) -> torch.Tensor:
        return self.attribute_bn(self.attribute_classifier(neck))

    def compute_outputs(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        outputs = super().compute_outputs(features, targets)
        outputs["attribute_logits"] = self.attribute_logits(outputs["neck_features"])
        return outputs

    def restrict_outputs(self, names: tuple[str, ...]) -> None:
        """A deployed graph computes the attribute classifier only when ``attributes`` is exported."""
        super().restrict_outputs(names)
        self.eval_attributes = "attributes" in names

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.training:
            return self.compute_outputs(features, targets)
        outputs = super().forward(features)
        if not self.eval_attributes:
            return outputs
        logits = self.attribute_logits(outputs["features"])
        outputs["attributes"] = attribute_probabilities(logits, self.num_attributes, self.attribute_groups)
        return outputs

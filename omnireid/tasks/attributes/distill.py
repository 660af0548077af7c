"""Knowledge distillation for attribute models: the student learns the teacher's attribute logits."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from omnireid.modeling.meta_arch import META_ARCH_REGISTRY
from omnireid.modeling.meta_arch.distiller import Distiller

from .losses import attribute_distillation_loss
from .modeling import ATTRIBUTE_LOGITS

if TYPE_CHECKING:
    from omnireid.config import CfgNode


@META_ARCH_REGISTRY.register()
class AttributeDistiller(Distiller):
    """A ``Distiller`` whose KD term ``loss_attr_kd`` is on ``attribute_logits``
    (:func:`.losses.attribute_distillation_loss` at ``KD.TEMPERATURE``, times ``KD.LOSS_WEIGHT``,
    averaged over teachers). When student and teachers also have identity classifiers (a joint
    reID + attribute model), the Distiller's identity-logit ``loss_kd`` is added too.
    """

    def __init__(self, *, num_binary: int, group_sizes: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_binary = int(num_binary)
        self.group_sizes = tuple(int(s) for s in group_sizes)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "AttributeDistiller":
        return cls(num_binary=cfg.MODEL.HEADS.NUM_ATTRIBUTES, group_sizes=list(cfg.MODEL.HEADS.ATTRIBUTE_GROUPS),
                   **cls._arguments_from_config(cfg))

    def distillation_losses(self, student: dict[str, Any], teachers: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        for index, outputs in enumerate([student, *teachers]):
            if ATTRIBUTE_LOGITS not in outputs:
                who = "the student" if index == 0 else f"teacher {index - 1}"
                raise KeyError(f"{who} produced no {ATTRIBUTE_LOGITS!r}: attribute distillation needs "
                               "MODEL.HEADS.NAME AttributeHead on both sides")
        with torch.autocast(device_type=self.device.type, enabled=False):
            terms = [attribute_distillation_loss(student[ATTRIBUTE_LOGITS], teacher[ATTRIBUTE_LOGITS], self.num_binary,
                                                 self.group_sizes, self.temperature) for teacher in teachers]
            losses = {"loss_attr_kd": self.loss_weight * torch.stack(terms).mean()}
        if all("pred_class_logits" in outputs for outputs in [student, *teachers]):
            losses.update(super().distillation_losses(student, teachers))
        return losses

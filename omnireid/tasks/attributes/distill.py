"""Knowledge distillation for attribute models: the student learns the teacher's attribute logits."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from omnireid.config import ConfigError
from omnireid.modeling import LOSS_REGISTRY
from omnireid.modeling.meta_arch import META_ARCH_REGISTRY
from omnireid.modeling.meta_arch.distiller import Distiller, check_same_classes

from .losses import attribute_distillation_loss
from .modeling import ATTRIBUTE_LOGITS

if TYPE_CHECKING:
    from omnireid.config import CfgNode

IDENTITY_LOGITS = "cls_outputs"  # the head output identity losses (CE, focal, Partial FC) read


def trains_identities(cfg: "CfgNode") -> bool:
    """Whether a run's losses train its identity classifier (a loss reading ``cls_outputs``): an
    attribute-only run on identity-labelled data has a classifier too, but an untrained one."""
    return any(IDENTITY_LOGITS in getattr(LOSS_REGISTRY.get(name), "required_outputs", ())
               for name in cfg.MODEL.LOSSES.NAME)


@META_ARCH_REGISTRY.register()
class AttributeDistiller(Distiller):
    """A ``Distiller`` whose KD term ``loss_attr_kd`` is on ``attribute_logits``
    (:func:`.losses.attribute_distillation_loss` at ``KD.TEMPERATURE``, times ``KD.LOSS_WEIGHT``,
    averaged over teachers).

    Teachers trained on attributes alone are welcome (``MODEL.HEADS.NUM_CLASSES`` 0, e.g. PA-100K):
    they must predict the student's attributes. The Distiller's identity-logit ``loss_kd`` is added
    only when the student and every teacher *train* identities (joint reID + attribute models); an
    identity classifier no loss trained is never distilled.
    """

    def __init__(self, *, num_binary: int, group_sizes: Sequence[int], identity_kd: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_binary = int(num_binary)
        self.group_sizes = tuple(int(s) for s in group_sizes)
        self.identity_kd = bool(identity_kd)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "AttributeDistiller":
        from omnireid.config import setup_cfg

        identity_kd = trains_identities(cfg) and all(trains_identities(setup_cfg(path)) for path in cfg.KD.MODEL_CONFIG)
        return cls(num_binary=cfg.MODEL.HEADS.NUM_ATTRIBUTES, group_sizes=list(cfg.MODEL.HEADS.ATTRIBUTE_GROUPS),
                   identity_kd=identity_kd, **cls._arguments_from_config(cfg))

    @classmethod
    def check_teacher_config(cls, student_cfg: "CfgNode", teacher_cfg: "CfgNode", index: int) -> None:
        """The teacher predicts the student's attributes (same binary count, same group sizes); its
        identity classes are checked only when both train identities (identity-logit KD)."""
        where = f"KD.MODEL_CONFIG[{index}] {student_cfg.KD.MODEL_CONFIG[index]!r}"
        if teacher_cfg.MODEL.HEADS.NAME != student_cfg.MODEL.HEADS.NAME:
            raise ConfigError(f"{where}: the teacher's head is {teacher_cfg.MODEL.HEADS.NAME!r}, the student's "
                              f"{student_cfg.MODEL.HEADS.NAME!r}; attribute distillation needs attribute heads on "
                              "both sides")
        teacher_shape = (int(teacher_cfg.MODEL.HEADS.NUM_ATTRIBUTES), list(teacher_cfg.MODEL.HEADS.ATTRIBUTE_GROUPS))
        student_shape = (int(student_cfg.MODEL.HEADS.NUM_ATTRIBUTES), list(student_cfg.MODEL.HEADS.ATTRIBUTE_GROUPS))
        if teacher_shape != student_shape:
            raise ConfigError(f"{where}: the teacher predicts {teacher_shape[0]} binary attributes and groups "
                              f"{teacher_shape[1]}, the student {student_shape[0]} and {student_shape[1]}; teachers "
                              "and student must be trained on the same attributes (same DATASETS.NAMES)")
        if trains_identities(student_cfg) and trains_identities(teacher_cfg):
            check_same_classes(student_cfg, teacher_cfg, index)

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
        if self.identity_kd:
            losses.update(super().distillation_losses(student, teachers))
        return losses

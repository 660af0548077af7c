"""Knowledge distillation as meta-architectures: a ``Baseline`` student learning from frozen teachers.

``Distiller`` adds the Jensen-Shannon form of Hinton's KD on margin-free logits; ``DistillerOverhaul``
adds overhaul feature distillation (Heo et al., ICCV 2019) on the pre-ReLU stage outputs. Usage::

    omnireid train --config-file configs/Distill/kd-sbs_r101ibn-sbs_r34.yml \
        MODEL.META_ARCHITECTURE Distiller KD.MODEL_CONFIG "['logs/teacher/config.yaml']" \
        KD.MODEL_WEIGHTS "['logs/teacher/model_final.pth']"

State: teachers loaded from ``KD.MODEL_WEIGHTS`` are *not* submodules, so they are in neither
``state_dict()`` nor ``parameters()``: checkpoints hold the student (plus the overhaul connectors and
the EMA teacher, which are trained state needed for an exact resume). The student's keys are
exactly a ``Baseline``'s: a distiller declares ``deploy_from_config`` (the student ``Baseline``) and
``training_only_state`` (``connectors.``, ``ema_teacher.``), so ``build_deployable_model`` (export,
extract, ``Predictor``, ``--eval-only``, a distiller used as a teacher) builds and strictly loads the
student alone, without the teacher files.
"""
from __future__ import annotations

import logging
import os
from copy import deepcopy
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

from omnireid.modeling.backbones import build_backbone
from omnireid.modeling.distill import (StageFeatureCapture, ema_update_, feature_connector, js_divergence_kd,
                                       overhaul_margins, overhaul_stage_loss, stage_channels, stage_output_norms)
from omnireid.modeling.heads import build_heads
from omnireid.modeling.losses import build_losses
from omnireid.modeling.weights import load_weights
from omnireid.utils.errors import ConfigError, MissingFileError

from .baseline import Baseline, Batch
from .registry import META_ARCH_REGISTRY, build_model, training_only_state

if TYPE_CHECKING:
    from omnireid.config import CfgNode

logger = logging.getLogger(__name__)

# Overhaul loss normaliser: the paper's official code divides the summed partial L2 by the batch
# size and by 1000 (FastReID's FastDistill divides by 10000, i.e. KD.OVERHAUL_WEIGHT 0.1 here).
OVERHAUL_NORMALISER = 1000.0


def load_teacher(config_path: str, weights_path: str, index: int = 0,
                 check: Callable[["CfgNode", int], None] | None = None) -> nn.Module:
    """Build a teacher from a full omnireid config (typically the teacher run's ``config.yaml``) and load
    its weights strictly; it is returned frozen and in eval mode. ``check(teacher_cfg, index)`` is the
    distiller's say on whether this teacher fits its student (raises when it does not).

    The teacher is the deployable form of its architecture (``build_model(cfg, deploy=True)``), so a
    teacher that was itself trained as a distiller is its student, its own teachers not needed.
    """
    from omnireid.config import setup_cfg

    for key, path in (("KD.MODEL_CONFIG", config_path), ("KD.MODEL_WEIGHTS", weights_path)):
        if not os.path.isfile(path):
            raise MissingFileError(f"{key}[{index}]: file {path!r} does not exist")
    cfg = setup_cfg(config_path)
    if check is not None:
        check(cfg, index)
    cfg.MODEL.BACKBONE.PRETRAIN = False  # the checkpoint overwrites every weight; no download/lookup
    cfg.MODEL.DEVICE = "cpu"  # the distiller moves its teachers with the student
    teacher = build_model(cfg, deploy=True)
    if not callable(getattr(teacher, "forward_outputs", None)):
        raise TypeError(f"KD.MODEL_CONFIG[{index}]: meta-architecture {cfg.MODEL.META_ARCHITECTURE!r} has no "
                        "forward_outputs(images, targets); a teacher must be a Baseline-like model")
    load_weights(teacher, weights_path, strict=True, ignore_prefixes=training_only_state(cfg),
                 hint=f"KD.MODEL_CONFIG[{index}] {config_path!r} and KD.MODEL_WEIGHTS[{index}] do not belong together")
    for param in teacher.parameters():
        param.requires_grad_(False)
    logger.info("Loaded teacher %d (%s) from %s", index, cfg.MODEL.META_ARCHITECTURE, weights_path)
    return teacher.eval()


def check_same_classes(student_cfg: "CfgNode", teacher_cfg: "CfgNode", index: int) -> None:
    """A teacher distilled on identity logits has a classifier over the student's identities."""
    teacher_classes = int(teacher_cfg.MODEL.HEADS.NUM_CLASSES)
    num_classes = int(student_cfg.MODEL.HEADS.NUM_CLASSES)
    where = f"KD.MODEL_CONFIG[{index}] {student_cfg.KD.MODEL_CONFIG[index]!r}"
    if teacher_classes <= 0:
        raise ConfigError(f"{where} has MODEL.HEADS.NUM_CLASSES {teacher_classes}: use the teacher run's dumped "
                         "config.yaml, which records it")
    if num_classes > 0 and teacher_classes != num_classes:
        raise ConfigError(f"{where}: the teacher has {teacher_classes} classes but the student's training data has "
                         f"{num_classes}; teachers and student must be trained on the same identities "
                         "(same DATASETS.NAMES)")


@META_ARCH_REGISTRY.register()
class Distiller(Baseline):
    """Student ``Baseline`` + frozen teachers; adds ``loss_kd`` to the student's own losses.

    ``loss_kd = KD.LOSS_WEIGHT * mean_teachers js_divergence_kd(student, teacher, KD.TEMPERATURE)`` on
    ``pred_class_logits`` (margin-free, so ArcSoftmax/CircleSoftmax margins never leak into the soft
    labels). Teachers stay in eval mode whatever ``train()`` is called with: their BatchNorm uses
    running statistics and is never updated. With ``KD.EMA.ENABLED`` an exponential moving average
    of the student joins the teachers (self-distillation; it can be the only teacher).
    """

    def __init__(self, *, backbone: nn.Module, heads: nn.Module, losses: Sequence[nn.Module],
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], teachers: Sequence[nn.Module],
                 temperature: float, loss_weight: float, ema_momentum: float | None = None) -> None:
        super().__init__(backbone=backbone, heads=heads, losses=losses, pixel_mean=pixel_mean, pixel_std=pixel_std)
        if not teachers and ema_momentum is None:
            raise ConfigError("Distiller needs a teacher: set KD.MODEL_CONFIG and KD.MODEL_WEIGHTS, or KD.EMA.ENABLED")
        if temperature <= 0:
            raise ConfigError(f"KD.TEMPERATURE must be positive, got {temperature}")
        # A plain list, not a ModuleList: loaded teachers stay out of state_dict(), parameters() and
        # DistributedDataParallel; _apply() below still moves them with the student.
        self._loaded_teachers: list[nn.Module] = [t.eval() for t in teachers]
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.ema_momentum = ema_momentum
        if ema_momentum is not None:
            self.ema_teacher = Baseline(backbone=deepcopy(backbone), heads=deepcopy(heads), losses=[],
                                        pixel_mean=pixel_mean, pixel_std=pixel_std).eval()
            for param in self.ema_teacher.parameters():
                param.requires_grad_(False)

    # What deployment builds and loads (see build_model(cfg, deploy=True)): the student alone.
    training_only_state = ("connectors.", "ema_teacher.")

    @classmethod
    def deploy_from_config(cls, cfg: "CfgNode") -> Baseline:
        return Baseline.from_config(cfg)

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "Distiller":
        return cls(**cls._arguments_from_config(cfg))

    @classmethod
    def _arguments_from_config(cls, cfg: "CfgNode") -> dict[str, Any]:
        configs, weights = list(cfg.KD.MODEL_CONFIG), list(cfg.KD.MODEL_WEIGHTS)
        if len(configs) != len(weights):
            raise ConfigError(f"KD.MODEL_CONFIG has {len(configs)} entries but KD.MODEL_WEIGHTS has {len(weights)}; "
                              "give one weights file per teacher config")
        backbone = build_backbone(cfg)
        heads = build_heads(cfg, in_channels=backbone.out_channels)
        # The student is built first and the teachers' (overwritten) random init draws from a forked
        # RNG: the student starts, and the data pipeline runs, exactly as in a run without teachers.
        with torch.random.fork_rng(devices=[]):
            teachers = [load_teacher(c, w, i, check=partial(cls.check_teacher_config, cfg))
                        for i, (c, w) in enumerate(zip(configs, weights))]
        return dict(backbone=backbone, heads=heads, losses=build_losses(cfg), pixel_mean=cfg.MODEL.PIXEL_MEAN,
                    pixel_std=cfg.MODEL.PIXEL_STD, teachers=teachers, temperature=cfg.KD.TEMPERATURE,
                    loss_weight=cfg.KD.LOSS_WEIGHT, ema_momentum=float(cfg.KD.EMA.MOMENTUM) if cfg.KD.EMA.ENABLED else None)

    @classmethod
    def check_teacher_config(cls, student_cfg: "CfgNode", teacher_cfg: "CfgNode", index: int) -> None:
        """Raise when teacher ``index`` cannot teach this student; the seam a distiller of other
        outputs (attribute logits, ...) overrides. Identity-logit KD needs the same classes."""
        check_same_classes(student_cfg, teacher_cfg, index)

    # ----------------------------------------------------------------------------------------
    @property
    def teachers(self) -> list[nn.Module]:
        """Loaded teachers, then the EMA self-teacher when enabled."""
        ema = [self.ema_teacher] if self.ema_momentum is not None else []
        return [*self._loaded_teachers, *ema]

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        for teacher in self.teachers:
            teacher.eval()
        return self

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        super()._apply(fn, recurse)
        for teacher in self._loaded_teachers:
            teacher._apply(fn, recurse)
        return self

    @torch.no_grad()
    def update_ema_teacher(self, momentum: float) -> None:
        """Average the student's backbone and head into the EMA teacher (``momentum=0`` copies)."""
        if self.ema_momentum is None:
            raise RuntimeError("KD.EMA.ENABLED is False: this distiller has no EMA teacher")
        ema_update_(self.ema_teacher.backbone, self.backbone, momentum)
        ema_update_(self.ema_teacher.heads, self.heads, momentum)

    # Training callbacks (called by the engine's ModelCallbacks hook; the model never imports the engine).
    def on_train_start(self, start_iter: int) -> None:
        """From scratch, the EMA teacher starts as a copy of the student (after ``MODEL.WEIGHTS`` was
        loaded); on resume its average comes back from the checkpoint, so nothing is copied."""
        if self.ema_momentum is not None and start_iter == 0:
            self.update_ema_teacher(momentum=0.0)

    def on_step_end(self, iteration: int) -> None:
        """Average the student into the EMA teacher after every optimizer step."""
        if self.ema_momentum is not None:
            self.update_ema_teacher(self.ema_momentum)

    # ----------------------------------------------------------------------------------------
    def student_outputs(self, images: torch.Tensor, targets: torch.Tensor | None,
                        camids: torch.Tensor | None) -> dict[str, Any]:
        return self.forward_outputs(images, targets, camids)

    def teacher_outputs(self, teacher: nn.Module, batch: Batch, targets: torch.Tensor | None) -> dict[str, Any]:
        """A teacher's head outputs on the batch, with its own pixel normalisation, without gradients."""
        with torch.no_grad():
            images = teacher.preprocess_image(batch)
            return teacher.forward_outputs(images, targets, teacher.prepare_camids(batch))

    def distillation_losses(self, student: dict[str, Any], teachers: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``{"loss_kd": ...}``: JS-divergence KD averaged over teachers, times ``KD.LOSS_WEIGHT``."""
        for index, outputs in enumerate([student, *teachers]):
            if "pred_class_logits" not in outputs:
                who = "the student" if index == 0 else f"teacher {index - 1}"
                raise KeyError(f"{who} produced no 'pred_class_logits': logit distillation needs a classifier "
                               "head (MODEL.HEADS.NUM_CLASSES > 0)")
        with torch.autocast(device_type=self.device.type, enabled=False):
            terms = [js_divergence_kd(student["pred_class_logits"], teacher["pred_class_logits"], self.temperature)
                     for teacher in teachers]
            return {"loss_kd": self.loss_weight * torch.stack(terms).mean()}

    def forward(self, batch: Batch | torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.training:
            return super().forward(batch)  # the student alone
        if not isinstance(batch, dict):
            raise TypeError("training a Distiller needs a batch dict with 'images' and 'targets'")
        images = self.preprocess_image(batch)
        # data without identities (attributes only) has no targets: losses read their own batch fields
        targets = self.prepare_targets(batch) if "targets" in batch else None
        student = self.student_outputs(images, targets, self.prepare_camids(batch))
        teachers = [self.teacher_outputs(teacher, batch, targets) for teacher in self.teachers]
        losses = self.losses(student, targets, batch)
        losses.update(self.distillation_losses(student, teachers))
        return losses


@META_ARCH_REGISTRY.register()
class DistillerOverhaul(Distiller):
    """``Distiller`` + overhaul feature distillation, key ``loss_overhaul``.

    For each teacher and stage ``i``: student pre-ReLU stage output -> connector (1x1 conv + BN to
    the teacher's width) -> partial L2 to ``max(teacher pre-ReLU, margin_i)``, margins from the
    teacher's BN before that ReLU. Stages are weighted by ``KD.STAGE_WEIGHTS``, the sum is divided
    by batch size and ``OVERHAUL_NORMALISER``, averaged over teachers and scaled by
    ``KD.OVERHAUL_WEIGHT``. Needs ResNet-style backbones (see ``modeling.distill.stage_features``).
    """

    def __init__(self, *, overhaul_weight: float, stage_weights: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        student_channels = stage_channels(self.backbone)
        if len(stage_weights) != len(student_channels):
            raise ConfigError(f"KD.STAGE_WEIGHTS has {len(stage_weights)} values but the student backbone has "
                              f"{len(student_channels)} stages")
        with torch.random.fork_rng(devices=[]):  # connector init leaves the global RNG stream as it was
            self.connectors = nn.ModuleList(self._connectors_to(teacher, index, student_channels)
                                            for index, teacher in enumerate(self.teachers))
        self.overhaul_weight = float(overhaul_weight)
        self.stage_weights = tuple(float(w) for w in stage_weights)

    @staticmethod
    def _connectors_to(teacher: nn.Module, index: int, student_channels: list[int]) -> nn.ModuleList:
        """One 1x1 conv + BN per stage, from the student's width to this teacher's."""
        backbone = getattr(teacher, "backbone", None)
        if backbone is None:
            raise TypeError(f"teacher {index} ({type(teacher).__name__}) has no 'backbone' to read stages from")
        teacher_channels = stage_channels(backbone)
        if len(teacher_channels) != len(student_channels):
            raise ValueError(f"teacher {index} has {len(teacher_channels)} stages, the student "
                             f"{len(student_channels)}: overhaul distillation pairs stages one to one")
        return nn.ModuleList(feature_connector(s, t) for s, t in zip(student_channels, teacher_channels))

    @classmethod
    def from_config(cls, cfg: "CfgNode") -> "DistillerOverhaul":
        return cls(overhaul_weight=cfg.KD.OVERHAUL_WEIGHT, stage_weights=list(cfg.KD.STAGE_WEIGHTS),
                   **cls._arguments_from_config(cfg))

    def student_outputs(self, images: torch.Tensor, targets: torch.Tensor | None,
                        camids: torch.Tensor | None) -> dict[str, Any]:
        with StageFeatureCapture(self.backbone) as capture:
            outputs = self.forward_outputs(images, targets, camids)
        return {**outputs, "stage_features": capture.features}

    def teacher_outputs(self, teacher: nn.Module, batch: Batch, targets: torch.Tensor | None) -> dict[str, Any]:
        with StageFeatureCapture(teacher.backbone) as capture:
            outputs = super().teacher_outputs(teacher, batch, targets)
        margins = [overhaul_margins(norm.weight, norm.bias) for norm in stage_output_norms(teacher.backbone)]
        return {**outputs, "stage_features": capture.features, "margins": margins}

    def distillation_losses(self, student: dict[str, Any], teachers: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        losses = super().distillation_losses(student, teachers)
        batch_size = student["pred_class_logits"].shape[0]
        per_teacher = []
        for connectors, teacher in zip(self.connectors, teachers):
            total = sum(weight * overhaul_stage_loss(connector(s_feat), t_feat, margins)
                        for weight, connector, s_feat, t_feat, margins in zip(
                            self.stage_weights, connectors, student["stage_features"],
                            teacher["stage_features"], teacher["margins"]))
            per_teacher.append(total / (batch_size * OVERHAUL_NORMALISER))
        losses["loss_overhaul"] = self.overhaul_weight * torch.stack(per_teacher).mean()
        return losses

"""The evaluator of the ``classification`` test protocol: top-k accuracy, per-class accuracy and the
confusion matrix (CSV + PNG in the output folder), from the model's margin-free ``logits``."""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch

from omnireid.evaluation import EVALUATOR_REGISTRY, SampleEvaluator, register_protocol
from omnireid.evaluation.classification import (
    DEFAULT_TOPK, ClassificationAccumulator, confusion_csv, confusion_png, per_class_csv, true_class_rank,
)
from omnireid.evaluation.headline import register_headline_metric
from omnireid.utils import comm
from omnireid.utils.file_io import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)


@EVALUATOR_REGISTRY.register()
@register_protocol("classification")
class ClassificationEvaluator(SampleEvaluator):
    """Reports ``Top-k`` (``CLASSIFICATION.TOPK``) and ``MeanClassAcc`` in percent; writes
    ``<test set>_confusion.csv``, ``<test set>_confusion.png`` and ``<test set>_per_class.csv``."""

    def __init__(self, class_names: Sequence[str], topk: Sequence[int] = DEFAULT_TOPK, name: str = "test",
                 output_dir: str | None = None) -> None:
        if not class_names:
            raise ValueError("the classification test set names no class (meta 'class_names')")
        self.class_names = list(class_names)
        self.topk = tuple(topk)
        self.name = name
        self.output_dir = output_dir
        super().__init__()

    @classmethod
    def from_config(cls, cfg: Any, test_set: Any, output_dir: str | None = None) -> "ClassificationEvaluator":
        names = list(test_set.meta.get("class_names", []))
        model_classes = int(cfg.MODEL.HEADS.NUM_CLASSES)
        if model_classes and names and len(names) != model_classes:
            raise ValueError(f"{test_set.name}: the test set has {len(names)} classes but the model "
                             f"{model_classes} (MODEL.HEADS.NUM_CLASSES); they must be the training classes")
        return cls(names, tuple(cfg.CLASSIFICATION.TOPK), test_set.name, output_dir)

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "logits" not in outputs:
            raise KeyError(f"the classification evaluator needs the model's 'logits' output; the model gives "
                           f"{sorted(outputs)}")
        logits = outputs["logits"].float()
        targets = torch.as_tensor(batch["targets"]).long().reshape(-1).to(logits.device)
        if logits.dim() != 2 or logits.shape[1] != len(self.class_names):
            raise ValueError(f"logits must be (N, {len(self.class_names)}) for the test set's classes, got "
                             f"{tuple(logits.shape)}")
        # two integers per sample instead of all C scores
        return {"ranks": true_class_rank(logits, targets), "predicted": torch.argmax(logits, dim=1),
                "targets": targets}

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        acc = ClassificationAccumulator(len(self.class_names), self.topk)
        acc.add_ranks(data["ranks"], data["predicted"], data["targets"])
        metrics = acc.result()
        if self.output_dir and comm.is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
            base = os.path.join(self.output_dir, self.name)
            atomic_write_text(f"{base}_confusion.csv", confusion_csv(metrics.confusion, self.class_names))
            atomic_write_bytes(f"{base}_confusion.png", confusion_png(metrics.confusion, self.class_names))
            atomic_write_text(f"{base}_per_class.csv", per_class_csv(metrics, self.class_names))
            logger.info("%s: confusion matrix and per-class accuracy written to %s_{confusion.csv,confusion.png,"
                        "per_class.csv}", self.name, base)
        return metrics.summary()


@register_headline_metric("classification", name="Top-1")
def _classification_headline(metrics: dict[str, float]) -> float:
    return metrics["Top-1"]

"""The classification task's config keys (added to every config by ``register_config``)."""
from __future__ import annotations

from omnireid.config import CfgNode as CN
from omnireid.config import register_config


@register_config("CLASSIFICATION")
def add_classification_config(cfg: CN) -> None:
    cfg.CLASSIFICATION = CN()
    cfg.CLASSIFICATION.TOPK = [1, 5]  # top-k accuracies reported by the evaluator
    # ImageFolder: <ROOT>/<TRAIN>/<class>/*.jpg and <ROOT>/<TEST>/<class>/*.jpg; ROOT absolute or under DATASETS.ROOT
    cfg.CLASSIFICATION.FOLDER = CN({"ROOT": "", "TRAIN": "train", "TEST": "val"})
    # ClassificationCSV: 'path,label' lists; CLASSES: optional file of class names, one per line, in order
    cfg.CLASSIFICATION.CSV = CN({"TRAIN": "", "TEST": "", "CLASSES": ""})
    # MixUp / CutMix (torchvision.transforms.v2) on training batches; alpha 0 disables each
    cfg.CLASSIFICATION.MIXUP = CN({"ALPHA": 0.0, "CUTMIX_ALPHA": 0.0, "PROB": 1.0})

"""A toy task living entirely outside the omnireid packages, loaded with ``omnireid --plugin``.

The task: say whether an image is dark or bright. Nothing of it is in the core; it registers:

- a config section ``TOY`` (``register_config``);
- a dataset ``ToyBrightness`` whose items carry a new label field ``brightness`` (0 dark, 1 bright)
  and whose test set has a new protocol ``toy_brightness``; it names the levels in its metadata;
- a model-shape filler writing the number of levels into ``TOY.NUM_LEVELS`` (``MODEL_SHAPE_REGISTRY``);
- a head ``ToyBrightnessHead`` whose eval outputs add ``brightness`` logits to ``features``;
- a loss ``ToyBrightnessLoss`` reading the ``brightness`` field of the batch (``batch_fields``);
- an evaluator ``ToyBrightnessEvaluator``, the default one of protocol ``toy_brightness``.

Data layout (the test writes it): ``<root>/toy_brightness/{train,test}.csv`` with rows
``path,brightness``. Only the ``omnireid`` subprocesses import this module, so the test process's
registries stay as the core defines them.
"""
from __future__ import annotations

import csv
import os

import torch
import torch.nn.functional as F
from torch import nn

from omnireid.config import CfgNode, register_config
from omnireid.data import DATASET_REGISTRY, ImageSetDataset, TestSet
from omnireid.data.datasets import datasets_root
from omnireid.engine import MODEL_SHAPE_REGISTRY
from omnireid.evaluation import EVALUATOR_REGISTRY, SampleEvaluator, register_protocol
from omnireid.modeling import HEAD_REGISTRY, LOSS_REGISTRY

LEVELS = ["dark", "bright"]
FOLDER = "toy_brightness"


@register_config("TOY")
def add_toy_config(cfg: CfgNode) -> None:
    cfg.TOY = CfgNode({"NUM_LEVELS": 0, "LOSS_SCALE": 1.0})


def _read(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{"img_path": row["path"], "brightness": int(row["brightness"])} for row in csv.DictReader(f)]


@DATASET_REGISTRY.register()
class ToyBrightness(ImageSetDataset):
    fields = ("brightness",)
    test_protocol = "toy_brightness"

    def __init__(self, root: str) -> None:
        folder = os.path.join(root, FOLDER)
        super().__init__(_read(os.path.join(folder, "train.csv")))
        self.test = _read(os.path.join(folder, "test.csv"))

    @classmethod
    def from_config(cls, cfg) -> "ToyBrightness":
        return cls(datasets_root(cfg))

    def test_sets(self) -> list[TestSet]:
        return [TestSet(self.name, self.test_protocol, self.test, {"level_names": LEVELS})]

    def metadata(self) -> dict:
        return {"level_names": LEVELS}


@MODEL_SHAPE_REGISTRY.register("toy_num_levels")
def fill_num_levels(cfg: CfgNode, data) -> None:
    if "level_names" in data.metadata:
        cfg.TOY.NUM_LEVELS = len(data.metadata["level_names"])


@HEAD_REGISTRY.register()
class ToyBrightnessHead(nn.Module):
    """Global average pooling -> features; a linear layer -> brightness logits."""

    def __init__(self, in_channels: int, num_levels: int) -> None:
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"TOY.NUM_LEVELS must be >= 2 (filled from the training data), got {num_levels}")
        self.classifier = nn.Linear(in_channels, num_levels)

    @classmethod
    def from_config(cls, cfg, in_channels: int | None = None) -> "ToyBrightnessHead":
        return cls(in_channels or cfg.MODEL.BACKBONE.FEAT_DIM, cfg.TOY.NUM_LEVELS)

    def compute_outputs(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        pooled = features.mean(dim=(2, 3))
        return {"features": pooled, "brightness": self.classifier(pooled)}

    def forward(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.compute_outputs(features, targets)


@LOSS_REGISTRY.register()
class ToyBrightnessLoss(nn.Module):
    loss_name = "loss_brightness"
    batch_fields = ("brightness",)

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    @classmethod
    def from_config(cls, cfg) -> "ToyBrightnessLoss":
        return cls(cfg.TOY.LOSS_SCALE)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor | None,
                fields: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs["brightness"], fields["brightness"]) * self.scale


@EVALUATOR_REGISTRY.register()
@register_protocol("toy_brightness")
class ToyBrightnessEvaluator(SampleEvaluator):
    """Accuracy (%) of the argmax of the ``brightness`` output against the ``brightness`` field."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items
        super().__init__()

    @classmethod
    def from_config(cls, cfg, test_set: TestSet, output_dir: str | None = None) -> "ToyBrightnessEvaluator":
        return cls(len(test_set.items))

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"predicted": outputs["brightness"].argmax(dim=1), "truth": batch["brightness"]}

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        if len(data["truth"]) != self.num_items:
            raise ValueError(f"evaluated {len(data['truth'])} of {self.num_items} items")
        return {"Accuracy": 100.0 * (data["predicted"] == data["truth"]).double().mean().item()}

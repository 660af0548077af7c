"""``omnireid demo --task classification``: synthetic people classed by clothing colour."""
from __future__ import annotations

import os

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, write_once

from .synthetic import write_synthetic_classification


def prepare_classification_demo(root: str, seed: int) -> str:
    """The synthetic image-folder tree (read by the ``ImageFolder`` dataset)."""
    return write_once(os.path.join(root, "synthetic_colours"),
                      lambda folder: write_synthetic_classification(folder, seed=seed))


DEMO_REGISTRY.register("classification")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_classification_R18.yml", prepare_data=prepare_classification_demo,
    description="image classification (ResNet-18, label-smoothed CE + MixUp/CutMix) of clothing colour"))

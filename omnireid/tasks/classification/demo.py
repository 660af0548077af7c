"""``omnireid demo --task classification``: synthetic people classed by clothing colour."""
from __future__ import annotations

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, synthetic_data

from .synthetic import write_synthetic_classification


DEMO_REGISTRY.register("classification")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_classification_R18.yml",
    prepare_data=synthetic_data("synthetic_colours", write_synthetic_classification),
    description="image classification (ResNet-18, label-smoothed CE + MixUp/CutMix) of clothing colour"))

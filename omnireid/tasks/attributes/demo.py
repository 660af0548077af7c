"""``omnireid demo --task attributes``: the generic demo runner on the synthetic people's attributes."""
from __future__ import annotations

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, prepare_reid_demo

# The synthetic reID data already carries attributes.csv: the same folder serves both demos.
DEMO_REGISTRY.register("attributes")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_attributes_R18.yml", prepare_data=prepare_reid_demo,
    description="pedestrian attributes (FastAttr recipe, ResNet-18): 6 binary attributes and 6 categorical "
                "groups of the synthetic people"))

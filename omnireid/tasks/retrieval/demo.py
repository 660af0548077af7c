"""``omnireid demo --task retrieval``: synthetic people as product classes, in the SOP layout."""
from __future__ import annotations

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, synthetic_data

from .synthetic import write_synthetic_retrieval


DEMO_REGISTRY.register("retrieval")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_retrieval_R18.yml",
    prepare_data=synthetic_data("Stanford_Online_Products", write_synthetic_retrieval),
    description="fine-grained retrieval (ResNet-18, CE + triplet) on synthetic classes in the SOP layout"))

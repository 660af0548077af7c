"""``omnireid demo --task retrieval``: synthetic people as product classes, in the SOP layout."""
from __future__ import annotations

import os

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, write_once

from .synthetic import write_synthetic_retrieval


def prepare_retrieval_demo(root: str, seed: int) -> str:
    """The synthetic retrieval set in the Stanford Online Products layout (read by the ``SOP`` loader)."""
    return write_once(os.path.join(root, "Stanford_Online_Products"),
                      lambda folder: write_synthetic_retrieval(folder, seed=seed))


DEMO_REGISTRY.register("retrieval")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_retrieval_R18.yml", prepare_data=prepare_retrieval_demo,
    description="fine-grained retrieval (ResNet-18, CE + triplet) on synthetic classes in the SOP layout"))

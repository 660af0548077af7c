"""``omnireid demo --task face``: ArcFace on the built-in synthetic faces (RecordIO training set, .bin pairs)."""
from __future__ import annotations

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, synthetic_data

from .synthetic import write_synthetic_faces

DEMO_DATA_DIR = "synthetic_faces"  # FACE.DATA_DIR of configs/Face/demo_synthetic.yml


DEMO_REGISTRY.register("face")(DemoSpec(
    config_file=CONFIGS_DIR / "Face" / "demo_synthetic.yml", prepare_data=synthetic_data(
        DEMO_DATA_DIR, write_synthetic_faces, num_train_ids=120, images_per_id=16, num_test_ids=120, num_pairs=600),
    description="face recognition (iResNet-18/4 + ArcFace, Partial FC) on synthetic faces; 10-fold verification"))

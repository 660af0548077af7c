"""``omnireid demo --task face``: ArcFace on the built-in synthetic faces (RecordIO training set, .bin pairs)."""
from __future__ import annotations

import os

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, write_once

from .synthetic import write_synthetic_faces

DEMO_DATA_DIR = "synthetic_faces"  # FACE.DATA_DIR of configs/Face/demo_synthetic.yml


def prepare_face_demo(root: str, seed: int) -> str:
    """120 training identities x 16 images and two 600-pair verification sets of 120 other identities."""
    return write_once(os.path.join(root, DEMO_DATA_DIR),
                      lambda folder: write_synthetic_faces(folder, seed=seed, num_train_ids=120, images_per_id=16,
                                                           num_test_ids=120, num_pairs=600))


DEMO_REGISTRY.register("face")(DemoSpec(
    config_file=CONFIGS_DIR / "Face" / "demo_synthetic.yml", prepare_data=prepare_face_demo,
    description="face recognition (iResNet-18/4 + ArcFace, Partial FC) on synthetic faces; 10-fold verification"))

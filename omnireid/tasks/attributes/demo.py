"""``omnireid demo --task attributes``: the generic demo runner on synthetic people's attributes.

Attributes are labelled per identity, so what generalises to unseen people is decided by how many
*identities* the model sees, not by how many images of each: the reID demo's 200 training
identities (12 images each) let a small network learn them by heart (training loss falls, test mA
stays near 50 %). The attribute demo therefore writes its own synthetic people in the same format:
800 training and 200 test identities, one image per camera that sees them (2-6 of 6 cameras).
"""
from __future__ import annotations

from omnireid.data.synthetic import write_synthetic_reid
from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, synthetic_data

from .datasets import SyntheticAttributePeople

DEMO_PEOPLE = dict(num_train_ids=800, num_test_ids=200, num_cameras=6, images_per_camera=(1, 1), queries_per_id=1,
                   num_distractors=0, num_junk=0)


DEMO_REGISTRY.register("attributes")(DemoSpec(
    config_file=CONFIGS_DIR / "Demo" / "synthetic_attributes_R18.yml",
    prepare_data=synthetic_data(SyntheticAttributePeople.dataset_dir, write_synthetic_reid, **DEMO_PEOPLE),
    description="pedestrian attributes (FastAttr recipe, ResNet-18): 6 binary attributes and 6 categorical "
                "groups of 800 synthetic training people"))

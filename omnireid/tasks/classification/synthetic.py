"""Synthetic image classification data (the demo's): people of the synthetic reID generator, classed
by the colour of their upper clothing, written as an image-folder tree.

The class is a property of the person that every camera sees, under each camera's illumination,
colour cast, blur and occlusion: raw pixel colour is a weak cue, the model has to learn it.
Training and validation people are different people. Layout (read by the ``ImageFolder`` dataset)::

    out_dir/train/<colour>/<name>.jpg
    out_dir/val/<colour>/<name>.jpg
"""
from __future__ import annotations

import os
from collections import Counter

from omnireid.data.synthetic import plan_synthetic_reid, render_shot


def write_synthetic_classification(out_dir: str, seed: int = 0, num_train_ids: int = 180, num_val_ids: int = 90,
                                   num_cameras: int = 6, images_per_camera: tuple[int, int] = (1, 2)) -> dict[str, int]:
    """Write the tree; returns ``{"train": images, "val": images, "classes": count}``.

    Validation images of a colour no training person wears are left out (a class needs training images).
    """
    shots, identities = plan_synthetic_reid(seed, num_train_ids, num_val_ids, num_cameras, images_per_camera,
                                            queries_per_id=1, num_distractors=0, num_junk=0)
    train_classes = {i.upper_colour for i in identities if i.split == "train"}
    counts: Counter = Counter()
    for shot in shots:
        person = shot.identity
        if person is None or person.upper_colour not in train_classes:
            continue
        split = "train" if person.split == "train" else "val"
        folder = os.path.join(out_dir, split, person.upper_colour)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, shot.filename), "wb") as f:
            f.write(render_shot(shot))
        counts[split] += 1
    return {"train": counts["train"], "val": counts["val"], "classes": len(train_classes)}

"""Synthetic fine-grained retrieval data (the demo's): people of the synthetic reID generator as
classes, written in the Stanford Online Products layout and read by the real ``SOP`` loader.

Each person is a class seen by several cameras; training and test people are disjoint, as in SOP.
Layout::

    out_dir/Ebay_train.txt, Ebay_test.txt   'image_id class_id super_class_id path' (super class:
                                            the upper-clothing colour)
    out_dir/images/<class>/<name>.jpg
"""
from __future__ import annotations

import os

from omnireid.data.synthetic import COLOURS, plan_synthetic_reid, render_shot

HEADER = "image_id class_id super_class_id path\n"


def write_synthetic_retrieval(out_dir: str, seed: int = 0, num_train_ids: int = 200, num_test_ids: int = 100,
                              num_cameras: int = 6, images_per_camera: tuple[int, int] = (1, 2)) -> dict[str, int]:
    """Write the SOP-layout set; returns ``{"train": images, "test": images}``."""
    shots, _ = plan_synthetic_reid(seed, num_train_ids, num_test_ids, num_cameras, images_per_camera,
                                   queries_per_id=1, num_distractors=0, num_junk=0)
    colours = {name: i + 1 for i, name in enumerate(COLOURS)}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for shot in shots:
        person = shot.identity
        if person is None:
            continue
        split = "train" if person.split == "train" else "test"
        rel = f"images/{person.pid:04d}/{shot.filename}"
        os.makedirs(os.path.join(out_dir, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(out_dir, rel), "wb") as f:
            f.write(render_shot(shot))
        lines[split].append(f"{len(lines[split]) + 1} {person.pid} {colours[person.upper_colour]} {rel}\n")
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(HEADER + "".join(lines[split]))
    return {split: len(rows) for split, rows in lines.items()}

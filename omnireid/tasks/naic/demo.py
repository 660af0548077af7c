"""``omnireid demo --task naic``: the NAIC20 recipe (circle softmax + CosFace, GeM, Adam, AugMix,
long-tail removal) on the synthetic people written in NAIC 2020's list layout and read by ``NAIC20_R2``."""
from __future__ import annotations

import os
import shutil

from omnireid.engine.demo import CONFIGS_DIR, DEMO_REGISTRY, DemoSpec, synthetic_data

SOURCE_SPLITS = (("bounding_box_train", "t", "naic20r2_train_list_clean.txt"), ("query", "q", "val_query.txt"),
                 ("bounding_box_test", "g", "val_gallery.txt"))


def write_synthetic_naic20(folder: str, seed: int = 0, **synthetic_options) -> None:
    """The synthetic reID set (Market-1501 naming) rewritten as NAIC 2020 round 2 training data:
    ``images/`` plus ``<image>:<pid>`` lists; junk images (pid -1) are left out, as NAIC has none.
    ``synthetic_options`` go to :func:`omnireid.data.synthetic.write_synthetic_reid` (sizes)."""
    from omnireid.data.synthetic import write_synthetic_reid

    source = os.path.join(folder, "market_layout")
    write_synthetic_reid(source, seed=seed, **synthetic_options)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    for split, prefix, list_name in SOURCE_SPLITS:
        lines = []
        for name in sorted(os.listdir(os.path.join(source, split))):
            pid = int(name.split("_")[0])
            if not name.lower().endswith(".jpg") or pid < 0:
                continue
            target = f"{prefix}{name}"
            shutil.move(os.path.join(source, split, name), os.path.join(images, target))
            lines.append(f"{target}:{pid}")
        with open(os.path.join(folder, list_name), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    shutil.rmtree(source)


DEMO_REGISTRY.register("naic")(DemoSpec(
    config_file=CONFIGS_DIR / "NAIC20" / "demo_synthetic_R18.yml",
    prepare_data=synthetic_data(os.path.join("naic", "2020_NAIC", "fusai", "train"), write_synthetic_naic20),
    description="the NAIC20 recipe (circle softmax + CosFace, GeM, Adam, AugMix) on synthetic people in "
                "NAIC 2020's list layout"))

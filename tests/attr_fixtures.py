"""Attribute annotation files in their official structure (MATLAB structs/cells via scipy.io.savemat)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fixtures_data import make_market, write_image

MARKET_BINARY = ("backpack", "bag", "gender", "hat", "upblack", "upwhite")


def cell(values, shape) -> np.ndarray:
    """A MATLAB cell array (object ndarray) of strings, e.g. a 1xK ``image_index``."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out.reshape(shape)


def identity_struct(pids, rng, fields, age: bool) -> dict:
    """One split of market_attribute.mat: 1xK double rows (1 = no, 2 = yes; age 1..4) + image_index."""
    k = len(pids)
    struct = {f: rng.integers(1, 3, (1, k)).astype(np.float64) for f in fields}
    if age:
        struct["age"] = rng.integers(1, 5, (1, k)).astype(np.float64)
    struct["image_index"] = cell([f"{p:04d}" for p in pids], (1, k))
    return struct


def make_market_attribute(root: Path, seed: int = 0) -> tuple[Path, dict]:
    """The fixture Market-1501 tree plus ``market_attribute.mat`` for its identities.

    Train identities 2 and 7, test identities 1 and 3 (the test struct lists its fields in another
    order, as the real file does). Returns the folder and the structs written.
    """
    from scipy.io import savemat

    folder = make_market(root)
    rng = np.random.default_rng(seed)
    train = identity_struct([2, 7], rng, MARKET_BINARY, age=True)
    test = identity_struct([1, 3], rng, MARKET_BINARY, age=True)
    test = {k: test[k] for k in ["image_index", "age", *reversed(MARKET_BINARY)]}
    savemat(str(folder / "market_attribute.mat"), {"market_attribute": {"train": train, "test": test}})
    return folder, {"train": train, "test": test}


PA100K_NAMES = ("Female", "AgeOver60", "Hat", "Backpack")


def make_pa100k(root: Path, counts=(6, 2, 3), seed: int = 0) -> tuple[Path, dict]:
    """``root/PA-100K/{annotation.mat, data/*.jpg}`` with 26->4 attributes and the 3 official splits."""
    from scipy.io import savemat

    folder = root / "PA-100K"
    rng = np.random.default_rng(seed)
    mat = {"attributes": cell(PA100K_NAMES, (len(PA100K_NAMES), 1))}
    index = 1
    for split, count in zip(("train", "val", "test"), counts):
        names = [f"{index + i:06d}.jpg" for i in range(count)]
        index += count
        for i, name in enumerate(names):
            write_image(folder / "data" / name, colour=(20 * i % 256, 80, 160))
        mat[f"{split}_images_name"] = cell(names, (count, 1))
        mat[f"{split}_label"] = rng.integers(0, 2, (count, len(PA100K_NAMES))).astype(np.uint8)
    savemat(str(folder / "annotation.mat"), mat)
    return folder, mat

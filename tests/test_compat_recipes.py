"""FastReID model-zoo recipes: every published combination exists, loads, and its model builds."""
from __future__ import annotations

import os

import pytest
import torch

from omnireid.config import get_cfg
from omnireid.modeling import build_model

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
PERSON = ("Market1501", "DukeMTMC", "MSMT17")
PERSON_RECIPES = [f"{r}_{b}" for r in ("bagtricks", "AGW", "sbs") for b in ("R50", "R50-ibn", "R101-ibn", "S50")]
PERSON_RECIPES.append("mgn_R50-ibn")
VEHICLE = ["VeRi/bagtricks_R50-ibn", "VeRi/sbs_R50-ibn", "VehicleID/bagtricks_R50-ibn", "VeRiWild/bagtricks_R50-ibn"]
ALL = [f"{d}/{r}" for d in PERSON for r in PERSON_RECIPES] + VEHICLE


def load(name: str):
    return get_cfg().merge_from_file(os.path.join(CONFIGS, name + ".yml"))


@pytest.mark.parametrize("name", ALL)
def test_recipe_exists_and_names_its_dataset(name):
    cfg = load(name)
    dataset = name.split("/")[0]
    assert cfg.DATASETS.NAMES[0].lower() == dataset.lower()
    assert cfg.OUTPUT_DIR.startswith("logs/")


def test_backbone_variants_follow_the_file_name():
    for dataset in PERSON:
        assert load(f"{dataset}/sbs_R101-ibn").MODEL.BACKBONE.DEPTH == "101x"
        assert load(f"{dataset}/AGW_R50-ibn").MODEL.BACKBONE.WITH_IBN is True
        assert load(f"{dataset}/bagtricks_S50").MODEL.BACKBONE.NAME == "build_resnest_backbone"
        mgn = load(f"{dataset}/mgn_R50-ibn")
        assert (mgn.MODEL.META_ARCHITECTURE, mgn.MODEL.HEADS.EMBEDDING_DIM, mgn.MODEL.BACKBONE.WITH_NL) == ("MGN", 256, False)
        assert mgn.SOLVER.SCHED == "CosineAnnealingLR" and mgn.MODEL.HEADS.CLS_LAYER == "CircleSoftmax"


@pytest.mark.parametrize("name, height, dim", [("Market1501/mgn_R50-ibn", 96, 8 * 256), ("DukeMTMC/sbs_S50", 64, 2048)])
def test_recipe_models_build_and_run(name, height, dim):
    cfg = load(name).merge_from_list(["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu",
                                      "MODEL.HEADS.NUM_CLASSES", "5"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        features = model(torch.randint(0, 256, (2, 3, height, 32), dtype=torch.uint8))["features"]
    assert features.shape == (2, dim) and torch.isfinite(features).all()

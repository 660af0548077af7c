"""FastReID 1.4.0's full ``config.yaml`` dumps load in omnireid and give FastReID's features.

For every recipe in ``configs/``, FastReID itself (``get_cfg`` + ``merge_from_file`` + ``dump``) writes
the file a FastReID user has after training: every key of FastReID's defaults (``DATASETS.SET_WEIGHT``,
``MODEL.DEVICE: cuda``, ...). Both ways a user hands it to omnireid must accept every key, each one
either carried over with its value or translated/ignored with a note: ``omnireid convert-fastreid``
and ``omnireid train --config-file``. The converted model of each distinct model section is then
checked against FastReID's own model on random weights (the procedure of test_compat_fastreid.py).
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
from pathlib import Path

import pytest
import yaml
from fastreid_reference import fastreid_full_dump, import_fastreid

import_fastreid("fastreid.config", "fastreid.modeling")

from omnireid.compat import translate_fastreid_config  # noqa: E402
from omnireid.config.fastreid import DISTILL_BACKBONE, IGNORED_KEYS, flatten  # noqa: E402
from omnireid.engine.setup import setup_cfg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Face recipes follow FastReID's FastFace project, whose config (``add_face_cfg``: DEPTH "50" strings,
# FACE.* keys) lives in FastReID's projects/, not in the 1.4.0 package: its reID ``get_cfg`` cannot
# write their dump. Their FastReID-side loading is covered by tests/test_face_*.py.
NOT_FASTREID_REID_RECIPES = ("configs/Face/",)
RECIPES = sorted(
    path for path in (os.path.relpath(p, REPO) for p in glob.glob(str(REPO / "configs" / "**" / "*.yml"), recursive=True))
    if not path.startswith(NOT_FASTREID_REID_RECIPES))

# Keys whose value legitimately changes on the way in, with the value omnireid uses.
TRANSLATED = {"MODEL.DEVICE": {"cuda": "auto"}}
# Set by convert-fastreid so the ResNet is built in FastReID's form (not FastReID keys).
MODEL_FORM_KEYS = ("MODEL.BACKBONE.STEM_POOL_CEIL", "MODEL.BACKBONE.NL_TYPE")


def normalise(value):
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def dump_of(recipe: str, tmp_path, *overrides: str) -> tuple[str, dict]:
    path, _ = fastreid_full_dump(str(REPO / recipe), str(tmp_path), overrides)
    with open(path) as f:
        return path, flatten(yaml.safe_load(f))


def assert_every_key_accounted_for(dump: dict, cfg, notes: list[str], source: str, translated: dict) -> None:
    ours = flatten(cfg.to_dict())
    for key, value in dump.items():
        if key in IGNORED_KEYS:
            assert any(key in note for note in notes), f"{source}: {key} dropped without a note"
            continue
        assert key in ours, f"{source}: {key} is neither carried over nor noted"
        expected = translated[key].get(value, value) if key in translated else value
        if key == "MODEL.BACKBONE.WITH_NL" and ours[key] != value:
            assert any("WITH_NL=False" in note for note in notes), f"{source}: {key} changed without a note"
            continue
        assert normalise(ours[key]) == normalise(expected), f"{source}: {key} is {ours[key]!r}, FastReID wrote {value!r}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_full_dump_converts_with_every_key_accounted_for(recipe, tmp_path):
    path, dump = dump_of(recipe, tmp_path)
    assert "DATALOADER.SET_WEIGHT" in dump  # a real, full 1.4.0 dump
    result = translate_fastreid_config(path)
    assert result.generation == "1.x"
    assert_every_key_accounted_for(dump, result.cfg, result.notes, recipe, TRANSLATED)
    if dump["MODEL.DEVICE"] == "cuda":  # FastReID's default: runs on the CPU when the machine has no GPU
        assert result.cfg.MODEL.DEVICE == "auto"


@pytest.mark.parametrize("recipe", RECIPES)
def test_full_dump_is_a_valid_train_config(recipe, tmp_path):
    """``omnireid train --config-file <FastReID dump>``: every key loads (ignored ones with a log line).

    (``MODEL.DEVICE: cuda`` stays as written here: on a machine without CUDA it is a one-line error
    telling to use ``auto``; ``convert-fastreid`` rewrites it.)
    """
    path, dump = dump_of(recipe, tmp_path)
    with log_messages("omnireid.config.fastreid") as notes:
        cfg = setup_cfg(path)
    assert_every_key_accounted_for(dump, cfg, notes, recipe, {})


@contextlib.contextmanager
def log_messages(name: str):
    """The INFO messages of logger ``name`` (whatever propagation the omnireid loggers were given)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_fastdistill_backbone_name_is_mapped(tmp_path):
    path, _ = dump_of("configs/Distill/kd-sbs_r101ibn-sbs_r34.yml", tmp_path,
                      "MODEL.BACKBONE.NAME", DISTILL_BACKBONE, "MODEL.BACKBONE.WITH_NL", "True")
    result = translate_fastreid_config(path)
    cfg = result.cfg
    assert (cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WITH_NL, cfg.MODEL.BACKBONE.STEM_POOL_CEIL) == (
        "build_resnet_backbone", False, True)
    assert cfg.MODEL.META_ARCHITECTURE == "Distiller" and cfg.KD.MODEL_CONFIG == [
        "logs/dukemtmc/r101_ibn/config.yaml"]
    assert any(DISTILL_BACKBONE in note for note in result.notes)


# One recipe per distinct model section (the same model in several datasets' recipes is checked once).
# Distiller recipes need their teacher files to build; their student is the sbs_r34 / demo models.
FEATURE_RECIPES = {
    "configs/Market1501/sbs_R50-ibn.yml": 64, "configs/Market1501/mgn_R50-ibn.yml": 96,
    "configs/Distill/sbs_r34.yml": 64,
}
SLOW_FEATURE_RECIPES = {
    "configs/Market1501/bagtricks_R50.yml": 64, "configs/Market1501/AGW_S50.yml": 64,
    "configs/Demo/synthetic_R18.yml": 64,
    "configs/Base-AGW.yml": 64, "configs/Base-SBS.yml": 64, "configs/Distill/Base-kd.yml": 64,
    "configs/Distill/Base-demo.yml": 64, "configs/Distill/demo-student_r18.yml": 64,
    "configs/Distill/demo-teacher_r34.yml": 64, "configs/Distill/sbs_r101ibn.yml": 64,
    "configs/Market1501/AGW_R101-ibn.yml": 64, "configs/Market1501/AGW_R50-ibn.yml": 64,
    "configs/Market1501/bagtricks_R101-ibn.yml": 64, "configs/Market1501/bagtricks_R50-ibn.yml": 64,
    "configs/Market1501/bagtricks_S50.yml": 64, "configs/Market1501/sbs_R101-ibn.yml": 64,
    "configs/Market1501/sbs_S50.yml": 64, "configs/VeRi/sbs_R50-ibn.yml": 64,
}
REFERENCE_OVERRIDES = ("MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "7", "MODEL.DEVICE", "cpu")


def check_dump_features(recipe: str, height: int, tmp_path, *overrides: str) -> None:
    from test_compat_fastreid import check_same_features

    path, _ = dump_of(recipe, tmp_path, *REFERENCE_OVERRIDES, *overrides)
    check_same_features(Path(path).read_text(), height, tmp_path / "features")


@pytest.mark.parametrize("recipe", sorted(FEATURE_RECIPES))
def test_converted_dump_gives_fastreid_features(recipe, tmp_path):
    (tmp_path / "features").mkdir()
    check_dump_features(recipe, FEATURE_RECIPES[recipe], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SLOW_FEATURE_RECIPES))
def test_converted_dump_gives_fastreid_features_every_model(recipe, tmp_path):
    (tmp_path / "features").mkdir()
    check_dump_features(recipe, SLOW_FEATURE_RECIPES[recipe], tmp_path)

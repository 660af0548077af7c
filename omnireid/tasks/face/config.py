"""The ``FACE`` config section: where face data lives, the margins beyond ``MODEL.HEADS.MARGIN``, Partial FC."""
from __future__ import annotations

from omnireid.config import CfgNode as CN
from omnireid.config import register_config


@register_config("FACE")
def add_face_config(cfg: CN) -> None:
    """Paths are absolute or relative to ``DATASETS.ROOT``."""
    cfg.FACE = CN()
    # Training data, one key per reader (dataset names FaceRecordIO / FaceFolder / FaceCSV):
    cfg.FACE.DATA_DIR = ""  # insightface folder: train.rec, train.idx, property (and the .bin sets)
    cfg.FACE.FOLDER = ""  # identity-folder tree: <FOLDER>/<identity>/*.jpg
    cfg.FACE.CSV = ""  # rows path,identity (paths relative to the CSV file's folder)
    # Verification sets (dataset FaceVerification): VAL_DIR/<name>.bin for each name of VAL_TARGETS
    cfg.FACE.VAL_DIR = ""  # empty: FACE.DATA_DIR
    cfg.FACE.VAL_TARGETS = ["lfw", "cfp_fp", "agedb_30"]
    # Combined margin cos(m1 θ + m2) - m3: m2 is MODEL.HEADS.MARGIN (CLS_LAYER CombinedMarginSoftmax)
    cfg.FACE.MULTIPLICATIVE_MARGIN = 1.0  # m1
    cfg.FACE.COSINE_MARGIN = 0.0  # m3
    # Partial FC (MODEL.HEADS.NAME PartialFCHead): fraction of each rank's class centres used per step
    cfg.FACE.SAMPLE_RATE = 1.0

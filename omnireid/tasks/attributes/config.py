"""The attribute task's config keys, added to every config through ``register_config``.

FastAttr's names are kept where FastAttr had the key (``MODEL.LOSSES.BCE.WEIGHT_ENABLED``,
``MODEL.LOSSES.BCE.SCALE``, ``TEST.THRES``), so FastAttr configs load.
"""
from __future__ import annotations

from omnireid.config import CfgNode as CN
from omnireid.config import register_config


@register_config("ATTRIBUTES")
def add_attribute_config(cfg: CN) -> None:
    cfg.ATTRIBUTES = CN()
    # Market/Duke/synthetic: share of the training identities held out as the validation test set
    # (seeded by VAL_SEED); PA-100K has an official val split.
    cfg.ATTRIBUTES.VAL_FRACTION = 0.1
    cfg.ATTRIBUTES.VAL_SEED = 0
    cfg.ATTRIBUTES.TEST_SPLITS = ["val", "test"]  # which splits become test sets (<name>-val, <name>)
    cfg.ATTRIBUTES.TRAINVAL = False  # PA-100K: train on train + val (Rethinking_of_PAR's setting)
    cfg.ATTRIBUTES.REID_TEST = False  # identity datasets: add the query/gallery reID test set (<name>-reid)
    cfg.ATTRIBUTES.CSV = CN({"TRAIN": "", "VAL": "", "TEST": ""})  # AttributeCSV files

    # Decision threshold of binary attributes: positive when p > THRES (FastAttr's key).
    cfg.TEST.THRES = 0.5

    # Model shape, filled by the trainer from the training data (the schema in metadata).
    cfg.MODEL.HEADS.NUM_ATTRIBUTES = 0  # binary attributes
    cfg.MODEL.HEADS.ATTRIBUTE_GROUPS = []  # classes of each categorical group, e.g. [4] for Market's age
    cfg.MODEL.HEADS.ATTRIBUTE_BN = True  # FastAttr's BatchNorm1d on the attribute logits

    cfg.MODEL.LOSSES.BCE = CN()
    cfg.MODEL.LOSSES.BCE.WEIGHT_ENABLED = True  # exp(1 - r) / exp(r) weights (FastAttr, PAR)
    cfg.MODEL.LOSSES.BCE.SCALE = 1.0
    cfg.MODEL.LOSSES.BCE.REDUCTION = "mean"  # mean over labels (FastAttr) / sample_sum (PAR)
    cfg.MODEL.LOSSES.BCE.POS_RATIO = []  # r per binary attribute; filled from the training labels
    cfg.MODEL.LOSSES.GROUP_CE = CN({"SCALE": 1.0, "EPSILON": 0.0})  # softmax CE of categorical groups

"""The ``ADAPT`` config section of ``omnireid adapt`` (unsupervised domain adaptation with pseudo-labels).

Defaults follow SpCL's UDA recipe (Ge et al., NeurIPS 2020, ``examples/spcl_train_uda.py`` of
yxgeee/SpCL): Jaccard distance with ``k1=30, k2=6``, DBSCAN with ``eps=0.6, min_samples=4``,
400 iterations per round (its "epoch"). The fine-tuning itself is the normal trainer with the
config's ``SOLVER`` / ``MODEL`` / ``INPUT`` keys (the strong-baseline recipe: Adam 3.5e-4, PK
sampling with 4 images per identity, cross-entropy with label smoothing + triplet).
"""
from __future__ import annotations

from omnireid.config import CfgNode as CN
from omnireid.config import register_config


@register_config("ADAPT")
def add_adapt_config(cfg: CN) -> None:
    cfg.ADAPT = CN()
    # the registered dataset whose *training* images are the unlabelled target (their labels are never read
    # for training; when present they give the clustering's NMI / ARI)
    cfg.ADAPT.TARGET = ""
    cfg.ADAPT.ROUNDS = 5  # cluster + fine-tune rounds
    cfg.ADAPT.ITERS_PER_ROUND = 400  # fine-tuning iterations per round (the trainer's SOLVER.MAX_ITER)
    cfg.ADAPT.K1 = 30  # k-reciprocal neighbourhood of the Jaccard distance
    cfg.ADAPT.K2 = 6  # local query expansion of the Jaccard distance
    cfg.ADAPT.EPS = 0.6  # DBSCAN radius on the Jaccard distance, in (0, 1)
    cfg.ADAPT.MIN_SAMPLES = 4  # DBSCAN: neighbours (itself included) that make a core point

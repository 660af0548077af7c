"""The retrieval task's config keys (added to every config by ``register_config``)."""
from __future__ import annotations

from omnireid.config import CfgNode as CN
from omnireid.config import register_config


@register_config("RETRIEVAL")
def add_retrieval_config(cfg: CN) -> None:
    # Recall@K values (FastRetri's key); empty: each test set's own (1,2,4,8; 1,10,20,30 for SOP / In-Shop)
    cfg.TEST.RECALLS = []
    cfg.RETRIEVAL = CN()
    # RetrievalCSV: 'path,label' lists; TEST = every image a query against the others, or QUERY + GALLERY
    cfg.RETRIEVAL.CSV = CN({"TRAIN": "", "TEST": "", "QUERY": "", "GALLERY": ""})

"""Unsupervised domain adaptation with pseudo-labels: the loop behind ``omnireid adapt``.

Starting from a source model (``MODEL.WEIGHTS``), each round

1. extracts the features of the target's training images (the trainer's test loader and
   ``inference_on_dataset``, flip TTA as ``TEST.FLIP``),
2. computes their k-reciprocal Jaccard distances (``omnireid.evaluation.jaccard_distances``, the
   re-ranking code) and clusters them with DBSCAN, outliers dropped,
3. writes the clusters as identities (``round_<r>/pseudo_labels.csv``, read by dataset ``CustomCSV``) and
   fine-tunes on them with the normal trainer (``TRAINER.NAME``; a fresh classifier per round, the
   rest from the previous round) for ``ADAPT.ITERS_PER_ROUND`` iterations,
4. evaluates on ``DATASETS.TESTS`` (when it names test sets) and scores the clustering against the
   target's identities (NMI / ARI, when its items have them; they are never used for training).

The per-round table is logged and saved as ``OUTPUT_DIR/adapt_rounds.json``; round ``r`` writes its
checkpoints and config under ``OUTPUT_DIR/round_<r>/``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from omnireid.config import CfgNode
from omnireid.data import TestSet
from omnireid.data.datasets import build_dataset
from omnireid.engine import inference_on_dataset, trainer_class, unwrap
from omnireid.evaluation import SampleEvaluator
from omnireid.modeling import build_model
from omnireid.modeling.meta_arch import training_only_state
from omnireid.modeling.weights import load_weights
from omnireid.utils import comm
from omnireid.utils.errors import CheckpointError, ConfigError, DatasetError, MissingFileError
from omnireid.utils.file_io import atomic_torch_save, atomic_write_text

from .clustering import ClusterParams, cluster_features, clustering_scores
from .datasets import pseudo_label_items, write_pseudo_labels

logger = logging.getLogger(__name__)

ROUNDS_FILE = "adapt_rounds.json"
TABLE_METRICS = ("mAP", "Rank-1")


class FeatureCollector(SampleEvaluator):
    """An evaluator that keeps the ``features`` of every image (in item order) instead of scoring them."""

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"features": outputs["features"]}

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        self.features = data["features"]
        return {}


def check_adapt_config(cfg: CfgNode) -> None:
    """One-line errors for what would otherwise fail after minutes of work."""
    if not cfg.ADAPT.TARGET:
        raise ConfigError("ADAPT.TARGET is empty: name the registered dataset whose training images are the "
                          "unlabelled target (e.g. ADAPT.TARGET SyntheticShifted)")
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: give the source model to adapt (a checkpoint path)")
    if not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise MissingFileError(f"MODEL.WEIGHTS: no such file: {cfg.MODEL.WEIGHTS}")
    for key in ("ROUNDS", "ITERS_PER_ROUND"):
        if int(cfg.ADAPT[key]) < 1:
            raise ConfigError(f"ADAPT.{key} must be >= 1, got {cfg.ADAPT[key]}")
    ClusterParams.from_config(cfg)


def load_feature_weights(model: nn.Module, source: Any, source_name: str | None = None) -> None:
    """Load every weight of the feature model (no classifier) from ``source``; a classifier or other
    training-only entries of the file are left unused, anything the features need is an error."""
    report = load_weights(model, source, strict=False, source_name=source_name)
    if report.missing or report.mismatched:
        raise CheckpointError(f"{report.source} does not fit the model of this config ({report.problems()}); "
                              "use the MODEL keys the source model was trained with")


def target_features(trainer_cls, cfg: CfgNode, model: nn.Module, items: list[dict],
                    device: torch.device) -> torch.Tensor:
    """Features of ``items`` through the trainer's test loader (``TEST.FLIP`` applies)."""
    loader = trainer_cls.build_test_loader(cfg, TestSet("adaptation target", "features", items))
    collector = FeatureCollector()
    inference_on_dataset(model, loader, collector, device=device, flip=cfg.TEST.FLIP.ENABLED)
    return collector.features


def round_config(cfg: CfgNode, round_dir: str, pseudo_labels: str, weights: str) -> CfgNode:
    """The config a round trains with: the pseudo-labelled target, the previous round's weights,
    ``ADAPT.ITERS_PER_ROUND`` iterations; evaluation is done by the adaptation loop after the round."""
    out = cfg.clone().defrost()
    out.DATASETS.NAMES = ["CustomCSV"]
    out.DATASETS.COMBINEALL = False
    out.DATASETS.CSV.TRAIN = pseudo_labels
    out.MODEL.WEIGHTS = weights
    out.SOLVER.MAX_ITER = int(cfg.ADAPT.ITERS_PER_ROUND)
    out.TEST.EVAL_PERIOD = 0
    out.TEST.PRECISE_BN.ENABLED = False
    out.OUTPUT_DIR = round_dir
    return out.freeze()


def _metric_cells(results: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{name}/{metric}": float(values[metric]) for name, values in results.items()
            for metric in TABLE_METRICS if metric in values}


def format_rounds_table(rows: list[dict[str, Any]]) -> str:
    """The per-round table (markdown): clusters, outliers, NMI / ARI, target metrics (in %)."""
    metric_keys = [k for k in rows[0] if "/" in k] if rows else []
    columns = ["round", "clusters", "outliers", "NMI", "ARI", *metric_keys]
    present = [c for c in columns if any(c in row for row in rows)]
    lines = ["| " + " | ".join(present) + " |", "|---" * len(present) + "|"]
    for row in rows:
        cells = []
        for column in present:
            value = row.get(column, "")
            cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_adaptation(cfg: CfgNode) -> list[dict[str, Any]]:
    """Adapt ``MODEL.WEIGHTS`` to ``ADAPT.TARGET``; returns the per-round rows (round 0: the source model)."""
    check_adapt_config(cfg)
    if comm.get_world_size() > 1:
        raise ConfigError("omnireid adapt runs in one process (its rounds train with the normal trainer)")
    params = ClusterParams.from_config(cfg)
    trainer_cls = trainer_class(cfg)
    device = comm.resolve_device(cfg.MODEL.DEVICE)
    items = list(build_dataset(cfg, cfg.ADAPT.TARGET).train)
    if not items:
        raise DatasetError(f"ADAPT.TARGET {cfg.ADAPT.TARGET}: its training split is empty")
    truth = (np.array([int(item["targets"]) for item in items])
             if all("targets" in item for item in items) else None)

    feature_cfg = cfg.clone().defrost()
    feature_cfg.MODEL.HEADS.NUM_CLASSES = 0  # the features only: each round trains a classifier of its own
    model = build_model(feature_cfg.freeze(), deploy=True).to(device)
    load_feature_weights(model, cfg.MODEL.WEIGHTS)
    model.eval()

    rows: list[dict[str, Any]] = [{"round": 0, **_metric_cells(trainer_cls.test(cfg, model, device))}]
    for r in range(1, int(cfg.ADAPT.ROUNDS) + 1):
        round_dir = os.path.join(cfg.OUTPUT_DIR, f"round_{r}")
        os.makedirs(round_dir, exist_ok=True)
        features = target_features(trainer_cls, cfg, model, items, device)
        labels = cluster_features(features, params, metric=cfg.TEST.METRIC,
                                  memory_budget_mb=float(cfg.TEST.MEMORY_BUDGET_MB))
        pseudo = pseudo_label_items(items, labels)
        num_clusters = len({item["targets"] for item in pseudo})
        row: dict[str, Any] = {"round": r, "clusters": num_clusters, "outliers": int((labels < 0).sum())}
        if truth is not None:
            row.update(clustering_scores(truth, labels))
        logger.info("Round %d: %d clusters, %d outliers among %d target images", r, num_clusters,
                    row["outliers"], len(items))
        if num_clusters < 2:
            raise DatasetError(f"round {r}: DBSCAN found {num_clusters} cluster(s) among {len(items)} target images "
                               f"({row['outliers']} outliers); nothing to train on: raise ADAPT.EPS "
                               f"({params.eps}) or lower ADAPT.MIN_SAMPLES ({params.min_samples})")
        labels_path = write_pseudo_labels(os.path.join(round_dir, "pseudo_labels.csv"), pseudo)
        init_path = os.path.join(round_dir, "init.pth")
        atomic_torch_save({"model": model.state_dict()}, init_path)

        trainer = trainer_cls(round_config(cfg, round_dir, labels_path, init_path))
        trainer.train()
        load_feature_weights(model, unwrap(trainer.model).state_dict(), source_name=f"round {r}'s model")
        trainer.release()
        model.eval()
        row.update(_metric_cells(trainer_cls.test(cfg, model, device)))
        rows.append(row)
        atomic_write_text(os.path.join(cfg.OUTPUT_DIR, ROUNDS_FILE), json.dumps(rows, indent=2))
        logger.info("Adaptation so far (metrics in %%):\n%s", format_rounds_table(rows))
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, ROUNDS_FILE), json.dumps(rows, indent=2))
    return rows

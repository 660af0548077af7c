"""Running the members over a test set in lockstep and evaluating the fused features."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from omnireid.config import CfgNode
from omnireid.data import TestSet
from omnireid.engine.inference import move_batch
from omnireid.evaluation import fuse_features
from omnireid.utils.memory import PeakMemory

from .members import Member

logger = logging.getLogger(__name__)

ENSEMBLE_ROW = "ensemble"


def _loader_cfg(main_cfg: CfgNode, member: Member) -> CfgNode:
    """The evaluation config with the member's test-time input (size, crop, interpolation)."""
    cfg = main_cfg.clone()
    cfg.defrost()
    for key in ("SIZE_TEST", "CROP", "INTERPOLATION"):
        cfg.INPUT[key] = member.input_cfg.INPUT[key]
    cfg.freeze()
    return cfg


def _input_key(cfg: CfgNode) -> str:
    inp = cfg.INPUT
    return repr((list(inp.SIZE_TEST), bool(inp.CROP.ENABLED), list(inp.CROP.SIZE), inp.INTERPOLATION))


def member_features(members: Sequence[Member], cfg: CfgNode, test_set: TestSet, trainer_cls, device: torch.device,
                    flip: bool) -> Iterator[tuple[dict, list[torch.Tensor]]]:
    """``(batch, [features of each member])`` per batch of ``test_set``; members sharing an input
    size share one loader, loaders of different sizes advance together (same sampler, same batches)."""
    loader_cfgs = [_loader_cfg(cfg, m) for m in members]
    keys = [_input_key(c) for c in loader_cfgs]
    distinct = list(dict.fromkeys(keys))
    loaders = [trainer_cls.build_test_loader(loader_cfgs[keys.index(k)], test_set) for k in distinct]
    for batches in zip(*loaders, strict=True):
        first = batches[0]["indices"]
        for other in batches[1:]:
            if not torch.equal(other["indices"], first):
                raise RuntimeError("the members' test loaders returned different samples in one batch")
        on_device = [move_batch(b, device) for b in batches]
        feats = [m.extract(on_device[distinct.index(k)], flip) for m, k in zip(members, keys)]
        yield batches[0], feats


@dataclass
class EnsembleResult:
    """``metrics[row][test set]`` and ``peak_mb[row][test set]`` (evaluation step), rows = members + ensemble."""

    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    peak_mb: dict[str, dict[str, float | None]] = field(default_factory=dict)


def evaluate_ensemble(cfg: CfgNode, members: Sequence[Member], weights: Sequence[float], fusion: str,
                      flip: bool, with_members: bool = True) -> EnsembleResult:
    """Every test set of ``DATASETS.TESTS`` evaluated by its protocol evaluator (``build_evaluator``
    of the ``TRAINER.NAME`` trainer) on the fused features, and on each member's own features when
    ``with_members``. The peak memory of each evaluation step is measured the same way for every row."""
    from omnireid.engine.trainer import trainer_class
    from omnireid.utils.comm import resolve_device

    trainer_cls = trainer_class(cfg)
    device = resolve_device(cfg.MODEL.DEVICE)
    result = EnsembleResult()
    for dataset_name in cfg.DATASETS.TESTS:
        for test_set in trainer_cls.build_test_sets(cfg, dataset_name):
            rows = ([m.name for m in members] if with_members else []) + [ENSEMBLE_ROW]
            evaluators = {row: trainer_cls.build_evaluator(cfg, test_set, cfg.OUTPUT_DIR) for row in rows}
            for evaluator in evaluators.values():
                evaluator.reset()
            logger.info("Evaluating %d models (%s fusion) on %s (%d images)", len(members), fusion, test_set.name,
                        len(test_set.items))
            for batch, feats in member_features(members, cfg, test_set, trainer_cls, device, flip):
                if with_members:
                    for member, f in zip(members, feats):
                        evaluators[member.name].process(batch, {"features": f})
                fused = fuse_features(feats, weights, fusion, cfg.TEST.METRIC)
                evaluators[ENSEMBLE_ROW].process(batch, {"features": fused})
            for row, evaluator in evaluators.items():
                with PeakMemory() as peak:
                    metrics = evaluator.evaluate()
                result.metrics.setdefault(row, {})[test_set.name] = metrics
                result.peak_mb.setdefault(row, {})[test_set.name] = peak.peak_mb
                del evaluator
            evaluators.clear()
    return result


def collect_features(cfg: CfgNode, members: Sequence[Member], weights: Sequence[float], fusion: str, flip: bool,
                     test_set: TestSet) -> torch.Tensor:
    """The fused features of every item of ``test_set``, in test-set order (no labels needed)."""
    from omnireid.engine.trainer import trainer_class
    from omnireid.utils.comm import resolve_device

    trainer_cls = trainer_class(cfg)
    device = resolve_device(cfg.MODEL.DEVICE)
    out: torch.Tensor | None = None
    seen = torch.zeros(len(test_set.items), dtype=torch.bool)
    for batch, feats in member_features(members, cfg, test_set, trainer_cls, device, flip):
        fused = fuse_features(feats, weights, fusion, cfg.TEST.METRIC)
        if out is None:
            out = torch.empty((len(test_set.items), fused.shape[1]), dtype=fused.dtype)
        idx = torch.as_tensor(batch["indices"]).long()
        out[idx] = fused
        seen[idx] = True
    if out is None or not bool(seen.all()):
        raise RuntimeError(f"{test_set.name}: features were not extracted for every image")
    return out

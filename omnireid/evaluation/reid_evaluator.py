"""The reID evaluator of the training loop (detectron2 protocol: reset / process / evaluate).

Order of the test set: the first ``num_query`` samples (dataset order) are queries, the rest gallery.
When batches carry ``indices`` (positions in the test set), samples are put back in dataset order
by those indices (duplicates from padded samplers are dropped). Without them, the inference sampler
is assumed to give rank ``r`` the contiguous shard ``[r*ceil(n/w), min(n, (r+1)*ceil(n/w)))`` in
order without padding, so concatenating the ranks' samples in rank order restores dataset order.

Under ``torch.distributed`` every rank's samples are gathered on rank 0, which computes the metrics;
the result is broadcast so every rank returns the same dict.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from omnireid.utils import comm

from .build import EVALUATOR_REGISTRY
from .features import evaluate_features
from .query_expansion import average_query_expansion
from .rerank import RerankParams

logger = logging.getLogger(__name__)


@EVALUATOR_REGISTRY.register()
class ReidEvaluator:
    """Collects features, pids and camids; reports Rank-1/5/10, mAP, mINP (and TPR@FPR) in percent."""

    def __init__(
        self,
        num_query: int,
        metric: str = "cosine",
        roc: bool = False,
        aqe: dict[str, float] | None = None,
        rerank: RerankParams | None = None,
        memory_budget_mb: float = 1024,
        output_dir: str | None = None,
    ) -> None:
        if num_query < 1:
            raise ValueError(f"num_query must be >= 1, got {num_query}")
        from .distance import get_metric

        try:
            get_metric(metric)  # fail early on an unknown TEST.METRIC
        except KeyError as exc:
            raise KeyError(f"TEST.METRIC: {exc.args[0]}") from None
        self.num_query = num_query
        self.metric = metric
        self.roc = roc
        self.aqe = aqe
        self.rerank = rerank
        self.memory_budget_mb = memory_budget_mb
        self.output_dir = output_dir
        self.reset()

    @classmethod
    def from_config(cls, cfg: Any, num_query: int, output_dir: str | None = None) -> "ReidEvaluator":
        test = cfg.TEST
        aqe = None
        if test.AQE.ENABLED:
            aqe = {"qe_time": int(test.AQE.QE_TIME), "qe_k": int(test.AQE.QE_K), "alpha": float(test.AQE.ALPHA)}
        rerank = None
        if test.RERANK.ENABLED:
            rerank = RerankParams(int(test.RERANK.K1), int(test.RERANK.K2), float(test.RERANK.LAMBDA))
        return cls(num_query, metric=test.METRIC, roc=bool(test.ROC.ENABLED), aqe=aqe, rerank=rerank,
                   memory_budget_mb=float(test.MEMORY_BUDGET_MB), output_dir=output_dir)

    def reset(self) -> None:
        self._features: list[torch.Tensor] = []
        self._pids: list[torch.Tensor] = []
        self._camids: list[torch.Tensor] = []
        self._indices: list[torch.Tensor] | None = []

    def process(self, batch: dict, features: torch.Tensor) -> None:
        """Store one batch (features moved to CPU, detached; dtype kept until evaluation)."""
        feats = features.detach().cpu()
        pids = torch.as_tensor(batch["targets"]).detach().cpu().long().reshape(-1)
        camids = torch.as_tensor(batch["camids"]).detach().cpu().long().reshape(-1)
        if feats.dim() != 2 or not (len(feats) == len(pids) == len(camids)):
            raise ValueError(
                f"process() needs features (N, D) with N targets and N camids, got {tuple(feats.shape)}, "
                f"{len(pids)} targets, {len(camids)} camids"
            )
        self._features.append(feats)
        self._pids.append(pids)
        self._camids.append(camids)
        if self._indices is not None:
            if "indices" in batch:
                self._indices.append(torch.as_tensor(batch["indices"]).detach().cpu().long().reshape(-1))
            else:
                self._indices = None  # one batch without indices: fall back to shard order

    def _local(self) -> dict[str, torch.Tensor | None]:
        if not self._features:
            return {"features": None, "pids": torch.zeros(0, dtype=torch.long),
                    "camids": torch.zeros(0, dtype=torch.long), "indices": torch.zeros(0, dtype=torch.long)}
        return {
            "features": torch.cat(self._features),
            "pids": torch.cat(self._pids),
            "camids": torch.cat(self._camids),
            "indices": torch.cat(self._indices) if self._indices is not None else None,
        }

    def _gather(self) -> list[dict] | None:
        local = self._local()
        if comm.get_world_size() == 1:
            return [local]
        out: list | None = [None] * comm.get_world_size() if comm.is_main_process() else None
        dist.gather_object(local, out, dst=0)
        return out

    def evaluate(self) -> dict[str, float]:
        parts = self._gather()
        results: dict[str, float] | None = None
        error: str | None = None
        if parts is not None:
            try:
                results = self._compute(parts)
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                if comm.get_world_size() == 1:
                    raise
                error = f"{type(exc).__name__}: {exc}"
        if comm.get_world_size() > 1:
            results, error = comm.broadcast_object((results, error), src=0)
            if error is not None:
                raise RuntimeError(f"evaluation failed on rank 0: {error}")
        assert results is not None
        return results

    def _compute(self, parts: list[dict]) -> dict[str, float]:
        parts = [p for p in parts if p["features"] is not None]
        if not parts:
            raise RuntimeError("ReidEvaluator.evaluate() called before any process()")
        features = torch.cat([p["features"] for p in parts])
        pids = torch.cat([p["pids"] for p in parts])
        camids = torch.cat([p["camids"] for p in parts])
        if all(p["indices"] is not None for p in parts):
            indices = torch.cat([p["indices"] for p in parts])
            uniq, first = np.unique(indices.numpy(), return_index=True)
            if len(uniq) != uniq[-1] + 1 or uniq[0] != 0:
                raise ValueError(f"test-set indices do not cover 0..{len(uniq) - 1}: {len(uniq)} distinct, max {uniq[-1]}")
            order = torch.from_numpy(first)  # sorted by index; the first occurrence of each
            features, pids, camids = features[order], pids[order], camids[order]
        n = len(pids)
        if self.num_query >= n:
            raise ValueError(f"num_query={self.num_query} but only {n} samples were processed: no gallery")
        query, gallery = features[: self.num_query], features[self.num_query :]
        if self.aqe is not None:
            query, gallery = average_query_expansion(query, gallery, memory_budget_mb=self.memory_budget_mb, **self.aqe)
        res = evaluate_features(
            query, gallery, pids[: self.num_query], pids[self.num_query :], camids[: self.num_query],
            camids[self.num_query :], metric=self.metric, max_rank=50, memory_budget_mb=self.memory_budget_mb,
            roc=self.roc, rerank=self.rerank,
        )
        return res.summary()

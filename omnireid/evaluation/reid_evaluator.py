"""The evaluator of the ``reid`` test protocol (detectron2 protocol: reset / process / evaluate).

It reads ``features`` from the model outputs and ``targets`` (identities) and ``camids`` from the
batch; the first ``num_query`` samples of the test set are the queries, the rest the gallery.
Ordering and the gathering across ranks are :class:`~omnireid.evaluation.base.SampleEvaluator`'s.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from omnireid.utils.errors import UnknownNameError

from .base import SampleEvaluator
from .build import EVALUATOR_REGISTRY, register_protocol
from .features import DistanceBlocks, distance_blocks, evaluate_blocks
from .query_expansion import average_query_expansion
from .rerank import RerankParams

logger = logging.getLogger(__name__)


@EVALUATOR_REGISTRY.register()
@register_protocol("reid")
class ReidEvaluator(SampleEvaluator):
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
            raise UnknownNameError(f"TEST.METRIC: {exc.args[0]}") from None
        self.num_query = num_query
        self.metric = metric
        self.roc = roc
        self.aqe = aqe
        self.rerank = rerank
        self.memory_budget_mb = memory_budget_mb
        self.output_dir = output_dir
        super().__init__()

    @classmethod
    def from_config(cls, cfg: Any, test_set: Any, output_dir: str | None = None) -> "ReidEvaluator":
        """For a test set whose first ``test_set.meta["num_query"]`` items are the queries."""
        if "num_query" not in test_set.meta:
            raise ValueError(f"{test_set.name}: ReidEvaluator needs a query/gallery test set (meta 'num_query'); "
                             f"this one has protocol {test_set.protocol!r}")
        num_query = int(test_set.meta["num_query"])
        test = cfg.TEST
        aqe = None
        if test.AQE.ENABLED:
            aqe = {"qe_time": int(test.AQE.QE_TIME), "qe_k": int(test.AQE.QE_K), "alpha": float(test.AQE.ALPHA)}
        rerank = None
        if test.RERANK.ENABLED:
            rerank = RerankParams(int(test.RERANK.K1), int(test.RERANK.K2), float(test.RERANK.LAMBDA))
        return cls(num_query, metric=test.METRIC, roc=bool(test.ROC.ENABLED), aqe=aqe, rerank=rerank,
                   memory_budget_mb=float(test.MEMORY_BUDGET_MB), output_dir=output_dir)

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = outputs["features"]
        pids = torch.as_tensor(batch["targets"]).long().reshape(-1)
        camids = torch.as_tensor(batch["camids"]).long().reshape(-1)
        if feats.dim() != 2 or not (len(feats) == len(pids) == len(camids)):
            raise ValueError(
                f"process() needs features (N, D) with N targets and N camids, got {tuple(feats.shape)}, "
                f"{len(pids)} targets, {len(camids)} camids"
            )
        return {"features": feats, "pids": pids, "camids": camids}

    def distances(self, features: torch.Tensor) -> DistanceBlocks:
        """The query x gallery distances this evaluator ranks, as memory-bounded blocks: AQE, the
        metric and re-ranking applied to the test set's ``features`` (queries first). ``omnireid
        submit`` writes its ranked lists from the same blocks."""
        query, gallery = features[: self.num_query], features[self.num_query :]
        if self.aqe is not None:
            query, gallery = average_query_expansion(query, gallery, memory_budget_mb=self.memory_budget_mb, **self.aqe)
        return distance_blocks(query, gallery, self.metric, self.memory_budget_mb, self.rerank)

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        features, pids, camids = data["features"], data["pids"], data["camids"]
        n = len(pids)
        if self.num_query >= n:
            raise ValueError(f"num_query={self.num_query} but only {n} samples were processed: no gallery")
        nq = self.num_query
        res = evaluate_blocks(self.distances(features), pids[:nq], pids[nq:], camids[:nq], camids[nq:], max_rank=50,
                              memory_budget_mb=self.memory_budget_mb, roc=self.roc)
        return res.summary()

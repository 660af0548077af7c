"""The evaluator of the ``retrieval`` test protocol: Recall@K, R-Precision, MAP@R from features.

Without ``num_query`` in the test set's metadata every item is a query against all the others
(masked from its own list by its index); with it, the first ``num_query`` items are queries searched
in the rest. Definitions: :mod:`omnireid.evaluation.retrieval`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from omnireid.evaluation import EVALUATOR_REGISTRY, SampleEvaluator, register_protocol
from omnireid.evaluation.distance import get_metric
from omnireid.evaluation.headline import register_headline_metric
from omnireid.evaluation.retrieval import DEFAULT_RECALL_KS, evaluate_retrieval


@EVALUATOR_REGISTRY.register()
@register_protocol("retrieval")
class RetrievalEvaluator(SampleEvaluator):
    """Collects ``features`` and class labels (``targets``); metrics in percent plus ``SkippedQueries``."""

    def __init__(self, recall_ks: Sequence[int] = DEFAULT_RECALL_KS, num_query: int | None = None,
                 metric: str = "cosine", memory_budget_mb: float = 1024) -> None:
        try:
            get_metric(metric)
        except KeyError as exc:
            raise KeyError(f"TEST.METRIC: {exc.args[0]}") from None
        if not recall_ks or min(recall_ks) < 1:
            raise ValueError(f"TEST.RECALLS must be positive integers, got {list(recall_ks)}")
        self.recall_ks = tuple(int(k) for k in recall_ks)
        self.num_query = num_query
        self.metric = metric
        self.memory_budget_mb = memory_budget_mb
        super().__init__()

    @classmethod
    def from_config(cls, cfg: Any, test_set: Any, output_dir: str | None = None) -> "RetrievalEvaluator":
        """``TEST.RECALLS`` when set, else the test set's own K (``meta["recall_ks"]``), else 1, 2, 4, 8."""
        ks = list(cfg.TEST.RECALLS) or list(test_set.meta.get("recall_ks", DEFAULT_RECALL_KS))
        num_query = test_set.meta.get("num_query")
        return cls(ks, None if num_query is None else int(num_query), metric=cfg.TEST.METRIC,
                   memory_budget_mb=float(cfg.TEST.MEMORY_BUDGET_MB))

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = outputs["features"]
        labels = torch.as_tensor(batch["targets"]).long().reshape(-1)
        if features.dim() != 2 or len(features) != len(labels):
            raise ValueError(f"process() needs features (N, D) with N targets, got {tuple(features.shape)} and "
                             f"{len(labels)} targets")
        return {"features": features, "labels": labels}

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        features, labels = data["features"], data["labels"]
        options = {"recall_ks": self.recall_ks, "metric": self.metric, "memory_budget_mb": self.memory_budget_mb}
        if self.num_query is None:
            return evaluate_retrieval(features, labels, **options).summary()
        n = self.num_query
        if not 0 < n < len(labels):
            raise ValueError(f"num_query={n} but {len(labels)} samples were processed: no query or no gallery")
        return evaluate_retrieval(features[:n], labels[:n], features[n:], labels[n:], **options).summary()


@register_headline_metric("retrieval", name="Recall@1")
def _retrieval_headline(metrics: dict[str, float]) -> float:
    """Recall at the smallest K reported (Recall@1 unless TEST.RECALLS leaves it out)."""
    recalls = [k for k in metrics if k.startswith("Recall@")]
    return metrics[min(recalls, key=lambda k: int(k.split("@", 1)[1]))]

"""Evaluation engine: exact reID metrics, ROC, re-ranking and query expansion, memory-bounded.

Pure PyTorch/NumPy (no compiled extension); faiss is optional (top-k search on huge galleries).
"""
from .build import EVALUATOR_REGISTRY, build_evaluator
from .distance import DISTANCE_REGISTRY, compute_distance
from .features import evaluate_features
from .query_expansion import average_query_expansion
from .rank import RankMetrics, evaluate_rank, evaluate_rank_cuhk03, evaluate_rank_metrics
from .reid_evaluator import ReidEvaluator
from .rerank import RerankParams, re_ranking, re_ranking_features
from .roc import ROC_FPRS, pair_distances, roc_curve
from .topk import SEARCH_REGISTRY, RankedLists, evaluate_topk, rank_lists

__all__ = [
    "DISTANCE_REGISTRY", "EVALUATOR_REGISTRY", "ROC_FPRS", "SEARCH_REGISTRY", "RankMetrics", "RankedLists", "ReidEvaluator",
    "RerankParams", "average_query_expansion", "build_evaluator", "compute_distance", "evaluate_features",
    "evaluate_rank", "evaluate_rank_cuhk03", "evaluate_rank_metrics", "evaluate_topk", "pair_distances", "re_ranking",
    "rank_lists", "re_ranking_features", "roc_curve",
]

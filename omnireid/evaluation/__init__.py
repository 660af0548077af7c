"""Evaluation engine: exact reID metrics, ROC, re-ranking and query expansion, memory-bounded.

Pure PyTorch/NumPy (no compiled extension); faiss is optional (top-k search on huge galleries).
"""
from .base import SampleEvaluator
from .build import EVALUATOR_REGISTRY, PROTOCOL_EVALUATORS, build_evaluator, evaluator_class, register_protocol
from .distance import DISTANCE_REGISTRY, compute_distance
from .features import distance_blocks, evaluate_features
from .fusion import FUSION_REGISTRY, fuse_features
from .query_expansion import average_query_expansion
from .rank import RankMetrics, evaluate_rank, evaluate_rank_cuhk03, evaluate_rank_metrics
from .reid_evaluator import ReidEvaluator
from .rerank import RerankParams, jaccard_distances, re_ranking, re_ranking_features
from .submission import top_k_from_blocks
from .roc import ROC_FPRS, pair_distances, roc_curve
from .topk import SEARCH_REGISTRY, RankedLists, evaluate_topk, rank_lists

__all__ = [
    "DISTANCE_REGISTRY", "EVALUATOR_REGISTRY", "FUSION_REGISTRY", "PROTOCOL_EVALUATORS", "ROC_FPRS", "SEARCH_REGISTRY", "RankMetrics",
    "RankedLists", "ReidEvaluator", "RerankParams", "SampleEvaluator", "average_query_expansion", "build_evaluator",
    "compute_distance", "distance_blocks", "evaluator_class", "evaluate_features", "evaluate_rank",
    "evaluate_rank_cuhk03", "evaluate_rank_metrics", "evaluate_topk", "fuse_features", "jaccard_distances",
    "pair_distances", "rank_lists", "re_ranking", "re_ranking_features", "register_protocol", "roc_curve",
    "top_k_from_blocks",
]

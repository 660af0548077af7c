"""Pseudo-labels from features: k-reciprocal Jaccard distances (the re-ranking code of
``omnireid.evaluation``) clustered by DBSCAN (scikit-learn) on the sparse precomputed distances.

Pairs that share no k-reciprocal neighbour have a Jaccard distance of exactly 1 and are not stored;
with ``eps < 1`` they can never be DBSCAN neighbours, so the sparse input gives exactly the clusters
of the dense N x N matrix in O(N * k) memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from omnireid.evaluation import jaccard_distances
from omnireid.utils.errors import ConfigError, MissingDependencyError


@dataclass(frozen=True)
class ClusterParams:
    """``ADAPT.K1 / K2 / EPS / MIN_SAMPLES`` (checked: bad values are one-line config errors)."""

    k1: int = 30
    k2: int = 6
    eps: float = 0.6
    min_samples: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ConfigError(f"ADAPT.EPS must be in (0, 1) (a Jaccard distance; pairs without shared neighbours are "
                              f"at exactly 1), got {self.eps}")
        if self.min_samples < 1:
            raise ConfigError(f"ADAPT.MIN_SAMPLES must be >= 1, got {self.min_samples}")
        if self.k1 < 1 or self.k2 < 1:
            raise ConfigError(f"ADAPT.K1 and ADAPT.K2 must be >= 1, got {self.k1} and {self.k2}")

    @classmethod
    def from_config(cls, cfg) -> "ClusterParams":
        a = cfg.ADAPT
        return cls(int(a.K1), int(a.K2), float(a.EPS), int(a.MIN_SAMPLES))


def _sklearn():
    try:
        from scipy import sparse
        from sklearn.cluster import DBSCAN
        from sklearn import metrics
    except ImportError as exc:
        raise MissingDependencyError(f"omnireid adapt needs scikit-learn ({exc}): pip install 'omnireid[adapt]'") from exc
    return sparse, DBSCAN, metrics


def dbscan(indptr: np.ndarray, indices: np.ndarray, distances: np.ndarray, eps: float,
           min_samples: int) -> np.ndarray:
    """DBSCAN cluster of every item (-1: outlier) from a sparse CSR distance matrix whose absent
    entries are farther than ``eps`` (each item counts as its own neighbour)."""
    sparse, DBSCAN, _ = _sklearn()
    n = len(indptr) - 1
    graph = sparse.csr_matrix((np.asarray(distances, dtype=np.float64), indices, indptr), shape=(n, n))
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph).astype(np.int64)


def cluster_features(features: torch.Tensor | np.ndarray, params: ClusterParams, metric: str = "cosine",
                     memory_budget_mb: float = 1024) -> np.ndarray:
    """Pseudo-label (cluster id, -1 = outlier) of every feature row."""
    indptr, indices, distances = jaccard_distances(features, metric=metric, k1=params.k1, k2=params.k2,
                                                   memory_budget_mb=memory_budget_mb)
    return dbscan(indptr, indices, distances, params.eps, params.min_samples)


def clustering_scores(true_labels: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """NMI and ARI (%) of the clustering against the true identities, every outlier counted as a
    cluster of its own (dropping them would reward a clustering that rejects all hard images)."""
    _, _, metrics = _sklearn()
    labels = np.asarray(labels, dtype=np.int64).copy()
    outliers = labels < 0
    labels[outliers] = labels.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    return {"NMI": 100.0 * float(metrics.normalized_mutual_info_score(true_labels, labels)),
            "ARI": 100.0 * float(metrics.adjusted_rand_score(true_labels, labels))}

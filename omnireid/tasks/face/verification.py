"""The face verification protocol (LFW / CFP-FP / AgeDB-30 style) on pair distances.

As in insightface's ``verification.py``: embeddings (image + mirror, summed) are L2-normalised, a
pair's score is the squared L2 distance, and a pair is predicted "same" when its distance is below
a threshold. Accuracy is 10-fold: pairs are cut into 10 contiguous folds (the first ``n % 10``
folds one pair larger, as scikit-learn's unshuffled ``KFold``); for each fold the threshold that
maximises accuracy on the other 9 is applied to it; the result is the mean and standard deviation
of the 10 held-out accuracies.

Unlike insightface, which scans a grid ``0, 0.01, ..., 3.99``, the threshold is exact: every cut
between two consecutive training distances is a candidate, the first best cut is taken and the
threshold is the midpoint of the gap it lies in (so it never depends on the grid step).

TAR@FAR uses the exact convention of :mod:`omnireid.evaluation.roc`: with ``m = floor(FAR * #negatives)``
and ``n_(m+1)`` the ``(m+1)``-th smallest negative distance, ``TAR = #{positive d < n_(m+1)} / #positives``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from omnireid.evaluation.roc import allowed_negatives

TAR_FARS: tuple[float, ...] = (1e-3, 1e-4)
NUM_FOLDS = 10


def tar_key(far: float) -> str:
    return f"TAR@FAR={far:g}"


def pair_distances(embeddings: torch.Tensor, pairs: np.ndarray) -> np.ndarray:
    """Squared L2 distances between the L2-normalised embeddings of each pair ``(i, j)`` (float64)."""
    normed = F.normalize(embeddings.double(), dim=1)
    index = torch.as_tensor(np.asarray(pairs, dtype=np.int64))
    diff = normed[index[:, 0]] - normed[index[:, 1]]
    return diff.square().sum(dim=1).numpy()


def fold_indices(num_pairs: int, num_folds: int = NUM_FOLDS) -> list[np.ndarray]:
    """Contiguous folds, the first ``num_pairs % num_folds`` one larger (scikit-learn ``KFold``)."""
    if num_pairs < num_folds:
        raise ValueError(f"{num_folds}-fold verification needs at least {num_folds} pairs, got {num_pairs}")
    return np.array_split(np.arange(num_pairs), num_folds)


def best_threshold(distances: np.ndarray, issame: np.ndarray) -> float:
    """The threshold maximising accuracy of ``distance < threshold`` on these pairs.

    Cuts are between consecutive distinct sorted distances (plus below all and above all); the first
    best cut wins and the threshold is the middle of its gap (``±1`` beyond the extremes).
    """
    order = np.argsort(distances, kind="stable")
    d, same = distances[order], issame[order].astype(np.int64)
    # accepting the first k pairs: correct = positives among them + negatives after them
    negatives_after = (1 - same).sum() - np.concatenate([[0], np.cumsum(1 - same)])
    correct = np.concatenate([[0], np.cumsum(same)]) + negatives_after
    valid = np.ones(len(d) + 1, dtype=bool)  # a cut inside a run of equal distances is not realisable
    valid[1:-1] = d[1:] > d[:-1]
    k = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if k == 0:
        return float(d[0] - 1.0) if len(d) else 0.0
    if k == len(d):
        return float(d[-1] + 1.0)
    return float((d[k - 1] + d[k]) / 2)


@dataclass(frozen=True)
class VerificationResult:
    accuracy_mean: float
    accuracy_std: float
    thresholds: np.ndarray  # one per fold
    tar: dict[float, float]
    auc: float

    def metrics(self) -> dict[str, float]:
        """Percent for accuracies and rates; the mean fold threshold as is."""
        out = {"Accuracy": 100.0 * self.accuracy_mean, "Accuracy-std": 100.0 * self.accuracy_std}
        out.update({tar_key(far): 100.0 * tar for far, tar in self.tar.items()})
        out["AUC"] = 100.0 * self.auc
        out["Threshold"] = float(self.thresholds.mean())
        return out


def kfold_accuracy(distances: np.ndarray, issame: np.ndarray, num_folds: int = NUM_FOLDS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold held-out accuracies and thresholds (chosen on the other folds)."""
    distances, issame = np.asarray(distances, dtype=np.float64), np.asarray(issame, dtype=bool)
    if distances.shape != issame.shape:
        raise ValueError(f"{distances.shape[0]} distances for {issame.shape[0]} same/different labels")
    accuracies, thresholds = [], []
    folds = fold_indices(len(distances), num_folds)
    for test in folds:
        train = np.setdiff1d(np.arange(len(distances)), test, assume_unique=True)
        threshold = best_threshold(distances[train], issame[train])
        accuracies.append(float(((distances[test] < threshold) == issame[test]).mean()))
        thresholds.append(threshold)
    return np.asarray(accuracies), np.asarray(thresholds)


def tar_at_far(distances: np.ndarray, issame: np.ndarray, far: float) -> float:
    """True accept rate at a false accept rate of at most ``far`` (exact threshold; see the module)."""
    positives, negatives = np.sort(distances[issame]), np.sort(distances[~issame])
    if positives.size == 0:
        return float("nan")
    m = allowed_negatives(far, negatives.size)
    if m >= negatives.size:
        return 1.0
    return float((positives < negatives[m]).mean())


def roc_curve(distances: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)`` at every distinct threshold ``distance <= t`` accepted, from (0, 0) to (1, 1)."""
    order = np.argsort(distances, kind="stable")
    d, same = distances[order], issame[order]
    last_of_run = np.append(d[1:] > d[:-1], True)
    tp = np.cumsum(same)[last_of_run]
    fp = np.cumsum(~same)[last_of_run]
    num_pos, num_neg = max(int(same.sum()), 1), max(int((~same).sum()), 1)
    far = np.concatenate([[0.0], fp / num_neg])
    tar = np.concatenate([[0.0], tp / num_pos])
    return far, tar, np.concatenate([[-np.inf], d[last_of_run]])


def evaluate_verification(distances: np.ndarray, issame: np.ndarray, fars: tuple[float, ...] = TAR_FARS,
                          num_folds: int = NUM_FOLDS) -> VerificationResult:
    """k-fold accuracy, TAR at each FAR and the area under the ROC curve."""
    distances, issame = np.asarray(distances, dtype=np.float64), np.asarray(issame, dtype=bool)
    accuracies, thresholds = kfold_accuracy(distances, issame, num_folds)
    far, tar, _ = roc_curve(distances, issame)
    return VerificationResult(accuracy_mean=float(accuracies.mean()), accuracy_std=float(accuracies.std()),
                              thresholds=thresholds, tar={f: tar_at_far(distances, issame, f) for f in fars},
                              auc=float(np.trapezoid(tar, far)))

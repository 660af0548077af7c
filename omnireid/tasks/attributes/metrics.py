"""Pedestrian attribute metrics with Rethinking_of_PAR's definitions (Jia et al., 2021).

Binary attributes, predicted positive when ``p > threshold`` (strictly greater, as PAR):

- label-based ``mA`` = mean over attributes of ``(TP/P + TN/N) / 2`` (mean of TPR and TNR);
- instance-based, per image over its attributes, then averaged over images:
  ``accuracy = |pred AND gt| / |pred OR gt|``, ``precision = |pred AND gt| / |pred|``,
  ``recall = |pred AND gt| / |gt|``;
- ``F1 = 2 * mean_precision * mean_recall / (mean_precision + mean_recall)``: the harmonic mean of
  the *averaged* precision and recall (PAR and FastAttr). Some papers average per-image F1 instead,
  which gives a lower number; we do not.

Zero denominators follow PAR's ``x / (d + eps)`` convention, i.e. the ratio counts as 0:

- an attribute with no positive test image has TPR 0, so its mA is TNR / 2 (at most 50 %): it is
  reported in ``attributes_without_positives`` and in the table (``P = 0``) so it is not silently
  read as a bad classifier; likewise no negatives gives TNR 0;
- an image with no predicted positive has precision 0 (and, with no positive label either,
  accuracy 0 and recall 0); ``instances_without_predictions`` counts them.

Unknown labels (mask 0) are excluded everywhere: from P/N/TP/TN of their attribute and from their
image's instance sets. An attribute with no known label at all has no mA (NaN in the table) and is
left out of the mean; an image with no known binary label is left out of the instance means.

Categorical groups (one-of-K) report accuracy (argmax == label over images whose class is known)
and balanced accuracy (mean recall over the classes present), never through the binary metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .schema import UNKNOWN_GROUP, AttributeSchema


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (PAR's ``num / (den + 1e-20)``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


@dataclass
class BinaryAttributeMetrics:
    """Label-based and instance-based metrics of binary attributes (fractions in [0, 1])."""

    names: list[str]
    threshold: float
    positives: np.ndarray  # (A,) known positive labels per attribute
    negatives: np.ndarray  # (A,) known negative labels per attribute
    tpr: np.ndarray  # (A,) TP / P
    tnr: np.ndarray  # (A,) TN / N
    label_ma: np.ndarray  # (A,) (TPR + TNR) / 2, NaN when the attribute has no known label
    mA: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    num_instances: int  # images with at least one known binary label
    instances_without_predictions: int
    attributes_without_positives: list[str] = field(default_factory=list)

    @property
    def positive_ratio(self) -> np.ndarray:
        """Fraction of positive labels among the known ones, per attribute."""
        return _ratio(self.positives, self.positives + self.negatives)


def binary_attribute_metrics(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
                             threshold: float = 0.5, names: list[str] | None = None) -> BinaryAttributeMetrics:
    """Metrics of ``probs`` (N, A) against 0/1 ``labels`` (N, A); ``mask`` (N, A) marks known labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape != labels.shape:
        raise ValueError(f"probs and labels must both be (N, A); got {probs.shape} and {labels.shape}")
    known = np.ones(labels.shape, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if known.shape != labels.shape:
        raise ValueError(f"mask must have the labels' shape {labels.shape}, got {known.shape}")
    names = list(names) if names is not None else [str(i) for i in range(labels.shape[1])]
    gt = (labels > 0.5) & known
    gt_neg = (labels <= 0.5) & known
    pred = (probs > threshold) & known

    # label-based
    positives, negatives = gt.sum(0), gt_neg.sum(0)
    tpr = _ratio((gt & pred).sum(0), positives)
    tnr = _ratio((gt_neg & ~pred).sum(0), negatives)
    label_ma = (tpr + tnr) / 2
    labelled = (positives + negatives) > 0
    label_ma = np.where(labelled, label_ma, np.nan)
    mean_ma = float(label_ma[labelled].mean()) if labelled.any() else float("nan")

    # instance-based
    rows = known.any(1)
    intersection = (gt & pred).sum(1)[rows]
    union = (gt | pred).sum(1)[rows]
    predicted = pred.sum(1)[rows]
    actual = gt.sum(1)[rows]
    if rows.any():
        accuracy = float(_ratio(intersection, union).mean())
        precision = float(_ratio(intersection, predicted).mean())
        recall = float(_ratio(intersection, actual).mean())
    else:
        accuracy = precision = recall = float("nan")
    f1 = float(_ratio(2 * precision * recall, precision + recall)) if rows.any() else float("nan")
    return BinaryAttributeMetrics(
        names=names, threshold=float(threshold), positives=positives, negatives=negatives, tpr=tpr, tnr=tnr,
        label_ma=label_ma, mA=mean_ma, accuracy=accuracy, precision=precision, recall=recall, f1=f1,
        num_instances=int(rows.sum()), instances_without_predictions=int((predicted == 0).sum()),
        attributes_without_positives=[n for n, p, l in zip(names, positives, labelled) if l and p == 0],
    )


@dataclass
class GroupMetrics:
    """Accuracy of one categorical group over the images whose class is known."""

    name: str
    classes: list[str]
    accuracy: float  # NaN when no image of the set has a known class
    balanced_accuracy: float  # mean recall over the classes that occur
    count: int
    class_counts: np.ndarray  # (K,) known labels per class


def group_metrics(scores: np.ndarray, labels: np.ndarray, name: str, classes: list[str]) -> GroupMetrics:
    """``scores`` (N, K) of one group (argmax is the prediction); ``labels`` (N,) with -1 = unknown."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0] or scores.shape[1] != len(classes):
        raise ValueError(f"group {name!r}: scores must be (N, {len(classes)}) for labels (N,), got "
                         f"{scores.shape} and {labels.shape}")
    if ((labels < UNKNOWN_GROUP) | (labels >= len(classes))).any():
        raise ValueError(f"group {name!r}: labels must be in [0, {len(classes)}) or {UNKNOWN_GROUP} (unknown)")
    known = labels != UNKNOWN_GROUP
    pred = scores.argmax(1)[known]
    target = labels[known]
    counts = np.bincount(target, minlength=len(classes))
    correct = np.bincount(target[pred == target], minlength=len(classes))
    present = counts > 0
    accuracy = float((pred == target).mean()) if known.any() else float("nan")
    balanced = float(_ratio(correct, counts)[present].mean()) if present.any() else float("nan")
    return GroupMetrics(name, list(classes), accuracy, balanced, int(known.sum()), counts)


@dataclass
class AttributeResults:
    """Everything an attribute evaluation found: binary metrics and one entry per group."""

    binary: BinaryAttributeMetrics | None
    groups: list[GroupMetrics]

    def summary(self) -> dict[str, float]:
        """Headline numbers in percent: ``mA, Acc, Prec, Rec, F1`` and ``<group>_acc``, ``group_acc``."""
        out: dict[str, float] = {}
        if self.binary is not None:
            b = self.binary
            out.update({"mA": 100 * b.mA, "Acc": 100 * b.accuracy, "Prec": 100 * b.precision,
                        "Rec": 100 * b.recall, "F1": 100 * b.f1})
        for g in self.groups:
            out[f"{g.name}_acc"] = 100 * g.accuracy
        if self.groups:
            accs = [g.accuracy for g in self.groups if not np.isnan(g.accuracy)]
            out["group_acc"] = 100 * float(np.mean(accs)) if accs else float("nan")
        return out

    def table(self) -> list[dict[str, object]]:
        """One row per binary attribute (TPR, TNR, mA, positive ratio) and per group (accuracy), in percent."""
        rows: list[dict[str, object]] = []
        if self.binary is not None:
            b = self.binary
            for i, name in enumerate(b.names):
                rows.append({"attribute": name, "kind": "binary", "positives": int(b.positives[i]),
                             "negatives": int(b.negatives[i]), "pos_ratio": 100 * float(b.positive_ratio[i]),
                             "TPR": 100 * float(b.tpr[i]), "TNR": 100 * float(b.tnr[i]),
                             "mA": 100 * float(b.label_ma[i]), "acc": float("nan")})
        for g in self.groups:
            rows.append({"attribute": g.name, "kind": f"group({len(g.classes)})", "positives": g.count,
                         "negatives": 0, "pos_ratio": float("nan"), "TPR": float("nan"), "TNR": float("nan"),
                         "mA": 100 * g.balanced_accuracy, "acc": 100 * g.accuracy})
        return rows


def evaluate_attributes(scores: np.ndarray, schema: AttributeSchema, attributes: np.ndarray,
                        mask: np.ndarray | None, groups: np.ndarray | None,
                        threshold: float = 0.5) -> AttributeResults:
    """Metrics of model outputs ``scores`` (N, ``schema.num_outputs``; layout in :mod:`.schema`).

    ``attributes``/``mask`` are (N, A) binary labels and known-marks, ``groups`` (N, G) class indices
    (-1 unknown). For a group, balanced accuracy appears in the table's mA column (the group analogue
    of mA: mean per-class recall).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] != schema.num_outputs:
        raise ValueError(f"attribute scores must be (N, {schema.num_outputs}) for {schema.num_binary} binary "
                         f"attributes and groups {[g.name for g in schema.groups]}, got {scores.shape}")
    binary = None
    if schema.num_binary:
        binary = binary_attribute_metrics(scores[:, :schema.num_binary], attributes, mask, threshold,
                                          list(schema.binary))
    group_results = []
    if schema.num_groups:
        if groups is None:
            raise ValueError(f"the schema has groups {[g.name for g in schema.groups]} but no group labels were given")
        groups = np.asarray(groups).reshape(len(scores), schema.num_groups)
        for g, (group, cols) in enumerate(zip(schema.groups, schema.group_slices())):
            group_results.append(group_metrics(scores[:, cols], groups[:, g], group.name, list(group.classes)))
    return AttributeResults(binary, group_results)

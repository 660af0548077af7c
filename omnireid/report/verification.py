"""The verification report (face ``.bin`` sets): the numbers are the face task's
(:func:`omnireid.tasks.face.verification.evaluate_verification`: 10-fold accuracy, TAR@FAR, AUC on
squared L2 distances of L2-normalised embeddings); the page adds the per-fold table, the ROC curve,
the distance distributions and the hardest pairs (false accepts and false rejects, both images and
their distance), so a user sees which pairs the model gets wrong and by how much."""
from __future__ import annotations

import numpy as np
import torch

from omnireid.tasks.face.verification import (NUM_FOLDS, evaluate_verification, fold_indices, kfold_accuracy,
                                              pair_distances, roc_curve)

from .base import REPORT_PROTOCOLS, ReportOptions
from .html import Raw, Report, Section, Thumbnails, esc, figure_html, fmt, table
from .inputs import ReportInput, ReportInputError
from .reid import _figure, _plot_block, distance_figure, slug

VERIFICATION_NOTE = ("Verification protocol: a pair is accepted as the same person when the squared L2 distance of "
                     "its L2-normalised embeddings is below a threshold; Accuracy is the mean (± std) of 10 held-out "
                     "folds, each with the threshold that is best on the other 9; TAR@FAR with the exact threshold "
                     "on the negative pairs. Metrics in percent.")


def pairs_of(data: ReportInput) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs (P, 2), issame (P,))`` from the test set's metadata, checked against its items."""
    missing = [k for k in ("pairs", "issame") if k not in data.meta]
    if missing:
        raise ReportInputError(f"{data.name}: the verification report needs {missing} in the test set's metadata")
    pairs = np.asarray(data.meta["pairs"], dtype=np.int64).reshape(-1, 2)
    issame = np.asarray(data.meta["issame"], dtype=bool).reshape(-1)
    if len(pairs) != len(issame) or (pairs.size and (pairs.min() < 0 or pairs.max() >= len(data.items))):
        raise ReportInputError(f"{data.name}: {len(pairs)} pairs and {len(issame)} labels over {len(data.items)} "
                               "items do not fit together")
    return pairs, issame


def hardest_pairs(distances: np.ndarray, issame: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` closest different-identity pairs (the would-be false accepts) and the ``count``
    farthest same-identity pairs (false rejects), hardest first; ties keep pair order."""
    negatives, positives = np.flatnonzero(~issame), np.flatnonzero(issame)
    closest = negatives[np.argsort(distances[negatives], kind="stable")[:count]]
    farthest = positives[np.argsort(-distances[positives], kind="stable")[:count]]
    return closest, farthest


def roc_plot(distances: np.ndarray, issame: np.ndarray, tar: dict[float, float], name: str) -> str:
    far, rate, _ = roc_curve(distances, issame)
    fig, ax = _figure()
    keep = far > 0
    ax.plot(far[keep], rate[keep] * 100, color="#2456c6", label="ROC")
    for f, value in tar.items():
        ax.plot([f], [value * 100], "o", color="#d23c3c")
        ax.annotate(f"{value * 100:.1f}", (f, value * 100), textcoords="offset points", xytext=(4, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="false accept rate", ylabel="true accept rate (%)", title=f"ROC: {name}", ylim=(0, 101),
           xlim=(max(1e-6, 0.5 / max(1, int((~issame).sum()))), 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return figure_html(fig, f"ROC curve of {name}")


def _pair_rows(order: np.ndarray, pairs: np.ndarray, distances: np.ndarray, threshold: float, accept_wrong: bool,
               data: ReportInput, options: ReportOptions, thumbs: Thumbnails) -> list[list[object]]:
    paths, height = data.paths, options.thumb_height // 2
    rows = []
    for k in order.tolist():
        i, j = int(pairs[k, 0]), int(pairs[k, 1])
        wrong = distances[k] < threshold if accept_wrong else distances[k] >= threshold
        images = Raw("".join(f'<img alt="pair {k} image {m}" src="{thumbs(paths[m])}" height="{height}"> '
                             for m in (i, j)))
        verdict = ("false accept" if accept_wrong else "false reject") if wrong else "correct"
        rows.append([f"#{k}", images, f"{distances[k]:.4f}", verdict, esc(paths[i]), esc(paths[j])])
    return rows


@REPORT_PROTOCOLS.register("verification")
def verification_report(data: ReportInput, options: ReportOptions, thumbs: Thumbnails) -> Report:
    pairs, issame = pairs_of(data)
    distances = pair_distances(torch.from_numpy(data.features), pairs)
    result = evaluate_verification(distances, issame)
    accuracies, thresholds = kfold_accuracy(distances, issame)
    metrics = result.metrics()
    anchor = slug(data.name)
    summary = table(["test set", *metrics, "pairs", "same", "different"],
                    [[data.name, *[fmt(v, 4 if k == "Threshold" else 2) for k, v in metrics.items()], len(pairs),
                      int(issame.sum()), int((~issame).sum())]], "metrics")
    folds = fold_indices(len(distances), NUM_FOLDS)
    fold_rows = [[f + 1, len(idx), f"{thresholds[f]:.4f}", fmt(100 * accuracies[f])] for f, idx in enumerate(folds)]
    fold_rows.append(["mean ± std", len(distances), f"{thresholds.mean():.4f}",
                      f"{fmt(100 * accuracies.mean())} ± {fmt(100 * accuracies.std())}"])
    sections = [
        Section(f"{anchor}-metrics", "Metrics", summary, VERIFICATION_NOTE),
        Section(f"{anchor}-folds", f"{NUM_FOLDS}-fold accuracy",
                table(["fold", "pairs", "threshold (chosen on the other folds)", "held-out accuracy (%)"], fold_rows,
                      "folds"),
                "Contiguous folds of the pair list, as insightface's verification."),
        Section(f"{anchor}-curves", "ROC and distances",
                '<div class="plots">'
                + _plot_block(f"{anchor}-roc", roc_plot(distances, issame, result.tar, data.name),
                              "Accepted = distance below the threshold; dots: TAR at the FARs of the metrics.")
                + _plot_block(f"{anchor}-distances", distance_figure(distances[issame], distances[~issame],
                                                                     "squared L2", data.name),
                              "Same-identity pairs (green) against different-identity pairs (red).")
                + "</div>"),
    ]
    threshold = float(thresholds.mean())
    closest, farthest = hardest_pairs(distances, issame, options.worst)
    header = ["pair", "images", "distance", f"at threshold {threshold:.4f}", "first image", "second image"]
    sections.append(Section(
        f"{anchor}-false-accepts", "Hardest different-identity pairs (false accepts)",
        table(header, _pair_rows(closest, pairs, distances, threshold, True, data, options, thumbs), "hard-pairs"),
        f"The {len(closest)} closest pairs of different people; below the mean fold threshold they are accepted."))
    sections.append(Section(
        f"{anchor}-false-rejects", "Hardest same-identity pairs (false rejects)",
        table(header, _pair_rows(farthest, pairs, distances, threshold, False, data, options, thumbs), "hard-pairs"),
        f"The {len(farthest)} farthest pairs of the same person; at or above the threshold they are rejected."))
    return Report(data.name, data.protocol, sections)

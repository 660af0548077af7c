"""Classification metrics, logits in: top-k accuracy, per-class accuracy and the confusion matrix.

Definitions (ties broken by the lower class index, so results never depend on a sort's whims):

- the rank of the true class ``t`` among scores ``s`` is ``#{c : s_c > s_t} + #{c < t : s_c = s_t}``;
  ``Top-k`` is the percentage of samples whose true class has rank ``< k``;
- the prediction is the first class of highest score (rank 0), so ``Top-1`` = trace / total of the
  confusion matrix ``M[true, predicted]``;
- per-class accuracy = ``M[c, c] / sum_j M[c, j]`` (undefined for a class without samples);
  ``MeanClassAcc`` is its mean over the classes that have samples (balanced accuracy).

The accumulator keeps only the ``C x C`` matrix and per-``k`` counts, whatever the test size.
The artefact writers (CSV, PNG) need nothing beyond numpy and Pillow.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

DEFAULT_TOPK = (1, 5)


def true_class_rank(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank (0 = best) of each sample's true class, ties broken by the lower class index. The
    prediction (rank 0) is ``torch.argmax``, which returns the first maximum."""
    true = logits.gather(1, targets[:, None])
    classes = torch.arange(logits.shape[1], device=logits.device)[None, :]
    ahead = (logits > true) | ((logits == true) & (classes < targets[:, None]))
    return ahead.sum(dim=1)


@dataclass
class ClassificationMetrics:
    confusion: np.ndarray  # (C, C) int64, rows = true class, columns = predicted class
    topk_correct: dict[int, int]
    total: int

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """``(C,)`` accuracy per true class; NaN for classes without samples."""
        support = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, np.diag(self.confusion) / np.maximum(support, 1), np.nan)

    def summary(self) -> dict[str, float]:
        """``Top-k`` for every k and ``MeanClassAcc``, in percent."""
        out = {f"Top-{k}": 100.0 * c / self.total for k, c in sorted(self.topk_correct.items())}
        per_class = self.per_class_accuracy
        out["MeanClassAcc"] = float(np.nanmean(per_class)) * 100 if np.isfinite(per_class).any() else float("nan")
        return out


class ClassificationAccumulator:
    """Consumes ``(logits, targets)`` batches; keeps the confusion matrix and top-k counts."""

    def __init__(self, num_classes: int, topk: Sequence[int] = DEFAULT_TOPK) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not topk or min(topk) < 1:
            raise ValueError(f"top-k values must be positive integers, got {list(topk)}")
        self.num_classes = num_classes
        self.topk = tuple(sorted({int(k) for k in topk}))
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.topk_correct = {k: 0 for k in self.topk}
        self.total = 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch of ``(N, C)`` scores (logits or probabilities) and ``(N,)`` true classes."""
        logits = torch.as_tensor(logits).detach().float().cpu()
        targets = torch.as_tensor(targets).detach().cpu().long().reshape(-1)
        if logits.dim() != 2 or logits.shape[0] != targets.shape[0]:
            raise ValueError(f"logits must be (N, C) with N = {targets.shape[0]} targets, got {tuple(logits.shape)}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, expected {self.num_classes}")
        self._check_targets(targets)
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("logits contain NaN or infinite values")
        self.add_ranks(true_class_rank(logits, targets), torch.argmax(logits, dim=1), targets)

    def add_ranks(self, ranks: torch.Tensor, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        """Samples already reduced to the rank of their true class and their prediction (what an
        evaluator keeps per sample instead of all ``C`` scores)."""
        ranks, predicted = torch.as_tensor(ranks).long().reshape(-1), torch.as_tensor(predicted).long().reshape(-1)
        targets = torch.as_tensor(targets).long().reshape(-1)
        self._check_targets(targets)
        cells = (targets * self.num_classes + predicted).numpy()
        self.confusion += np.bincount(cells, minlength=self.num_classes**2).reshape(self.num_classes, -1)
        for k in self.topk:
            self.topk_correct[k] += int((ranks < k).sum())
        self.total += int(targets.numel())

    def _check_targets(self, targets: torch.Tensor) -> None:
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            bad = targets[(targets < 0) | (targets >= self.num_classes)][0].item()
            raise ValueError(f"target class {bad} is outside 0..{self.num_classes - 1} (the model's classes)")

    def result(self) -> ClassificationMetrics:
        if self.total == 0:
            raise ValueError("no sample was evaluated")
        return ClassificationMetrics(self.confusion.copy(), dict(self.topk_correct), self.total)


# ----------------------------------------------------------------------------------- artefacts
def confusion_csv(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    """The matrix as CSV: a header row of predicted classes, one row per true class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, confusion):
        writer.writerow([name, *(int(v) for v in row)])
    return buf.getvalue()


def per_class_csv(metrics: ClassificationMetrics, class_names: Sequence[str]) -> str:
    """``class,samples,correct,accuracy`` (accuracy in percent, empty for classes without samples)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "samples", "correct", "accuracy"])
    support = metrics.confusion.sum(axis=1)
    for c, name in enumerate(class_names):
        acc = "" if support[c] == 0 else f"{100.0 * metrics.confusion[c, c] / support[c]:.4f}"
        writer.writerow([name, int(support[c]), int(metrics.confusion[c, c]), acc])
    return buf.getvalue()


def _text_image(text: str, font) -> "Image.Image":
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(1, right - left + 2), max(1, bottom - top + 2)), 255)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill=0, font=font)
    return img


def confusion_png(confusion: np.ndarray, class_names: Sequence[str], max_labelled: int = 60) -> bytes:
    """A heat map of the row-normalised matrix (white = 0, dark blue = 1) as PNG bytes.

    Class names label the axes and counts annotate the cells when there are at most ``max_labelled``
    classes (beyond that the figure would be unreadable and only the colours are drawn).
    """
    from PIL import Image, ImageDraw, ImageFont

    num = confusion.shape[0]
    font = ImageFont.load_default()
    labelled = num <= max_labelled
    cell = max(2, min(40, 1200 // max(num, 1))) if labelled else max(1, min(8, 2000 // max(num, 1)))
    names = [_text_image(str(n)[:24], font) for n in class_names] if labelled else []
    margin_left = (max(im.width for im in names) + 6) if names else 4
    margin_top = (max(im.width for im in names) + 6) if names else 4
    width, height = margin_left + num * cell + 4, margin_top + num * cell + 4
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    support = confusion.sum(axis=1, keepdims=True)
    frac = np.where(support > 0, confusion / np.maximum(support, 1), 0.0)
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    for r in range(num):
        for c in range(num):
            colour = tuple(int(v) for v in np.round(low + (high - low) * frac[r, c]))
            x0, y0 = margin_left + c * cell, margin_top + r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour)
            if labelled and cell >= 14 and confusion[r, c]:
                label = _text_image(str(int(confusion[r, c])), font)
                if label.width < cell:
                    ink = (255, 255, 255) if frac[r, c] > 0.5 else (0, 0, 0)
                    img.paste(Image.new("RGB", label.size, ink), (x0 + (cell - label.width) // 2,
                                                                 y0 + (cell - label.height) // 2),
                              mask=Image.eval(label, lambda v: 255 - v))
    for i, name in enumerate(names):
        y = margin_top + i * cell + (cell - name.height) // 2
        img.paste((0, 0, 0), (margin_left - name.width - 3, y), mask=Image.eval(name, lambda v: 255 - v))
        rotated = name.rotate(90, expand=True, fillcolor=255)
        x = margin_left + i * cell + (cell - rotated.width) // 2
        img.paste((0, 0, 0), (x, margin_top - rotated.height - 3), mask=Image.eval(rotated, lambda v: 255 - v))
    if names:
        corner = _text_image("true \\ predicted", font)
        if corner.width < margin_left and corner.height < margin_top:
            img.paste((90, 90, 90), (2, 2), mask=Image.eval(corner, lambda v: 255 - v))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()

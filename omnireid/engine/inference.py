"""Feature extraction over a test loader, with optional flip test-time augmentation."""
from __future__ import annotations

import logging
import os
import sys
from typing import Protocol

import torch
from torch import nn

from omnireid.utils import comm

logger = logging.getLogger(__name__)

METRIC_ORDER = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


class Evaluator(Protocol):
    def reset(self) -> None: ...

    def process(self, batch: dict, features: torch.Tensor) -> None: ...

    def evaluate(self) -> dict[str, float]: ...


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """Features of ``images``; with ``flip``, the mean of the image's and its mirror's features."""
    features = model(images)
    if flip:
        features = (features + model(torch.flip(images, dims=[3]))) / 2
    return features


@torch.no_grad()
def inference_on_dataset(model: nn.Module, loader, evaluator: Evaluator, device: torch.device,
                         flip: bool = False) -> dict[str, float]:
    """Run the model over ``loader`` in eval mode and feed ``evaluator``; training mode is restored."""
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        for batch in _progress(loader):
            images = batch["images"].to(device, non_blocking=device.type == "cuda")
            features = extract_features(model, images, flip=flip)
            evaluator.process(batch, features.float().cpu())
    finally:
        model.train(was_training)
    return evaluator.evaluate()


def progress_enabled() -> bool:
    """Progress bars on the main process of an interactive terminal.

    ``OMNIREID_PROGRESS=1`` forces them (e.g. under a pager), ``OMNIREID_PROGRESS=0`` turns them off;
    in logs and CI they would only repeat what the periodic log line says.
    """
    forced = os.environ.get("OMNIREID_PROGRESS")
    if forced is not None:
        return forced != "0" and comm.is_main_process()
    return comm.is_main_process() and sys.stderr.isatty()


def _progress(loader):
    if not progress_enabled():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc="extract", unit="batch", leave=False, dynamic_ncols=True)


def format_results_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per dataset, metrics in percent."""
    if not results:
        return ""
    extra = sorted({k for m in results.values() for k in m} - set(METRIC_ORDER))
    columns = [c for c in METRIC_ORDER if any(c in m for m in results.values())] + extra
    lines = ["| Dataset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in results.items():
        cells = [f"{metrics[c]:.2f}" if c in metrics else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_results_table(results: dict[str, dict[str, float]]) -> None:
    logger.info("Evaluation results:\n%s", format_results_table(results))

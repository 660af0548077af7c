"""Running an eval-mode model over a test loader (optional flip test-time augmentation) into an evaluator."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Protocol

import torch
from torch import nn

from omnireid.utils import comm

logger = logging.getLogger(__name__)

METRIC_ORDER = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


class Evaluator(Protocol):
    def reset(self) -> None: ...

    def process(self, batch: dict, outputs: dict[str, torch.Tensor]) -> None: ...

    def evaluate(self) -> dict[str, float]: ...


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A new dict whose tensors live on ``device`` (the caller's batch is left untouched)."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


@torch.no_grad()
def extract_features(model: nn.Module, batch: dict[str, Any], flip: bool = False) -> dict[str, torch.Tensor]:
    """The eval-mode outputs (``features``, ``logits``...) of ``batch``, a batch dict (so side
    information such as ``camids`` reaches the model); with ``flip``, the mean of the outputs of the
    images and of their mirrors (the other fields unchanged)."""
    outputs = model(batch)
    if flip:
        mirrored = model({**batch, "images": torch.flip(batch["images"], dims=[3])})
        outputs = {name: (value + mirrored[name]) / 2 for name, value in outputs.items()}
    return outputs


@torch.inference_mode()
def inference_on_dataset(model: nn.Module, loader, evaluator: Evaluator, device: torch.device,
                         flip: bool = False) -> dict[str, float]:
    """Run the model over ``loader`` in eval mode and feed ``evaluator`` the batch and the model's
    outputs (float32, on CPU); training mode is restored."""
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        for batch in _progress(loader):
            outputs = extract_features(model, move_batch(batch, device), flip=flip)
            evaluator.process(batch, {name: value.float().cpu() for name, value in outputs.items()})
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
    """A markdown table: one row per test set, metrics in percent. Detail metrics (keys with a ``/``,
    e.g. per-attribute ``hat/mA``) stay in metrics.json and out of this summary."""
    if not results:
        return ""
    extra = sorted({k for m in results.values() for k in m if "/" not in k} - set(METRIC_ORDER))
    columns = [c for c in METRIC_ORDER if any(c in m for m in results.values())] + extra
    lines = ["| Dataset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in results.items():
        cells = [f"{metrics[c]:.2f}" if c in metrics else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_results_table(results: dict[str, dict[str, float]]) -> None:
    logger.info("Evaluation results:\n%s", format_results_table(results))

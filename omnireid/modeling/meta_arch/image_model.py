"""The input side every meta-architecture shares: normalisation inside the model, labels on its device."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from omnireid.utils.errors import ConfigError

Batch = dict  # a loader batch: {"images", "targets", "camids", "img_paths", ...} (docs/design.md)


class ImageModel(nn.Module):
    """A model fed loader batches of 0-255 images: it normalises them itself (so an exported model takes
    raw pixels) and moves the batch's label fields to its device.

    ``pixel_mean``/``pixel_std`` are non-persistent buffers: normalisation comes from the config and
    checkpoints stay plain weight dicts.
    """

    def __init__(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ConfigError(f"MODEL.PIXEL_MEAN ({list(pixel_mean)}) and MODEL.PIXEL_STD ({list(pixel_std)}) "
                              "must have the same length")
        if any(s <= 0 for s in pixel_std):
            raise ConfigError(f"MODEL.PIXEL_STD must be positive, got {list(pixel_std)}")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batch: Batch | torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` as a new float tensor on the model's device."""
        images = batch["images"] if isinstance(batch, dict) else batch
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected an image tensor or a batch dict with 'images', got {type(images).__name__}")
        channels = self.pixel_mean.shape[1]
        if images.dim() != 4 or images.shape[1] != channels:
            raise ValueError(f"images must have shape (N, {channels}, H, W), got {tuple(images.shape)}")
        images = images.to(device=self.pixel_mean.device, dtype=self.pixel_mean.dtype)
        return (images - self.pixel_mean) / self.pixel_std

    def prepare_labels(self, batch: Batch, field: str) -> torch.Tensor:
        """The batch's label field ``field`` on the model device (integers as int64, floats as float32,
        booleans kept)."""
        if not isinstance(batch, dict) or field not in batch:
            present = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise KeyError(f"training needs the label field {field!r} in the batch (a loss reads it); the batch has "
                           f"{present}: does the training dataset provide it?")
        labels = torch.as_tensor(batch[field]).to(self.device)
        if labels.dtype == torch.bool:
            return labels
        return labels.float() if labels.is_floating_point() else labels.long()

    def prepare_targets(self, batch: Batch) -> torch.Tensor:
        """The batch's identity labels as int64 on the model device.

        All-negative labels (FastReID's marker for data without usable labels, e.g. precise-BN
        passes over another dataset) become zeros so that margin classifiers do not fail.
        """
        if not isinstance(batch, dict) or "targets" not in batch:
            raise KeyError("training needs a batch dict with 'targets' (identity labels)")
        targets = torch.as_tensor(batch["targets"]).to(device=self.device, dtype=torch.long)
        if targets.numel() and bool((targets < 0).all()):
            targets = torch.zeros_like(targets)
        return targets

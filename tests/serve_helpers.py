"""Small real artifacts and images for the index / serve / report tests (made in the test's tmp dir)."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

INPUT_SIZE = (32, 16)


class TinyEmbedder(torch.nn.Module):
    """A 16-d image embedding: enough structure that different images get different features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d((2, 2))
        self.fc = torch.nn.Linear(32, 16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(images.float() / 127.5 - 1))
        return self.fc(self.pool(x).flatten(1))


def make_tiny_onnx(path: str, seed: int = 0) -> str:
    """An ONNX artifact like `omnireid export` writes: input ``images`` (batch, 3, 32, 16) RGB 0-255,
    output ``features``, dynamic batch."""
    torch.manual_seed(seed)
    model = TinyEmbedder().eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.onnx.export(model, (torch.zeros(2, 3, *INPUT_SIZE),), path, input_names=["images"],
                      output_names=["features"], dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def write_images(folder: str, count: int, seed: int = 0, prefix: str = "img") -> list[str]:
    """``count`` distinct PNG images (random colour blocks, varied sizes) under ``folder``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(40, 90)), int(rng.integers(20, 50))
        blocks = rng.integers(0, 256, (4, 2, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((h // 4 + 1, w // 2 + 1, 1), dtype=np.uint8))[:h, :w]
        path = os.path.join(folder, f"{prefix}{i:03d}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def png_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()

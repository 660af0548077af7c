"""Decoders of named model outputs into readable per-image predictions (``omnireid predict``).

``OUTPUT_DECODERS`` maps an output name (``logits``, ``attributes``, ...) to
``fn(values: (N, ...) float tensor, metadata: dict, topk: int) -> list[dict]`` (one dict per image,
JSON-serialisable; nested values are flattened into ``<output>.<key>`` CSV columns). ``metadata`` is
the training-set metadata saved beside checkpoints and exports (``class_names``, ``attribute_names``...).
A task registers the decoder of the output its head adds.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from omnireid.utils.registry import Registry

OutputDecoder = Callable[[torch.Tensor, dict, int], list[dict[str, Any]]]
OUTPUT_DECODERS = Registry("output decoder")


@OUTPUT_DECODERS.register("logits")
def decode_logits(values: torch.Tensor, metadata: dict, topk: int = 1) -> list[dict[str, Any]]:
    """Softmax over the margin-free logits: the best class (``metadata["class_names"]``, else its index)
    with its probability, and the ``topk`` best when ``topk > 1``. Ties: the lower class index first."""
    if values.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(values.shape)}")
    names = list(metadata.get("class_names") or [])
    if names and len(names) != values.shape[1]:
        raise ValueError(f"the model has {values.shape[1]} classes but its metadata names {len(names)}")
    names = names or [str(i) for i in range(values.shape[1])]
    probs = torch.softmax(values.double(), dim=1)
    k = max(1, min(int(topk), values.shape[1]))
    # stable descending sort: equal probabilities keep the lower class index first
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
    rows = []
    for p, idx in zip(probs.tolist(), order.tolist()):
        row: dict[str, Any] = {"class": names[idx[0]], "probability": round(p[idx[0]], 6)}
        if k > 1:
            row["top"] = [{"class": names[i], "probability": round(p[i], 6)} for i in idx]
        rows.append(row)
    return rows

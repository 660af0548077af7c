"""``omnireid predict`` decoding of the ``attributes`` output: names, probabilities and group argmax."""
from __future__ import annotations

from typing import Any

import torch

from omnireid.inference.decoders import OUTPUT_DECODERS

from .schema import DEFAULT_THRESHOLD, THRESHOLD_KEY, AttributeSchema, check_threshold


@OUTPUT_DECODERS.register("attributes")
def decode_attributes(values: torch.Tensor, metadata: dict, topk: int = 1) -> list[dict[str, Any]]:
    """Per image: ``positive`` (binary attributes with p > ``metadata["attribute_threshold"]``, the
    training run's ``TEST.THRES``; 0.5 for metadata written before it was recorded), ``probabilities`` of every binary attribute, and for each group its most probable class with
    that probability (the ``topk`` best classes when ``topk > 1``)."""
    schema = AttributeSchema.from_metadata(metadata)
    if values.dim() != 2 or values.shape[1] != schema.num_outputs:
        raise ValueError(f"the model predicts {tuple(values.shape)[1:]} attribute columns but its metadata "
                         f"describes {schema.num_outputs}")
    threshold = check_threshold(metadata.get(THRESHOLD_KEY, DEFAULT_THRESHOLD), f"metadata {THRESHOLD_KEY!r}")
    rows = []
    for row in values.double().tolist():
        binary = {name: round(p, 6) for name, p in zip(schema.binary, row[:schema.num_binary])}
        decoded: dict[str, Any] = {"positive": [n for n, p in binary.items() if p > threshold],
                                   "probabilities": binary}
        for group, cols in zip(schema.groups, schema.group_slices()):
            probs = row[cols]
            order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
            decoded[group.name] = {"class": group.classes[order[0]], "probability": round(probs[order[0]], 6)}
            if topk > 1:
                decoded[group.name]["top"] = [{"class": group.classes[i], "probability": round(probs[i], 6)}
                                              for i in order[:topk]]
        rows.append(decoded)
    return rows

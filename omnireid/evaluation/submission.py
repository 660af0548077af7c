"""Ranked lists without labels: each query's top-K gallery items, from any distance block source.

What ``omnireid submit`` writes (NAIC's format) and what a brute-force reference checks: per query,
the ``k`` gallery items with the smallest distance, **ties broken by the smaller gallery index**
(a stable sort of the row). The distances are visited in query blocks bounded by
``memory_budget_mb`` (:func:`omnireid.evaluation.features.distance_blocks`: plain, fused or
re-ranked); optionally every block is also streamed to a float16 ``.npy`` matrix.
"""
from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch

from .features import DistanceBlocks
from .rank import order_by_row_then_value, rows_per_chunk

# working bytes per block element on top of the block: comparison mask, top-k buffer, float16 copy
_WORK_BYTES_PER_ELEMENT = 8


def block_top_k(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, distances)`` of each row's ``k`` smallest values, ordered by (value, column)."""
    rows, cols = block.shape
    k = min(k, cols)
    kth = torch.topk(block, k, dim=1, largest=False, sorted=False).values.amax(dim=1)
    # every item that can be in the top k (ties at the k-th value included), in row-major order
    flat = torch.from_numpy(np.flatnonzero(np.less_equal(block.numpy(), kth.numpy()[:, None])))
    cand_rows = torch.div(flat, cols, rounding_mode="floor")
    order, cand_rows = order_by_row_then_value(cand_rows, block.reshape(-1)[flat], return_rows=True)
    counts = torch.bincount(cand_rows, minlength=rows)
    first = torch.cumsum(counts, 0) - counts
    take = order[(first[:, None] + torch.arange(k)[None, :]).reshape(-1)]
    chosen = flat[take]
    return (chosen % cols).view(rows, k), block.reshape(-1)[chosen].view(rows, k)


def top_k_from_blocks(source: DistanceBlocks, k: int, memory_budget_mb: float = 1024,
                      distmat_file: BinaryIO | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(indices (nq, k'), distances (nq, k'))``, ``k' = min(k, num_gallery)``, nearest first.

    With ``distmat_file`` (a binary file), the whole query x gallery matrix is written to it as a
    float16 ``.npy`` array, block by block (never held in memory)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    nq, ng = source.num_query, source.num_gallery
    kk = min(k, ng)
    if distmat_file is not None:
        np.lib.format.write_array_header_1_0(distmat_file, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")),
                                                            "fortran_order": False, "shape": (nq, ng)})
    indices = np.empty((nq, kk), dtype=np.int64)
    distances = np.empty((nq, kk), dtype=np.float32)
    rows = rows_per_chunk(ng, source.bytes_per_element() + _WORK_BYTES_PER_ELEMENT, memory_budget_mb)
    expected = 0
    for start, block in source.blocks(rows):
        if start != expected:
            raise RuntimeError(f"distance blocks came out of order: row {start}, expected {expected}")
        idx, dist = block_top_k(block, kk)
        indices[start : start + len(block)] = idx.numpy()
        distances[start : start + len(block)] = dist.numpy()
        if distmat_file is not None:
            distmat_file.write(block.numpy().astype("<f2").tobytes())
        expected = start + len(block)
    if expected != nq:
        raise RuntimeError(f"distance blocks covered {expected} of {nq} query rows")
    return indices, distances

"""The shared part of dataset evaluators: collect per-sample tensors, gather across ranks in test-set
order, compute the metrics once on rank 0, give every rank the same result.

A concrete evaluator says what to keep from each batch (:meth:`SampleEvaluator.collect`) and how to
turn the whole test set into metrics (:meth:`SampleEvaluator.compute`)::

    @EVALUATOR_REGISTRY.register()
    @register_protocol("classification")
    class AccuracyEvaluator(SampleEvaluator):
        @classmethod
        def from_config(cls, cfg, test_set, output_dir=None):
            return cls()

        def collect(self, batch, outputs):
            return {"logits": outputs["logits"], "targets": batch["targets"]}

        def compute(self, data):
            return {"Top-1": 100.0 * (data["logits"].argmax(1) == data["targets"]).double().mean().item()}

Ordering: when batches carry ``indices`` (positions in the test set), samples are put back in
test-set order by those indices (duplicates from padded samplers are dropped). Without them, the
inference sampler is assumed to give rank ``r`` the contiguous shard ``[r*ceil(n/w),
min(n, (r+1)*ceil(n/w)))`` in order without padding, so concatenating the ranks' samples in rank
order restores test-set order.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from omnireid.utils import comm


class SampleEvaluator(abc.ABC):
    """``reset`` / ``process(batch, outputs)`` / ``evaluate``; subclasses define ``collect`` and ``compute``."""

    def __init__(self) -> None:
        self.reset()

    @abc.abstractmethod
    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The per-sample tensors (first dimension = batch size) to keep from one batch."""

    @abc.abstractmethod
    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of the whole test set; ``data`` holds every collected tensor in test-set order."""

    def reset(self) -> None:
        self._parts: list[dict[str, torch.Tensor]] = []
        self._indices: list[torch.Tensor] | None = []

    def process(self, batch: dict, outputs: dict[str, torch.Tensor]) -> None:
        """Store one batch (tensors detached, on CPU; dtypes kept until :meth:`compute`)."""
        part = {k: torch.as_tensor(v).detach().cpu() for k, v in self.collect(batch, outputs).items()}
        sizes = {k: (v.shape[0] if v.dim() else 0) for k, v in part.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{type(self).__name__}.process(): per-sample values of one batch have different "
                             f"lengths: {sizes}")
        self._parts.append(part)
        if self._indices is not None:
            if "indices" in batch:
                self._indices.append(torch.as_tensor(batch["indices"]).detach().cpu().long().reshape(-1))
            else:
                self._indices = None  # one batch without indices: fall back to shard order

    def _local(self) -> dict[str, Any]:
        if not self._parts:
            return {"data": None, "indices": torch.zeros(0, dtype=torch.long)}
        data = {k: torch.cat([p[k] for p in self._parts]) for k in self._parts[0]}
        return {"data": data, "indices": torch.cat(self._indices) if self._indices is not None else None}

    def _gather(self) -> list[dict] | None:
        local = self._local()
        if comm.get_world_size() == 1:
            return [local]
        out: list | None = [None] * comm.get_world_size() if comm.is_main_process() else None
        dist.gather_object(local, out, dst=0)
        return out

    def evaluate(self) -> dict[str, float]:
        """Metrics on every rank (computed on rank 0; an error there is raised on every rank)."""
        parts = self._gather()
        results: dict[str, float] | None = None
        error: str | None = None
        if parts is not None:
            try:
                results = self.compute(self._ordered(parts))
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                if comm.get_world_size() == 1:
                    raise
                error = f"{type(exc).__name__}: {exc}"
        if comm.get_world_size() > 1:
            results, error = comm.broadcast_object((results, error), src=0)
            if error is not None:
                raise RuntimeError(f"evaluation failed on rank 0: {error}")
        assert results is not None
        return results

    def _ordered(self, parts: list[dict]) -> dict[str, torch.Tensor]:
        parts = [p for p in parts if p["data"] is not None]
        if not parts:
            raise RuntimeError(f"{type(self).__name__}.evaluate() called before any process()")
        # one process's tensors are used as they are, and reordered only when out of order: every
        # copy of the test set's features would add to the evaluation's peak memory
        data = parts[0]["data"] if len(parts) == 1 else \
            {k: torch.cat([p["data"][k] for p in parts]) for k in parts[0]["data"]}
        if all(p["indices"] is not None for p in parts):
            indices = torch.cat([p["indices"] for p in parts])
            uniq, first = np.unique(indices.numpy(), return_index=True)
            if len(uniq) != uniq[-1] + 1 or uniq[0] != 0:
                raise ValueError(f"test-set indices do not cover 0..{len(uniq) - 1}: {len(uniq)} distinct, max {uniq[-1]}")
            if len(first) != len(indices) or not np.array_equal(first, np.arange(len(first))):
                order = torch.from_numpy(first)  # sorted by index; the first occurrence of each
                data = {k: v[order] for k, v in data.items()}
        return data

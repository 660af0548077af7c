"""Scalar metrics recorded during training and the writers that publish them."""
from __future__ import annotations

import json
import logging
import os
from collections import defaultdict, deque
from typing import Any

from omnireid.utils.file_io import append_json_line

logger = logging.getLogger(__name__)


class MetricStorage:
    """The scalars of recent iterations (windowed medians for the console, latest for files)."""

    def __init__(self, window: int = 20) -> None:
        self.iteration = 0
        self._history: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self._latest: dict[str, tuple[float, int]] = {}

    def put_scalar(self, name: str, value: float) -> None:
        value = float(value)
        self._history[name].append(value)
        self._latest[name] = (value, self.iteration)

    def put_scalars(self, **values: float) -> None:
        for name, value in values.items():
            self.put_scalar(name, value)

    def latest(self) -> dict[str, tuple[float, int]]:
        return dict(self._latest)

    def median(self, name: str) -> float:
        values = sorted(self._history[name])
        return values[len(values) // 2] if values else float("nan")

    def names(self) -> list[str]:
        return list(self._history)


class ConsoleWriter:
    """One log line: iteration, ETA, losses (windowed median), LR, timing."""

    def __init__(self, max_iter: int) -> None:
        self.max_iter = max_iter

    def write(self, storage: MetricStorage, epoch: int) -> None:
        it = storage.iteration
        parts = [f"epoch: {epoch}", f"iter: {it + 1}/{self.max_iter}"]
        if "time" in storage.names():
            remaining = (self.max_iter - it - 1) * storage.median("time")
            parts.append(f"eta: {int(remaining // 60)}:{int(remaining % 60):02d}")
        losses = [n for n in storage.names() if "loss" in n]
        parts += [f"{n}: {storage.median(n):.4g}" for n in sorted(losses)]
        for name in ("time", "data_time"):
            if name in storage.names():
                parts.append(f"{name}: {storage.median(name):.4f}")
        if "lr" in storage.names():
            parts.append(f"lr: {storage.latest()['lr'][0]:.3e}")
        logger.info("  ".join(parts))

    def close(self) -> None:
        pass


class TensorboardWriter:
    def __init__(self, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._last_written: dict[str, int] = {}

    def write(self, storage: MetricStorage, epoch: int) -> None:
        for name, (value, it) in storage.latest().items():
            if self._last_written.get(name) != it:
                self._writer.add_scalar(name, value, it)
                self._last_written[name] = it
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class EvalResultWriter:
    """``metrics.json``: one JSON object per evaluation (and dataset), metrics in percent."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write_result(self, record: dict[str, Any]) -> None:
        append_json_line(self.path, record)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Read ``metrics.json`` back (one object per line)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

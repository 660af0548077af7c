"""The headline metric of each test protocol: the one number that says which model is better.

Higher is better (register ``100 - error`` rather than an error rate), so hyperparameter search
maximises it by default, whatever the task. A task registers the headline of its protocol next
to its evaluator::

    @register_headline_metric("classification", name="Acc@1")
    def _accuracy(metrics: dict[str, float]) -> float:
        return metrics["Acc@1"]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from omnireid.utils.registry import Registry

# protocol -> HeadlineMetric
HEADLINE_METRICS = Registry("headline metric")


@dataclass(frozen=True)
class HeadlineMetric:
    """``fn(metrics) -> value`` of one test set's results (higher is better); ``name`` describes it."""

    name: str
    fn: Callable[[dict[str, float]], float]

    def __call__(self, metrics: dict[str, float]) -> float:
        return float(self.fn(metrics))


def register_headline_metric(protocol: str, name: str):
    """Decorator registering ``fn(metrics) -> float`` as the headline of ``protocol``."""

    def deco(fn: Callable[[dict[str, float]], float]) -> Callable[[dict[str, float]], float]:
        HEADLINE_METRICS.register(protocol)(HeadlineMetric(name=name, fn=fn))
        return fn

    return deco


def headline_metric(protocol: str) -> HeadlineMetric:
    return HEADLINE_METRICS.get(protocol)


@register_headline_metric("reid", name="(Rank-1 + mAP) / 2")
def _reid_headline(metrics: dict[str, float]) -> float:
    """FastReID's tuning objective: the mean of Rank-1 and mAP (both in percent)."""
    return (metrics["Rank-1"] + metrics["mAP"]) / 2

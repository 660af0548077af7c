"""The evaluator of the ``verification`` protocol: k-fold accuracy, TAR@FAR and ROC per ``.bin`` set."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from omnireid.evaluation import EVALUATOR_REGISTRY
from omnireid.evaluation.base import SampleEvaluator
from omnireid.evaluation.build import register_protocol
from omnireid.evaluation.headline import register_headline_metric
from omnireid.utils import comm
from omnireid.utils.file_io import atomic_write_text

from .verification import TAR_FARS, evaluate_verification, pair_distances, roc_curve

logger = logging.getLogger(__name__)


@EVALUATOR_REGISTRY.register()
@register_protocol("verification")
class VerificationEvaluator(SampleEvaluator):
    """Pairs of a :class:`~omnireid.data.TestSet` (``meta["pairs"]``, ``meta["issame"]``) scored by the
    squared L2 distance of L2-normalised embeddings (``outputs["features"]``; with ``TEST.FLIP`` the
    image's and its mirror's, as insightface sums them). Metrics in percent: ``Accuracy`` (10-fold mean)
    and ``Accuracy-std``, ``TAR@FAR=0.001`` / ``0.0001``, ``AUC``, and the mean fold ``Threshold``; the
    ROC curve goes to ``<output_dir>/roc_<set>.csv``."""

    def __init__(self, name: str, pairs: np.ndarray, issame: np.ndarray, output_dir: str | None = None,
                 fars: tuple[float, ...] = TAR_FARS) -> None:
        self.name = name
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(issame, dtype=bool)
        if len(self.pairs) != len(self.issame):
            raise ValueError(f"verification set {name}: {len(self.pairs)} pairs but {len(self.issame)} labels")
        self.output_dir = output_dir
        self.fars = fars
        super().__init__()

    @classmethod
    def from_config(cls, cfg, test_set, output_dir: str | None = None) -> "VerificationEvaluator":
        missing = [k for k in ("pairs", "issame") if k not in test_set.meta]
        if missing:
            raise KeyError(f"test set {test_set.name!r} (protocol {test_set.protocol!r}) has no {missing} metadata; "
                           "the verification evaluator needs pairs and same/different labels")
        if not cfg.TEST.FLIP.ENABLED:
            logger.warning("verification without TEST.FLIP.ENABLED: the protocol sums the embeddings of each image "
                           "and its mirror; results will not be comparable with published ones")
        return cls(test_set.name, test_set.meta["pairs"], test_set.meta["issame"], output_dir)

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"features": outputs["features"].float()}

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        features = data["features"]
        if int(self.pairs.max()) >= len(features):
            raise ValueError(f"verification set {self.name}: pairs refer to item {int(self.pairs.max())} but "
                             f"{len(features)} embeddings were computed")
        distances = pair_distances(features, self.pairs)
        result = evaluate_verification(distances, self.issame, self.fars)
        if self.output_dir and comm.is_main_process():
            far, tar, thresholds = roc_curve(distances, self.issame)
            lines = ["far,tar,threshold"] + [f"{f:.6g},{t:.6g},{d:.6g}" for f, t, d in zip(far, tar, thresholds)]
            atomic_write_text(os.path.join(self.output_dir, f"roc_{self.name}.csv"), "\n".join(lines) + "\n")
        return result.metrics()


@register_headline_metric("verification", name="Accuracy")
def _verification_headline(metrics: dict[str, float]) -> float:
    """The 10-fold verification accuracy (percent), the number face papers report."""
    return metrics["Accuracy"]

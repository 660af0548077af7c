"""Reusable layers: norms, IBN, SE, non-local, poolings and classifiers (with their registries)."""
from .classifiers import (CLASSIFIER_REGISTRY, ArcSoftmax, CircleSoftmax, CombinedMarginSoftmax, CosSoftmax, Linear,
                          build_classifier)
from .ibn import IBN
from .non_local import NonLocal, Non_local
from .norm import NORM_REGISTRY, get_norm
from .pooling import (
    POOLING_REGISTRY,
    AdaptiveAvgMaxPool,
    ClipGlobalAvgPool,
    GeneralizedMeanPooling,
    GeneralizedMeanPoolingP,
    GlobalAvgPool,
    GlobalMaxPool,
    build_pooling,
)
from .se import SELayer

__all__ = [
    "CLASSIFIER_REGISTRY", "NORM_REGISTRY", "POOLING_REGISTRY",
    "AdaptiveAvgMaxPool", "ArcSoftmax", "CircleSoftmax", "ClipGlobalAvgPool", "CombinedMarginSoftmax", "CosSoftmax",
    "GeneralizedMeanPooling", "GeneralizedMeanPoolingP", "GlobalAvgPool", "GlobalMaxPool", "IBN",
    "Linear", "NonLocal", "Non_local", "SELayer",
    "build_classifier", "build_pooling", "get_norm",
]

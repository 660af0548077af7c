"""Models: backbones, heads, losses and meta-architectures, each behind a registry.

Importing this package registers every built-in piece (each sub-package imports all of its
modules), so ``build_model(cfg)`` can build anything a config names.
"""
from .backbones import BACKBONE_REGISTRY, build_backbone
from .heads import HEAD_REGISTRY, build_heads
from .layers import CLASSIFIER_REGISTRY, NORM_REGISTRY, POOLING_REGISTRY, build_classifier, build_pooling, get_norm
from .losses import LOSS_REGISTRY, build_losses
from .meta_arch import META_ARCH_REGISTRY, build_deployable_model, build_model, training_only_state
from .outputs import EMBEDDING, NamedOutputs, default_outputs

__all__ = [
    "EMBEDDING", "NamedOutputs", "default_outputs", "BACKBONE_REGISTRY", "CLASSIFIER_REGISTRY", "HEAD_REGISTRY", "LOSS_REGISTRY", "META_ARCH_REGISTRY",
    "NORM_REGISTRY", "POOLING_REGISTRY",
    "build_backbone", "build_classifier", "build_deployable_model", "build_heads", "build_losses", "build_model",
    "build_pooling", "get_norm", "training_only_state",
]

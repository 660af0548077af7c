"""Knowledge-distillation building blocks shared by the ``Distiller`` meta-architectures.

``losses``: the Jensen-Shannon form of Hinton's KD and the overhaul feature-distillation terms;
``stage_features``: pre-ReLU stage outputs of ResNet-style backbones through forward hooks;
``ema``: the exponential-moving-average self-teacher update. The meta-architectures themselves are
``omnireid.modeling.meta_arch.distiller`` (registered in ``META_ARCH_REGISTRY``).
"""
from .ema import ema_update_
from .losses import feature_connector, js_divergence_kd, overhaul_margins, overhaul_stage_loss
from .stage_features import StageFeatureCapture, stage_channels, stage_output_norms

__all__ = ["StageFeatureCapture", "ema_update_", "feature_connector", "js_divergence_kd", "overhaul_margins",
           "overhaul_stage_loss", "stage_channels", "stage_output_norms"]

"""Losses: every module here is imported so that it registers itself in ``LOSS_REGISTRY``."""
from omnireid.modeling.registration import import_package_modules

from .registry import LOSS_REGISTRY, build_losses, required_outputs

UNAVAILABLE_LOSS_MODULES = import_package_modules(__name__, __path__)

from .cross_entropy import CrossEntropyLoss, cross_entropy_loss  # noqa: E402
from .distances import cosine_dist, euclidean_dist  # noqa: E402
from .focal import FocalLoss, focal_loss  # noqa: E402
from .pairwise import CircleLoss, Cosface, pairwise_circle_loss, pairwise_cosface_loss  # noqa: E402
from .triplet import TripletLoss, triplet_loss  # noqa: E402

__all__ = [
    "LOSS_REGISTRY", "CircleLoss", "Cosface", "CrossEntropyLoss", "FocalLoss", "TripletLoss",
    "build_losses", "cosine_dist", "cross_entropy_loss", "euclidean_dist", "focal_loss",
    "pairwise_circle_loss", "pairwise_cosface_loss", "required_outputs", "triplet_loss",
]

"""Meta-architectures: every module here is imported so that it registers itself."""
from omnireid.modeling.registration import import_package_modules

from .registry import META_ARCH_REGISTRY, build_deployable_model, build_model, training_only_state

UNAVAILABLE_META_ARCH_MODULES = import_package_modules(__name__, __path__)

from .baseline import Baseline  # noqa: E402

__all__ = ["META_ARCH_REGISTRY", "Baseline", "build_deployable_model", "build_model", "training_only_state"]

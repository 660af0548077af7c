"""Heads: every module here is imported so that it registers itself in ``HEAD_REGISTRY``."""
from omnireid.modeling.registration import import_package_modules

from .registry import HEAD_REGISTRY, build_heads

UNAVAILABLE_HEAD_MODULES = import_package_modules(__name__, __path__)

from .embedding_head import EmbeddingHead  # noqa: E402  (registered above; re-exported)

__all__ = ["HEAD_REGISTRY", "EmbeddingHead", "build_heads"]

"""Backbones. Every module in this package is imported here, so a new backbone is one file that
registers a builder with ``@BACKBONE_REGISTRY.register()`` - nothing else changes.
"""
from omnireid.modeling.registration import import_package_modules

from .registry import BACKBONE_REGISTRY, build_backbone

# Modules skipped because an optional dependency is missing: module name -> package it needs.
UNAVAILABLE_BACKBONE_MODULES = import_package_modules(__name__, __path__)

__all__ = ["BACKBONE_REGISTRY", "UNAVAILABLE_BACKBONE_MODULES", "build_backbone"]

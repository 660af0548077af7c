"""Face recognition: iResNet / MobileFaceNet, margin heads with Partial FC, insightface data, k-fold verification.

Importing the package registers its pieces (backbones, heads, losses, datasets, evaluator, config section).
"""
from . import backbones  # noqa: F401

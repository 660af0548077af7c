"""Face recognition: iResNet / MobileFaceNet, margin heads with Partial FC, insightface data without mxnet,
k-fold verification. Importing the package registers every piece."""
from . import backbones, partial_fc  # noqa: F401

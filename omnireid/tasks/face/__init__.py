"""Face recognition: iResNet / MobileFaceNet, margin heads with Partial FC, insightface data without mxnet,
k-fold verification, a demo. Importing the package registers every piece."""
from . import backbones, config, datasets, demo, evaluator, partial_fc  # noqa: F401

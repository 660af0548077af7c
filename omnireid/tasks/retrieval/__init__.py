"""Fine-grained image retrieval (FastReID's FastRetri, working): CUB-200-2011, Cars196, Stanford
Online Products, In-Shop and CSV loaders, the ``retrieval`` protocol's evaluator (Recall@K,
R-Precision, MAP@R), config keys and the synthetic demo."""
from . import config, datasets, demo, evaluator  # noqa: F401  (importing registers them)

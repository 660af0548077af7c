"""Image classification (FastReID's FastClas, working): image-folder and CSV datasets, the
``ImageClassifier`` model (MixUp / CutMix), the ``classification`` protocol's evaluator (top-k,
per-class accuracy, confusion matrix), config keys and the synthetic demo."""
from . import config, datasets, demo, evaluator, model  # noqa: F401  (importing registers them)

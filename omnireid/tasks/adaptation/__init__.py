"""Unsupervised domain adaptation with pseudo-labels (``omnireid adapt``): cluster the unlabelled
target's features (k-reciprocal Jaccard distance + DBSCAN), fine-tune on the clusters as identities
with the normal trainer, repeat; and the domain-shifted synthetic target to show it."""
from . import adapt, clustering, config, datasets  # noqa: F401  (importing registers them)

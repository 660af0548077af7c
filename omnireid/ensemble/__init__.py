"""Model ensembles for evaluation and submissions (``omnireid ensemble``, ``omnireid submit``).

Each member model reads the test images at its own input size through its own test loader; the
loaders run in lockstep (same sampler, same batches), the members' features are fused
(:mod:`omnireid.evaluation.fusion`) and handed to the test set's protocol evaluator, the one
``omnireid train --eval-only`` uses.
"""
from .members import Member, load_members, parse_model_spec
from .runner import EnsembleResult, collect_features, evaluate_ensemble, member_features

__all__ = ["EnsembleResult", "Member", "collect_features", "evaluate_ensemble", "load_members", "member_features",
           "parse_model_spec"]

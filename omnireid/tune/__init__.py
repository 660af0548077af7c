"""Hyperparameter search on Ray Tune (``omnireid tune``).

Importing this package does not import Ray: only :mod:`omnireid.tune.runner` (started by the
``tune`` command) and the trial processes do.
"""
from .space import SearchSpace, SearchSpaceError, load_search_space, parse_search_space

__all__ = ["SearchSpace", "SearchSpaceError", "load_search_space", "parse_search_space"]
